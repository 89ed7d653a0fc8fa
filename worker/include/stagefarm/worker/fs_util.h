// Filesystem helpers for the worker: temp dirs that remove themselves, and path resolution
// confined to a rootfs (an image's absolute symlinks must never lead to the host's files).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "stagefarm/common/status.h"
#include "stagefarm/common/unique_fd.h"

namespace stagefarm::worker {

// A directory that is removed (recursively, never crossing into a mount) on destruction.
// Move-only. Unmount anything mounted inside before it is destroyed.
class TempDir {
 public:
  TempDir() = default;
  // Makes "<parent>/<prefix>XXXXXX" (parent is created when missing).
  static StatusOr<TempDir> Make(const std::string& parent, const std::string& prefix);
  ~TempDir();
  TempDir(TempDir&& o) noexcept : path_(std::exchange(o.path_, {})) {}
  TempDir& operator=(TempDir&& o) noexcept;
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // Stops owning the directory (it stays on disk) and returns its path.
  std::string Release() { return std::exchange(path_, {}); }

 private:
  explicit TempDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

// rm -rf that stays on the filesystem of `path` (never descends into mount points).
// A missing path is OK.
Status RemoveTree(const std::string& path);
// mkdir -p on the host.
Status MakeDirs(const std::string& path, mode_t mode = 0755);
// Writes `content` to `path` (created or truncated) with `mode`.
Status WriteFile(const std::string& path, std::string_view content, mode_t mode = 0644);
StatusOr<std::string> ReadFile(const std::string& path, uint64_t max_bytes = 16 << 20);

// Opens `path` (absolute or relative; resolved as if `root_fd` were "/": ".." and symlinks cannot
// leave it) with openat2(RESOLVE_IN_ROOT). `flags` as for open(2); O_CLOEXEC is added.
StatusOr<UniqueFd> OpenInRoot(int root_fd, std::string_view path, int flags, mode_t mode = 0);
// Reads a whole file inside a rootfs (symlinks followed inside it); NotFound if it does not
// exist, InvalidArgument if it is not a regular file (a FIFO or a device node is never opened),
// ResourceExhausted if it is larger than `max_bytes`.
StatusOr<std::string> ReadFileInRoot(int root_fd, std::string_view path,
                                     uint64_t max_bytes = 16 << 20);
// mkdir -p inside a rootfs (symlinks on the way are followed inside the root). Directories it
// creates get `mode` and `uid`:`gid`. Returns an O_PATH descriptor of the final directory;
// FailedPrecondition if a component exists and is not a directory.
StatusOr<UniqueFd> MakeDirsInRoot(int root_fd, std::string_view path, mode_t mode, uid_t uid,
                                  gid_t gid);

// "a//b/./c/" -> "a/b/c"; ".." components are kept (they are resolved inside a root later).
std::string CleanRelative(std::string_view path);

}  // namespace stagefarm::worker
