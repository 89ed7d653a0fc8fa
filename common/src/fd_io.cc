#include "stagefarm/common/fd_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>

namespace stagefarm {
namespace {

// Calls `write_some(bytes, written so far)` until all of `bytes` is written.
template <typename WriteSome>
Status WriteLoop(std::string_view bytes, std::string_view what, WriteSome write_some) {
  uint64_t done = 0;
  while (!bytes.empty()) {
    ssize_t n = write_some(bytes, done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError("write " + std::string(what), errno);
    bytes.remove_prefix(static_cast<size_t>(n));
    done += static_cast<uint64_t>(n);
  }
  return Status();
}

}  // namespace

Status WriteAll(int fd, std::string_view bytes, std::string_view what) {
  return WriteLoop(bytes, what,
                   [fd](std::string_view b, uint64_t) { return ::write(fd, b.data(), b.size()); });
}

Status PwriteAll(int fd, std::string_view bytes, uint64_t offset, std::string_view what) {
  return WriteLoop(bytes, what, [fd, offset](std::string_view b, uint64_t done) {
    return ::pwrite(fd, b.data(), b.size(), static_cast<off_t>(offset + done));
  });
}

StatusOr<UniqueFd> OpenRegularForReading(int path_fd, std::string_view what) {
  struct stat st;
  if (::fstat(path_fd, &st) != 0) return ErrnoError("stat " + std::string(what), errno);
  if (!S_ISREG(st.st_mode)) {
    return InvalidArgumentError(std::string(what) + " is not a regular file");
  }
  const std::string self = "/proc/self/fd/" + std::to_string(path_fd);
  for (;;) {
    UniqueFd fd(::open(self.c_str(), O_RDONLY | O_NOCTTY | O_CLOEXEC));
    if (fd) return fd;
    if (errno != EINTR) {
      return ErrnoError("open " + std::string(what) + " (as " + self + ")", errno);
    }
  }
}

}  // namespace stagefarm
