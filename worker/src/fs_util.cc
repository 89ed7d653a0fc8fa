#include "stagefarm/worker/fs_util.h"

#include <fcntl.h>
#include <ftw.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include "stagefarm/common/fd_io.h"

namespace stagefarm::worker {

StatusOr<TempDir> TempDir::Make(const std::string& parent, const std::string& prefix) {
  SF_RETURN_IF_ERROR(MakeDirs(parent, 0700));
  std::string templ = parent + "/" + prefix + "XXXXXX";
  if (::mkdtemp(templ.data()) == nullptr) return ErrnoError("mkdtemp " + templ, errno);
  return TempDir(std::move(templ));
}

TempDir::~TempDir() {
  if (path_.empty()) return;
  Status s = RemoveTree(path_);
  // A destructor cannot report; a leftover dir under <root>/steps is harmless and visible.
  if (!s.ok())
    std::fprintf(stderr, "stagefarm: removing %s: %s\n", path_.c_str(), s.ToString().c_str());
}

TempDir& TempDir::operator=(TempDir&& o) noexcept {
  if (this != &o) {
    TempDir old(std::move(*this));
    path_ = std::exchange(o.path_, {});
  }
  return *this;
}

namespace {
int RemoveEntry(const char* path, const struct stat*, int type, struct FTW*) {
  int rc = (type == FTW_DP || type == FTW_D) ? ::rmdir(path) : ::unlink(path);
  if (rc != 0 && errno != ENOENT) return errno;
  return 0;
}
}  // namespace

Status RemoveTree(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return Status();
    return ErrnoError("lstat " + path, errno);
  }
  // nftw is not thread-safe only through its callback state; RemoveEntry keeps none.
  int rc = ::nftw(path.c_str(), RemoveEntry, 32, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
  if (rc == -1) return ErrnoError("remove tree " + path, errno);
  if (rc != 0) return ErrnoError("remove tree " + path, rc);
  return Status();
}

Status MakeDirs(const std::string& path, mode_t mode) {
  if (path.empty()) return Status();
  for (size_t pos = 1; pos <= path.size(); ++pos) {
    if (pos != path.size() && path[pos] != '/') continue;
    std::string part = path.substr(0, pos);
    if (::mkdir(part.c_str(), mode) != 0 && errno != EEXIST)
      return ErrnoError("mkdir " + part, errno);
  }
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return ErrnoError("stat " + path, errno);
  if (!S_ISDIR(st.st_mode)) return FailedPreconditionError(path + " exists and is not a directory");
  return Status();
}

Status WriteFile(const std::string& path, std::string_view content, mode_t mode) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
  if (!fd) return ErrnoError("open " + path, errno);
  while (!content.empty()) {
    ssize_t n = ::write(fd.get(), content.data(), content.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("write " + path, errno);
    }
    content.remove_prefix(static_cast<size_t>(n));
  }
  if (::fchmod(fd.get(), mode) != 0) return ErrnoError("chmod " + path, errno);
  return Status();
}

namespace {
StatusOr<std::string> ReadAll(int fd, const std::string& what, uint64_t max_bytes) {
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("read " + what, errno);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > max_bytes) return ResourceExhaustedError(what + " is larger than allowed");
  }
  return out;
}
}  // namespace

StatusOr<std::string> ReadFile(const std::string& path, uint64_t max_bytes) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT) return NotFoundError(path + " does not exist");
    return ErrnoError("open " + path, errno);
  }
  return ReadAll(fd.get(), path, max_bytes);
}

StatusOr<UniqueFd> OpenInRoot(int root_fd, std::string_view path, int flags, mode_t mode) {
  const std::string rel = CleanRelative(path);
  const char* name = rel.empty() ? "." : rel.c_str();
  struct open_how how;
  std::memset(&how, 0, sizeof how);
  how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
  how.mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  for (;;) {
    long fd = ::syscall(SYS_openat2, root_fd, name, &how, sizeof how);
    if (fd >= 0) return UniqueFd(static_cast<int>(fd));
    int err = errno;
    if (err == EINTR || err == EAGAIN) continue;
    if (err == ENOENT) return NotFoundError("/" + rel + " does not exist in the rootfs");
    if (err == ENOTDIR) {
      return FailedPreconditionError("/" + rel + ": a component is not a directory in the rootfs");
    }
    return ErrnoError("open /" + rel + " in the rootfs", err);
  }
}

StatusOr<std::string> ReadFileInRoot(int root_fd, std::string_view path, uint64_t max_bytes) {
  // The rootfs is the build's: a FIFO there would block open(2) for ever, a device node would be
  // the host's. Only a regular file is opened.
  SF_ASSIGN_OR_RETURN(UniqueFd found, OpenInRoot(root_fd, path, O_PATH));
  const std::string shown = "/" + CleanRelative(path);
  SF_ASSIGN_OR_RETURN(UniqueFd fd, OpenRegularForReading(found.get(), shown + " in the rootfs"));
  return ReadAll(fd.get(), shown, max_bytes);
}

StatusOr<UniqueFd> MakeDirsInRoot(int root_fd, std::string_view path, mode_t mode, uid_t uid,
                                  gid_t gid) {
  std::string rel = CleanRelative(path);
  std::vector<std::string> parts;
  for (size_t start = 0; start < rel.size();) {
    size_t end = rel.find('/', start);
    if (end == std::string::npos) end = rel.size();
    parts.push_back(rel.substr(start, end - start));
    start = end + 1;
  }
  SF_ASSIGN_OR_RETURN(UniqueFd cur, OpenInRoot(root_fd, ".", O_PATH | O_DIRECTORY));
  std::string so_far;
  for (const std::string& part : parts) {
    std::string parent_path = so_far.empty() ? "." : so_far;
    if (!so_far.empty()) so_far += '/';
    so_far += part;
    auto next = OpenInRoot(root_fd, so_far, O_PATH | O_DIRECTORY);
    if (next.ok()) {
      cur = std::move(*next);
      continue;
    }
    if (next.status().code() == StatusCode::kFailedPrecondition) {
      return FailedPreconditionError("/" + so_far + " exists and is not a directory");
    }
    if (next.status().code() != StatusCode::kNotFound) return next.status();
    // The parent resolved fine, so `part` is absent (or a dangling symlink) in `cur`: make it
    // there. A dangling symlink makes mkdirat fail with EEXIST, reported as such.
    if (part == "..") return NotFoundError("/" + so_far + " does not exist in the rootfs");
    SF_ASSIGN_OR_RETURN(UniqueFd parent, OpenInRoot(root_fd, parent_path, O_DIRECTORY | O_RDONLY));
    if (::mkdirat(parent.get(), part.c_str(), mode) != 0 && errno != EEXIST) {
      return ErrnoError("mkdir /" + so_far, errno);
    }
    UniqueFd made(
        ::openat(parent.get(), part.c_str(), O_DIRECTORY | O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!made) return ErrnoError("open /" + so_far, errno);
    if (::fchown(made.get(), uid, gid) != 0) return ErrnoError("chown /" + so_far, errno);
    if (::fchmod(made.get(), mode) != 0) return ErrnoError("chmod /" + so_far, errno);
    cur = std::move(made);
  }
  return cur;
}

std::string CleanRelative(std::string_view path) {
  std::string out;
  size_t i = 0;
  while (i < path.size()) {
    size_t end = path.find('/', i);
    if (end == std::string_view::npos) end = path.size();
    std::string_view part = path.substr(i, end - i);
    if (!part.empty() && part != ".") {
      if (!out.empty()) out += '/';
      out.append(part);
    }
    i = end + 1;
  }
  return out;
}

}  // namespace stagefarm::worker
