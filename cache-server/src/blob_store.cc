#include "stagefarm/cache/blob_store.h"

#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/slice.h>
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <filesystem>
#include <tuple>

#include "stagefarm/common/cache_protocol.h"

namespace stagefarm::cache {
namespace {

constexpr char kNextGenerationKey[] = "next_generation";
constexpr char kCountersKey[] = "counters";
constexpr uint64_t kGenerationBlock = 1 << 16;  // generations reserved on disk per write
constexpr size_t kMaxTouched = 16384;           // access times held before a forced flush
constexpr uint8_t kMetaVersion = 1;

Status FromRocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return Status();
  std::string msg = std::string(what) + ": " + s.ToString();
  if (s.IsNoSpace()) return ResourceExhaustedError(std::move(msg));
  if (s.IsNotFound()) return NotFoundError(std::move(msg));
  if (s.IsCorruption()) return DataLossError(std::move(msg));
  if (s.IsBusy() || s.IsTryAgain() || s.IsTimedOut()) return UnavailableError(std::move(msg));
  return InternalError(std::move(msg));
}

void PutU64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
uint64_t GetU64(std::string_view in, size_t pos) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t(static_cast<uint8_t>(in[pos + i])) << (8 * i);
  return v;
}
// Big-endian so that keys of one generation sort together and by chunk index.
void PutU64BE(std::string* out, uint64_t v) {
  for (int i = 7; i >= 0; --i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

std::string ChunkKey(uint64_t generation, uint64_t index) {
  std::string k;
  k.reserve(16);
  PutU64BE(&k, generation);
  PutU64BE(&k, index);
  return k;
}
std::string GenerationKey(uint64_t generation) {
  std::string k;
  PutU64BE(&k, generation);
  return k;
}

std::string EncodeMeta(const BlobMeta& m) {
  std::string out(1, static_cast<char>(kMetaVersion));
  PutU64(&out, m.size);
  PutU64(&out, m.chunk_size);
  PutU64(&out, m.chunks);
  PutU64(&out, m.generation);
  PutU64(&out, m.last_access);
  return out;
}
StatusOr<BlobMeta> DecodeMeta(std::string_view v) {
  if (v.size() != 41 || static_cast<uint8_t>(v[0]) != kMetaVersion) {
    return DataLossError("malformed meta entry of " + std::to_string(v.size()) + " bytes");
  }
  BlobMeta m;
  m.size = GetU64(v, 1);
  m.chunk_size = static_cast<uint32_t>(GetU64(v, 9));
  m.chunks = GetU64(v, 17);
  m.generation = GetU64(v, 25);
  m.last_access = GetU64(v, 33);
  if (m.chunk_size == 0) return DataLossError("meta entry with chunk size 0");
  return m;
}

std::string EncodeCounters(uint64_t bytes, uint64_t blobs) {
  std::string out;
  PutU64(&out, bytes);
  PutU64(&out, blobs);
  return out;
}

std::string EncodeRef(const Digest& d) {
  std::string out;
  PutU64(&out, d.size);
  out += d.hex;
  return out;
}
StatusOr<Digest> DecodeRef(std::string_view v) {
  if (v.size() < 8) return DataLossError("malformed ref entry");
  return Digest::Parse("sha256:" + std::string(v.substr(8)), GetU64(v, 0));
}

uint64_t NowMillis() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

rocksdb::Slice S(std::string_view v) { return rocksdb::Slice(v.data(), v.size()); }

rocksdb::WriteOptions SyncWrite() {
  rocksdb::WriteOptions w;
  w.sync = true;
  return w;
}

}  // namespace

StatusOr<std::unique_ptr<BlobStore>> BlobStore::Open(const BlobStoreOptions& options) {
  if (options.data_dir.empty()) return InvalidArgumentError("cache data directory not set");
  if (options.chunk_size == 0 || options.chunk_size > (16u << 20)) {
    return InvalidArgumentError("chunk size must be in (0, 16 MiB]");
  }
  std::error_code ec;
  std::filesystem::create_directories(options.data_dir, ec);
  if (ec) return InternalError("create " + options.data_dir + ": " + ec.message());

  rocksdb::DBOptions db_options;
  db_options.create_if_missing = true;
  db_options.create_missing_column_families = true;
  db_options.max_background_jobs = 2;
  // Opening after a crash replays the WAL into memtables without flushing them first: a restart
  // costs a replay, not a write of everything since the last flush (the WAL stays until then).
  db_options.avoid_flush_during_recovery = true;

  rocksdb::ColumnFamilyOptions small;
  small.write_buffer_size = 8 << 20;
  rocksdb::ColumnFamilyOptions blobs;
  blobs.write_buffer_size = 64 << 20;
  blobs.enable_blob_files = true;
  blobs.min_blob_size = 4096;
  blobs.blob_file_size = 256 << 20;
  blobs.enable_blob_garbage_collection = true;  // reclaim the space of deleted chunks

  std::vector<rocksdb::ColumnFamilyDescriptor> cfs = {{rocksdb::kDefaultColumnFamilyName, small},
                                                      {"blobs", blobs},
                                                      {"meta", small},
                                                      {"ac", small},
                                                      {"refs", small},
                                                      {"uploads", small}};
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(db_options, options.data_dir, cfs, &handles, &raw);
  if (!s.ok()) return FromRocks(s, "open cache store " + options.data_dir);
  std::unique_ptr<BlobStore> store(
      new BlobStore(options, std::unique_ptr<rocksdb::DB>(raw), std::move(handles)));
  SF_RETURN_IF_ERROR(store->LoadCounters());
  SF_RETURN_IF_ERROR(store->RemoveUnfinishedUploads());
  return store;
}

BlobStore::BlobStore(BlobStoreOptions options, std::unique_ptr<rocksdb::DB> db,
                     std::vector<rocksdb::ColumnFamilyHandle*> handles)
    : options_(std::move(options)), db_(std::move(db)), handles_(std::move(handles)) {
  SF_CHECK(handles_.size() == 6);
  default_cf_ = handles_[0];
  blobs_cf_ = handles_[1];
  meta_cf_ = handles_[2];
  ac_cf_ = handles_[3];
  refs_cf_ = handles_[4];
  uploads_cf_ = handles_[5];
}

BlobStore::~BlobStore() {
  {
    std::lock_guard lock(mu_);
    // Access times are a hint for eviction; losing them on a failing disk is harmless.
    FlushAccessTimesLocked().IgnoreError();
    // Uploads in progress are removed here so their chunks do not wait for the next Open.
    std::vector<uint64_t> ids;
    for (const auto& [id, u] : uploads_) ids.push_back(id);
    for (uint64_t id : ids) AbortLocked(id);
  }
  for (auto* h : handles_) db_->DestroyColumnFamilyHandle(h).PermitUncheckedError();
  db_->Close().PermitUncheckedError();  // nothing to do about a failing close at shutdown
}

Status BlobStore::LoadCounters() {
  std::string v;
  rocksdb::Status s = db_->Get({}, default_cf_, kNextGenerationKey, &v);
  if (s.ok() && v.size() == 8) {
    next_generation_ = GetU64(v, 0);
  } else if (!s.IsNotFound()) {
    return FromRocks(s, "read generation counter");
  } else {
    next_generation_ = 1;
  }
  reserved_generation_ = next_generation_;  // nothing reserved yet by this process
  s = db_->Get({}, default_cf_, kCountersKey, &v);
  if (s.ok() && v.size() == 16) {
    bytes_ = GetU64(v, 0);
    blobs_ = GetU64(v, 8);
  } else if (!s.IsNotFound()) {
    return FromRocks(s, "read store counters");
  }
  return Status();
}

Status BlobStore::RemoveUnfinishedUploads() {
  rocksdb::WriteBatch batch;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator({}, uploads_cf_));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    rocksdb::Slice key = it->key();
    if (key.size() != 8) {
      batch.Delete(uploads_cf_, key);
      continue;
    }
    uint64_t gen = 0;
    for (size_t i = 0; i < 8; ++i) gen = (gen << 8) | static_cast<uint8_t>(key[i]);
    batch.DeleteRange(blobs_cf_, ChunkKey(gen, 0), ChunkKey(gen + 1, 0));
    batch.Delete(uploads_cf_, key);
  }
  SF_RETURN_IF_ERROR(FromRocks(it->status(), "scan unfinished uploads"));
  if (batch.Count() == 0) return Status();
  return FromRocks(db_->Write(SyncWrite(), &batch), "remove unfinished uploads");
}

StatusOr<uint64_t> BlobStore::AllocateGeneration() {
  if (next_generation_ >= reserved_generation_) {
    // Reserve a block on disk first, so a generation is never handed out twice across restarts.
    uint64_t reserve = next_generation_ + kGenerationBlock;
    std::string v;
    PutU64(&v, reserve);
    SF_RETURN_IF_ERROR(
        FromRocks(db_->Put(SyncWrite(), default_cf_, kNextGenerationKey, v), "reserve ids"));
    reserved_generation_ = reserve;
  }
  return next_generation_++;
}

StatusOr<std::optional<BlobMeta>> BlobStore::GetMeta(std::string_view hex) {
  rocksdb::PinnableSlice v;
  rocksdb::Status s = db_->Get({}, meta_cf_, S(hex), &v);
  if (s.IsNotFound()) return std::optional<BlobMeta>();
  SF_RETURN_IF_ERROR(FromRocks(s, "read meta"));
  SF_ASSIGN_OR_RETURN(BlobMeta m, DecodeMeta(v.ToStringView()));
  return std::optional<BlobMeta>(m);
}

void BlobStore::Touch(std::string_view hex) {
  std::lock_guard lock(mu_);
  touched_[std::string(hex)] = NowMillis();
  if (touched_.size() >= kMaxTouched) {
    // Access times only order eviction; a failed flush is retried with the next one.
    FlushAccessTimesLocked().IgnoreError();
  }
}

Status BlobStore::FlushAccessTimes() {
  std::lock_guard lock(mu_);
  return FlushAccessTimesLocked();
}

Status BlobStore::FlushAccessTimesLocked() {
  if (touched_.empty()) return Status();
  rocksdb::WriteBatch batch;
  for (const auto& [hex, when] : touched_) {
    auto meta = GetMeta(hex);
    if (!meta.ok()) return meta.status();
    if (!meta->has_value()) continue;  // evicted meanwhile
    BlobMeta m = **meta;
    if (m.last_access >= when) continue;
    m.last_access = when;
    batch.Put(meta_cf_, S(hex), EncodeMeta(m));
  }
  SF_RETURN_IF_ERROR(FromRocks(db_->Write({}, &batch), "write access times"));
  touched_.clear();
  return Status();
}

StatusOr<std::vector<Digest>> BlobStore::FindMissing(const std::vector<Digest>& digests) {
  std::vector<Digest> missing;
  for (const auto& d : digests) {
    SF_ASSIGN_OR_RETURN(std::optional<BlobMeta> m, GetMeta(d.hex));
    if (m && m->size == d.size) {
      Touch(d.hex);
    } else {
      missing.push_back(d);
    }
  }
  return missing;
}

StatusOr<BlobMeta> BlobStore::Stat(std::string_view hex) {
  SF_ASSIGN_OR_RETURN(std::optional<BlobMeta> m, GetMeta(hex));
  if (!m) return NotFoundError("blob sha256:" + std::string(hex) + " not stored");
  return *m;
}

StatusOr<BlobStore::BeginResult> BlobStore::BeginUpload(const Digest& digest, std::string owner) {
  if (digest.hex.size() != 64) return InvalidArgumentError("upload of an empty digest");
  SF_ASSIGN_OR_RETURN(std::optional<BlobMeta> m, GetMeta(digest.hex));
  if (m) {
    if (m->size != digest.size) {
      return InvalidArgumentError("blob " + digest.str() + " is stored with size " +
                                  std::to_string(m->size) + ", not " + std::to_string(digest.size));
    }
    Touch(digest.hex);
    return BeginResult{true, 0};
  }
  if (options_.max_bytes != 0 && digest.size > options_.max_bytes) {
    return ResourceExhaustedError("blob " + digest.str() + " of " + std::to_string(digest.size) +
                                  " bytes is larger than the cache (" +
                                  std::to_string(options_.max_bytes) + " bytes)");
  }
  std::lock_guard lock(mu_);
  if (uploads_.size() >= options_.max_uploads) {
    return ResourceExhaustedError("too many uploads in progress (" +
                                  std::to_string(uploads_.size()) + ")");
  }
  SF_ASSIGN_OR_RETURN(uint64_t gen, AllocateGeneration());
  // Recorded before any chunk so that a restart finds and removes every chunk of the upload
  // (the WAL keeps writes in order; no sync needed).
  std::string v;
  PutU64(&v, digest.size);
  v += digest.hex;
  SF_RETURN_IF_ERROR(FromRocks(db_->Put({}, uploads_cf_, GenerationKey(gen), v), "record upload"));
  Upload u;
  u.digest = digest;
  u.owner = std::move(owner);
  u.hasher = std::make_unique<Sha256>();
  u.last_activity = std::chrono::steady_clock::now();
  uploads_.emplace(gen, std::move(u));
  return BeginResult{false, gen};
}

StatusOr<uint64_t> BlobStore::WriteChunk(uint64_t upload_id, std::string_view owner,
                                         uint64_t offset, std::string_view bytes) {
  std::lock_guard lock(mu_);
  auto it = uploads_.find(upload_id);
  if (it == uploads_.end() || it->second.owner != owner) {
    return FailedPreconditionError("no upload " + std::to_string(upload_id) +
                                   " in progress (never begun, failed, committed or expired)");
  }
  Upload& u = it->second;
  Status error;
  const uint64_t chunk = options_.chunk_size;
  if (offset != u.received) {
    error = InvalidArgumentError("chunk at offset " + std::to_string(offset) + ", expected " +
                                 std::to_string(u.received) + " (chunks must come in order)");
  } else if (bytes.empty()) {
    error = InvalidArgumentError("empty chunk");
  } else if (bytes.size() > u.digest.size - u.received) {
    error = DataLossError("upload of " + u.digest.str() + " exceeds its size of " +
                          std::to_string(u.digest.size) + " bytes");
  } else if (bytes.size() > chunk ||
             (bytes.size() < chunk && u.received + bytes.size() != u.digest.size)) {
    error =
        InvalidArgumentError("chunk of " + std::to_string(bytes.size()) + " bytes; chunks are " +
                             std::to_string(chunk) + " bytes except the last");
  } else {
    rocksdb::Status s = db_->Put({}, blobs_cf_, ChunkKey(upload_id, u.received / chunk), S(bytes));
    error = FromRocks(s, "write chunk");
  }
  if (!error.ok()) {
    AbortLocked(upload_id);
    return error;
  }
  u.hasher->Update(bytes);
  u.received += bytes.size();
  u.last_activity = std::chrono::steady_clock::now();
  bytes_received_ += bytes.size();
  return u.received;
}

Status BlobStore::CommitUpload(uint64_t upload_id, std::string_view owner) {
  std::lock_guard lock(mu_);
  auto it = uploads_.find(upload_id);
  if (it == uploads_.end() || it->second.owner != owner) {
    return FailedPreconditionError("no upload " + std::to_string(upload_id) +
                                   " in progress (never begun, failed, committed or expired)");
  }
  Upload& u = it->second;
  const Digest digest = u.digest;
  if (u.received != digest.size) {
    uint64_t received = u.received;
    AbortLocked(upload_id);
    return DataLossError("upload of " + digest.str() + " has " + std::to_string(received) +
                         " bytes, its digest says " + std::to_string(digest.size));
  }
  Digest actual = u.hasher->Finish();
  if (actual.hex != digest.hex) {
    AbortLocked(upload_id);
    return DataLossError("uploaded bytes hash to " + actual.str() + ", not " + digest.str());
  }
  auto existing = GetMeta(digest.hex);
  if (!existing.ok()) {
    AbortLocked(upload_id);
    return existing.status();
  }
  rocksdb::WriteBatch batch;
  batch.Delete(uploads_cf_, GenerationKey(upload_id));
  bool dedup = existing->has_value();
  if (dedup) {
    // Another upload of the same bytes won the race: keep its generation, drop ours.
    batch.DeleteRange(blobs_cf_, ChunkKey(upload_id, 0), ChunkKey(upload_id + 1, 0));
  } else {
    BlobMeta m;
    m.size = digest.size;
    m.chunk_size = options_.chunk_size;
    m.chunks = (digest.size + m.chunk_size - 1) / m.chunk_size;
    m.generation = upload_id;
    m.last_access = NowMillis();
    batch.Put(meta_cf_, S(digest.hex), EncodeMeta(m));
    batch.Put(default_cf_, kCountersKey, EncodeCounters(bytes_ + digest.size, blobs_ + 1));
  }
  Status s = FromRocks(db_->Write(SyncWrite(), &batch), "commit " + digest.str());
  uploads_.erase(upload_id);
  if (!s.ok()) {
    AbortLocked(upload_id);  // best effort: the chunks go now or on the next Open
    return s;
  }
  if (!dedup) {
    bytes_ += digest.size;
    blobs_ += 1;
  }
  return Status();
}

void BlobStore::AbortUpload(uint64_t upload_id, std::string_view owner) {
  std::lock_guard lock(mu_);
  auto it = uploads_.find(upload_id);
  if (it == uploads_.end() || it->second.owner != owner) return;
  AbortLocked(upload_id);
}

void BlobStore::AbortLocked(uint64_t upload_id) {
  uploads_.erase(upload_id);
  rocksdb::WriteBatch batch;
  batch.DeleteRange(blobs_cf_, ChunkKey(upload_id, 0), ChunkKey(upload_id + 1, 0));
  batch.Delete(uploads_cf_, GenerationKey(upload_id));
  // If this write fails the upload record stays on disk and the next Open removes the chunks.
  db_->Write({}, &batch).PermitUncheckedError();
}

size_t BlobStore::ExpireIdleUploads(std::chrono::steady_clock::time_point now) {
  std::lock_guard lock(mu_);
  std::vector<uint64_t> idle;
  for (const auto& [id, u] : uploads_) {
    if (now - u.last_activity > options_.upload_idle_timeout) idle.push_back(id);
  }
  for (uint64_t id : idle) AbortLocked(id);
  return idle.size();
}

Status BlobStore::ReadRange(std::string_view hex, uint64_t offset, uint64_t length,
                            std::string* out, uint64_t* blob_size) {
  SF_ASSIGN_OR_RETURN(std::optional<BlobMeta> meta, GetMeta(hex));
  if (!meta) return NotFoundError("blob sha256:" + std::string(hex) + " not stored");
  const BlobMeta& m = *meta;
  *blob_size = m.size;
  if (offset > m.size) {
    return OutOfRangeError("offset " + std::to_string(offset) + " is past the end of blob sha256:" +
                           std::string(hex) + " (" + std::to_string(m.size) + " bytes)");
  }
  uint64_t end = offset + std::min(length, m.size - offset);
  uint64_t pos = offset;
  while (pos < end) {
    uint64_t index = pos / m.chunk_size;
    uint64_t chunk_start = index * m.chunk_size;
    uint64_t expected = std::min<uint64_t>(m.chunk_size, m.size - chunk_start);
    rocksdb::PinnableSlice v;
    rocksdb::Status s = db_->Get({}, blobs_cf_, ChunkKey(m.generation, index), &v);
    if (s.IsNotFound()) {
      return DataLossError("chunk " + std::to_string(index) + " of blob sha256:" +
                           std::string(hex) + " is gone (evicted while read?)");
    }
    SF_RETURN_IF_ERROR(FromRocks(s, "read chunk"));
    if (v.size() != expected) {
      return DataLossError(
          "chunk " + std::to_string(index) + " of blob sha256:" + std::string(hex) + " has " +
          std::to_string(v.size()) + " bytes, expected " + std::to_string(expected));
    }
    uint64_t from = pos - chunk_start;
    uint64_t n = std::min(end - pos, expected - from);
    out->append(v.data() + from, n);
    pos += n;
  }
  Touch(hex);
  return Status();
}

Status BlobStore::CheckNamedBlobs(const ActionResult& result, bool* complete) {
  *complete = true;
  for (const Digest* d : {&result.layer.diff_id, &result.layer.toc}) {
    if (d->empty()) continue;
    SF_ASSIGN_OR_RETURN(std::optional<BlobMeta> m, GetMeta(d->hex));
    if (!m || m->size != d->size) {
      *complete = false;
      return Status();
    }
  }
  return Status();
}

StatusOr<std::optional<ActionResult>> BlobStore::GetAction(const std::string& key,
                                                           ActionLookup* lookup) {
  ActionLookup ignored;
  if (lookup == nullptr) lookup = &ignored;
  *lookup = ActionLookup::kMiss;
  std::string v;
  rocksdb::Status s = db_->Get({}, ac_cf_, key, &v);
  if (s.IsNotFound()) return std::optional<ActionResult>();
  SF_RETURN_IF_ERROR(FromRocks(s, "read action"));
  GetActionResponse stored;
  SF_RETURN_IF_ERROR(Decode(v, &stored).Annotate("stored action " + key));
  if (!stored.result) return std::optional<ActionResult>();
  if (!stored.result->layer.diff_id.empty()) {
    bool complete = false;
    SF_RETURN_IF_ERROR(CheckNamedBlobs(*stored.result, &complete));
    if (!complete) {
      // Kept: the entry becomes valid again if its blobs are uploaded again.
      *lookup = ActionLookup::kIncomplete;
      return std::optional<ActionResult>();
    }
    Touch(stored.result->layer.diff_id.hex);
    if (!stored.result->layer.toc.empty()) Touch(stored.result->layer.toc.hex);
  }
  *lookup = ActionLookup::kHit;
  return stored.result;
}

Status BlobStore::PutAction(const std::string& key, const ActionResult& result) {
  if (key.empty()) return InvalidArgumentError("empty action key");
  if (!result.layer.diff_id.empty()) {
    bool complete = false;
    SF_RETURN_IF_ERROR(CheckNamedBlobs(result, &complete));
    if (!complete) {
      return FailedPreconditionError("action " + key + " names layer " +
                                     result.layer.diff_id.str() + " / TOC " +
                                     result.layer.toc.str() + ", not all stored");
    }
  }
  GetActionResponse stored;
  stored.result = result;
  return FromRocks(db_->Put({}, ac_cf_, key, Encode(stored)), "write action " + key);
}

StatusOr<std::optional<Digest>> BlobStore::GetRef(const std::string& name) {
  std::string v;
  rocksdb::Status s = db_->Get({}, refs_cf_, name, &v);
  if (s.IsNotFound()) return std::optional<Digest>();
  SF_RETURN_IF_ERROR(FromRocks(s, "read ref " + name));
  SF_ASSIGN_OR_RETURN(Digest d, DecodeRef(v));
  return std::optional<Digest>(d);
}

Status BlobStore::PutRef(const std::string& name, const Digest& manifest) {
  if (name.empty()) return InvalidArgumentError("empty ref name");
  if (manifest.hex.size() != 64) return InvalidArgumentError("ref " + name + " to no digest");
  return FromRocks(db_->Put(SyncWrite(), refs_cf_, name, EncodeRef(manifest)), "write ref " + name);
}

StatusOr<std::vector<std::pair<std::string, Digest>>> BlobStore::ListRefs() {
  std::vector<std::pair<std::string, Digest>> out;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator({}, refs_cf_));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    SF_ASSIGN_OR_RETURN(Digest d, DecodeRef(it->value().ToStringView()));
    out.emplace_back(it->key().ToString(), std::move(d));
  }
  SF_RETURN_IF_ERROR(FromRocks(it->status(), "list refs"));
  return out;
}

StoreStats BlobStore::Stats() {
  StoreStats st;
  {
    std::lock_guard lock(mu_);
    st.bytes = bytes_;
    st.blobs = blobs_;
    st.uploads_in_progress = uploads_.size();
    st.bytes_received = bytes_received_;
    st.evicted_blobs = evicted_blobs_;
  }
  st.max_bytes = options_.max_bytes;
  db_->GetIntProperty(ac_cf_, "rocksdb.estimate-num-keys", &st.actions);
  db_->GetIntProperty(refs_cf_, "rocksdb.estimate-num-keys", &st.refs);
  return st;
}

StatusOr<std::vector<std::tuple<uint64_t, std::string, uint64_t>>> BlobStore::ScanByAge() {
  // One small tuple per blob (not its bytes).
  std::vector<std::tuple<uint64_t, std::string, uint64_t>> out;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator({}, meta_cf_));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    auto m = DecodeMeta(it->value().ToStringView());
    if (!m.ok()) continue;  // a malformed entry is left for repair, not removed blindly
    out.emplace_back(m->last_access, it->key().ToString(), m->size);
  }
  SF_RETURN_IF_ERROR(FromRocks(it->status(), "scan blobs"));
  std::sort(out.begin(), out.end());
  return out;
}

StatusOr<bool> BlobStore::DeleteBlobLocked(const std::string& hex) {
  auto m = GetMeta(hex);
  if (!m.ok()) return m.status();
  if (!m->has_value()) return false;
  const BlobMeta& meta = **m;
  rocksdb::WriteBatch batch;
  batch.Delete(meta_cf_, S(hex));
  batch.DeleteRange(blobs_cf_, ChunkKey(meta.generation, 0), ChunkKey(meta.generation + 1, 0));
  uint64_t bytes = bytes_ - std::min(bytes_, meta.size);
  uint64_t blobs = blobs_ > 0 ? blobs_ - 1 : 0;
  batch.Put(default_cf_, kCountersKey, EncodeCounters(bytes, blobs));
  SF_RETURN_IF_ERROR(FromRocks(db_->Write({}, &batch), "delete sha256:" + hex));
  bytes_ = bytes;
  blobs_ = blobs;
  touched_.erase(hex);
  return true;
}

StatusOr<uint64_t> BlobStore::EvictIfNeeded() {
  if (options_.max_bytes == 0) return uint64_t{0};
  {
    std::lock_guard lock(mu_);
    if (bytes_ <= options_.max_bytes) return uint64_t{0};
    SF_RETURN_IF_ERROR(FlushAccessTimesLocked());
  }
  const uint64_t target = static_cast<uint64_t>(options_.low_watermark * options_.max_bytes);
  SF_ASSIGN_OR_RETURN(auto candidates, ScanByAge());
  uint64_t evicted = 0;
  std::lock_guard lock(mu_);
  for (const auto& [when, hex, size] : candidates) {
    if (bytes_ <= target) break;
    if (touched_.count(hex)) continue;  // used since the scan began
    SF_ASSIGN_OR_RETURN(bool deleted, DeleteBlobLocked(hex));
    if (!deleted) continue;
    ++evicted;
    ++evicted_blobs_;
  }
  return evicted;
}

StatusOr<BlobStore::PruneResult> BlobStore::Prune(const PruneOptions& options) {
  SF_RETURN_IF_ERROR(FlushAccessTimes());
  SF_ASSIGN_OR_RETURN(auto candidates, ScanByAge());
  PruneResult r;
  std::lock_guard lock(mu_);
  uint64_t bytes = bytes_;
  for (const auto& [when, hex, size] : candidates) {
    if (bytes <= options.keep_bytes) break;
    if (options.keep.count(hex)) continue;
    if (!options.dry_run) {
      SF_ASSIGN_OR_RETURN(bool deleted, DeleteBlobLocked(hex));
      if (!deleted) continue;
    }
    bytes -= std::min(bytes, size);
    ++r.blobs;
    r.bytes += size;
  }
  r.bytes_left = options.dry_run ? bytes : bytes_;
  r.blobs_left = blobs_ - (options.dry_run ? std::min(blobs_, r.blobs) : 0);
  return r;
}

Status BlobStore::DeleteRef(const std::string& name) {
  return FromRocks(db_->Delete(SyncWrite(), refs_cf_, name), "delete ref " + name);
}

}  // namespace stagefarm::cache
