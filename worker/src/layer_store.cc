#include "stagefarm/worker/layer_store.h"

#include <fcntl.h>
#include <fts.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <set>

#include "stagefarm/common/layer_tar.h"
#include "stagefarm/common/log.h"
#include "stagefarm/worker/fs_util.h"

namespace stagefarm::worker {

namespace {

bool IsDir(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool IsLayerName(const std::string& name) {
  return name.size() == 64 && name.find_first_not_of("0123456789abcdef") == std::string::npos;
}

int64_t NowNs() {
  struct timespec ts;
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

std::string Mib(uint64_t bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  return text;
}

}  // namespace

StatusOr<uint64_t> DiskUsage(const std::string& path) {
  std::string copy = path;
  char* const paths[] = {copy.data(), nullptr};
  FTS* fts = ::fts_open(paths, FTS_PHYSICAL | FTS_XDEV | FTS_NOCHDIR, nullptr);
  if (fts == nullptr) return ErrnoError("fts_open " + path, errno);
  uint64_t total = 0;
  std::set<std::pair<dev_t, ino_t>> linked;  // hard-linked files already counted
  Status status;
  for (;;) {
    errno = 0;
    FTSENT* e = ::fts_read(fts);
    if (e == nullptr) {
      if (errno != 0) status = ErrnoError("fts_read " + path, errno);
      break;
    }
    if (e->fts_info == FTS_DNR || e->fts_info == FTS_ERR || e->fts_info == FTS_NS) {
      status = ErrnoError("measuring " + std::string(e->fts_path), e->fts_errno);
      break;
    }
    if (e->fts_info == FTS_DP) continue;  // a directory seen again on the way out
    const struct stat* st = e->fts_statp;
    if (!S_ISDIR(st->st_mode) && st->st_nlink > 1 &&
        !linked.emplace(st->st_dev, st->st_ino).second) {
      continue;
    }
    total += static_cast<uint64_t>(st->st_blocks) * 512;
  }
  ::fts_close(fts);
  if (!status.ok()) return status;
  return total;
}

LayerStore::Pin& LayerStore::Pin::operator=(Pin&& o) noexcept {
  if (this != &o) {
    Reset();
    store_ = std::exchange(o.store_, nullptr);
    hexes_ = std::exchange(o.hexes_, {});
  }
  return *this;
}

void LayerStore::Pin::Add(const Digest& diff_id) {
  if (store_ == nullptr) return;
  std::lock_guard lock(store_->mu_);
  ++store_->pins_[diff_id.hex];
  hexes_.push_back(diff_id.hex);
}

void LayerStore::Pin::Reset() {
  if (store_ == nullptr) return;
  std::lock_guard lock(store_->mu_);
  for (const auto& hex : hexes_) {
    auto it = store_->pins_.find(hex);
    if (it != store_->pins_.end() && --it->second == 0) store_->pins_.erase(it);
  }
  hexes_.clear();
}

LayerStore::LayerStore(std::string root, uint64_t max_bytes, double low_watermark)
    : root_(std::move(root)), max_bytes_(max_bytes), low_watermark_(low_watermark) {
  Load();
}

void LayerStore::Load() {
  RemoveLeftovers();
  std::error_code ec;
  std::set<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(root_, ec)) {
    names.insert(e.path().filename().string());
  }
  // ec: a missing directory is an empty store (made with the first layer)
  for (const std::string& name : names) {
    if (name.size() == 68 && name.ends_with(".use") && !names.contains(name.substr(0, 64))) {
      ::unlink((root_ + "/" + name).c_str());  // its layer is gone (a crash while evicting it)
      continue;
    }
    if (!IsLayerName(name) || !IsDir(root_ + "/" + name)) continue;
    Entry entry;
    struct stat st;
    auto recorded = ReadFile(UsePath(name), 64);
    const char* end = recorded.ok() ? recorded->data() + recorded->size() : nullptr;
    if (recorded.ok() &&
        std::from_chars(recorded->data(), end, entry.bytes).ec == std::errc() &&
        ::stat(UsePath(name).c_str(), &st) == 0) {
      entry.last_use_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
    } else {
      // Added by a worker that stopped before it wrote the .use file: measure it once now.
      auto measured = DiskUsage(root_ + "/" + name);
      if (!measured.ok()) {
        LogWarning("layer store: " + measured.status().ToString());
        continue;  // unknown size: never evicted, never counted
      }
      entry.bytes = *measured;
      entry.last_use_ns = NowNs();
      // Failure: the layer is measured again at the next start.
      WriteFile(UsePath(name), std::to_string(entry.bytes) + "\n").IgnoreError();
    }
    total_ += entry.bytes;
    entries_[name] = entry;
  }
}

void LayerStore::RemoveLeftovers() {
  // What is under .tmp is a stopped worker's only if no other store has this root (two workers
  // given one --root). The lock goes with the store's file descriptor, however the process ends.
  std::error_code ec;
  std::filesystem::create_directories(root_, ec);
  root_lock_.reset(::open((root_ + "/.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!root_lock_ || ::flock(root_lock_.get(), LOCK_EX | LOCK_NB) != 0) {
    LogWarning("layer store: " + root_ + " is in use by another worker (" + std::strerror(errno) +
               "); leaving its work in progress alone. Give each worker a --root of its own.");
    return;
  }
  const std::string tmp = root_ + "/.tmp";
  std::vector<std::string> left;
  for (const auto& e : std::filesystem::directory_iterator(tmp, ec)) left.push_back(e.path());
  // ec: no .tmp yet, nothing left
  if (left.empty()) return;
  size_t removed = 0;
  for (const std::string& path : left) {
    Status s = RemoveTree(path);
    if (s.ok()) {
      ++removed;
    } else {
      LogWarning("layer store: removing what a stopped worker left: " + s.ToString());
    }
  }
  LogInfo("layer store: removed " + std::to_string(removed) + " of " + std::to_string(left.size()) +
          " fetches, extractions and evictions a stopped worker left under " + tmp);
}

uint64_t LayerStore::bytes() const {
  std::lock_guard lock(mu_);
  return total_;
}

bool LayerStore::Pinned(const std::string& hex) const { return pins_.contains(hex); }

std::shared_ptr<std::mutex> LayerStore::LockFor(const std::string& hex) {
  std::lock_guard lock(mu_);
  auto& weak = locks_[hex];
  auto strong = weak.lock();
  if (!strong) {
    strong = std::make_shared<std::mutex>();
    weak = strong;
  }
  // Forget locks nobody holds any more so the map does not grow with every layer ever seen.
  for (auto it = locks_.begin(); it != locks_.end();) {
    it = it->second.expired() ? locks_.erase(it) : std::next(it);
  }
  return strong;
}

void LayerStore::Touch(const std::string& hex) {
  {
    std::lock_guard lock(mu_);
    auto it = entries_.find(hex);
    if (it == entries_.end()) return;
    it->second.last_use_ns = NowNs();
  }
  // Failure (e.g. the file was removed by hand): only a restart's LRU order is less exact.
  ::utimensat(AT_FDCWD, UsePath(hex).c_str(), nullptr, 0);
}

void LayerStore::Added(const std::string& hex, uint64_t bytes) {
  // Failure: the layer is measured again when the worker restarts.
  WriteFile(UsePath(hex), std::to_string(bytes) + "\n").IgnoreError();
  {
    std::lock_guard lock(mu_);
    Entry& entry = entries_[hex];
    total_ = total_ - entry.bytes + bytes;
    entry.bytes = bytes;
    entry.last_use_ns = NowNs();
  }
  Evict(hex);
}

void LayerStore::Evict(const std::string& keep) {
  if (max_bytes_ == 0) return;
  std::vector<std::string> doomed;  // renamed out of the way, removed below without mu_
  uint64_t freed = 0, left = 0;
  {
    std::lock_guard lock(mu_);
    if (total_ <= max_bytes_) return;
    Status made = MakeDirs(root_ + "/.tmp");
    if (!made.ok()) {
      LogWarning("layer store: evicting: " + made.ToString());
      return;
    }
    const auto target = static_cast<uint64_t>(static_cast<double>(max_bytes_) * low_watermark_);
    std::vector<std::pair<int64_t, std::string>> candidates;
    for (const auto& [hex, entry] : entries_) {
      if (hex != keep && !Pinned(hex)) candidates.emplace_back(entry.last_use_ns, hex);
    }
    std::sort(candidates.begin(), candidates.end());
    for (const auto& [last_use, hex] : candidates) {
      if (total_ <= target) break;
      // Renamed while mu_ is held: a step pins under mu_ before it looks for the directory, so
      // it either sees the layer pinned here or finds it gone and fetches it again.
      std::string from = root_ + "/" + hex;
      std::string to = root_ + "/.tmp/evict-" + hex + "-" + std::to_string(evict_seq_++);
      if (::rename(from.c_str(), to.c_str()) != 0) {
        LogWarning("layer store: evicting " + hex + ": " +
                   ErrnoError("rename " + from, errno).ToString());
        continue;
      }
      ::unlink(UsePath(hex).c_str());  // failure: removed at the next start (no layer beside it)
      freed += entries_[hex].bytes;
      total_ -= entries_[hex].bytes;
      entries_.erase(hex);
      doomed.push_back(std::move(to));
    }
    if (total_ > max_bytes_) {
      LogWarning("layer store: " + Mib(total_) + " in use by running steps, over --max-disk " +
                 Mib(max_bytes_));
    }
    left = total_;
  }
  if (!doomed.empty()) {
    LogInfo("layer store: evicting " + std::to_string(doomed.size()) + " least recently used " +
            (doomed.size() == 1 ? "layer (" : "layers (") + Mib(freed) + "), " + Mib(left) +
            " left of --max-disk " + Mib(max_bytes_));
  }
  for (const auto& dir : doomed) {
    Status removed = RemoveTree(dir);
    // Left under .tmp: not a layer any more, only space to reclaim by hand.
    if (!removed.ok()) LogWarning("layer store: " + removed.ToString());
    ++evicted_layers_;
  }
}

StatusOr<std::string> LayerStore::Ensure(const Digest& diff_id, CacheClient& cache) {
  if (diff_id.hex.size() != 64) return InvalidArgumentError("bad layer digest " + diff_id.str());
  {
    std::lock_guard lock(mu_);
    if (!Pinned(diff_id.hex)) {
      return FailedPreconditionError("layer " + diff_id.str() + " used without a pin");
    }
  }
  std::string dir = PathOf(diff_id);
  if (IsDir(dir)) {
    Touch(diff_id.hex);
    return dir;
  }
  auto layer_lock = LockFor(diff_id.hex);
  std::lock_guard hold(*layer_lock);
  if (IsDir(dir)) return dir;  // another step fetched it while we waited

  SF_ASSIGN_OR_RETURN(TempDir tmp, TempDir::Make(root_ + "/.tmp", "fetch-"));
  std::string tar = tmp.path() + "/layer.tar";
  Status read = cache.ReadToFile(diff_id, tar);  // verifies the sha256
  if (!read.ok()) return read.Annotate("fetching layer " + diff_id.str());
  if (diff_id.size != 0) {
    struct stat st;
    if (::stat(tar.c_str(), &st) != 0) return ErrnoError("stat " + tar, errno);
    if (static_cast<uint64_t>(st.st_size) != diff_id.size) {
      return DataLossError("layer " + diff_id.str() + " is " + std::to_string(st.st_size) +
                           " bytes, expected " + std::to_string(diff_id.size));
    }
  }
  SF_RETURN_IF_ERROR(ExtractInto(diff_id, tar));
  return dir;
}

Status LayerStore::Insert(const Digest& diff_id, const std::string& tar_path) {
  if (diff_id.hex.size() != 64) return InvalidArgumentError("bad layer digest " + diff_id.str());
  if (IsDir(PathOf(diff_id))) return Status();
  auto layer_lock = LockFor(diff_id.hex);
  std::lock_guard hold(*layer_lock);
  if (IsDir(PathOf(diff_id))) return Status();
  return ExtractInto(diff_id, tar_path);
}

Status LayerStore::Adopt(const Digest& diff_id, const std::string& dir,
                         std::optional<uint64_t> disk_bytes) {
  if (diff_id.hex.size() != 64) return InvalidArgumentError("bad layer digest " + diff_id.str());
  auto layer_lock = LockFor(diff_id.hex);
  std::lock_guard hold(*layer_lock);
  if (IsDir(PathOf(diff_id))) return Status();
  if (!disk_bytes) {
    SF_ASSIGN_OR_RETURN(disk_bytes, DiskUsage(dir));
  }
  const uint64_t bytes = *disk_bytes;
  // The first layer of a fresh worker may be made before any was extracted (FROM scratch).
  SF_RETURN_IF_ERROR(MakeDirs(root_, 0755));
  std::string into = PathOf(diff_id);
  if (::rename(dir.c_str(), into.c_str()) != 0) {
    return ErrnoError("rename " + dir + " to " + into, errno);
  }
  extracted_bytes_ += diff_id.size;
  Added(diff_id.hex, bytes);
  return Status();
}

Status LayerStore::ExtractInto(const Digest& diff_id, const std::string& tar_path) {
  SF_ASSIGN_OR_RETURN(TempDir tmp, TempDir::Make(root_ + "/.tmp", "extract-"));
  std::string into = tmp.path() + "/fs";
  if (::mkdir(into.c_str(), 0755) != 0) return ErrnoError("mkdir " + into, errno);
  Status s = ExtractLayer(tar_path, into);
  if (!s.ok()) return s.Annotate("extracting layer " + diff_id.str());
  SF_ASSIGN_OR_RETURN(uint64_t bytes, DiskUsage(into));
  std::string dir = PathOf(diff_id);
  if (::rename(into.c_str(), dir.c_str()) != 0)
    return ErrnoError("rename " + into + " to " + dir, errno);
  struct stat st;
  if (::stat(tar_path.c_str(), &st) == 0) extracted_bytes_ += static_cast<uint64_t>(st.st_size);
  Added(diff_id.hex, bytes);
  return Status();
}

}  // namespace stagefarm::worker
