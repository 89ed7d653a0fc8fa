// Content digests: "sha256:<hex>" plus the size of the content, computed with OpenSSL EVP while
// data streams.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "stagefarm/common/status.h"

namespace stagefarm {

struct Digest {
  std::string hex;    // 64 lowercase hex characters; empty for "no digest"
  uint64_t size = 0;  // bytes of the content

  bool empty() const { return hex.empty(); }
  // "sha256:<hex>"
  std::string str() const { return "sha256:" + hex; }
  // Parses "sha256:<hex>" (size is not part of the text form and must be given separately).
  static StatusOr<Digest> Parse(std::string_view text, uint64_t size = 0);
  // The same from the 64 hex characters alone (no "sha256:" prefix), without a temporary string:
  // what decoders of many digests use.
  static StatusOr<Digest> FromHex(std::string_view hex, uint64_t size = 0);
  // The digest of a whole in-memory buffer.
  static Digest Of(std::string_view bytes);
  // The digest of a file's content, streamed.
  static StatusOr<Digest> OfFile(const std::string& path);

  friend bool operator==(const Digest& a, const Digest& b) {
    return a.hex == b.hex && a.size == b.size;
  }
  friend bool operator<(const Digest& a, const Digest& b) {
    return a.hex != b.hex ? a.hex < b.hex : a.size < b.size;
  }
};

// Streaming SHA-256. Not thread-safe; one per stream.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(std::string_view bytes);
  // Ends the stream; the hasher must not be used afterwards.
  Digest Finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  uint64_t size_ = 0;
};

// Lowercase hex of arbitrary bytes.
std::string HexEncode(std::string_view bytes);

}  // namespace stagefarm

template <>
struct std::hash<stagefarm::Digest> {
  size_t operator()(const stagefarm::Digest& d) const { return std::hash<std::string>()(d.hex); }
};
