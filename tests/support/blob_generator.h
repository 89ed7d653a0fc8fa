// Large blobs for tests and benchmarks without holding them in memory: the bytes are a function of
// (seed, offset), generated on demand as a ByteSource. One random 1 MiB pattern is shared; the
// seed and index of every 64 KiB block are written over its first 16 bytes, so blobs of different
// seeds never share content (no dedup) and generating costs about a memcpy.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>

#include "stagefarm/common/digest.h"
#include "stagefarm/common/status.h"

namespace stagefarm::testing {

class BlobGenerator {
 public:
  BlobGenerator(uint64_t seed, uint64_t size) : seed_(seed), size_(size) {}

  // The ByteSource contract: fills up to `cap` bytes, 0 at the end. One copy from the pattern,
  // as the benchmark client shares the machine's cores with the server it measures.
  StatusOr<size_t> operator()(char* buf, size_t cap) {
    const std::string& pattern = Pattern();
    size_t n = static_cast<size_t>(std::min<uint64_t>(cap, size_ - pos_));
    for (size_t done = 0; done < n;) {
      const uint64_t block = (pos_ + done) / kBlock;
      const size_t in_block = static_cast<size_t>((pos_ + done) % kBlock);
      const size_t take = std::min<size_t>(n - done, kBlock - in_block);
      // The pattern's size is a multiple of kBlock: a block never wraps around it.
      const size_t from = static_cast<size_t>((block * kBlock) % pattern.size()) + in_block;
      std::memcpy(buf + done, pattern.data() + from, take);
      if (in_block < kHead) {
        char head[kHead];
        std::memcpy(head, &seed_, 8);
        std::memcpy(head + 8, &block, 8);
        std::memcpy(buf + done, head + in_block, std::min(kHead - in_block, take));
      }
      done += take;
    }
    pos_ += n;
    return n;
  }

  // The digest of the whole blob (one pass over a fresh generator).
  Digest digest() const {
    BlobGenerator g(seed_, size_);
    Sha256 h;
    std::string buf(1 << 20, '\0');
    for (;;) {
      size_t n = *g(buf.data(), buf.size());
      if (n == 0) break;
      h.Update(std::string_view(buf.data(), n));
    }
    return h.Finish();
  }

 private:
  static constexpr size_t kBlock = 64 << 10;
  static constexpr size_t kHead = 16;  // seed and block index, over each block's first bytes
  static const std::string& Pattern() {
    static const std::string p = [] {
      std::string out(1 << 20, '\0');
      std::mt19937_64 rng(42);
      for (size_t i = 0; i + 8 <= out.size(); i += 8) {
        uint64_t v = rng();
        std::memcpy(out.data() + i, &v, 8);
      }
      return out;
    }();
    return p;
  }
  uint64_t seed_, size_, pos_ = 0;
};

}  // namespace stagefarm::testing
