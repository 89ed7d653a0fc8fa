// BlobStore: the cache server's storage on RocksDB — the content-addressed blobs (CAS), the
// action cache (step key -> ActionResult) and image refs (name -> manifest digest).
//
// Column families:
//   blobs   (generation u64 BE, chunk index u64 BE) -> chunk bytes, for small blobs
//   meta    digest hex -> BlobMeta (size, chunk size, chunk count, generation, last access,
//           and whether the bytes are chunks or a file)
//   atime   (last access u64 BE, digest hex) -> size: meta ordered by last access, so that
//           eviction and prune read the least recently used blobs first without a full scan
//   ac      step key -> encoded ActionResult
//   refs    name -> "sha256:<hex>" and size
//   uploads generation u64 BE -> digest: an upload in progress, or the bytes of a deleted blob
//           still to be removed; whatever a generation listed here wrote is removed on Open
// Every upload gets a fresh generation and writes under it, so two uploads of the same digest
// never touch each other's bytes; the commit makes one generation visible by writing its meta
// entry (the other upload's commit then finds the blob and drops its own bytes). A blob becomes
// visible in one atomic WriteBatch written with sync, and only then is it acknowledged.
//
// Small uploads (under options.file_blob_bytes) write their chunks through the WAL into the
// blobs column family. Large ones write to a file of their own, <data_dir>/files/<generation>,
// which is synced (with the directory) before the meta batch: their bytes reach the disk once,
// where RocksDB's memtable, blob files and (in Debian's portable build) software CRC32c made
// ingest several times slower than the network. A writer thread writes each chunk while the
// next is hashed, and the file is synced in the background as it grows (file_writer.h). Their
// upload record is written with sync before the file is created, so a crash never leaves a
// file the next Open cannot find and remove; a deleted file blob's record is written in the
// same batch that removes its meta, and dropped once the file is unlinked.
//
// Access times are kept in memory (a read or FindMissing costs no write) and written to meta and
// atime by FlushAccessTimes, which the server calls in the background.
//
// Thread-safety: all methods may be called from any thread; different uploads proceed in
// parallel. Uploads are owned by an `owner` tag (the server passes the peer's routing id) so one
// peer cannot write into another's upload.
// Memory: never a whole blob; reads and writes go chunk by chunk.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "stagefarm/common/cache_client.h"
#include "stagefarm/common/digest.h"
#include "stagefarm/common/message.h"
#include "stagefarm/common/status.h"
#include "stagefarm/common/unique_fd.h"

namespace rocksdb {
class ColumnFamilyHandle;
class DB;
}  // namespace rocksdb

namespace stagefarm::cache {

class FileWriter;
class FileWrites;

struct BlobStoreOptions {
  std::string data_dir;        // created if missing
  uint64_t max_bytes = 0;      // 0 = unbounded; EvictIfNeeded() evicts down to low_watermark
  double low_watermark = 0.9;  // fraction of max_bytes eviction stops at
  uint32_t chunk_size = 1 << 20;
  // Flow control of uploads: the chunks a client may send ahead of the server's replies. Each
  // upload gets a fair share of `upload_budget` (chunks in flight for all uploads together), at
  // most `upload_credit`, and at least 1 (see UploadCredit). A credit of 16 for one upload was
  // no faster than 8 over loopback on this project's VMs, and took 10% more CPU.
  uint32_t upload_credit = 8;
  uint32_t upload_budget = 64;
  size_t max_uploads = 1024;   // uploads in progress at once; more are ResourceExhausted
  std::chrono::seconds upload_idle_timeout{300};
  // Uploads of at least this many bytes are stored as files (see above); smaller ones as chunks.
  uint64_t file_blob_bytes = 1 << 20;
  // EvictIfNeeded leaves blobs read (ReadRange) within this window alone, so that a client
  // reading a blob in many requests does not lose it half-way.
  std::chrono::milliseconds eviction_pin{30000};
};

struct BlobMeta {
  uint64_t size = 0;
  uint32_t chunk_size = 0;
  uint64_t chunks = 0;
  uint64_t generation = 0;
  uint64_t last_access = 0;  // unix milliseconds
  bool in_file = false;      // in <data_dir>/files/<generation>, not in chunks
};

struct StoreStats {
  uint64_t bytes = 0;  // committed blobs
  uint64_t blobs = 0;
  uint64_t uploads_in_progress = 0;
  uint64_t actions = 0;  // RocksDB's estimate
  uint64_t refs = 0;     // RocksDB's estimate
  uint64_t max_bytes = 0;
  uint64_t bytes_received = 0;  // upload bytes accepted since Open (dedup is visible here)
  uint64_t credit_reserved = 0;  // upload chunks its clients may have in flight (UploadCredit)
  uint64_t evicted_blobs = 0;   // since Open
  uint64_t stale_actions_removed = 0;  // by Prune, since Open
};

enum class ActionLookup { kHit, kMiss, kIncomplete };

class BlobStore {
 public:
  // The file writer's threads and the bytes it may hold for all uploads together; the chunks of
  // one upload on their way to its file (some written while the next is hashed, some queued
  // behind a write the disk is slow to take). Public for the benchmark of the write path.
  static constexpr int kWriterThreads = 2;
  static constexpr size_t kWriterBytes = 32 << 20;
  static constexpr int kWritesPerUpload = 4;

  // Opens (creating if needed) the store in options.data_dir. Uploads left unfinished by an
  // earlier process are removed here.
  static StatusOr<std::unique_ptr<BlobStore>> Open(const BlobStoreOptions& options);
  // Flushes access times and closes the database.
  ~BlobStore();
  BlobStore(const BlobStore&) = delete;
  BlobStore& operator=(const BlobStore&) = delete;

  // --- CAS
  // The digests not stored (a stored blob of another size counts as missing). Refreshes the
  // access time of the others, in memory (see FlushAccessTimes). Takes the digests by value to
  // move the missing ones into the answer.
  StatusOr<std::vector<Digest>> FindMissing(std::vector<Digest> digests);
  // The blob's meta by hex, or NotFound.
  StatusOr<BlobMeta> Stat(std::string_view hex);

  struct BeginResult {
    bool exists = false;     // stored already: nothing to upload
    uint64_t upload_id = 0;  // otherwise the upload to write chunks into
    uint32_t credit = 0;     // and the chunks its client may send ahead (see UploadCredit)
  };
  // Starts an upload of `digest` (its size included). InvalidArgument if a blob with that hex but
  // another size is stored; ResourceExhausted if the blob is larger than max_bytes or too many
  // uploads are in progress. An empty digest starts a streamed upload, whose digest the commit
  // names: it goes to a file, and is never found existing here.
  StatusOr<BeginResult> BeginUpload(const Digest& digest, std::string owner);
  // Appends a chunk at `offset`, which must equal the bytes received so far; every chunk but the
  // last is exactly chunk_size bytes. Returns the bytes received. Any error ends the upload and
  // removes what it wrote; later calls get FailedPrecondition. A large upload's chunk may be
  // written to its file after this returns, from `bytes` (shared, not copied).
  StatusOr<uint64_t> WriteChunk(uint64_t upload_id, std::string_view owner, uint64_t offset,
                                Frame bytes);
  // The upload's credit from now on, for the reply to `answered` of its chunks: the chunks its
  // client may have in flight. An upload's share is upload_budget / uploads in progress (1 to
  // upload_credit), taken only from what the others leave, and at least 1. Each upload in
  // progress reserves the chunks its client may have in flight: its credit, or while that
  // shrinks, what it may still have in flight from the credit before (the old one less those
  // answered since). The reservations add up to at most upload_budget, but for the one chunk a
  // new upload gets when the budget is spent. 1 for an upload not in progress.
  uint32_t UploadCredit(uint64_t upload_id, std::string_view owner, uint32_t answered);
  // Verifies size and SHA-256 and makes the blob visible, durably (sync). DataLoss if the bytes
  // do not match (nothing stays). If the blob was committed meanwhile by another upload, this
  // upload's chunks are dropped and the commit succeeds. The upload ends either way. A streamed
  // upload's `digest` is required; another upload's may be given and must be the begin's.
  Status CommitUpload(uint64_t upload_id, std::string_view owner, const Digest& digest = {});
  // Ends an upload of `owner` and removes its chunks; unknown ids and others' uploads are ignored.
  void AbortUpload(uint64_t upload_id, std::string_view owner);
  // Aborts uploads without a chunk for longer than upload_idle_timeout. Returns how many.
  size_t ExpireIdleUploads(std::chrono::steady_clock::time_point now);

  // Appends bytes [offset, offset + min(length, size - offset)) of the blob `hex` to *out and
  // sets *blob_size. NotFound if absent; OutOfRange if offset > size; DataLoss if a chunk is gone.
  Status ReadRange(std::string_view hex, uint64_t offset, uint64_t length, std::string* out,
                   uint64_t* blob_size);

  // --- Action cache
  // The entry for `key` if it exists and every blob it names is stored (their access times are
  // refreshed); `lookup` (optional) says which.
  StatusOr<std::optional<ActionResult>> GetAction(const std::string& key,
                                                  ActionLookup* lookup = nullptr);
  // FailedPrecondition if the result names a blob that is not stored.
  Status PutAction(const std::string& key, const ActionResult& result);

  // --- Refs
  StatusOr<std::optional<Digest>> GetRef(const std::string& name);
  Status PutRef(const std::string& name, const Digest& manifest);
  StatusOr<std::vector<std::pair<std::string, Digest>>> ListRefs();

  // --- Housekeeping
  StoreStats Stats();
  // Writes the access times gathered in memory to meta, in one batch.
  Status FlushAccessTimes();
  // When max_bytes is set and exceeded, deletes least recently used blobs until the store is
  // under low_watermark * max_bytes. Returns the number of blobs evicted.
  StatusOr<uint64_t> EvictIfNeeded();

  // Removes least recently used blobs until the committed bytes are at most options.keep_bytes,
  // skipping those in options.keep (by hex). Never touches uploads in progress. Action-cache
  // entries that name a blob no longer stored are removed with them (they could never be
  // answered again unless the blob came back). With dry_run, only counts what would go.
  struct PruneOptions {
    uint64_t keep_bytes = 0;
    std::unordered_set<std::string> keep;
    bool dry_run = false;
  };
  struct PruneResult {
    uint64_t blobs = 0;  // removed (or would be)
    uint64_t bytes = 0;
    uint64_t blobs_left = 0;
    uint64_t bytes_left = 0;
    uint64_t actions = 0;  // stale action-cache entries removed
  };
  StatusOr<PruneResult> Prune(const PruneOptions& options);
  // Removes the action-cache entries that name a blob not stored. Returns how many.
  StatusOr<uint64_t> RemoveStaleActions();
  // Removes an image ref; the blobs it named stay until pruned or evicted. NotFound if absent.
  Status DeleteRef(const std::string& name);

  const BlobStoreOptions& options() const { return options_; }

 private:
  // Lets the maps keyed by hex be searched with a string_view, without building a string.
  struct HexHash {
    using is_transparent = void;
    size_t operator()(std::string_view hex) const { return std::hash<std::string_view>{}(hex); }
  };
  template <typename V>
  using HexMap = std::unordered_map<std::string, V, HexHash, std::equal_to<>>;

  struct Upload {
    std::mutex mu;  // serializes this upload's chunks, commit and abort
    Digest digest;
    std::string owner;
    bool in_file = false;  // a large upload: its bytes go to files/<generation>
    bool streamed = false;  // begun without a digest; `digest` is set at the commit
    bool ended = false;     // streamed: a chunk shorter than chunk_size came, the last
    UniqueFd file;         // open from begin until the commit has synced it
    std::shared_ptr<FileWrites> writes;  // of the file's chunks, queued on writer_
    bool done = false;   // committed or aborted: no more chunks
    uint64_t received = 0;
    std::unique_ptr<Sha256> hasher;
    std::atomic<int64_t> last_activity{0};  // steady_clock ticks
    uint32_t reserved = 0;  // chunks in flight at most; in credit_reserved_ (the store's mu_)
  };
  // Blob hex -> what the least-recently-used walk needs.
  struct AgedBlob {
    uint64_t last_access = 0;
    std::string hex;
    uint64_t size = 0;
  };

  BlobStore(BlobStoreOptions options, std::unique_ptr<rocksdb::DB> db,
            std::vector<rocksdb::ColumnFamilyHandle*> handles, UniqueFd files_dir);
  Status RemoveUnfinishedUploads();
  Status LoadCounters();
  Status BuildAccessIndexIfMissing();
  StatusOr<std::optional<BlobMeta>> GetMeta(std::string_view hex);
  // Meta of many blobs in one MultiGet; absent ones are nullopt.
  StatusOr<std::vector<std::optional<BlobMeta>>> GetMetas(const std::vector<std::string_view>& hexes);
  void TouchAll(const std::vector<std::string_view>& hexes);
  void NoteRead(std::string_view hex);
  Status FlushAccessTimesLocked();
  StatusOr<uint64_t> AllocateGeneration();  // requires mu_
  // Returns u's credit for the reply to `answered` of its chunks and sets its reservation (see
  // UploadCredit). Requires mu_, u in uploads_.
  uint32_t GrantLocked(Upload& u, uint32_t answered);
  // Removes an upload from uploads_ and its reservation from credit_reserved_. Requires mu_.
  void EraseUploadLocked(uint64_t upload_id, Upload& u);
  std::shared_ptr<Upload> FindUpload(uint64_t upload_id, std::string_view owner);
  // Ends `u` (whose mu the caller holds) and removes its chunks or file.
  void AbortHeld(uint64_t upload_id, Upload& u);
  // files/<generation> under the data directory.
  std::string FilePath(uint64_t generation) const;
  // Reads [offset, end) of a file blob into *out.
  Status ReadFile(std::string_view hex, const BlobMeta& m, uint64_t offset, uint64_t end,
                  std::string* out);
  Status CheckNamedBlobs(const ActionResult& result, bool* complete);
  // Up to `limit` blobs, least recently used first, from the atime index.
  StatusOr<std::vector<AgedBlob>> OldestBlobs(size_t limit, const std::string& after);
  // Deletes one committed blob (meta, index, chunks, counters); false if it was gone. A file
  // blob's generation goes to *files, whose files RemoveFiles takes away later, outside mu_ (an
  // upload record names each until then). Requires mu_.
  StatusOr<bool> DeleteBlobLocked(const std::string& hex, std::vector<uint64_t>* files);
  // Unlinks files/<generation> of each, makes that durable, and only then drops their upload
  // records: a crash in between finds a record and the next Open removes the file, never a file
  // no record names. Best effort: what fails stays for the next Open.
  void RemoveFiles(const std::vector<uint64_t>& generations);
  // Removes least recently used blobs, except `keep` and (with pin) recently read ones, while
  // the committed bytes exceed `target`. Returns (blobs, bytes) removed or, dry run, that would be.
  StatusOr<std::pair<uint64_t, uint64_t>> RemoveOldest(
      uint64_t target, const std::unordered_set<std::string>& keep, bool pin, bool dry_run);

  const BlobStoreOptions options_;
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;  // owned; destroyed before db_
  UniqueFd files_dir_;  // <data_dir>/files, opened once to fsync new entries
  std::unique_ptr<FileWriter> writer_;  // writes the files of large uploads
  rocksdb::ColumnFamilyHandle* default_cf_;
  rocksdb::ColumnFamilyHandle* blobs_cf_;
  rocksdb::ColumnFamilyHandle* meta_cf_;
  rocksdb::ColumnFamilyHandle* ac_cf_;
  rocksdb::ColumnFamilyHandle* refs_cf_;
  rocksdb::ColumnFamilyHandle* uploads_cf_;
  rocksdb::ColumnFamilyHandle* atime_cf_;

  std::mutex mu_;  // guards everything below and serializes writes of meta/atime/counters
  std::unordered_map<uint64_t, std::shared_ptr<Upload>> uploads_;
  uint64_t credit_reserved_ = 0;  // the sum of the uploads' reservations
  // Uploads holding a file open, and the most of them: a quarter of the descriptors this process
  // may open (RocksDB and the clients' sockets need the rest), whatever max_uploads says.
  size_t file_uploads_ = 0;
  size_t max_file_uploads_ = 0;
  HexMap<uint64_t> touched_;  // hex -> last access (unix ms)
  // hex -> last ReadRange (steady ticks), for eviction_pin; pruned by EvictIfNeeded.
  HexMap<int64_t> reads_;
  uint64_t next_generation_ = 0;
  uint64_t reserved_generation_ = 0;  // generations below this are reserved on disk
  uint64_t bytes_ = 0;
  uint64_t blobs_ = 0;
  uint64_t evicted_blobs_ = 0;
  uint64_t stale_actions_removed_ = 0;
  std::atomic<uint64_t> bytes_received_{0};
};

}  // namespace stagefarm::cache
