#include "stagefarm/worker/copy.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <map>
#include <tuple>

#include "stagefarm/common/clean_path.h"
#include "stagefarm/common/context_tree.h"
#include "stagefarm/common/copy_sources.h"
#include "stagefarm/common/fd_io.h"
#include "stagefarm/common/file_mode.h"
#include "stagefarm/common/layer_tar.h"
#include "stagefarm/common/unique_fd.h"
#include "stagefarm/worker/fs_util.h"
#include "stagefarm/worker/user_db.h"

namespace stagefarm::worker {

namespace {

// Writes blob `digest` of the CAS to `out_fd`, verifying it; `what` names it in errors.
Status WriteBlob(CacheClient& cache, const Digest& digest, const std::string& what,
                 const std::string& where, int out_fd) {
  Sha256 hash;
  Status s = cache.Read(digest, 0, 0, [&](std::string_view bytes) {
    hash.Update(bytes);
    return WriteAll(out_fd, bytes, "copy destination");
  });
  if (!s.ok()) return s.Annotate("reading " + what + " from " + where);
  if (!(hash.Finish() == digest)) {
    return DataLossError(what + ": content does not match " + digest.str());
  }
  return Status();
}

// ---- the build context ----------------------------------------------------------------------

class ContextSource : public CopySource {
 public:
  ContextSource(CacheClient& cache, const Digest& root) : cache_(cache), tree_(cache, root) {}
  std::string Describe() const override { return "build context"; }

  StatusOr<std::optional<SourceEntry>> Stat(const std::string& path) override {
    SF_ASSIGN_OR_RETURN(std::optional<TreeEntry> e, tree_.Lookup(path));
    if (!e) return std::optional<SourceEntry>();
    if (path.empty()) e->type = TreeEntry::Type::kDir;  // the root itself
    return std::optional<SourceEntry>(Convert(*e));
  }
  StatusOr<std::vector<SourceEntry>> List(const std::string&, const SourceEntry& dir) override {
    Digest node = dir.digest;
    if (node.empty()) node = tree_.root();
    SF_ASSIGN_OR_RETURN(TreeNode n, tree_.ReadNode(node));
    std::vector<SourceEntry> out;
    for (const auto& e : n.entries) out.push_back(Convert(e));
    return out;
  }
  Status WriteContent(const std::string& path, const SourceEntry& file, int out_fd) override {
    return WriteBlob(cache_, file.digest, path, "the build context", out_fd);
  }

  // A tree entry as a source entry (a git checkout's too: RemoteSource).
  static SourceEntry Convert(const TreeEntry& e) {
    SourceEntry s;
    s.name = e.name;
    s.mode = e.mode;
    s.digest = e.digest;
    s.target = e.target;
    switch (e.type) {
      case TreeEntry::Type::kFile:
        s.type = SourceEntry::Type::kFile;
        break;
      case TreeEntry::Type::kDir:
        s.type = SourceEntry::Type::kDir;
        break;
      case TreeEntry::Type::kSymlink:
        s.type = SourceEntry::Type::kSymlink;
        break;
      case TreeEntry::Type::kFifo:
      case TreeEntry::Type::kCharDevice:
      case TreeEntry::Type::kBlockDevice:
        s.type = SourceEntry::Type::kOther;
        s.raw_mode = e.type == TreeEntry::Type::kFifo         ? S_IFIFO
                     : e.type == TreeEntry::Type::kCharDevice ? S_IFCHR
                                                              : S_IFBLK;
        s.rdev = makedev(e.dev_major, e.dev_minor);
        break;
    }
    return s;
  }

 private:
  CacheClient& cache_;
  ContextTree tree_;
};

// ---- files fetched from http(s) URLs, and git checkouts ---------------------------------------

class RemoteSource : public CopySource {
 public:
  RemoteSource(CacheClient& cache, std::vector<RemoteFile> files)
      : cache_(cache), files_(std::move(files)) {}
  std::string Describe() const override { return "remote URLs"; }

  StatusOr<std::optional<SourceEntry>> Stat(const std::string& url) override {
    const RemoteFile* f = Find(url, /*below=*/false);
    if (!f) return std::optional<SourceEntry>();
    SourceEntry e;
    e.mtime = timespec{static_cast<time_t>(f->mtime), 0};
    e.digest = f->digest;
    if (!f->commit.empty()) {
      // The root of the checkout, a directory as BuildKit's git source makes it.
      e.type = SourceEntry::Type::kDir;
      e.mode = 0755;
      return std::optional<SourceEntry>(std::move(e));
    }
    e.name = RemoteFileName(url);
    e.type = SourceEntry::Type::kFile;
    e.mode = 0600;  // BuildKit's http source; --chmod overrides it
    return std::optional<SourceEntry>(std::move(e));
  }
  // The entries of a directory of a git checkout (`path` is "<url>/<dir>"): as the context's,
  // all with the commit's time (BuildKit's are as old as its checkout).
  StatusOr<std::vector<SourceEntry>> List(const std::string& path,
                                          const SourceEntry& dir) override {
    const RemoteFile* f = Find(path, /*below=*/true);
    if (!f || f->commit.empty()) {
      return FailedPreconditionError(path + " is a file, not a directory");
    }
    ContextTree tree(cache_, f->digest);
    SF_ASSIGN_OR_RETURN(TreeNode node, tree.ReadNode(dir.digest));
    std::vector<SourceEntry> out;
    for (const TreeEntry& t : node.entries) {
      out.push_back(ContextSource::Convert(t));
      out.back().mtime = timespec{static_cast<time_t>(f->mtime), 0};
    }
    return out;
  }
  Status WriteContent(const std::string& url, const SourceEntry& file, int out_fd) override {
    return WriteBlob(cache_, file.digest, url, "the store", out_fd);
  }

 private:
  // The file or repository `path` names, or with `below` the repository it is in. The step's
  // files are the coordinator's pick for its flags (FindRemoteFile), one per URL.
  const RemoteFile* Find(const std::string& path, bool below) const {
    const RemoteFile* found = nullptr;
    for (const RemoteFile& r : files_) {
      bool match = path == r.url || (below && !r.commit.empty() && path.starts_with(r.url + "/"));
      if (match && (!found || r.url.size() > found->url.size())) found = &r;
    }
    return found;
  }

  CacheClient& cache_;
  std::vector<RemoteFile> files_;
};

// ---- a directory on disk ----------------------------------------------------------------------

SourceEntry FromStat(std::string name, const struct stat& st) {
  SourceEntry e;
  e.name = std::move(name);
  e.mode = st.st_mode & 07777;
  e.owner = std::make_pair(st.st_uid, st.st_gid);
  e.mtime = st.st_mtim;
  e.dev = st.st_dev;
  e.ino = st.st_ino;
  e.nlink = st.st_nlink;
  if (S_ISREG(st.st_mode)) {
    e.type = SourceEntry::Type::kFile;
  } else if (S_ISDIR(st.st_mode)) {
    e.type = SourceEntry::Type::kDir;
  } else if (S_ISLNK(st.st_mode)) {
    e.type = SourceEntry::Type::kSymlink;
  } else {
    e.type = SourceEntry::Type::kOther;
    e.raw_mode = st.st_mode;
    e.rdev = st.st_rdev;
  }
  return e;
}

StatusOr<std::string> ReadLinkAt(int dir_fd, const char* name) {
  std::string buf(4096, '\0');
  ssize_t n = ::readlinkat(dir_fd, name, buf.data(), buf.size());
  if (n < 0) return ErrnoError("readlink", errno);
  buf.resize(static_cast<size_t>(n));
  return buf;
}

class DirSource : public CopySource {
 public:
  explicit DirSource(UniqueFd root) : root_(std::move(root)) {}
  std::string Describe() const override { return "stage"; }

  StatusOr<std::optional<SourceEntry>> Stat(const std::string& path) override {
    auto fd = OpenInRoot(root_.get(), path, O_PATH | O_NOFOLLOW);
    if (!fd.ok()) {
      // Absent, or below a file (ENOTDIR): nothing there.
      if (fd.status().code() == StatusCode::kNotFound ||
          fd.status().code() == StatusCode::kFailedPrecondition) {
        return std::optional<SourceEntry>();
      }
      return fd.status();
    }
    struct stat st;
    if (::fstat(fd->get(), &st) != 0) return ErrnoError("stat " + path, errno);
    std::string name = path.substr(path.rfind('/') + 1);
    SourceEntry e = FromStat(name, st);
    if (e.type == SourceEntry::Type::kSymlink) {
      SF_ASSIGN_OR_RETURN(e.target, ReadLinkAt(fd->get(), ""));
    }
    return std::optional<SourceEntry>(std::move(e));
  }
  StatusOr<std::vector<SourceEntry>> List(const std::string& path, const SourceEntry&) override {
    SF_ASSIGN_OR_RETURN(UniqueFd fd,
                        OpenInRoot(root_.get(), path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW));
    int dir_fd = fd.get();
    DIR* dir = ::fdopendir(fd.release());
    if (!dir) return ErrnoError("opendir " + path, errno);
    std::vector<SourceEntry> out;
    Status err;
    while (struct dirent* d = ::readdir(dir)) {
      std::string name = d->d_name;
      if (name == "." || name == "..") continue;
      struct stat st;
      if (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        err = ErrnoError("stat " + path + "/" + name, errno);
        break;
      }
      SourceEntry e = FromStat(name, st);
      if (e.type == SourceEntry::Type::kSymlink) {
        auto target = ReadLinkAt(dir_fd, name.c_str());
        if (!target.ok()) {
          err = target.status();
          break;
        }
        e.target = *target;
      }
      out.push_back(std::move(e));
    }
    ::closedir(dir);
    SF_RETURN_IF_ERROR(err);
    std::sort(out.begin(), out.end(),
              [](const SourceEntry& a, const SourceEntry& b) { return a.name < b.name; });
    return out;
  }
  Status WriteContent(const std::string& path, const SourceEntry&, int out_fd) override {
    SF_ASSIGN_OR_RETURN(UniqueFd in, OpenInRoot(root_.get(), path, O_RDONLY | O_NOFOLLOW));
    char buf[65536];
    for (;;) {
      ssize_t n = ::read(in.get(), buf, sizeof buf);
      if (n < 0) {
        if (errno == EINTR) continue;
        return ErrnoError("read " + path, errno);
      }
      if (n == 0) return Status();
      SF_RETURN_IF_ERROR(
          WriteAll(out_fd, std::string_view(buf, static_cast<size_t>(n)), "copy destination"));
    }
  }

 private:
  UniqueFd root_;
};

// ---- the copy ---------------------------------------------------------------------------------

std::string Join(const std::string& a, const std::string& b) { return a.empty() ? b : a + "/" + b; }
std::string Parent(const std::string& p) {
  size_t slash = p.rfind('/');
  return slash == std::string::npos ? std::string() : p.substr(0, slash);
}
std::string Base(const std::string& p) { return p.substr(p.rfind('/') + 1); }

// A CopySource as copy_sources.h selects in it.
class SourceView : public SourceTreeView {
 public:
  explicit SourceView(CopySource& source) : source_(source) {}
  StatusOr<std::optional<Node>> Lookup(const std::string& path) override {
    SF_ASSIGN_OR_RETURN(std::optional<SourceEntry> e, source_.Stat(path));
    if (!e) return std::optional<Node>();
    Node n;
    n.kind = e->type == SourceEntry::Type::kDir       ? Node::Kind::kDir
             : e->type == SourceEntry::Type::kSymlink ? Node::Kind::kSymlink
             : e->type == SourceEntry::Type::kFile    ? Node::Kind::kFile
                                                      : Node::Kind::kOther;
    n.target = e->target;
    return std::optional<Node>(std::move(n));
  }
  StatusOr<std::vector<std::string>> Names(const std::string& dir) override {
    SF_ASSIGN_OR_RETURN(std::optional<SourceEntry> e, source_.Stat(dir));
    if (!e || e->type != SourceEntry::Type::kDir) return NotFoundError(dir + " is no directory");
    SF_ASSIGN_OR_RETURN(std::vector<SourceEntry> children, source_.List(dir, *e));
    std::vector<std::string> names;
    for (const SourceEntry& c : children) names.push_back(c.name);
    return names;
  }
  StatusOr<std::string> SubtreeDigest(const std::string&) override {
    return UnimplementedError("the worker copies, it does not key");
  }

 private:
  CopySource& source_;
};

// rm -rf of `name` in `parent_fd` (what an unpacked entry replaces).
Status RemoveTreeAt(int parent_fd, const std::string& name, const std::string& shown) {
  Status s = RemoveTree("/proc/self/fd/" + std::to_string(parent_fd) + "/" + name);
  if (!s.ok()) return s.Annotate("replacing " + shown);
  return Status();
}

struct Applier {
  CopySource& source;
  std::optional<std::pair<uid_t, gid_t>> chown;
  std::optional<FileModeChange> chmod;
  struct timespec default_mtime;
  // What to copy below a copied directory (--exclude, --parents); null: everything.
  const CopyFilter* filter = nullptr;
  // Unpacking an archive (tar's rules): an entry replaces whatever is in its place, a directory
  // too. A copy instead refuses to put a file over a directory, or a directory over a file.
  bool replace_dirs = false;
  // Files with several links already copied: (dev, ino) -> where the first copy went.
  struct Copied {
    UniqueFd dir;
    std::string name;
  };
  std::map<std::pair<dev_t, ino_t>, Copied> linked = {};

  // A destination directory that may not exist yet: made, with its source's metadata, only when
  // something is copied into it (--parents, an --exclude exception below an excluded directory).
  struct LazyDir {
    LazyDir* parent = nullptr;
    std::string name;
    std::string shown;  // its destination path, for messages ("" for the root)
    const SourceEntry* entry = nullptr;
    UniqueFd fd;           // open once it exists
    bool created = false;  // made here: its metadata is set when its contents are in
  };

  bool Selected(const std::string& rel) const { return !filter || filter->Selected(rel); }
  bool MayHaveSelectedBelow(const std::string& rel) const {
    return !filter || filter->MayHaveSelectedBelow(rel);
  }

  // The mode `e` gets: its own, or what --chmod makes of it.
  uint32_t Mode(const SourceEntry& e) const {
    return chmod ? chmod->Apply(e.mode, e.type == SourceEntry::Type::kDir) : e.mode;
  }

  Status Finish(int parent_fd, const std::string& name, const SourceEntry& e, int own_fd) {
    auto [uid, gid] = chown ? *chown : (e.owner ? *e.owner : std::make_pair(uid_t(0), gid_t(0)));
    struct timespec times[2];
    times[0] = times[1] = e.mtime ? *e.mtime : default_mtime;
    if (e.type == SourceEntry::Type::kSymlink) {
      if (::fchownat(parent_fd, name.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW) != 0) {
        return ErrnoError("chown " + name, errno);
      }
      if (::utimensat(parent_fd, name.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0) {
        return ErrnoError("set mtime of " + name, errno);
      }
      return Status();
    }
    // chown clears setuid/setgid, so the mode comes after it.
    if (::fchown(own_fd, uid, gid) != 0) return ErrnoError("chown " + name, errno);
    if (::fchmod(own_fd, Mode(e)) != 0) return ErrnoError("chmod " + name, errno);
    if (::futimens(own_fd, times) != 0) return ErrnoError("set mtime of " + name, errno);
    return Status();
  }

  // Makes room for a non-directory called `name`.
  Status Replace(int parent_fd, const std::string& name, const std::string& shown) {
    struct stat st;
    if (::fstatat(parent_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return Status();
    if (S_ISDIR(st.st_mode)) {
      if (replace_dirs) return RemoveTreeAt(parent_fd, name, shown);
      return FailedPreconditionError("cannot replace directory " + shown + " with a file");
    }
    if (::unlinkat(parent_fd, name.c_str(), 0) != 0) return ErrnoError("remove " + shown, errno);
    return Status();
  }

  // Makes (or keeps) directory `name` in `parent_fd` and opens it; *made says if it was made.
  StatusOr<UniqueFd> MakeDir(int parent_fd, const std::string& name, const std::string& shown,
                             bool* made) {
    struct stat st;
    *made = false;
    if (::fstatat(parent_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
      if (!S_ISDIR(st.st_mode)) {
        if (!replace_dirs) return FailedPreconditionError("cannot copy to non-directory " + shown);
        if (::unlinkat(parent_fd, name.c_str(), 0) != 0)
          return ErrnoError("remove " + shown, errno);
      }
    }
    if (::mkdirat(parent_fd, name.c_str(), 0700) == 0) {
      *made = true;
    } else if (errno != EEXIST) {
      return ErrnoError("mkdir " + shown, errno);
    }
    UniqueFd dir(
        ::openat(parent_fd, name.c_str(), O_DIRECTORY | O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!dir) return ErrnoError("open " + shown, errno);
    return dir;
  }

  StatusOr<int> Materialize(LazyDir& d) {
    if (d.fd) return d.fd.get();
    SF_ASSIGN_OR_RETURN(int parent_fd, Materialize(*d.parent));
    SF_ASSIGN_OR_RETURN(d.fd, MakeDir(parent_fd, d.name, d.shown, &d.created));
    // A directory that was there keeps its owner and gets its source's mode (BuildKit's
    // copyDirectoryOnly); one made here gets all its metadata in CopyContents, once filled.
    if (!d.created && ::fchmod(d.fd.get(), d.entry->mode) != 0) {
      return ErrnoError("chmod " + d.shown, errno);
    }
    return d.fd.get();
  }

  // Copies `e` (at `path` in the source) to `name` in `parent_fd`; `shown` is its destination,
  // `rel` its path below the directory the copy started at ("" for a source itself).
  Status Copy(const std::string& path, const SourceEntry& e, int parent_fd, const std::string& name,
              const std::string& shown, const std::string& rel) {
    // Names from a context tree come from a peer. Every call below takes `name` relative to
    // `parent_fd`, so "..", or "..\0" read by the kernel as "..", would climb out of the rootfs.
    if (!IsEntryName(name)) {
      return InvalidArgumentError("cannot copy " + QuoteName(path) + " from the " +
                                  source.Describe() + ": " + QuoteName(name) +
                                  " is not a valid file name");
    }
    switch (e.type) {
      case SourceEntry::Type::kDir: {
        bool made = false;
        SF_ASSIGN_OR_RETURN(UniqueFd dir, MakeDir(parent_fd, name, shown, &made));
        LazyDir into;
        into.shown = shown;
        into.fd = std::move(dir);
        SF_RETURN_IF_ERROR(CopyContents(path, e, into, rel));
        return Finish(parent_fd, name, e, into.fd.get());
      }
      case SourceEntry::Type::kFile: {
        SF_RETURN_IF_ERROR(Replace(parent_fd, name, shown));
        if (e.nlink > 1) {
          auto first = linked.find({e.dev, e.ino});
          if (first != linked.end()) {
            if (::linkat(first->second.dir.get(), first->second.name.c_str(), parent_fd,
                         name.c_str(), 0) != 0) {
              return ErrnoError("link " + shown, errno);
            }
            return Status();
          }
          UniqueFd dir(::fcntl(parent_fd, F_DUPFD_CLOEXEC, 0));
          if (!dir) return ErrnoError("dup", errno);
          linked.emplace(std::make_pair(e.dev, e.ino), Copied{std::move(dir), name});
        }
        UniqueFd out(::openat(parent_fd, name.c_str(),
                              O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
        if (!out) return ErrnoError("create " + shown, errno);
        SF_RETURN_IF_ERROR(source.WriteContent(path, e, out.get()));
        return Finish(parent_fd, name, e, out.get());
      }
      case SourceEntry::Type::kSymlink: {
        SF_RETURN_IF_ERROR(Replace(parent_fd, name, shown));
        if (::symlinkat(e.target.c_str(), parent_fd, name.c_str()) != 0) {
          return ErrnoError("symlink " + shown, errno);
        }
        return Finish(parent_fd, name, e, -1);
      }
      case SourceEntry::Type::kOther: {
        // A FIFO or a device node (BuildKit makes them), or a socket from a stage (the layer
        // leaves it out, as BuildKit's). Made, never opened.
        SF_RETURN_IF_ERROR(Replace(parent_fd, name, shown));
        if (::mknodat(parent_fd, name.c_str(), (e.raw_mode & S_IFMT) | 0600, e.rdev) != 0) {
          return ErrnoError("mknod " + shown, errno);
        }
        // fchown/fchmod do not take O_PATH descriptors; go through the parent.
        auto [uid, gid] =
            chown ? *chown : (e.owner ? *e.owner : std::make_pair(uid_t(0), gid_t(0)));
        if (::fchownat(parent_fd, name.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW) != 0) {
          return ErrnoError("chown " + shown, errno);
        }
        if (::fchmodat(parent_fd, name.c_str(), Mode(e), 0) != 0) {
          return ErrnoError("chmod " + shown, errno);
        }
        return Status();
      }
    }
    return Status();
  }

  // Copies the entries of directory `dir` (at `path`) that the filter selects into `into`;
  // `rel` is `path` below the directory the copy started at.
  Status CopyContents(const std::string& path, const SourceEntry& dir, LazyDir& into,
                      const std::string& rel) {
    SF_ASSIGN_OR_RETURN(std::vector<SourceEntry> children, source.List(path, dir));
    for (const auto& c : children) {
      const std::string child_rel = Join(rel, c.name), child_path = Join(path, c.name);
      const std::string shown = into.shown + "/" + c.name;
      if (Selected(child_rel)) {
        SF_ASSIGN_OR_RETURN(int fd, Materialize(into));
        SF_RETURN_IF_ERROR(Copy(child_path, c, fd, c.name, shown, child_rel));
      } else if (c.type == SourceEntry::Type::kDir && MayHaveSelectedBelow(child_rel)) {
        if (!IsEntryName(c.name)) {
          return InvalidArgumentError("cannot copy " + QuoteName(child_path) + " from the " +
                                      source.Describe() + ": " + QuoteName(c.name) +
                                      " is not a valid file name");
        }
        LazyDir sub;
        sub.parent = &into;
        sub.name = c.name;
        sub.shown = shown;
        sub.entry = &c;
        SF_RETURN_IF_ERROR(CopyContents(child_path, c, sub, child_rel));
        if (sub.created) SF_RETURN_IF_ERROR(Finish(into.fd.get(), c.name, c, sub.fd.get()));
      }
    }
    return Status();
  }
};

// --chown of a linked copy: numeric ids, "root" counting as 0 (BuildKit's parseUID); a name
// would need the image's /etc/passwd, which a linked copy does not read.
StatusOr<std::string> NumericOwner(const std::string& spec, const std::string& failed) {
  std::string out;
  size_t start = 0;
  for (int part = 0; start <= spec.size() && part < 2; ++part) {
    size_t colon = part == 0 ? spec.find(':', start) : std::string::npos;
    std::string id =
        spec.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
    if (id == "root") id = "0";
    if (id.empty() || id.find_first_not_of("0123456789") != std::string::npos) {
      return InvalidArgumentError(
          failed + "--link --chown=" + spec + ": \"" + id +
          "\" is not a numeric id, and a --link copy cannot look names up in the image's "
          "/etc/passwd or /etc/group (BuildKit: invalid user index); use numeric ids");
    }
    out += (part == 0 ? "" : ":") + id;
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  return out;
}

struct ArchiveDeleter {
  void operator()(struct archive* a) const { archive_read_free(a); }
};

// Whether the file at `path` is a tar, plain or compressed with gzip, bzip2, xz or zstd (told by
// its content, as docker's ADD does): its first header reads as a tar entry.
StatusOr<bool> IsTar(const std::string& path) {
  std::unique_ptr<struct archive, ArchiveDeleter> a(archive_read_new());
  if (!a) return InternalError("archive_read_new");
  for (auto filter : {archive_read_support_filter_gzip, archive_read_support_filter_bzip2,
                      archive_read_support_filter_xz, archive_read_support_filter_zstd,
                      archive_read_support_filter_none}) {
    filter(a.get());
  }
  archive_read_support_format_tar(a.get());
  // Opening picks the decompressor and the format: failing means the content is no archive,
  // and ADD copies it as it is (the file was just written by us, so it is readable).
  if (archive_read_open_filename(a.get(), path.c_str(), 1 << 16) != ARCHIVE_OK) return false;
  archive_entry* e;
  int r = archive_read_next_header(a.get(), &e);
  return r == ARCHIVE_OK || r == ARCHIVE_WARN;
}

// ADD's archive detection (Docker's: by content). Writes the file at `path` of `source` under
// `scratch`, decompresses it, and when the result is a tar unpacks it into a fresh directory whose
// path is returned; an empty string when the file is not an archive (ADD then copies it as is).
StatusOr<std::string> UnpackIfArchive(CopySource& source, const std::string& path,
                                      const SourceEntry& file, const std::string& scratch,
                                      int index, const ExtractOptions& options) {
  const std::string raw = scratch + "/archive-" + std::to_string(index);
  {
    UniqueFd out(::open(raw.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!out) return ErrnoError("create " + raw, errno);
    SF_RETURN_IF_ERROR(source.WriteContent(path, file, out.get()));
  }
  SF_ASSIGN_OR_RETURN(bool is_tar, IsTar(raw));
  if (!is_tar) return std::string();
  const std::string dir = raw + ".d";
  if (::mkdir(dir.c_str(), 0755) != 0) return ErrnoError("mkdir " + dir, errno);
  Status s = ExtractLayer(raw, dir, options);
  if (!s.ok()) return s.Annotate("unpacking " + path);
  return dir;
}

// One ApplyCopy: the rootfs, the destination and what every source shares.
class Copier {
 public:
  Copier(const CopyRequest& req, UniqueFd root, std::unique_ptr<CopySource> rootfs_tree)
      : req_(req),
        failed_(req.instruction + " failed: "),
        root_(std::move(root)),
        rootfs_tree_(std::move(rootfs_tree)),
        rootfs_view_(*rootfs_tree_) {
    std::string dest = req.dest;
    // An empty dest (an ARG that expands to nothing) is the workdir, as "." is.
    dest_is_dir_ = dest.empty() || dest.back() == '/' || dest == "." || dest.ends_with("/.");
    if (dest.empty() || dest[0] != '/')
      dest = (req.workdir.empty() ? "/" : req.workdir) + "/" + dest;
    dest_ = CleanSlashPath(dest).substr(1);
  }

  const std::string& failed() const { return failed_; }
  int root() const { return root_.get(); }

  void SetOwnership(std::optional<std::pair<uid_t, gid_t>> chown,
                    const std::optional<FileModeChange>& chmod) {
    dir_mode_ = chmod ? chmod->Apply(0755, true) : 0755;
    if (chown) std::tie(dir_uid_, dir_gid_) = *chown;
  }

  // BuildKit's copy.Copy of one match: the directory the destination names by its syntax (or
  // its parent) is made, then the destination is resolved in the rootfs; a file goes into it
  // when it is a directory, a directory's contents are merged into it.
  Status CopyMatch(Applier& a, const std::string& path, const SourceEntry& e) {
    // Resolved first, so that a dangling link to a directory gets its target made.
    SF_ASSIGN_OR_RETURN(std::string ensure,
                        ResolveInRoot(dest_is_dir_ ? dest_ : Parent(dest_), true, rootfs_view_));
    SF_RETURN_IF_ERROR(MakeDirs(ensure).status());
    SF_ASSIGN_OR_RETURN(std::string target, ResolveInRoot(dest_, true, rootfs_view_));
    SF_ASSIGN_OR_RETURN(std::optional<SourceEntry> existing, rootfs_tree_->Stat(target));
    if (e.type == SourceEntry::Type::kDir) {
      if (existing && existing->type != SourceEntry::Type::kDir) {
        return FailedPreconditionError(failed_ + "cannot copy directory " + QuoteName(path) +
                                       " to non-directory /" + target);
      }
      SF_ASSIGN_OR_RETURN(UniqueFd dir, MakeDirs(target));
      Applier::LazyDir into;
      into.shown = target.empty() ? "" : "/" + target;
      into.fd.reset(::openat(dir.get(), ".", O_DIRECTORY | O_RDONLY | O_CLOEXEC));
      if (!into.fd) return ErrnoError("open /" + target, errno);
      return a.CopyContents(path, e, into, "");
    }
    if (existing && existing->type == SourceEntry::Type::kDir) target = Join(target, e.name);
    SF_ASSIGN_OR_RETURN(UniqueFd parent, MakeDirs(Parent(target)));
    return a.Copy(path, e, parent.get(), Base(target), "/" + target, "");
  }

  // BuildKit's unpack: the destination (resolved in the rootfs) is made a directory, 0755, and
  // the unpacked tree `dir` goes into it with tar's rules.
  Status Unpack(const std::string& dir, const std::string& what) {
    SF_ASSIGN_OR_RETURN(auto tree, MakeDirSource(dir));
    SF_ASSIGN_OR_RETURN(std::optional<SourceEntry> top, tree->Stat(""));
    if (!top) return InternalError("unpacked archive vanished: " + dir);
    SF_ASSIGN_OR_RETURN(std::string target, ResolveInRoot(dest_, true, rootfs_view_));
    auto made = MakeDirsInRoot(root_.get(), target, 0755, dir_uid_, dir_gid_);
    if (!made.ok()) return made.status().Annotate(failed_ + "unpacking " + what);
    Applier unpack{*tree, std::nullopt, std::nullopt, {req_.default_mtime, 0}};
    unpack.replace_dirs = true;
    Applier::LazyDir into;
    into.shown = target.empty() ? "" : "/" + target;
    into.fd.reset(::openat(made->get(), ".", O_DIRECTORY | O_RDONLY | O_CLOEXEC));
    if (!into.fd) return ErrnoError("open /" + target, errno);
    return unpack.CopyContents("", *top, into, "");
  }

 private:
  StatusOr<UniqueFd> MakeDirs(const std::string& path) {
    auto made = MakeDirsInRoot(root_.get(), path, dir_mode_, dir_uid_, dir_gid_);
    if (!made.ok()) return made.status().Annotate(req_.instruction + " failed");
    return made;
  }

  const CopyRequest& req_;
  const std::string failed_;
  UniqueFd root_;
  std::unique_ptr<CopySource> rootfs_tree_;  // the rootfs as a source: to resolve the dest
  SourceView rootfs_view_;
  std::string dest_;  // clean, relative to the rootfs
  bool dest_is_dir_ = false;
  mode_t dir_mode_ = 0755;
  uid_t dir_uid_ = 0;
  gid_t dir_gid_ = 0;
};

}  // namespace

std::unique_ptr<CopySource> MakeContextSource(CacheClient& cache, const Digest& root) {
  return std::make_unique<ContextSource>(cache, root);
}

std::unique_ptr<CopySource> MakeRemoteSource(CacheClient& cache, std::vector<RemoteFile> files) {
  return std::make_unique<RemoteSource>(cache, std::move(files));
}

StatusOr<std::unique_ptr<CopySource>> MakeDirSource(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return ErrnoError("open " + dir, errno);
  return std::unique_ptr<CopySource>(std::make_unique<DirSource>(std::move(fd)));
}

bool LinkedCopy(bool link, const std::string& chmod) { return link && chmod.empty(); }

Status ApplyCopy(const CopyRequest& req, CopySource& source, const std::string& rootfs) {
  UniqueFd root(::open(rootfs.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root) return ErrnoError("open " + rootfs, errno);
  SF_ASSIGN_OR_RETURN(auto rootfs_tree, MakeDirSource(rootfs));
  Copier copier(req, std::move(root), std::move(rootfs_tree));
  const std::string& failed = copier.failed();
  if (req.sources.empty()) return InvalidArgumentError(failed + "no source files were specified");

  Applier apply{source, std::nullopt, std::nullopt, {req.default_mtime, 0}};
  if (!req.chown.empty()) {
    std::string spec = req.chown;
    if (req.link) {
      SF_ASSIGN_OR_RETURN(spec, NumericOwner(req.chown, failed));
    }
    SF_ASSIGN_OR_RETURN(ResolvedUser owner, ResolveOwner(copier.root(), spec));
    apply.chown = std::make_pair(owner.uid, owner.gid);
  }
  if (!req.chmod.empty()) {
    StatusOr<FileModeChange> mode = FileModeChange::Parse(req.chmod);
    if (!mode.ok()) return mode.status();
    apply.chmod = *mode;
  }
  copier.SetOwnership(apply.chown, apply.chmod);
  // A user's tar: entries named like whiteouts are files (BuildKit's ADD), not deletions.
  ExtractOptions unpack_options{.whiteouts = false, .rooted_names = true, .owner = std::nullopt};
  if (apply.chown) unpack_options.owner = *apply.chown;

  SourceView view(source);
  int archives = 0;
  for (const auto& src : req.sources) {
    // Hard links are kept within one source, not across sources (BuildKit copies each alone).
    apply.linked.clear();
    if (IsRemoteUrl(src)) {
      if (req.instruction != "ADD") return InvalidArgumentError(failed + "source can't be a URL");
      std::optional<SourceEntry> fetched;
      if (req.remote) {
        SF_ASSIGN_OR_RETURN(fetched, req.remote->Stat(src));
      }
      if (!fetched) {
        return FailedPreconditionError(failed + src + " was not fetched before the build");
      }
      if (req.extract_remote) {
        SF_ASSIGN_OR_RETURN(std::string unpacked,
                            UnpackIfArchive(*req.remote, src, *fetched, req.scratch_dir, archives++,
                                            unpack_options));
        if (!unpacked.empty()) {
          SF_RETURN_IF_ERROR(copier.Unpack(unpacked, src));
          continue;
        }
      }
      Applier remote{*req.remote, apply.chown, apply.chmod, {}};
      SF_RETURN_IF_ERROR(copier.CopyMatch(remote, src, *fetched));
      continue;
    }
    // --parents copies the source's root (the part before a "/./", else "/") keeping the rest.
    std::string from = src;
    std::optional<std::string> include;
    if (req.parents) {
      ParentsSource p = SplitParents(src);
      from = p.root;
      include = p.pattern;
    }
    StatusOr<CopyFilter> filter = CopyFilter::Make(include, req.excludes);
    if (!filter.ok()) return InvalidArgumentError(failed + filter.status().message());
    apply.filter = &*filter;
    SF_ASSIGN_OR_RETURN(std::vector<SourceMatch> matches, MatchSource(from, view));
    for (const SourceMatch& m : matches) {
      apply.linked.clear();
      SF_ASSIGN_OR_RETURN(std::optional<SourceEntry> entry, source.Stat(m.resolved));
      if (!entry) {
        if (!HasWildcards(from)) {
          return NotFoundError(failed + "file not found in " + source.Describe() + ": " + from);
        }
        return NotFoundError(failed + from + ": /" + m.path + " is a symbolic link to /" +
                             m.resolved + ", which is not in the " + source.Describe());
      }
      entry->name = Base(m.path);
      if (req.extract_archives && entry->type == SourceEntry::Type::kFile) {
        SF_ASSIGN_OR_RETURN(std::string unpacked,
                            UnpackIfArchive(source, m.resolved, *entry, req.scratch_dir, archives++,
                                            unpack_options));
        if (!unpacked.empty()) {
          SF_RETURN_IF_ERROR(copier.Unpack(unpacked, src));
          continue;
        }
      }
      SF_RETURN_IF_ERROR(copier.CopyMatch(apply, m.resolved, *entry));
    }
  }
  return Status();
}

StatusOr<std::string> ResolveSourceInDir(const std::string& dir, const std::string& path,
                                         bool may_be_missing) {
  SF_ASSIGN_OR_RETURN(std::unique_ptr<CopySource> tree, MakeDirSource(dir));
  SourceView view(*tree);
  SF_ASSIGN_OR_RETURN(std::string resolved, ResolveInRoot(path, true, view));
  if (may_be_missing) return resolved;
  SF_ASSIGN_OR_RETURN(std::optional<SourceTreeView::Node> node, view.Lookup(resolved));
  if (!node) return NotFoundError(path + ": not found");
  return resolved;
}

}  // namespace stagefarm::worker
