// The worker's extracted layers: <root>/layers/<diffID hex>, each an overlayfs lower dir (OCI
// whiteouts already turned into overlay whiteouts). Shared by every step on the worker.
//
// Thread-safe. Each diffID is extracted once: concurrent callers for the same layer wait for the
// one that fetches it; different layers are fetched in parallel. A layer is extracted into a temp
// dir and renamed into place, so a crash never leaves a half-extracted layer under its name.
// (LRU eviction under a disk budget is not done yet.)
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "stagefarm/common/cache_client.h"
#include "stagefarm/common/digest.h"
#include "stagefarm/common/status.h"

namespace stagefarm::worker {

class LayerStore {
 public:
  explicit LayerStore(std::string root);  // <worker root>/layers

  // The directory holding the layer `diff_id`, fetched from `cache` (borrowed: the caller's) and
  // extracted first if needed. DataLoss if the blob does not match the digest (size included,
  // when diff_id.size is non-zero).
  StatusOr<std::string> Ensure(const Digest& diff_id, CacheClient& cache);
  // Where the layer lives (whether or not it is there yet).
  std::string PathOf(const Digest& diff_id) const { return root_ + "/" + diff_id.hex; }
  // Extracts the layer `diff_id` from a local tar the caller has already verified (a layer this
  // worker just wrote), unless it is already present. Saves fetching it back from the cache.
  Status Insert(const Digest& diff_id, const std::string& tar_path);
  // Moves `dir` (a step's overlay upper dir, on the same filesystem, whose layer tar is
  // `diff_id`) into place as the layer, unless it is already present (then `dir` is left alone).
  // Saves extracting the tar again: the upper dir already holds the layer's files, in overlay's
  // own whiteout form. Only for layers whose tar keeps the files' times as they are (no
  // SOURCE_DATE_EPOCH clamping), so that every worker sees the same bits.
  Status Adopt(const Digest& diff_id, const std::string& dir);
  // Bytes of the layers this store extracted since it was made (their tar sizes).
  uint64_t extracted_bytes() const { return extracted_bytes_.load(); }

 private:
  std::shared_ptr<std::mutex> LockFor(const std::string& hex);
  // Extracts `tar_path` into a temp dir renamed to PathOf(diff_id). Caller holds the layer's lock.
  Status ExtractInto(const Digest& diff_id, const std::string& tar_path);

  std::string root_;
  std::atomic<uint64_t> extracted_bytes_{0};
  std::mutex mu_;  // guards locks_
  std::map<std::string, std::weak_ptr<std::mutex>> locks_;
};

}  // namespace stagefarm::worker
