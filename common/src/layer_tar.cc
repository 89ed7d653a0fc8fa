#include "stagefarm/common/layer_tar.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <map>
#include <memory>
#include <set>
#include <utility>

#include "archive_util.h"
#include "stagefarm/common/clean_path.h"
#include "stagefarm/common/fd_io.h"
#include "stagefarm/common/unique_fd.h"

namespace stagefarm {
namespace {

using namespace archive_util;  // NOLINT: private helpers of this library

constexpr std::string_view kWhiteoutPrefix = ".wh.";
constexpr std::string_view kOpaqueMarker = ".wh..wh..opq";
constexpr const char* kOverlayOpaqueXattr = "trusted.overlay.opaque";
constexpr std::string_view kOverlayXattrPrefix = "trusted.overlay.";
constexpr size_t kIoChunk = 1 << 20;



Status ArchiveError(struct archive* a, std::string_view what) {
  return InternalError(std::string(what) + ": " + ArchiveMessage(a, "libarchive error"));
}


// ---------------------------------------------------------------------------------------------
// Writing

enum class ItemKind { kNormal, kWhiteout, kOpaque };

struct Item {
  std::string path;      // relative path of the file on disk ("a/b")
  std::string tar_name;  // the entry's name in the tar ("a/b", "a/.wh.b", "a/b/.wh..wh..opq")
  std::string sort_key;  // entries are written in this order
  ItemKind kind = ItemKind::kNormal;
  struct stat st {};
};

// Lists `dir` recursively into `items`, with lstat results, skipping excluded paths. Sets
// *whiteout_named when an entry that is no whiteout is named like one (see WrittenLayer).
Status Walk(int dirfd, const std::string& rel, const std::set<std::string>& exclude,
            std::vector<Item>* items, bool* whiteout_named) {
  UniqueFd dup_fd(::dup(dirfd));
  if (!dup_fd) return ErrnoError("dup", errno);
  DIR* d = ::fdopendir(dup_fd.get());
  if (d == nullptr) return ErrnoError("fdopendir " + rel, errno);
  dup_fd.release();
  std::unique_ptr<DIR, int (*)(DIR*)> dir(d, ::closedir);
  std::vector<std::string> names;
  for (;;) {
    errno = 0;
    // readdir is safe with one DIR stream per thread, which this is (glibc).
    dirent* ent = ::readdir(d);  // NOLINT(concurrency-mt-unsafe)
    if (ent == nullptr) {
      if (errno != 0) return ErrnoError("readdir " + rel, errno);
      break;
    }
    std::string_view name = ent->d_name;
    if (name == "." || name == "..") continue;
    names.emplace_back(name);
  }
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    std::string path = rel.empty() ? name : rel + "/" + name;
    if (exclude.count(path)) continue;
    Item item;
    item.path = path;
    if (::fstatat(dirfd, name.c_str(), &item.st, AT_SYMLINK_NOFOLLOW) != 0) {
      return ErrnoError("lstat " + path, errno);
    }
    const mode_t type = item.st.st_mode & S_IFMT;
    if (type == S_IFSOCK) continue;  // tar cannot hold sockets; a build leaves them behind
    const std::string parent_prefix = rel.empty() ? std::string() : rel + "/";
    if (type == S_IFCHR && item.st.st_rdev == makedev(0, 0)) {
      item.kind = ItemKind::kWhiteout;
      item.tar_name = parent_prefix + std::string(kWhiteoutPrefix) + name;
      item.sort_key = item.tar_name;
      items->push_back(std::move(item));
      continue;
    }
    if (std::string_view(name).starts_with(kWhiteoutPrefix)) {
      // Every reader of an OCI layer (docker's too) takes an entry named ".wh.*" as a whiteout or
      // an opaque marker, whatever its type, and docker writes such a file under its name: the
      // layer holds it as what it will read as, and its contents (a directory's too) are left
      // out. A name that reads as no whiteout at all could not be extracted anywhere.
      const std::string_view target = std::string_view(name).substr(kWhiteoutPrefix.size());
      if (target.empty() || target == "." || target == "..") {
        return InvalidArgumentError("/" + path +
                                    ": a layer cannot hold this name (\".wh.\" names whiteouts in "
                                    "OCI layers)");
      }
      *whiteout_named = true;
      item.tar_name = path;
      if (name == kOpaqueMarker) {
        item.kind = ItemKind::kOpaque;
        item.path = rel;
        item.sort_key = parent_prefix + std::string(1, '\0');
      } else {
        item.kind = ItemKind::kWhiteout;
        item.path = parent_prefix + std::string(target);
        item.sort_key = item.tar_name;
      }
      items->push_back(std::move(item));
      continue;
    }
    item.tar_name = path;
    item.sort_key = path;
    items->push_back(item);
    if (type == S_IFDIR) {
      UniqueFd sub(::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!sub) return ErrnoError("open " + path, errno);
      char value[8];
      ssize_t n = ::fgetxattr(sub.get(), kOverlayOpaqueXattr, value, sizeof value);
      if (n == 1 && value[0] == 'y') {
        Item opq = item;
        opq.kind = ItemKind::kOpaque;
        opq.tar_name = path + "/" + std::string(kOpaqueMarker);
        // Right after its directory, before anything the same layer puts inside it.
        opq.sort_key = path + "/" + std::string(1, '\0');
        items->push_back(std::move(opq));
      }
      SF_RETURN_IF_ERROR(Walk(sub.get(), path, exclude, items, whiteout_named));
    }
  }
  return Status();
}

// The xattrs of an open file or a path, sorted by name, without overlayfs' own.
Status ReadXattrs(int fd, const std::string& proc_path, const std::string& what,
                  std::vector<std::pair<std::string, std::string>>* out) {
  auto list = [&](char* buf, size_t size) {
    return fd >= 0 ? ::flistxattr(fd, buf, size) : ::llistxattr(proc_path.c_str(), buf, size);
  };
  auto get = [&](const char* name, void* buf, size_t size) {
    return fd >= 0 ? ::fgetxattr(fd, name, buf, size)
                   : ::lgetxattr(proc_path.c_str(), name, buf, size);
  };
  ssize_t n = list(nullptr, 0);
  if (n < 0) {
    if (errno == ENOTSUP) return Status();
    return ErrnoError("listxattr " + what, errno);
  }
  if (n == 0) return Status();
  std::string names(static_cast<size_t>(n), '\0');
  n = list(names.data(), names.size());
  if (n < 0) return ErrnoError("listxattr " + what, errno);
  names.resize(static_cast<size_t>(n));
  for (size_t pos = 0; pos < names.size();) {
    std::string name(names.c_str() + pos);
    pos += name.size() + 1;
    if (name.empty() || std::string_view(name).starts_with(kOverlayXattrPrefix)) continue;
    ssize_t vn = get(name.c_str(), nullptr, 0);
    if (vn < 0) return ErrnoError("getxattr " + name + " " + what, errno);
    std::string value(static_cast<size_t>(vn), '\0');
    vn = get(name.c_str(), value.data(), value.size());
    if (vn < 0) return ErrnoError("getxattr " + name + " " + what, errno);
    value.resize(static_cast<size_t>(vn));
    out->emplace_back(std::move(name), std::move(value));
  }
  std::sort(out->begin(), out->end());
  return Status();
}

// The tar stream goes to `out` and through a hasher at the same time.
struct TarSink {
  const LayerSink* out = nullptr;
  Sha256 hash;
  Status error;
};

la_ssize_t SinkWrite(struct archive*, void* client, const void* buf, size_t len) {
  auto* sink = static_cast<TarSink*>(client);
  std::string_view bytes(static_cast<const char*>(buf), len);
  sink->error = (*sink->out)(bytes);
  if (!sink->error.ok()) return -1;
  sink->hash.Update(bytes);
  return static_cast<la_ssize_t>(len);
}

class LayerWriter {
 public:
  LayerWriter(int rootfd, const LayerWriteOptions& options) : rootfd_(rootfd), options_(options) {}

  Status Open(const LayerSink& out) {
    sink_.out = &out;
    a_.reset(archive_write_new());
    SF_CHECK(a_ != nullptr);
    // pax_restricted writes plain ustar headers and adds a PAX header only when an entry needs
    // one (long names, large ids or sizes, xattrs). Names are bytes, as on Linux and in Docker's
    // layers: hdrcharset=BINARY writes them untranslated, whatever the locale and even when they
    // are not UTF-8.
    if (archive_write_set_format_pax_restricted(a_.get()) != ARCHIVE_OK ||
        archive_write_set_format_option(a_.get(), "pax", "xattrheader", "SCHILY") != ARCHIVE_OK ||
        archive_write_set_format_option(a_.get(), "pax", "hdrcharset", "BINARY") != ARCHIVE_OK ||
        archive_write_add_filter_none(a_.get()) != ARCHIVE_OK ||
        archive_write_set_bytes_per_block(a_.get(), 0) != ARCHIVE_OK ||
        archive_write_set_bytes_in_last_block(a_.get(), 1) != ARCHIVE_OK) {
      return ArchiveError(a_.get(), "configure tar writer");
    }
    if (archive_write_open2(a_.get(), &sink_, nullptr, SinkWrite, nullptr, nullptr) != ARCHIVE_OK) {
      return ArchiveError(a_.get(), "open tar writer");
    }
    return Status();
  }

  Status Add(const Item& item) {
    EntryPtr entry(archive_entry_new());
    SF_CHECK(entry != nullptr);
    archive_entry* e = entry.get();
    const struct stat& st = item.st;
    TocEntry toc;
    toc.path = item.path;
    toc.uid = st.st_uid;
    toc.gid = st.st_gid;
    archive_entry_copy_pathname(e, item.tar_name.c_str());
    archive_entry_set_uid(e, st.st_uid);
    archive_entry_set_gid(e, st.st_gid);
    int64_t mtime = st.st_mtim.tv_sec;
    if (options_.source_date_epoch >= 0 && mtime > options_.source_date_epoch) {
      mtime = options_.source_date_epoch;
    }
    archive_entry_set_mtime(e, mtime, 0);  // whole seconds: sub-second noise makes no layer differ

    if (item.kind == ItemKind::kWhiteout) {
      archive_entry_set_filetype(e, AE_IFREG);
      archive_entry_set_perm(e, 0);
      archive_entry_set_size(e, 0);
      toc.type = TocType::kWhiteout;
      toc.uid = toc.gid = 0;
      archive_entry_set_uid(e, 0);
      archive_entry_set_gid(e, 0);
      return WriteHeader(e, std::move(toc), item);
    }
    if (item.kind == ItemKind::kOpaque) {
      archive_entry_set_filetype(e, AE_IFREG);
      archive_entry_set_perm(e, 0);
      archive_entry_set_size(e, 0);
      toc.type = TocType::kOpaque;
      toc.uid = toc.gid = 0;
      archive_entry_set_uid(e, 0);
      archive_entry_set_gid(e, 0);
      return WriteHeader(e, std::move(toc), item);
    }

    const mode_t type = st.st_mode & S_IFMT;
    const uint32_t perm = st.st_mode & 07777;
    archive_entry_set_perm(e, perm);
    toc.mode = perm;
    std::vector<std::pair<std::string, std::string>> xattrs;
    UniqueFd fd;
    if (type == S_IFREG || type == S_IFDIR) {
      fd.reset(::openat(rootfd_, item.path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
      if (!fd) return ErrnoError("open " + item.path, errno);
      SF_RETURN_IF_ERROR(ReadXattrs(fd.get(), "", item.path, &xattrs));
    } else if (type != S_IFLNK) {
      // Devices and fifos must not be opened; reach them by path through the root's fd.
      std::string proc = "/proc/self/fd/" + std::to_string(rootfd_) + "/" + item.path;
      SF_RETURN_IF_ERROR(ReadXattrs(-1, proc, item.path, &xattrs));
    }
    // libarchive writes xattrs in the reverse order of insertion: insert them backwards so the
    // tar holds them sorted.
    for (auto it = xattrs.rbegin(); it != xattrs.rend(); ++it) {
      archive_entry_xattr_add_entry(e, it->first.c_str(), it->second.data(), it->second.size());
    }

    if (type != S_IFDIR && st.st_nlink > 1) {
      auto [it, inserted] = inodes_.try_emplace({st.st_dev, st.st_ino}, item.path);
      if (!inserted) {
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_copy_hardlink(e, it->second.c_str());
        archive_entry_set_size(e, 0);
        toc.type = TocType::kHardlink;
        toc.link = it->second;
        return WriteHeader(e, std::move(toc), item);
      }
    }

    switch (type) {
      case S_IFDIR:
        archive_entry_set_filetype(e, AE_IFDIR);
        archive_entry_copy_pathname(e, (item.tar_name + "/").c_str());
        toc.type = TocType::kDir;
        return WriteHeader(e, std::move(toc), item);
      case S_IFLNK: {
        std::string target(static_cast<size_t>(st.st_size) + 1, '\0');
        ssize_t n = ::readlinkat(rootfd_, item.path.c_str(), target.data(), target.size());
        if (n < 0) return ErrnoError("readlink " + item.path, errno);
        if (static_cast<size_t>(n) >= target.size()) {
          return InternalError("symlink " + item.path + " changed while the layer was written");
        }
        target.resize(static_cast<size_t>(n));
        archive_entry_set_filetype(e, AE_IFLNK);
        archive_entry_copy_symlink(e, target.c_str());
        toc.type = TocType::kSymlink;
        toc.link = target;
        return WriteHeader(e, std::move(toc), item);
      }
      case S_IFCHR:
      case S_IFBLK:
      case S_IFIFO:
        archive_entry_set_filetype(e, type == S_IFCHR   ? AE_IFCHR
                                      : type == S_IFBLK ? AE_IFBLK
                                                        : AE_IFIFO);
        toc.type = type == S_IFCHR   ? TocType::kChar
                   : type == S_IFBLK ? TocType::kBlock
                                     : TocType::kFifo;
        if (type != S_IFIFO) {
          archive_entry_set_rdevmajor(e, major(st.st_rdev));
          archive_entry_set_rdevminor(e, minor(st.st_rdev));
          toc.devmajor = major(st.st_rdev);
          toc.devminor = minor(st.st_rdev);
        }
        return WriteHeader(e, std::move(toc), item);
      case S_IFREG:
        return AddFile(e, std::move(toc), item, fd.get());
      default:
        return InternalError("unsupported file type at " + item.path);
    }
  }

  StatusOr<WrittenLayer> Finish() {
    if (archive_write_close(a_.get()) != ARCHIVE_OK) {
      if (!sink_.error.ok()) return sink_.error;
      return ArchiveError(a_.get(), "finish tar");
    }
    WrittenLayer out;
    out.diff_id = sink_.hash.Finish();
    out.toc = std::move(toc_);
    out.toc_blob = out.toc.Serialize();
    out.toc_digest = Digest::Of(out.toc_blob);
    return out;
  }

 private:
  Status WriteHeader(archive_entry* e, TocEntry toc, const Item& item) {
    if (archive_write_header(a_.get(), e) != ARCHIVE_OK) {
      if (!sink_.error.ok()) return sink_.error;
      return ArchiveError(a_.get(), "write tar header for " + item.path);
    }
    toc_.entries.push_back(std::move(toc));
    return Status();
  }

  Status AddFile(archive_entry* e, TocEntry toc, const Item& item, int fd) {
    struct stat st;
    if (::fstat(fd, &st) != 0) return ErrnoError("fstat " + item.path, errno);
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_size(e, st.st_size);
    toc.type = TocType::kFile;
    toc.size = static_cast<uint64_t>(st.st_size);
    if (archive_write_header(a_.get(), e) != ARCHIVE_OK) {
      if (!sink_.error.ok()) return sink_.error;
      return ArchiveError(a_.get(), "write tar header for " + item.path);
    }
    Sha256 content;
    std::string& buf = buffer_;
    buf.resize(kIoChunk);
    uint64_t left = toc.size;
    while (left > 0) {
      ssize_t n = ::read(fd, buf.data(), std::min<uint64_t>(buf.size(), left));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return ErrnoError("read " + item.path, errno);
      if (n == 0) return InternalError(item.path + " shrank while the layer was written");
      std::string_view chunk(buf.data(), static_cast<size_t>(n));
      content.Update(chunk);
      if (archive_write_data(a_.get(), chunk.data(), chunk.size()) < 0) {
        if (!sink_.error.ok()) return sink_.error;
        return ArchiveError(a_.get(), "write tar data for " + item.path);
      }
      left -= static_cast<uint64_t>(n);
    }
    toc.digest = content.Finish().str();
    toc_.entries.push_back(std::move(toc));
    return Status();
  }

  int rootfd_;
  const LayerWriteOptions& options_;
  TarSink sink_;
  ArchiveWritePtr a_;
  Toc toc_;
  std::map<std::pair<dev_t, ino_t>, std::string> inodes_;  // first path of each hard-linked inode
  std::string buffer_;
};

// ---------------------------------------------------------------------------------------------
// Extracting

long OpenAt2(int dirfd, const char* path, uint64_t flags, uint64_t resolve) {
  open_how how{};
  how.flags = flags;
  how.resolve = resolve;
  return ::syscall(SYS_openat2, dirfd, path, &how, sizeof how);
}

class LayerExtractor {
 public:
  LayerExtractor(UniqueFd root, const ExtractOptions& options)
      : root_(std::move(root)), options_(options) {}

  Status Run(const std::string& tar_path) {
    ArchiveReadPtr a(archive_read_new());
    SF_CHECK(a != nullptr);
    archive_read_support_filter_gzip(a.get());
    archive_read_support_filter_zstd(a.get());
    archive_read_support_filter_bzip2(a.get());
    archive_read_support_filter_xz(a.get());
    archive_read_support_filter_none(a.get());
    archive_read_support_format_tar(a.get());
    if (archive_read_open_filename(a.get(), tar_path.c_str(), kIoChunk) != ARCHIVE_OK) {
      return InvalidArgumentError("open layer " + tar_path + ": " +
                                  ArchiveMessage(a.get(), "not a tar"));
    }
    for (;;) {
      archive_entry* e = nullptr;
      int r = archive_read_next_header(a.get(), &e);
      if (r == ARCHIVE_EOF) break;
      if (r < ARCHIVE_WARN) {
        return InvalidArgumentError("layer " + tar_path + ": " +
                                    ArchiveMessage(a.get(), "bad tar header"));
      }
      Status s = ExtractEntry(a.get(), e);
      if (!s.ok()) return s.Annotate("extract layer " + tar_path);
    }
    // Directory times last, deepest first, since creating entries inside changed them.
    for (auto it = dir_times_.rbegin(); it != dir_times_.rend(); ++it) {
      SF_ASSIGN_OR_RETURN(UniqueFd fd, OpenDir(it->first, /*create=*/false));
      if (::futimens(fd.get(), it->second.data()) != 0) {
        return ErrnoError("set times of " + it->first, errno);
      }
    }
    return Status();
  }

 private:
  // Opens the directory `rel` beneath the root, creating missing components. A symlink on the
  // way is followed only while it stays beneath the root; one that leads out is refused.
  StatusOr<UniqueFd> OpenDir(const std::string& rel, bool create) {
    UniqueFd cur(::dup(root_.get()));
    if (!cur) return ErrnoError("dup", errno);
    std::string sofar;
    size_t i = 0;
    while (i < rel.size()) {
      size_t j = rel.find('/', i);
      if (j == std::string::npos) j = rel.size();
      std::string comp = rel.substr(i, j - i);
      i = j + 1;
      sofar = sofar.empty() ? comp : sofar + "/" + comp;
      struct stat st;
      if (::fstatat(cur.get(), comp.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno != ENOENT || !create) return ErrnoError("lstat " + sofar, errno);
        if (::mkdirat(cur.get(), comp.c_str(), 0755) != 0) {
          return ErrnoError("mkdir " + sofar, errno);
        }
        st.st_mode = S_IFDIR;
      }
      UniqueFd next;
      if (S_ISDIR(st.st_mode)) {
        next.reset(
            ::openat(cur.get(), comp.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!next) return ErrnoError("open " + sofar, errno);
      } else if (S_ISLNK(st.st_mode)) {
        long fd = OpenAt2(root_.get(), sofar.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC,
                          RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS);
        if (fd < 0) {
          return InvalidArgumentError("path " + rel + " goes through symlink " + sofar +
                                      " that leads outside the layer");
        }
        next.reset(static_cast<int>(fd));
      } else {
        return InvalidArgumentError("path " + rel + ": " + sofar + " is not a directory");
      }
      cur = std::move(next);
    }
    return cur;
  }

  Status SafeName(const char* raw, std::string* out, const char* what) const {
    if (raw == nullptr) return InvalidArgumentError(std::string(what) + " without a name");
    std::string_view name(raw);
    std::string rooted;
    if (name.starts_with("/")) {
      if (!options_.rooted_names) {
        return InvalidArgumentError(std::string(what) + " \"" + std::string(name) +
                                    "\" is an absolute path");
      }
      // Cleaned as a rooted path, ".." stops at the root: "/../a" is "a" under `dir`.
      rooted = CleanSlashPath(name).substr(1);
      name = rooted;
    }
    if (!NormalizeRelative(name, out)) {
      return InvalidArgumentError(std::string(what) + " \"" + std::string(name) +
                                  "\" goes up with \"..\"");
    }
    return Status();
  }

  // Sets overlayfs' opaque xattr on the directory `dir_fd`, or on its entry `leaf` when given:
  // overlayfs then shows none of the lower directories of its name.
  static Status MakeOpaque(int dir_fd, const std::string& path, const std::string& leaf = "") {
    UniqueFd sub;
    if (!leaf.empty()) {
      sub.reset(::openat(dir_fd, leaf.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!sub) return ErrnoError("open " + path, errno);
      dir_fd = sub.get();
    }
    if (::fsetxattr(dir_fd, kOverlayOpaqueXattr, "y", 1, 0) != 0) {
      return ErrnoError("set opaque xattr on " + path, errno);
    }
    return Status();
  }

  // Removes a leaf that an entry replaces; a directory is kept if the new entry is one too.
  // *removed_whiteout (when given) says whether the leaf was an overlay whiteout (a 0/0
  // character device).
  Status MakeRoom(int parent, const std::string& leaf, const std::string& path, bool new_is_dir,
                  bool* kept_dir, bool* removed_whiteout = nullptr) {
    *kept_dir = false;
    if (removed_whiteout != nullptr) *removed_whiteout = false;
    struct stat st;
    if (::fstatat(parent, leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) return Status();
      return ErrnoError("lstat " + path, errno);
    }
    if (removed_whiteout != nullptr) {
      *removed_whiteout = S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0);
    }
    if (S_ISDIR(st.st_mode)) {
      if (new_is_dir) {
        *kept_dir = true;
        return Status();
      }
      if (::unlinkat(parent, leaf.c_str(), AT_REMOVEDIR) != 0) {
        return ErrnoError("replace directory " + path, errno);
      }
      return Status();
    }
    if (::unlinkat(parent, leaf.c_str(), 0) != 0) return ErrnoError("replace " + path, errno);
    return Status();
  }

  static std::array<timespec, 2> Times(archive_entry* e) {
    timespec mtime{};
    if (archive_entry_mtime_is_set(e)) {
      mtime.tv_sec = archive_entry_mtime(e);
      mtime.tv_nsec = archive_entry_mtime_nsec(e);
    }
    return {mtime, mtime};  // atime = mtime: the tar carries no atime we keep
  }

  // Owner, then mode (chown clears setuid), then xattrs (chown clears file capabilities).
  Status SetMetadata(archive_entry* e, int fd, int parent, const std::string& leaf,
                     const std::string& path, bool symlink) {
    const uid_t uid =
        options_.owner ? options_.owner->first : static_cast<uid_t>(archive_entry_uid(e));
    const gid_t gid =
        options_.owner ? options_.owner->second : static_cast<gid_t>(archive_entry_gid(e));
    const mode_t perm = archive_entry_perm(e) & 07777;
    if (fd >= 0) {
      if (::fchown(fd, uid, gid) != 0) return ErrnoError("chown " + path, errno);
      if (::fchmod(fd, perm) != 0) return ErrnoError("chmod " + path, errno);
    } else {
      if (::fchownat(parent, leaf.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW) != 0) {
        return ErrnoError("chown " + path, errno);
      }
      if (!symlink && ::fchmodat(parent, leaf.c_str(), perm, 0) != 0) {
        return ErrnoError("chmod " + path, errno);
      }
    }
    if (!symlink) {
      archive_entry_xattr_reset(e);
      const char* name;
      const void* value;
      size_t size;
      std::string proc = "/proc/self/fd/" + std::to_string(parent) + "/" + leaf;
      while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK) {
        // overlayfs reads its own trusted.overlay.* xattrs: a layer must never set them directly.
        if (std::string_view(name).starts_with(kOverlayXattrPrefix)) continue;
        int r = fd >= 0 ? ::fsetxattr(fd, name, value, size, 0)
                        : ::lsetxattr(proc.c_str(), name, value, size, 0);
        if (r != 0) return ErrnoError(std::string("setxattr ") + name + " on " + path, errno);
      }
    }
    return Status();
  }

  Status ExtractEntry(struct archive* a, archive_entry* e) {
    std::string path;
    SF_RETURN_IF_ERROR(SafeName(archive_entry_pathname(e), &path, "entry"));
    if (path.empty()) return Status();  // "./": the root exists already
    size_t slash = path.rfind('/');
    std::string parent_rel = slash == std::string::npos ? std::string() : path.substr(0, slash);
    std::string leaf = slash == std::string::npos ? path : path.substr(slash + 1);
    SF_ASSIGN_OR_RETURN(UniqueFd parent, OpenDir(parent_rel, /*create=*/true));
    const auto times = Times(e);

    if (options_.whiteouts && leaf == kOpaqueMarker) return MakeOpaque(parent.get(), parent_rel);
    if (options_.whiteouts && std::string_view(leaf).starts_with(kWhiteoutPrefix)) {
      std::string target = leaf.substr(kWhiteoutPrefix.size());
      if (target.empty() || target == "." || target == "..") {
        return InvalidArgumentError("bad whiteout " + path);
      }
      std::string target_path = parent_rel.empty() ? target : parent_rel + "/" + target;
      // A whiteout hides what the layers below hold, never what its own layer adds (OCI; the TOC
      // applies a layer's whiteouts first). `dir` started empty, so an entry there is this
      // layer's: it stays, and already shadows the layers below, except that overlayfs merges a
      // directory with the lower ones of its name, so that one is made opaque instead.
      struct stat st;
      if (::fstatat(parent.get(), target.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
        if (S_ISDIR(st.st_mode)) SF_RETURN_IF_ERROR(MakeOpaque(parent.get(), target_path, target));
        return Status();
      }
      if (errno != ENOENT) return ErrnoError("lstat " + target_path, errno);
      if (::mknodat(parent.get(), target.c_str(), S_IFCHR | 0, makedev(0, 0)) != 0) {
        return ErrnoError("mknod whiteout " + target_path, errno);
      }
      if (::fchownat(parent.get(), target.c_str(), static_cast<uid_t>(archive_entry_uid(e)),
                     static_cast<gid_t>(archive_entry_gid(e)), AT_SYMLINK_NOFOLLOW) != 0) {
        return ErrnoError("chown " + target_path, errno);
      }
      if (::utimensat(parent.get(), target.c_str(), times.data(), AT_SYMLINK_NOFOLLOW) != 0) {
        return ErrnoError("set times of " + target_path, errno);
      }
      return Status();
    }

    if (const char* hardlink = archive_entry_hardlink(e)) {
      std::string target;
      SF_RETURN_IF_ERROR(SafeName(hardlink, &target, "hard link target"));
      size_t ts = target.rfind('/');
      std::string tparent_rel = ts == std::string::npos ? std::string() : target.substr(0, ts);
      std::string tleaf = ts == std::string::npos ? target : target.substr(ts + 1);
      if (tleaf.empty()) return InvalidArgumentError("hard link " + path + " to the root");
      SF_ASSIGN_OR_RETURN(UniqueFd tparent, OpenDir(tparent_rel, /*create=*/false));
      struct stat tst;
      if (::fstatat(tparent.get(), tleaf.c_str(), &tst, AT_SYMLINK_NOFOLLOW) != 0) {
        return ErrnoError("hard link " + path + " to " + target, errno);
      }
      if (S_ISDIR(tst.st_mode)) {
        return InvalidArgumentError("hard link " + path + " to directory " + target);
      }
      bool kept;
      SF_RETURN_IF_ERROR(MakeRoom(parent.get(), leaf, path, false, &kept));
      if (::linkat(tparent.get(), tleaf.c_str(), parent.get(), leaf.c_str(), 0) != 0) {
        return ErrnoError("link " + path + " to " + target, errno);
      }
      // A user's tar (ADD): the link's header owns the file it shares, as BuildKit's untar does.
      if (options_.rooted_names) {
        SF_RETURN_IF_ERROR(SetMetadata(e, -1, parent.get(), leaf, path, false));
      }
      return Status();
    }

    const mode_t type = archive_entry_filetype(e);
    bool kept_dir = false, replaced_whiteout = false;
    SF_RETURN_IF_ERROR(
        MakeRoom(parent.get(), leaf, path, type == AE_IFDIR, &kept_dir, &replaced_whiteout));
    switch (type) {
      case AE_IFDIR: {
        if (!kept_dir && ::mkdirat(parent.get(), leaf.c_str(), 0700) != 0) {
          return ErrnoError("mkdir " + path, errno);
        }
        // A directory after a whiteout of its name in the same layer hides the lower ones too.
        if (options_.whiteouts && replaced_whiteout) {
          SF_RETURN_IF_ERROR(MakeOpaque(parent.get(), path, leaf));
        }
        UniqueFd fd(
            ::openat(parent.get(), leaf.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!fd) return ErrnoError("open " + path, errno);
        SF_RETURN_IF_ERROR(SetMetadata(e, fd.get(), parent.get(), leaf, path, false));
        dir_times_[path] = times;
        return Status();
      }
      case AE_IFREG: {
        UniqueFd fd(::openat(parent.get(), leaf.c_str(),
                             O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
        if (!fd) return ErrnoError("create " + path, errno);
        SF_RETURN_IF_ERROR(CopyData(a, e, fd.get(), path));
        SF_RETURN_IF_ERROR(SetMetadata(e, fd.get(), parent.get(), leaf, path, false));
        if (::futimens(fd.get(), times.data()) != 0) {
          return ErrnoError("set times of " + path, errno);
        }
        return Status();
      }
      case AE_IFLNK: {
        const char* target = archive_entry_symlink(e);
        if (target == nullptr) return InvalidArgumentError("symlink " + path + " without target");
        if (::symlinkat(target, parent.get(), leaf.c_str()) != 0) {
          return ErrnoError("symlink " + path, errno);
        }
        SF_RETURN_IF_ERROR(SetMetadata(e, -1, parent.get(), leaf, path, true));
        if (::utimensat(parent.get(), leaf.c_str(), times.data(), AT_SYMLINK_NOFOLLOW) != 0) {
          return ErrnoError("set times of " + path, errno);
        }
        return Status();
      }
      case AE_IFCHR:
      case AE_IFBLK:
      case AE_IFIFO: {
        dev_t dev =
            type == AE_IFIFO ? 0 : makedev(archive_entry_rdevmajor(e), archive_entry_rdevminor(e));
        if (::mknodat(parent.get(), leaf.c_str(), type | 0600, dev) != 0) {
          return ErrnoError("mknod " + path, errno);
        }
        SF_RETURN_IF_ERROR(SetMetadata(e, -1, parent.get(), leaf, path, false));
        if (::utimensat(parent.get(), leaf.c_str(), times.data(), AT_SYMLINK_NOFOLLOW) != 0) {
          return ErrnoError("set times of " + path, errno);
        }
        return Status();
      }
      default:
        return InvalidArgumentError("entry " + path + " has an unsupported type");
    }
  }

  Status CopyData(struct archive* a, archive_entry* e, int fd, const std::string& path) {
    const bool size_is_set = archive_entry_size_is_set(e) != 0;
    const auto expected_size = static_cast<uint64_t>(archive_entry_size(e));
    const void* buf;
    size_t size;
    la_int64_t offset;
    for (;;) {
      int r = archive_read_data_block(a, &buf, &size, &offset);
      if (r == ARCHIVE_EOF) break;
      if (r < ARCHIVE_WARN) {
        return InvalidArgumentError("read data of " + path + ": " + ArchiveMessage(a, "truncated"));
      }
      const char* p = static_cast<const char*>(buf);
      while (size > 0) {
        ssize_t n = ::pwrite(fd, p, size, offset);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return ErrnoError("write " + path, errno);
        p += n;
        size -= static_cast<size_t>(n);
        offset += n;
      }
    }
    // A sparse file may end in a hole: its size comes from the header.
    if (size_is_set && ::ftruncate(fd, static_cast<off_t>(expected_size)) != 0) {
      return ErrnoError("truncate " + path, errno);
    }
    return Status();
  }

  UniqueFd root_;
  ExtractOptions options_;
  std::map<std::string, std::array<timespec, 2>> dir_times_;
};

}  // namespace

StatusOr<WrittenLayer> WriteLayer(const std::string& dir, const std::string& tar_path,
                                  const LayerWriteOptions& options) {
  UniqueFd out(::open(tar_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!out) return ErrnoError("create " + tar_path, errno);
  return WriteLayerTo(
      dir, [&](std::string_view bytes) { return WriteAll(out.get(), bytes, "layer tar"); },
      options);
}

StatusOr<WrittenLayer> WriteLayerTo(const std::string& dir, const LayerSink& out,
                                    const LayerWriteOptions& options) {
  UniqueFd root(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root) return ErrnoError("open " + dir, errno);
  std::set<std::string> exclude;
  for (const std::string& ex : options.exclude) {
    std::string norm;
    if (NormalizeRelative(ex, &norm) && !norm.empty()) exclude.insert(norm);
  }
  std::vector<Item> items;
  bool whiteout_named = false;
  SF_RETURN_IF_ERROR(Walk(root.get(), "", exclude, &items, &whiteout_named));
  // Stable: a whiteout both made by overlay and named by a file (or a directory both opaque and
  // holding ".wh..wh..opq") is written once, the first the walk met.
  std::stable_sort(items.begin(), items.end(),
                   [](const Item& a, const Item& b) { return a.sort_key < b.sort_key; });
  items.erase(std::unique(items.begin(), items.end(),
                          [](const Item& a, const Item& b) { return a.tar_name == b.tar_name; }),
              items.end());
  struct stat root_st;
  if (::fstat(root.get(), &root_st) != 0) return ErrnoError("stat " + dir, errno);
  uint64_t disk_bytes = static_cast<uint64_t>(root_st.st_blocks) * 512;
  std::set<std::pair<dev_t, ino_t>> linked;  // hard-linked files counted already
  LayerWriter writer(root.get(), options);
  SF_RETURN_IF_ERROR(writer.Open(out));
  for (const Item& item : items) {
    SF_RETURN_IF_ERROR(writer.Add(item));
    const struct stat& st = item.st;
    if (S_ISDIR(st.st_mode) || st.st_nlink < 2 || linked.emplace(st.st_dev, st.st_ino).second) {
      disk_bytes += static_cast<uint64_t>(st.st_blocks) * 512;
    }
  }
  SF_ASSIGN_OR_RETURN(WrittenLayer written, writer.Finish());
  written.disk_bytes = disk_bytes;
  written.whiteout_named = whiteout_named;
  return written;
}

Status ExtractLayer(const std::string& tar_path, const std::string& dir,
                    const ExtractOptions& options) {
  UniqueFd root(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root) return ErrnoError("open " + dir, errno);
  LayerExtractor extractor(std::move(root), options);
  return extractor.Run(tar_path);
}

}  // namespace stagefarm
