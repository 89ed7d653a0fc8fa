#include "stagefarm/common/cache_client.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "stagefarm/common/unique_fd.h"

namespace stagefarm {

ByteSource SourceOf(std::string_view bytes) {
  return [bytes, pos = size_t{0}](char* buf, size_t cap) mutable -> StatusOr<size_t> {
    const size_t n = std::min(cap, bytes.size() - pos);
    std::copy_n(bytes.data() + pos, n, buf);
    pos += n;
    return n;
  };
}

Status CacheClient::PutBytes(std::string_view bytes, Digest* digest_out) {
  Digest d = Digest::Of(bytes);
  if (digest_out) *digest_out = d;
  return Put(d, SourceOf(bytes));
}

Status CacheClient::PutFile(const std::string& path, const Digest& digest) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return ErrnoError("open " + path, errno);
  return Put(digest, [&](char* buf, size_t cap) -> StatusOr<size_t> {
    for (;;) {
      ssize_t n = ::read(fd.get(), buf, cap);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return ErrnoError("read " + path, errno);
      return static_cast<size_t>(n);
    }
  });
}

StatusOr<std::string> CacheClient::ReadBytes(const Digest& digest, uint64_t max_bytes) {
  if (digest.size > max_bytes) {
    return ResourceExhaustedError("blob " + digest.str() + " is " + std::to_string(digest.size) +
                                  " bytes, more than the " + std::to_string(max_bytes) +
                                  " allowed in memory");
  }
  std::string out;
  Sha256 h;
  SF_RETURN_IF_ERROR(Read(digest, 0, 0, [&](std::string_view b) -> Status {
    if (out.size() + b.size() > max_bytes) return ResourceExhaustedError("blob too large");
    out.append(b);
    h.Update(b);
    return Status();
  }));
  if (h.Finish().hex != digest.hex) return DataLossError("blob " + digest.str() + " is corrupt");
  return out;
}

Status CacheClient::ReadToFile(const Digest& digest, const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd) return ErrnoError("open " + path, errno);
  Sha256 h;
  SF_RETURN_IF_ERROR(Read(digest, 0, 0, [&](std::string_view b) -> Status {
    h.Update(b);
    while (!b.empty()) {
      ssize_t n = ::write(fd.get(), b.data(), b.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return ErrnoError("write " + path, errno);
      b.remove_prefix(static_cast<size_t>(n));
    }
    return Status();
  }));
  if (h.Finish().hex != digest.hex) return DataLossError("blob " + digest.str() + " is corrupt");
  return Status();
}

}  // namespace stagefarm
