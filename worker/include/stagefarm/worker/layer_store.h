// The worker's extracted layers: <root>/layers/<diffID hex>, each an overlayfs lower dir (OCI
// whiteouts already turned into overlay whiteouts). Shared by every step on the worker.
//
// Thread-safe. Each diffID is extracted once: concurrent callers for the same layer wait for the
// one that fetches it; different layers are fetched in parallel. A layer is extracted into a temp
// dir and renamed into place, so a crash never leaves a half-extracted layer under its name.
//
// Disk budget (`max_bytes`, the worker's --max-disk; 0 = unbounded): when a new layer is added
// and the layers' total disk usage passes the budget, the least recently used layers that nobody
// pins are removed until the total is at most `low_watermark` of the budget. A layer in use (in a
// step's overlay, being extracted, or part of a stage in progress) is pinned by its user and is
// never removed, so the store may stay above the budget while pinned layers alone exceed it.
//
// Beside each layer, <hex>.use holds its disk usage in bytes (measured once, when it was added) and
// its mtime is the layer's last use, so a restarted worker knows both without walking the layers.
// RUN --mount=type=cache directories (<worker root>/cache-mounts) are not part of the budget: they
// are persistent by design, cannot be measured cheaply while steps write to them, and are removed
// with the worker's root.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "stagefarm/common/cache_client.h"
#include "stagefarm/common/unique_fd.h"
#include "stagefarm/common/digest.h"
#include "stagefarm/common/status.h"

namespace stagefarm::worker {

class LayerStore {
 public:
  // `root`: <worker root>/layers, this store's alone (one worker to a root). Removes what a
  // worker stopped mid-fetch, mid-extract or mid-evict left under <root>/.tmp (never counted
  // against the budget), and reads the sizes and last uses of the layers already there (a layer
  // without its .use file, e.g. from before a crash, is measured once now).
  explicit LayerStore(std::string root, uint64_t max_bytes = 0, double low_watermark = 0.9);
  LayerStore(const LayerStore&) = delete;
  LayerStore& operator=(const LayerStore&) = delete;

  // Layers kept from eviction while this is alive (whether or not they are in the store yet).
  // Move-only; the same layer may be pinned by several Pins at once. Not thread-safe itself: one
  // task's thread uses it.
  class Pin {
   public:
    Pin() = default;
    ~Pin() { Reset(); }
    Pin(Pin&& o) noexcept
        : store_(std::exchange(o.store_, nullptr)), hexes_(std::exchange(o.hexes_, {})) {}
    Pin& operator=(Pin&& o) noexcept;
    Pin(const Pin&) = delete;
    Pin& operator=(const Pin&) = delete;
    void Add(const Digest& diff_id);
    void Reset();  // unpins everything

   private:
    friend class LayerStore;
    explicit Pin(LayerStore* store) : store_(store) {}
    LayerStore* store_ = nullptr;
    std::vector<std::string> hexes_;
  };
  Pin MakePin() { return Pin(this); }

  // The directory holding the layer `diff_id`, fetched from `cache` (borrowed: the caller's) and
  // extracted first if needed, and marked as used now. The caller must hold a Pin on it for as
  // long as it uses the directory (FailedPrecondition otherwise). DataLoss if the blob does not
  // match the digest (size included, when diff_id.size is non-zero).
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
  // SOURCE_DATE_EPOCH clamping) and holds no file named like a whiteout as one
  // (WrittenLayer::whiteout_named), so that every worker sees the same bits. `disk_bytes`, when the
  // caller knows it (WrittenLayer::disk_bytes), saves walking `dir` again to measure it.
  Status Adopt(const Digest& diff_id, const std::string& dir,
               std::optional<uint64_t> disk_bytes = std::nullopt);

  // Disk usage of the layers in the store now.
  uint64_t bytes() const;
  // Bytes of the layers this store extracted since it was made (their tar sizes).
  uint64_t extracted_bytes() const { return extracted_bytes_.load(); }
  // Layers removed by eviction since the store was made.
  uint64_t evicted_layers() const { return evicted_layers_.load(); }

 private:
  struct Entry {
    uint64_t bytes = 0;
    int64_t last_use_ns = 0;  // CLOCK_REALTIME, as the .use file's mtime
  };

  std::shared_ptr<std::mutex> LockFor(const std::string& hex);
  bool Pinned(const std::string& hex) const;  // caller holds mu_
  void Load();
  // Takes the root's lock and removes everything under <root>/.tmp: no layer is ever there, only
  // work in progress. Without the lock (another store has the root) it leaves .tmp alone.
  void RemoveLeftovers();
  // Records the layer `hex`, just renamed into place, as `bytes` big and used now, then evicts.
  void Added(const std::string& hex, uint64_t bytes);
  // Marks `hex` used now (memory and the .use file's mtime).
  void Touch(const std::string& hex);
  // Removes unpinned layers, oldest use first, while the total is over the budget. `keep` (the
  // layer just added) is never chosen.
  void Evict(const std::string& keep);
  // Extracts `tar_path` into a temp dir renamed to PathOf(diff_id). Caller holds the layer's lock.
  Status ExtractInto(const Digest& diff_id, const std::string& tar_path);
  std::string UsePath(const std::string& hex) const { return root_ + "/" + hex + ".use"; }

  const std::string root_;
  UniqueFd root_lock_;  // flock of <root>/.lock: one store to a root
  const uint64_t max_bytes_;
  const double low_watermark_;
  std::atomic<uint64_t> extracted_bytes_{0};
  std::atomic<uint64_t> evicted_layers_{0};
  mutable std::mutex mu_;  // guards locks_, pins_, entries_, total_, evict_seq_
  std::map<std::string, std::weak_ptr<std::mutex>> locks_;
  std::map<std::string, int> pins_;        // by hex: how many Pins hold it
  std::map<std::string, Entry> entries_;   // the layers in place, by hex
  uint64_t total_ = 0;                     // sum of entries_' bytes
  uint64_t evict_seq_ = 0;
};

// The disk usage of the tree at `path` (st_blocks of every entry, hard links counted once),
// not following symlinks or crossing into mounts, like `du -s -B1 -x`.
StatusOr<uint64_t> DiskUsage(const std::string& path);

}  // namespace stagefarm::worker
