#include "stagefarm/worker/copy.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <map>

#include "stagefarm/common/clean_path.h"
#include "stagefarm/common/context_tree.h"
#include "stagefarm/common/fd_io.h"
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
      if (fd.status().code() == StatusCode::kNotFound) return std::optional<SourceEntry>();
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

bool HasWildcard(std::string_view s) { return s.find_first_of("*?[") != std::string_view::npos; }

// Cleans a source path lexically; ".." never climbs above the source root (Docker's rule).
std::vector<std::string> SourceComponents(std::string_view path) {
  std::vector<std::string> out;
  for (const auto& part : [&] {
         std::vector<std::string> parts;
         std::string clean = CleanRelative(path);
         size_t start = 0;
         while (start < clean.size()) {
           size_t end = clean.find('/', start);
           if (end == std::string::npos) end = clean.size();
           parts.push_back(clean.substr(start, end - start));
           start = end + 1;
         }
         return parts;
       }()) {
    if (part == "..") {
      if (!out.empty()) out.pop_back();
    } else {
      out.push_back(part);
    }
  }
  return out;
}

std::string Join(const std::string& a, const std::string& b) { return a.empty() ? b : a + "/" + b; }

struct Match {
  std::string path;
  SourceEntry entry;
  bool remote = false;  // an http(s) source: read from CopyRequest::remote, never unpacked
};

// Expands one source (with wildcards) to the entries it names, in path order.
StatusOr<std::vector<Match>> Expand(CopySource& source, const std::string& pattern) {
  std::vector<std::string> parts = SourceComponents(pattern);
  std::vector<std::string> paths = {""};
  for (const auto& part : parts) {
    std::vector<std::string> next;
    for (const auto& base : paths) {
      if (!HasWildcard(part)) {
        next.push_back(Join(base, part));
        continue;
      }
      SF_ASSIGN_OR_RETURN(std::optional<SourceEntry> dir, source.Stat(base));
      if (!dir || dir->type != SourceEntry::Type::kDir) continue;
      SF_ASSIGN_OR_RETURN(std::vector<SourceEntry> children, source.List(base, *dir));
      for (const auto& c : children) {
        if (::fnmatch(part.c_str(), c.name.c_str(), 0) == 0) next.push_back(Join(base, c.name));
      }
    }
    paths = std::move(next);
  }
  std::vector<Match> out;
  for (const auto& p : paths) {
    SF_ASSIGN_OR_RETURN(std::optional<SourceEntry> e, source.Stat(p));
    if (!e) continue;
    // A symlink named as a source (or matched by a wildcard) is followed inside the source root,
    // as BuildKit's COPY does (FollowSymlinks): its target is copied under the link's name.
    // Links inside a copied directory stay links.
    std::string path = p;
    const std::string name = p.substr(p.rfind('/') + 1);
    for (int hops = 0; e && e->type == SourceEntry::Type::kSymlink; ++hops) {
      if (hops == 40) return InvalidArgumentError(p + ": too many levels of symbolic links");
      size_t slash = path.rfind('/');
      std::string base = e->target.starts_with("/") || slash == std::string::npos
                             ? std::string()
                             : path.substr(0, slash);
      path = "";
      for (const auto& part : SourceComponents(Join(base, e->target))) path = Join(path, part);
      SF_ASSIGN_OR_RETURN(e, source.Stat(path));
    }
    if (!e) return NotFoundError(p + ": symbolic link to a missing file");
    e->name = name;
    out.push_back({path, std::move(*e)});
  }
  return out;
}

struct Applier {
  CopySource& source;
  std::optional<std::pair<uid_t, gid_t>> chown;
  std::optional<uint32_t> chmod;
  struct timespec default_mtime;
  // Files with several links already copied: (dev, ino) -> where the first copy went.
  struct Copied {
    UniqueFd dir;
    std::string name;
  };
  std::map<std::pair<dev_t, ino_t>, Copied> linked = {};

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
    if (::fchmod(own_fd, chmod ? *chmod : e.mode) != 0) return ErrnoError("chmod " + name, errno);
    if (::futimens(own_fd, times) != 0) return ErrnoError("set mtime of " + name, errno);
    return Status();
  }

  // Makes room for a non-directory called `name`; a directory there is an error.
  Status Replace(int parent_fd, const std::string& name, const std::string& shown) {
    struct stat st;
    if (::fstatat(parent_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return Status();
    if (S_ISDIR(st.st_mode)) {
      return FailedPreconditionError("cannot replace directory " + shown + " with a file");
    }
    if (::unlinkat(parent_fd, name.c_str(), 0) != 0) return ErrnoError("remove " + shown, errno);
    return Status();
  }

  // Copies `e` (at `path` in the source) to `name` in `parent_fd`; `shown` is its destination.
  Status Copy(const std::string& path, const SourceEntry& e, int parent_fd, const std::string& name,
              const std::string& shown) {
    // Names from a context tree come from a peer. Every call below takes `name` relative to
    // `parent_fd`, so "..", or "..\0" read by the kernel as "..", would climb out of the rootfs.
    if (!IsEntryName(name)) {
      return InvalidArgumentError("cannot copy " + QuoteName(path) + " from the " +
                                  source.Describe() + ": " + QuoteName(name) +
                                  " is not a valid file name");
    }
    switch (e.type) {
      case SourceEntry::Type::kDir: {
        struct stat st;
        if (::fstatat(parent_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
            !S_ISDIR(st.st_mode)) {
          if (::unlinkat(parent_fd, name.c_str(), 0) != 0)
            return ErrnoError("remove " + shown, errno);
        }
        if (::mkdirat(parent_fd, name.c_str(), 0700) != 0 && errno != EEXIST) {
          return ErrnoError("mkdir " + shown, errno);
        }
        UniqueFd dir(
            ::openat(parent_fd, name.c_str(), O_DIRECTORY | O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
        if (!dir) return ErrnoError("open " + shown, errno);
        SF_RETURN_IF_ERROR(CopyContents(path, e, dir.get(), shown));
        return Finish(parent_fd, name, e, dir.get());
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
        SF_RETURN_IF_ERROR(Replace(parent_fd, name, shown));
        if (::mknodat(parent_fd, name.c_str(), (e.raw_mode & S_IFMT) | 0600, e.rdev) != 0) {
          return ErrnoError("mknod " + shown, errno);
        }
        UniqueFd node(::openat(parent_fd, name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
        if (!node) return ErrnoError("open " + shown, errno);
        // fchown/fchmod do not take O_PATH descriptors; go through the parent.
        auto [uid, gid] =
            chown ? *chown : (e.owner ? *e.owner : std::make_pair(uid_t(0), gid_t(0)));
        if (::fchownat(parent_fd, name.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW) != 0) {
          return ErrnoError("chown " + shown, errno);
        }
        if (::fchmodat(parent_fd, name.c_str(), chmod ? *chmod : e.mode, 0) != 0) {
          return ErrnoError("chmod " + shown, errno);
        }
        return Status();
      }
    }
    return Status();
  }

  Status CopyContents(const std::string& path, const SourceEntry& dir, int dest_fd,
                      const std::string& shown) {
    SF_ASSIGN_OR_RETURN(std::vector<SourceEntry> children, source.List(path, dir));
    for (const auto& c : children) {
      SF_RETURN_IF_ERROR(Copy(Join(path, c.name), c, dest_fd, c.name, shown + "/" + c.name));
    }
    return Status();
  }
};

StatusOr<uint32_t> ParseChmod(const std::string& text) {
  uint32_t mode = 0;
  if (text.empty() || text.size() > 4) return InvalidArgumentError("invalid --chmod=" + text);
  for (char c : text) {
    if (c < '0' || c > '7') return InvalidArgumentError("invalid --chmod=" + text + ": octal only");
    mode = mode * 8 + static_cast<uint32_t>(c - '0');
  }
  return mode;
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
                                      int index) {
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
  // A user's tar: entries named like whiteouts are files (BuildKit's ADD), not deletions.
  Status s = ExtractLayer(raw, dir, ExtractOptions{.whiteouts = false});
  if (!s.ok()) return s.Annotate("unpacking " + path);
  return dir;
}

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

Status ApplyCopy(const CopyRequest& req, CopySource& source, const std::string& rootfs) {
  const std::string failed = req.instruction + " failed: ";
  UniqueFd root(::open(rootfs.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root) return ErrnoError("open " + rootfs, errno);

  Applier apply{source, std::nullopt, std::nullopt, {req.default_mtime, 0}};
  if (!req.chown.empty()) {
    SF_ASSIGN_OR_RETURN(ResolvedUser owner, ResolveOwner(root.get(), req.chown));
    apply.chown = std::make_pair(owner.uid, owner.gid);
  }
  if (!req.chmod.empty()) {
    SF_ASSIGN_OR_RETURN(uint32_t mode, ParseChmod(req.chmod));
    apply.chmod = mode;
  }
  auto [dir_uid, dir_gid] = apply.chown ? *apply.chown : std::make_pair(uid_t(0), gid_t(0));

  std::vector<Match> matches;
  for (const auto& src : req.sources) {
    if (IsRemoteUrl(src)) {
      if (req.instruction != "ADD") return InvalidArgumentError(failed + "source can't be a URL");
      std::optional<SourceEntry> fetched;
      if (req.remote) {
        SF_ASSIGN_OR_RETURN(fetched, req.remote->Stat(src));
      }
      if (!fetched) {
        return FailedPreconditionError(failed + src + " was not fetched before the build");
      }
      matches.push_back({src, std::move(*fetched), /*remote=*/true});
      continue;
    }
    SF_ASSIGN_OR_RETURN(std::vector<Match> found, Expand(source, src));
    if (found.empty()) {
      return NotFoundError(failed + "file not found in " + source.Describe() + ": " + src);
    }
    for (auto& m : found) matches.push_back(std::move(m));
  }
  if (matches.empty()) return InvalidArgumentError(failed + "no source files were specified");

  std::string dest = req.dest;
  bool dest_is_dir = !dest.empty() && (dest.back() == '/' || dest == "." ||
                                       (dest.size() >= 2 && dest.ends_with("/.")));
  if (dest.empty() || dest[0] != '/') dest = (req.workdir.empty() ? "/" : req.workdir) + "/" + dest;
  std::string dest_clean = CleanRelative(dest);
  if (!dest_is_dir) {
    auto existing = OpenInRoot(root.get(), dest_clean, O_PATH | O_DIRECTORY);
    dest_is_dir = existing.ok() || dest_clean.empty();
  }
  if (matches.size() > 1 && !dest_is_dir) {
    return InvalidArgumentError(failed + "when using " + req.instruction +
                                " with more than one source file, the destination must be a "
                                "directory and end with a /");
  }

  int archives = 0;
  std::optional<Applier> remote_apply;
  if (req.remote) remote_apply.emplace(Applier{*req.remote, apply.chown, apply.chmod, {}});
  for (const auto& m : matches) {
    // Hard links are kept within one source, not across sources (BuildKit copies each alone).
    apply.linked.clear();
    std::string shown_base = "/" + dest_clean;
    if (req.extract_archives && !m.remote && m.entry.type == SourceEntry::Type::kFile) {
      SF_ASSIGN_OR_RETURN(std::string unpacked,
                          UnpackIfArchive(source, m.path, m.entry, req.scratch_dir, archives++));
      if (!unpacked.empty()) {
        SF_ASSIGN_OR_RETURN(auto tree, MakeDirSource(unpacked));
        SF_ASSIGN_OR_RETURN(std::optional<SourceEntry> top, tree->Stat(""));
        if (!top) return InternalError("unpacked archive vanished: " + unpacked);
        SF_ASSIGN_OR_RETURN(UniqueFd dir,
                            MakeDirsInRoot(root.get(), dest_clean, 0755, dir_uid, dir_gid));
        UniqueFd dir_rw(::openat(dir.get(), ".", O_DIRECTORY | O_RDONLY | O_CLOEXEC));
        if (!dir_rw) return ErrnoError("open " + shown_base, errno);
        // Entries keep the tar's owners: docker applies --chown to the destination it creates,
        // not to what it unpacks (tests/golden/fs-cases/add-tar).
        Applier unpack{*tree, std::nullopt, apply.chmod, apply.default_mtime};
        SF_RETURN_IF_ERROR(
            unpack.CopyContents("", *top, dir_rw.get(), shown_base == "/" ? "" : shown_base));
        continue;
      }
    }
    if (m.entry.type == SourceEntry::Type::kDir) {
      Applier& from = m.remote ? *remote_apply : apply;
      // A git checkout is copied as its root directory (BuildKit's ADD): a new dest takes the
      // root's mode and time, and --chown and --chmod; an existing directory keeps its own.
      if (m.remote && !dest_clean.empty() &&
          !OpenInRoot(root.get(), dest_clean, O_PATH | O_DIRECTORY).ok()) {
        size_t slash = dest_clean.rfind('/');
        std::string parent = slash == std::string::npos ? "" : dest_clean.substr(0, slash);
        SF_ASSIGN_OR_RETURN(UniqueFd parent_fd,
                            MakeDirsInRoot(root.get(), parent, 0755, dir_uid, dir_gid));
        SF_RETURN_IF_ERROR(from.Copy(m.path, m.entry, parent_fd.get(),
                                     dest_clean.substr(slash + 1), shown_base));
        continue;
      }
      // "COPY dir /x" copies dir's contents into /x.
      SF_ASSIGN_OR_RETURN(UniqueFd dir,
                          MakeDirsInRoot(root.get(), dest_clean, 0755, dir_uid, dir_gid));
      UniqueFd dir_rw(::openat(dir.get(), ".", O_DIRECTORY | O_RDONLY | O_CLOEXEC));
      if (!dir_rw) return ErrnoError("open " + shown_base, errno);
      SF_RETURN_IF_ERROR(
          from.CopyContents(m.path, m.entry, dir_rw.get(), shown_base == "/" ? "" : shown_base));
      continue;
    }
    std::string parent, name;
    if (dest_is_dir) {
      parent = dest_clean;
      name = m.entry.name.empty() ? m.path.substr(m.path.rfind('/') + 1) : m.entry.name;
    } else {
      size_t slash = dest_clean.rfind('/');
      parent = slash == std::string::npos ? "" : dest_clean.substr(0, slash);
      name = dest_clean.substr(slash == std::string::npos ? 0 : slash + 1);
    }
    SF_ASSIGN_OR_RETURN(UniqueFd parent_fd,
                        MakeDirsInRoot(root.get(), parent, 0755, dir_uid, dir_gid));
    std::string shown = "/" + Join(parent, name);
    SF_RETURN_IF_ERROR(
        (m.remote ? *remote_apply : apply).Copy(m.path, m.entry, parent_fd.get(), name, shown));
  }
  return Status();
}

}  // namespace stagefarm::worker
