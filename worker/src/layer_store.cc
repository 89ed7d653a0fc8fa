#include "stagefarm/worker/layer_store.h"

#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "stagefarm/common/layer_tar.h"
#include "stagefarm/worker/fs_util.h"

namespace stagefarm::worker {

namespace {
bool IsDir(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}
}  // namespace

LayerStore::LayerStore(std::string root) : root_(std::move(root)) {}

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

StatusOr<std::string> LayerStore::Ensure(const Digest& diff_id, CacheClient& cache) {
  if (diff_id.hex.size() != 64) return InvalidArgumentError("bad layer digest " + diff_id.str());
  std::string dir = PathOf(diff_id);
  if (IsDir(dir)) return dir;
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

Status LayerStore::Adopt(const Digest& diff_id, const std::string& dir) {
  if (diff_id.hex.size() != 64) return InvalidArgumentError("bad layer digest " + diff_id.str());
  auto layer_lock = LockFor(diff_id.hex);
  std::lock_guard hold(*layer_lock);
  if (IsDir(PathOf(diff_id))) return Status();
  std::string into = PathOf(diff_id);
  if (::rename(dir.c_str(), into.c_str()) != 0) {
    return ErrnoError("rename " + dir + " to " + into, errno);
  }
  extracted_bytes_ += diff_id.size;
  return Status();
}

Status LayerStore::ExtractInto(const Digest& diff_id, const std::string& tar_path) {
  SF_ASSIGN_OR_RETURN(TempDir tmp, TempDir::Make(root_ + "/.tmp", "extract-"));
  std::string into = tmp.path() + "/fs";
  if (::mkdir(into.c_str(), 0755) != 0) return ErrnoError("mkdir " + into, errno);
  Status s = ExtractLayer(tar_path, into);
  if (!s.ok()) return s.Annotate("extracting layer " + diff_id.str());
  std::string dir = PathOf(diff_id);
  if (::rename(into.c_str(), dir.c_str()) != 0)
    return ErrnoError("rename " + into + " to " + dir, errno);
  struct stat st;
  if (::stat(tar_path.c_str(), &st) == 0) extracted_bytes_ += static_cast<uint64_t>(st.st_size);
  return Status();
}

}  // namespace stagefarm::worker
