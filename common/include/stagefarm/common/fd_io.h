// Whole writes to a file descriptor: short writes are continued and EINTR retried.
#pragma once

#include <cstdint>
#include <string_view>

#include "stagefarm/common/status.h"

namespace stagefarm {

// Writes all of `bytes` at the file offset; `what` names the file in errors (ErrnoError codes:
// ENOSPC is ResourceExhausted).
Status WriteAll(int fd, std::string_view bytes, std::string_view what);
// Writes all of `bytes` at `offset`, leaving the file offset alone.
Status PwriteAll(int fd, std::string_view bytes, uint64_t offset, std::string_view what);

}  // namespace stagefarm
