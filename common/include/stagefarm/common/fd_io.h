// Whole writes to a file descriptor (short writes are continued and EINTR retried), and the safe
// opening of a file found in a tree that someone else controls.
#pragma once

#include <cstdint>
#include <string_view>

#include "stagefarm/common/status.h"
#include "stagefarm/common/unique_fd.h"

namespace stagefarm {

// Writes all of `bytes` at the file offset; `what` names the file in errors (ErrnoError codes:
// ENOSPC is ResourceExhausted).
Status WriteAll(int fd, std::string_view bytes, std::string_view what);
// Writes all of `bytes` at `offset`, leaving the file offset alone.
Status PwriteAll(int fd, std::string_view bytes, uint64_t offset, std::string_view what);

// Opens for reading the file that `path_fd` refers to (an O_PATH descriptor, say from a lookup
// confined to a root) if it is a regular file; `what` names it in errors. Anything else is
// refused (InvalidArgument) before it is ever opened: opening a FIFO waits for a writer, and
// opening a device node reaches the host's device. The file is reopened through /proc/self/fd,
// which names the inode just checked, not a path that could since lead elsewhere.
StatusOr<UniqueFd> OpenRegularForReading(int path_fd, std::string_view what);

}  // namespace stagefarm
