#include "stagefarm/common/digest.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <cerrno>

#include "stagefarm/common/unique_fd.h"

namespace stagefarm {

struct Sha256::Impl {
  EVP_MD_CTX* ctx = nullptr;
};

Sha256::Sha256() : impl_(std::make_unique<Impl>()) {
  impl_->ctx = EVP_MD_CTX_new();
  SF_CHECK(impl_->ctx != nullptr);
  SF_CHECK(EVP_DigestInit_ex(impl_->ctx, EVP_sha256(), nullptr) == 1);
}

Sha256::~Sha256() { EVP_MD_CTX_free(impl_->ctx); }

void Sha256::Update(std::string_view bytes) {
  SF_CHECK(EVP_DigestUpdate(impl_->ctx, bytes.data(), bytes.size()) == 1);
  size_ += bytes.size();
}

Digest Sha256::Finish() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  SF_CHECK(EVP_DigestFinal_ex(impl_->ctx, md, &len) == 1);
  return Digest{HexEncode(std::string_view(reinterpret_cast<char*>(md), len)), size_};
}

std::string HexEncode(std::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

StatusOr<Digest> Digest::Parse(std::string_view text, uint64_t size) {
  constexpr std::string_view kPrefix = "sha256:";
  if (text.substr(0, kPrefix.size()) != kPrefix) {
    return InvalidArgumentError("digest \"" + std::string(text) + "\" does not start with sha256:");
  }
  return FromHex(text.substr(kPrefix.size()), size);
}

StatusOr<Digest> Digest::FromHex(std::string_view hex, uint64_t size) {
  if (hex.size() != 64) {
    return InvalidArgumentError("digest \"sha256:" + std::string(hex) +
                                "\" is not 64 hex characters");
  }
  // Without a branch per character, so that the compiler checks many at once: FindMissing
  // decodes 10,000 digests per request.
  bool hex_only = true;
  for (char c : hex) {
    const auto u = static_cast<unsigned char>(c);
    hex_only &= static_cast<unsigned char>(u - '0') < 10 || static_cast<unsigned char>(u - 'a') < 6;
  }
  if (!hex_only) {
    return InvalidArgumentError("digest \"sha256:" + std::string(hex) + "\" is not lowercase hex");
  }
  return Digest{std::string(hex), size};
}

Digest Digest::Of(std::string_view bytes) {
  Sha256 h;
  h.Update(bytes);
  return h.Finish();
}

StatusOr<Digest> Digest::OfFile(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return ErrnoError("open " + path, errno);
  Sha256 h;
  std::string buf(1 << 20, '\0');
  for (;;) {
    ssize_t n = ::read(fd.get(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError("read " + path, errno);
    if (n == 0) break;
    h.Update(std::string_view(buf.data(), static_cast<size_t>(n)));
  }
  return h.Finish();
}

}  // namespace stagefarm
