// BlobStore against real RocksDB in temp dirs.
#include "stagefarm/cache/blob_store.h"

#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "cache_test_util.h"

namespace stagefarm::cache {
namespace {

using testing::RandomBytes;
using testing::TempDir;

constexpr uint32_t kChunk = 64 << 10;  // small chunks keep multi-chunk cases fast

// Every test runs three times: blobs all in chunks, from 2 chunks in files, all in files.
uint64_t g_file_blob_bytes = 0;

class BlobStoreTest : public ::testing::TestWithParam<uint64_t> {
 protected:
  void SetUp() override { g_file_blob_bytes = GetParam(); }
};

INSTANTIATE_TEST_SUITE_P(Storage, BlobStoreTest,
                         ::testing::Values(uint64_t{1} << 40, uint64_t{2} * kChunk, uint64_t{0}),
                         [](const ::testing::TestParamInfo<uint64_t>& info) {
                           return info.param == 0                 ? std::string("AllFiles")
                                  : info.param == 2 * kChunk ? std::string("Mixed")
                                                             : std::string("AllChunks");
                         });

BlobStoreOptions Options(const TempDir& dir) {
  BlobStoreOptions o;
  o.data_dir = dir.path() + "/db";
  o.chunk_size = kChunk;
  o.file_blob_bytes = g_file_blob_bytes;
  return o;
}

std::unique_ptr<BlobStore> OpenStore(const BlobStoreOptions& o) {
  auto s = BlobStore::Open(o);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return std::move(s).value();
}

// Uploads `bytes` under `digest` in chunks; returns the first error.
Status Upload(BlobStore& store, const Digest& digest, std::string_view bytes,
              const std::string& owner = "peer") {
  SF_ASSIGN_OR_RETURN(BlobStore::BeginResult begin, store.BeginUpload(digest, owner));
  if (begin.exists) return Status();
  for (size_t off = 0; off < bytes.size(); off += kChunk) {
    SF_ASSIGN_OR_RETURN(uint64_t received,
                        store.WriteChunk(begin.upload_id, owner, off, bytes.substr(off, kChunk)));
    EXPECT_EQ(received, std::min<uint64_t>(bytes.size(), off + kChunk));
  }
  return store.CommitUpload(begin.upload_id, owner);
}

std::string ReadAll(BlobStore& store, const Digest& d) {
  std::string out;
  uint64_t size = 0;
  Status s = store.ReadRange(d.hex, 0, d.size, &out, &size);
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(size, d.size);
  return out;
}

// A closed store's RocksDB opened directly, all column families, to read or tamper with it.
struct RawDb {
  explicit RawDb(const std::string& dir, bool read_only = false) {
    EXPECT_TRUE(rocksdb::DB::ListColumnFamilies({}, dir, &names).ok());
    std::vector<rocksdb::ColumnFamilyDescriptor> cfs;
    for (auto& n : names) cfs.emplace_back(n, rocksdb::ColumnFamilyOptions());
    // As the store opens it: what is in the WAL stays there, and the store's next Open finds it
    // in its memtables rather than in tables.
    rocksdb::DBOptions options;
    options.avoid_flush_during_recovery = true;
    rocksdb::Status s = read_only ? rocksdb::DB::OpenForReadOnly(options, dir, cfs, &handles, &db)
                                  : rocksdb::DB::Open(options, dir, cfs, &handles, &db);
    EXPECT_TRUE(s.ok()) << s.ToString();
  }
  ~RawDb() {
    for (auto* h : handles) EXPECT_TRUE(db->DestroyColumnFamilyHandle(h).ok());
    delete db;
  }
  rocksdb::ColumnFamilyHandle* Family(const std::string& name) {
    for (size_t i = 0; i < names.size(); ++i) {
      if (names[i] == name) return handles[i];
    }
    ADD_FAILURE() << "no column family " << name;
    return nullptr;
  }
  std::vector<std::string> names;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
};

// Counts the keys of one column family of a closed store.
size_t CountKeys(const std::string& dir, const std::string& cf) {
  RawDb raw(dir, /*read_only=*/true);
  size_t count = 0;
  if (std::find(raw.names.begin(), raw.names.end(), cf) == raw.names.end()) return 0;  // dropped
  std::unique_ptr<rocksdb::Iterator> it(raw.db->NewIterator({}, raw.Family(cf)));
  for (it->SeekToFirst(); it->Valid(); it->Next()) ++count;
  return count;
}

// Files under <dir>/files: the bytes of the blobs stored as files, and uploads in progress.
size_t CountFiles(const std::string& dir) {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir + "/files")) ++n;
  return n;
}

// What holds the bytes of a closed store: chunk keys plus files.
size_t CountStored(const std::string& dir) { return CountKeys(dir, "blobs") + CountFiles(dir); }

// What the blobs of these sizes should leave in CountStored: a file each, or their chunks.
size_t ExpectedStored(std::initializer_list<uint64_t> sizes) {
  size_t n = 0;
  for (uint64_t size : sizes) n += size >= g_file_blob_bytes ? 1 : (size + kChunk - 1) / kChunk;
  return n;
}

// Uploads `n` blobs of one chunk one after the other, with distinct access times; returns them,
// least recently used first.
std::vector<std::string> UploadOldestFirst(BlobStore& store, int n, uint64_t seed) {
  std::vector<std::string> blobs;
  for (int i = 0; i < n; ++i) {
    blobs.push_back(RandomBytes(kChunk, seed + i));
    Status s = Upload(store, Digest::Of(blobs.back()), blobs.back());
    EXPECT_TRUE(s.ok()) << s.ToString();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return blobs;
}

// Copies the live store directory to <dir>/crashed: what a crash at this moment leaves behind
// (the WAL holds the logged writes).
std::string CopyAsCrashed(const BlobStoreOptions& o, const TempDir& dir) {
  std::string copy = dir.path() + "/crashed";
  std::filesystem::copy(o.data_dir, copy, std::filesystem::copy_options::recursive);
  return copy;
}

// The store closed normally and its crash copy, to reopen.
std::vector<BlobStoreOptions> LiveAndCrashed(const BlobStoreOptions& o, const std::string& copy) {
  BlobStoreOptions crashed = o;
  crashed.data_dir = copy;
  return {o, crashed};
}

TEST_P(BlobStoreTest, RoundTripsAllSizes) {
  TempDir dir;
  auto store = OpenStore(Options(dir));
  for (size_t size : {size_t{0}, size_t{1}, size_t{kChunk}, size_t{5 * kChunk + 17}}) {
    std::string bytes = RandomBytes(size, size);
    Digest d = Digest::Of(bytes);
    ASSERT_TRUE(Upload(*store, d, bytes).ok()) << size;
    EXPECT_EQ(ReadAll(*store, d), bytes) << size;
  }
  EXPECT_EQ(store->Stats().blobs, 4u);
  EXPECT_EQ(store->Stats().bytes, 0u + 1 + kChunk + 5 * kChunk + 17);
}

TEST_P(BlobStoreTest, RangeReadsAcrossChunks) {
  TempDir dir;
  auto store = OpenStore(Options(dir));
  std::string bytes = RandomBytes(3 * kChunk + 5, 7);
  Digest d = Digest::Of(bytes);
  ASSERT_TRUE(Upload(*store, d, bytes).ok());
  uint64_t size = 0;
  for (auto [off, len] : std::vector<std::pair<uint64_t, uint64_t>>{{0, 10},
                                                                    {kChunk - 3, 6},
                                                                    {kChunk, kChunk},
                                                                    {kChunk + 1, 2 * kChunk},
                                                                    {d.size, 10},
                                                                    {d.size - 2, 100}}) {
    std::string out;
    ASSERT_TRUE(store->ReadRange(d.hex, off, len, &out, &size).ok()) << off;
    EXPECT_EQ(out, bytes.substr(off, len)) << off;
  }
  std::string out;
  EXPECT_EQ(store->ReadRange(d.hex, d.size + 1, 1, &out, &size).code(), StatusCode::kOutOfRange);
  EXPECT_EQ(store->ReadRange(std::string(64, 'a'), 0, 1, &out, &size).code(),
            StatusCode::kNotFound);
}

TEST_P(BlobStoreTest, WrongDigestRefusedAndNothingStays) {
  TempDir dir;
  BlobStoreOptions o = Options(dir);
  {
    auto store = OpenStore(o);
    std::string bytes = RandomBytes(2 * kChunk + 3, 1);
    Digest wrong = Digest::Of(RandomBytes(2 * kChunk + 3, 2));
    EXPECT_EQ(Upload(*store, wrong, bytes).code(), StatusCode::kDataLoss);
    auto missing = store->FindMissing({wrong});
    ASSERT_TRUE(missing.ok());
    EXPECT_EQ(missing->size(), 1u);
    // Wrong size: fewer bytes than declared (whole chunks, so only the commit can tell).
    std::string whole = bytes.substr(0, 2 * kChunk);
    Digest longer{Digest::Of(whole).hex, whole.size() + 1};
    EXPECT_EQ(Upload(*store, longer, whole).code(), StatusCode::kDataLoss);
    // More bytes than declared.
    Digest shorter{Digest::Of(bytes).hex, bytes.size() - 1};
    EXPECT_EQ(Upload(*store, shorter, bytes).code(), StatusCode::kDataLoss);
    EXPECT_EQ(store->Stats().blobs, 0u);
    EXPECT_EQ(store->Stats().uploads_in_progress, 0u);
  }
  EXPECT_EQ(CountStored(o.data_dir), 0u);
  EXPECT_EQ(CountKeys(o.data_dir, "meta"), 0u);
  EXPECT_EQ(CountKeys(o.data_dir, "uploads"), 0u);
}

TEST_P(BlobStoreTest, ExistingBlobAckedAtBegin) {
  TempDir dir;
  auto store = OpenStore(Options(dir));
  std::string bytes = RandomBytes(kChunk + 1, 3);
  Digest d = Digest::Of(bytes);
  ASSERT_TRUE(Upload(*store, d, bytes).ok());
  uint64_t received = store->Stats().bytes_received;
  auto begin = store->BeginUpload(d, "other");
  ASSERT_TRUE(begin.ok());
  EXPECT_TRUE(begin->exists);
  EXPECT_EQ(store->Stats().bytes_received, received);
  // Same hex, other size: a confused client, refused.
  EXPECT_EQ(store->BeginUpload(Digest{d.hex, d.size + 1}, "x").status().code(),
            StatusCode::kInvalidArgument);
}

TEST_P(BlobStoreTest, OutOfOrderOrForeignChunksEndTheUpload) {
  TempDir dir;
  auto store = OpenStore(Options(dir));
  std::string bytes = RandomBytes(2 * kChunk, 4);
  Digest d = Digest::Of(bytes);
  auto begin = store->BeginUpload(d, "a");
  ASSERT_TRUE(begin.ok());
  uint64_t id = begin->upload_id;
  // Another peer cannot write into it.
  EXPECT_EQ(store->WriteChunk(id, "b", 0, bytes.substr(0, kChunk)).status().code(),
            StatusCode::kFailedPrecondition);
  // Short chunk that is not the last.
  EXPECT_EQ(store->WriteChunk(id, "a", 0, bytes.substr(0, 10)).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(store->WriteChunk(id, "a", 0, bytes.substr(0, kChunk)).status().code(),
            StatusCode::kFailedPrecondition);  // the upload ended with the error
  begin = store->BeginUpload(d, "a");
  ASSERT_TRUE(begin.ok());
  EXPECT_EQ(store->WriteChunk(begin->upload_id, "a", kChunk, bytes.substr(kChunk)).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(store->Stats().uploads_in_progress, 0u);
}

TEST_P(BlobStoreTest, InterleavedUploadsOfSameDigestBothSucceed) {
  TempDir dir;
  BlobStoreOptions o = Options(dir);
  std::string bytes = RandomBytes(3 * kChunk + 9, 5);
  Digest d = Digest::Of(bytes);
  {
    auto store = OpenStore(o);
    auto a = store->BeginUpload(d, "a");
    auto b = store->BeginUpload(d, "b");
    ASSERT_TRUE(a.ok() && b.ok());
    ASSERT_NE(a->upload_id, b->upload_id);
    for (size_t off = 0; off < bytes.size(); off += kChunk) {
      ASSERT_TRUE(store->WriteChunk(a->upload_id, "a", off, bytes.substr(off, kChunk)).ok());
      ASSERT_TRUE(store->WriteChunk(b->upload_id, "b", off, bytes.substr(off, kChunk)).ok());
    }
    ASSERT_TRUE(store->CommitUpload(b->upload_id, "b").ok());
    ASSERT_TRUE(store->CommitUpload(a->upload_id, "a").ok());
    EXPECT_EQ(ReadAll(*store, d), bytes);
    EXPECT_EQ(store->Stats().blobs, 1u);
    EXPECT_EQ(store->Stats().bytes, bytes.size());
  }
  // The loser's chunks or file are gone: only one generation remains.
  EXPECT_EQ(CountStored(o.data_dir), ExpectedStored({bytes.size()}));
}

// Uploads share the budget of chunks in flight: each gets its share, taken only from what the
// others leave, and at least one chunk. A credit that shrinks keeps reserved what its client may
// still have in flight until answered; an ended upload's reservation goes back to the others.
TEST_P(BlobStoreTest, UploadCreditSharesTheBudget) {
  TempDir dir;
  BlobStoreOptions o = Options(dir);
  o.upload_budget = 8;
  o.upload_credit = 4;
  auto store = OpenStore(o);
  auto begin = [&](int i) {
    auto r = store->BeginUpload(Digest{Digest::Of(std::to_string(i)).hex, 10 * kChunk}, "peer");
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_FALSE(r->exists);
    return *r;
  };
  auto reserved = [&] { return store->Stats().credit_reserved; };
  BlobStore::BeginResult a = begin(1), b = begin(2), c = begin(3);
  EXPECT_EQ(a.credit, 4u);  // alone: the most one upload gets
  EXPECT_EQ(b.credit, 4u);  // half the budget
  EXPECT_EQ(c.credit, 1u);  // the budget is spent: one chunk, the least
  EXPECT_EQ(reserved(), 9u);
  // Answered, each comes down to its share of 8 / 3. a has three chunks still on their way: they
  // stay reserved until answered, and the others' shares come from what is left.
  EXPECT_EQ(store->UploadCredit(a.upload_id, "peer", 1), 2u);
  EXPECT_EQ(reserved(), 3u + 4 + 1);
  EXPECT_EQ(store->UploadCredit(b.upload_id, "peer", 4), 2u);
  EXPECT_EQ(store->UploadCredit(c.upload_id, "peer", 1), 2u);
  EXPECT_EQ(reserved(), 3u + 2 + 2);
  EXPECT_EQ(store->UploadCredit(a.upload_id, "peer", 3), 2u);
  EXPECT_EQ(reserved(), 6u);
  // An ended upload's reservation goes back: two uploads share 8 again.
  store->AbortUpload(c.upload_id, "peer");
  EXPECT_EQ(reserved(), 4u);
  EXPECT_EQ(store->UploadCredit(a.upload_id, "peer", 2), 4u);
  EXPECT_EQ(store->UploadCredit(b.upload_id, "peer", 2), 4u);
  EXPECT_EQ(reserved(), 8u);
  // A committed one's too.
  const std::string bytes = RandomBytes(kChunk + 1, 30);
  BlobStore::BeginResult d = store->BeginUpload(Digest::Of(bytes), "peer").value();
  EXPECT_EQ(d.credit, 1u);
  EXPECT_EQ(reserved(), 9u);
  ASSERT_TRUE(store->WriteChunk(d.upload_id, "peer", 0, bytes.substr(0, kChunk)).ok());
  ASSERT_TRUE(store->WriteChunk(d.upload_id, "peer", kChunk, bytes.substr(kChunk)).ok());
  ASSERT_TRUE(store->CommitUpload(d.upload_id, "peer").ok());
  EXPECT_EQ(reserved(), 8u);
  store->AbortUpload(b.upload_id, "peer");
  EXPECT_EQ(store->UploadCredit(a.upload_id, "peer", 4), 4u);
  EXPECT_EQ(begin(5).credit, 4u);
  EXPECT_EQ(reserved(), 8u);
  // Not in progress, or another peer's: the least, and nothing changes.
  EXPECT_EQ(store->UploadCredit(12345, "peer", 1), 1u);
  EXPECT_EQ(store->UploadCredit(a.upload_id, "other", 1), 1u);
  EXPECT_EQ(reserved(), 8u);
  // A stored blob needs no credit.
  EXPECT_EQ(store->BeginUpload(Digest::Of(bytes), "peer")->credit, 0u);
}

TEST_P(BlobStoreTest, ActionCacheAnswersOnlyWhenBlobsExist) {
  TempDir dir;
  auto store = OpenStore(Options(dir));
  std::string layer = RandomBytes(1000, 6), toc = RandomBytes(100, 7);
  ActionResult r;
  r.layer.diff_id = Digest::Of(layer);
  r.layer.toc = Digest::Of(toc);
  r.created_by = "RUN make";
  r.seconds = 1.5;
  EXPECT_EQ(store->PutAction("k1", r).code(), StatusCode::kFailedPrecondition);
  ASSERT_TRUE(Upload(*store, r.layer.diff_id, layer).ok());
  EXPECT_EQ(store->PutAction("k1", r).code(), StatusCode::kFailedPrecondition);  // TOC missing
  ASSERT_TRUE(Upload(*store, r.layer.toc, toc).ok());
  ASSERT_TRUE(store->PutAction("k1", r).ok());
  ActionLookup lookup;
  auto got = store->GetAction("k1", &lookup);
  ASSERT_TRUE(got.ok());
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ(**got, r);
  EXPECT_EQ(lookup, ActionLookup::kHit);
  got = store->GetAction("nope", &lookup);
  ASSERT_TRUE(got.ok());
  EXPECT_FALSE(got->has_value());
  EXPECT_EQ(lookup, ActionLookup::kMiss);
  // An empty layer names no blobs.
  ActionResult empty;
  empty.created_by = "RUN true";
  ASSERT_TRUE(store->PutAction("k2", empty).ok());
  got = store->GetAction("k2");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ(**got, empty);
}

// An entry without a layer but naming a TOC is as good as that TOC, on put and on get.
TEST_P(BlobStoreTest, ActionNamingOnlyATocIsCheckedToo) {
  TempDir dir;
  BlobStoreOptions o = Options(dir);
  o.max_bytes = 3 * kChunk;
  o.low_watermark = 0.7;  // down to 2.1 chunks: one of the two blobs goes
  auto store = OpenStore(o);
  std::string toc = RandomBytes(2 * kChunk, 8);
  ActionResult r;
  r.layer.toc = Digest::Of(toc);
  EXPECT_EQ(store->PutAction("k", r).code(), StatusCode::kFailedPrecondition);
  ASSERT_TRUE(Upload(*store, r.layer.toc, toc).ok());
  ASSERT_TRUE(store->PutAction("k", r).ok());
  ActionLookup lookup;
  auto got = store->GetAction("k", &lookup);
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ(lookup, ActionLookup::kHit);
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  std::string newer = RandomBytes(2 * kChunk, 9);
  ASSERT_TRUE(Upload(*store, Digest::Of(newer), newer).ok());
  auto evicted = store->EvictIfNeeded();
  ASSERT_TRUE(evicted.ok());
  ASSERT_EQ(*evicted, 1u);  // the TOC, the older
  got = store->GetAction("k", &lookup);
  ASSERT_TRUE(got.ok());
  EXPECT_FALSE(got->has_value());
  EXPECT_EQ(lookup, ActionLookup::kIncomplete);
}

TEST_P(BlobStoreTest, EvictionDropsLeastRecentlyUsedAndIncompleteActions) {
  TempDir dir;
  BlobStoreOptions o = Options(dir);
  o.max_bytes = 3 * kChunk;
  o.low_watermark = 0.5;
  auto store = OpenStore(o);
  std::vector<std::string> blobs = UploadOldestFirst(*store, 3, 10);
  std::vector<Digest> digests;
  for (const auto& b : blobs) digests.push_back(Digest::Of(b));
  ActionResult r;
  r.layer.diff_id = digests[1];
  ASSERT_TRUE(store->PutAction("k", r).ok());
  ASSERT_TRUE(store->FindMissing({digests[0]}).ok());  // 0 is now the most recently used
  auto evicted = store->EvictIfNeeded();
  ASSERT_TRUE(evicted.ok());
  EXPECT_EQ(*evicted, 0u);  // not over max_bytes yet
  std::string extra = RandomBytes(10, 20);
  ASSERT_TRUE(Upload(*store, Digest::Of(extra), extra).ok());
  evicted = store->EvictIfNeeded();
  ASSERT_TRUE(evicted.ok());
  EXPECT_EQ(*evicted, 2u);  // 1 and 2, the oldest, down to 1.5 chunks
  auto missing = store->FindMissing(digests);
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(*missing, (std::vector<Digest>{digests[1], digests[2]}));
  ActionLookup lookup;
  auto got = store->GetAction("k", &lookup);
  ASSERT_TRUE(got.ok());
  EXPECT_FALSE(got->has_value());
  EXPECT_EQ(lookup, ActionLookup::kIncomplete);
  EXPECT_EQ(ReadAll(*store, digests[0]), blobs[0]);
}

TEST_P(BlobStoreTest, RefsRoundTrip) {
  TempDir dir;
  auto store = OpenStore(Options(dir));
  Digest a = Digest::Of("a"), b = Digest::Of("bb");
  ASSERT_TRUE(store->PutRef("app:latest", a).ok());
  ASSERT_TRUE(store->PutRef("base:1", b).ok());
  ASSERT_TRUE(store->PutRef("app:latest", b).ok());
  auto got = store->GetRef("app:latest");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ(**got, b);
  got = store->GetRef("none");
  ASSERT_TRUE(got.ok());
  EXPECT_FALSE(got->has_value());
  auto list = store->ListRefs();
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(*list, (std::vector<std::pair<std::string, Digest>>{{"app:latest", b}, {"base:1", b}}));
}

TEST_P(BlobStoreTest, RestartKeepsCommittedBlobsAndRemovesUnfinishedUploads) {
  TempDir dir;
  BlobStoreOptions o = Options(dir);
  std::string kept = RandomBytes(2 * kChunk + 1, 30);
  std::string partial = RandomBytes(3 * kChunk, 31);
  std::string crash_copy;
  {
    auto store = OpenStore(o);
    ASSERT_TRUE(Upload(*store, Digest::Of(kept), kept).ok());
    auto begin = store->BeginUpload(Digest::Of(partial), "p");
    ASSERT_TRUE(begin.ok());
    ASSERT_TRUE(store->WriteChunk(begin->upload_id, "p", 0, partial.substr(0, kChunk)).ok());
    crash_copy = CopyAsCrashed(o, dir);
  }
  for (const BlobStoreOptions& reopened : LiveAndCrashed(o, crash_copy)) {
    const std::string& path = reopened.data_dir;
    {
      auto store = OpenStore(reopened);
      EXPECT_EQ(ReadAll(*store, Digest::Of(kept)), kept) << path;
      auto missing = store->FindMissing({Digest::Of(partial)});
      ASSERT_TRUE(missing.ok());
      EXPECT_EQ(missing->size(), 1u);
      EXPECT_EQ(store->Stats().blobs, 1u);
      EXPECT_EQ(store->Stats().bytes, kept.size());
      // Fresh uploads after a restart get fresh generations and work.
      ASSERT_TRUE(Upload(*store, Digest::Of(partial), partial).ok());
    }
    EXPECT_EQ(CountKeys(path, "uploads"), 0u) << path;
    EXPECT_EQ(CountStored(path), ExpectedStored({kept.size(), partial.size()})) << path;
  }
}

TEST_P(BlobStoreTest, IdleUploadsExpire) {
  TempDir dir;
  BlobStoreOptions o = Options(dir);
  o.upload_idle_timeout = std::chrono::seconds(1);
  auto store = OpenStore(o);
  std::string bytes = RandomBytes(2 * kChunk, 40);
  auto begin = store->BeginUpload(Digest::Of(bytes), "p");
  ASSERT_TRUE(begin.ok());
  ASSERT_TRUE(store->WriteChunk(begin->upload_id, "p", 0, bytes.substr(0, kChunk)).ok());
  EXPECT_EQ(store->ExpireIdleUploads(std::chrono::steady_clock::now()), 0u);
  EXPECT_EQ(store->ExpireIdleUploads(std::chrono::steady_clock::now() + std::chrono::seconds(2)),
            1u);
  EXPECT_EQ(store->WriteChunk(begin->upload_id, "p", kChunk, bytes.substr(kChunk)).status().code(),
            StatusCode::kFailedPrecondition);
}

// Sends `bytes` as a streamed upload (begun without a digest) in chunks; returns the upload id,
// or the first error of a chunk.
StatusOr<uint64_t> StreamChunks(BlobStore& store, std::string_view bytes,
                                const std::string& owner = "peer") {
  SF_ASSIGN_OR_RETURN(BlobStore::BeginResult begin, store.BeginUpload(Digest{}, owner));
  EXPECT_FALSE(begin.exists);
  for (size_t off = 0; off < bytes.size(); off += kChunk) {
    SF_RETURN_IF_ERROR(
        store.WriteChunk(begin.upload_id, owner, off, bytes.substr(off, kChunk)).status());
  }
  return begin.upload_id;
}

TEST_P(BlobStoreTest, StreamedUploadNamesItsDigestAtTheCommit) {
  TempDir dir;
  auto store = OpenStore(Options(dir));
  for (size_t size : {size_t{0}, size_t{100}, 3 * size_t{kChunk}, 3 * size_t{kChunk} + 17}) {
    std::string bytes = RandomBytes(size, 60);
    auto id = StreamChunks(*store, bytes);
    ASSERT_TRUE(id.ok()) << id.status().ToString();
    Status s = store->CommitUpload(*id, "peer", Digest::Of(bytes));
    ASSERT_TRUE(s.ok()) << size << ": " << s.ToString();
    EXPECT_EQ(ReadAll(*store, Digest::Of(bytes)), bytes) << size;
  }
  EXPECT_EQ(store->Stats().blobs, 4u);
  EXPECT_EQ(store->Stats().uploads_in_progress, 0u);
}

TEST_P(BlobStoreTest, StreamedUploadsThatDoNotAddUpLeaveNothing) {
  TempDir dir;
  BlobStoreOptions o = Options(dir);
  o.max_bytes = 10 * kChunk;
  auto store = OpenStore(o);
  const std::string bytes = RandomBytes(2 * kChunk + 5, 61);
  const Digest d = Digest::Of(bytes);
  // The commit must name the digest.
  auto id = StreamChunks(*store, bytes);
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(store->CommitUpload(*id, "peer").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store->CommitUpload(*id, "peer", d).code(), StatusCode::kFailedPrecondition);
  // Bytes that are not the named digest's, or not its size.
  id = StreamChunks(*store, bytes);
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(store->CommitUpload(*id, "peer", Digest::Of("other")).code(), StatusCode::kDataLoss);
  id = StreamChunks(*store, bytes);
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(store->CommitUpload(*id, "peer", Digest{d.hex, d.size + 1}).code(),
            StatusCode::kDataLoss);
  // A chunk after a short one, which had to be the last.
  auto begin = store->BeginUpload(Digest{}, "peer");
  ASSERT_TRUE(begin.ok());
  ASSERT_TRUE(store->WriteChunk(begin->upload_id, "peer", 0, bytes.substr(0, 10)).ok());
  EXPECT_EQ(store->WriteChunk(begin->upload_id, "peer", 10, bytes.substr(10, 10)).status().code(),
            StatusCode::kInvalidArgument);
  // More than the whole cache may hold.
  const std::string huge = RandomBytes(11 * kChunk, 62);
  EXPECT_EQ(StreamChunks(*store, huge).status().code(), StatusCode::kResourceExhausted);
  // An upload begun with a digest cannot commit as another.
  begin = store->BeginUpload(d, "peer");
  ASSERT_TRUE(begin.ok());
  for (size_t off = 0; off < bytes.size(); off += kChunk) {
    ASSERT_TRUE(store->WriteChunk(begin->upload_id, "peer", off, bytes.substr(off, kChunk)).ok());
  }
  EXPECT_EQ(store->CommitUpload(begin->upload_id, "peer", Digest::Of("other")).code(),
            StatusCode::kInvalidArgument);

  EXPECT_EQ(store->Stats().blobs, 0u);
  EXPECT_EQ(store->Stats().uploads_in_progress, 0u);
  EXPECT_EQ(CountStored(o.data_dir), 0u);
  EXPECT_EQ(CountKeys(o.data_dir, "uploads"), 0u);
}

TEST_P(BlobStoreTest, StreamedUploadOfAStoredBlobKeepsOneCopy) {
  TempDir dir;
  BlobStoreOptions o = Options(dir);
  auto store = OpenStore(o);
  const std::string bytes = RandomBytes(3 * kChunk + 1, 63);
  ASSERT_TRUE(Upload(*store, Digest::Of(bytes), bytes).ok());
  auto id = StreamChunks(*store, bytes, "other");
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(store->CommitUpload(*id, "other", Digest::Of(bytes)).ok());
  EXPECT_EQ(store->Stats().blobs, 1u);
  EXPECT_EQ(store->Stats().bytes, bytes.size());
  EXPECT_EQ(CountStored(o.data_dir), ExpectedStored({bytes.size()}));
  EXPECT_EQ(ReadAll(*store, Digest::Of(bytes)), bytes);
}

TEST_P(BlobStoreTest, CommittedBlobsSurviveACrashAndUnfinishedOnesLeaveNothing) {
  TempDir dir;
  BlobStoreOptions o = Options(dir);
  std::string big = RandomBytes(4 * kChunk + 3, 50);
  std::string partial = RandomBytes(3 * kChunk, 51);
  std::string small = RandomBytes(kChunk / 2, 52);
  std::string crash_copy;
  {
    auto store = OpenStore(o);
    auto begin = store->BeginUpload(Digest::Of(partial), "p");
    ASSERT_TRUE(begin.ok());
    ASSERT_TRUE(store->WriteChunk(begin->upload_id, "p", 0, partial.substr(0, kChunk)).ok());
    ASSERT_TRUE(StreamChunks(*store, partial, "streamed").ok());  // never committed
    ASSERT_TRUE(Upload(*store, Digest::Of(big), big).ok());
    ASSERT_TRUE(Upload(*store, Digest::Of(small), small).ok());
    EXPECT_EQ(ReadAll(*store, Digest::Of(big)), big);
    crash_copy = CopyAsCrashed(o, dir);  // right after the acknowledgements
  }
  for (const BlobStoreOptions& reopened : LiveAndCrashed(o, crash_copy)) {
    const std::string& path = reopened.data_dir;
    {
      auto store = OpenStore(reopened);
      EXPECT_EQ(ReadAll(*store, Digest::Of(big)), big) << path;
      EXPECT_EQ(ReadAll(*store, Digest::Of(small)), small) << path;
      EXPECT_EQ(store->Stats().blobs, 2u) << path;
    }
    EXPECT_EQ(CountKeys(path, "uploads"), 0u) << path;
    // The partial upload's chunk or file is gone.
    EXPECT_EQ(CountStored(path), ExpectedStored({big.size(), small.size()})) << path;
    EXPECT_EQ(CountKeys(path, "atime"), 2u) << path;
  }
}

TEST_P(BlobStoreTest, BytesOfADeletedBlobAreRemovedEvenAfterACrash) {
  TempDir dir;
  BlobStoreOptions o = Options(dir);
  std::string gone = RandomBytes(3 * kChunk + 1, 53), kept = RandomBytes(2 * kChunk, 54);
  {
    auto store = OpenStore(o);
    ASSERT_TRUE(Upload(*store, Digest::Of(gone), gone).ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    ASSERT_TRUE(Upload(*store, Digest::Of(kept), kept).ok());
    BlobStore::PruneOptions prune;
    prune.keep.insert(Digest::Of(kept).hex);
    auto r = store->Prune(prune);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->blobs, 1u);
  }
  EXPECT_EQ(CountStored(o.data_dir), ExpectedStored({kept.size()}));
  EXPECT_EQ(CountKeys(o.data_dir, "uploads"), 0u);
  // A crash between the batch that drops a file blob's meta (and records its generation) and
  // the unlink leaves a record and a file: the next Open removes both. A file no record names is
  // not the store's business and stays.
  const uint64_t generation = 0xdeadbeef;
  std::string listed = o.data_dir + "/files/00000000deadbeef";
  std::string unlisted = o.data_dir + "/files/00000000cafef00d";
  std::ofstream(listed) << gone;
  std::ofstream(unlisted) << gone;
  {
    RawDb raw(o.data_dir);
    std::string key;
    for (int i = 7; i >= 0; --i) key.push_back(static_cast<char>((generation >> (8 * i)) & 0xff));
    ASSERT_TRUE(raw.db->Put({}, raw.Family("uploads"), key, "record").ok());
  }
  OpenStore(o).reset();
  EXPECT_FALSE(std::filesystem::exists(listed));
  EXPECT_TRUE(std::filesystem::exists(unlisted));
  EXPECT_EQ(CountKeys(o.data_dir, "uploads"), 0u);
  std::filesystem::remove(unlisted);
  auto store = OpenStore(o);
  EXPECT_EQ(ReadAll(*store, Digest::Of(kept)), kept);
}

TEST_P(BlobStoreTest, PruneRemovesActionsNamingPrunedBlobs) {
  TempDir dir;
  BlobStoreOptions o = Options(dir);
  {
    auto store = OpenStore(o);
    std::string layer = RandomBytes(100, 60), toc = RandomBytes(10, 61), kept = RandomBytes(5, 62);
    for (const std::string* b : {&layer, &toc, &kept}) {
      ASSERT_TRUE(Upload(*store, Digest::Of(*b), *b).ok());
    }
    ActionResult stale, fresh, empty;
    stale.layer = LayerRef{Digest::Of(layer), Digest::Of(toc)};
    fresh.layer.diff_id = Digest::Of(kept);
    empty.created_by = "RUN true";
    ASSERT_TRUE(store->PutAction("stale", stale).ok());
    ASSERT_TRUE(store->PutAction("fresh", fresh).ok());
    ASSERT_TRUE(store->PutAction("empty", empty).ok());
    BlobStore::PruneOptions prune;
    prune.keep.insert(Digest::Of(kept).hex);
    auto r = store->Prune(prune);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->blobs, 2u);
    EXPECT_EQ(r->actions, 1u);
    auto got = store->GetAction("fresh");
    ASSERT_TRUE(got.ok() && got->has_value());
    ActionLookup lookup;
    got = store->GetAction("stale", &lookup);
    ASSERT_TRUE(got.ok());
    EXPECT_EQ(lookup, ActionLookup::kMiss);  // gone, not merely incomplete
  }
  EXPECT_EQ(CountKeys(o.data_dir, "ac"), 2u);
}

TEST_P(BlobStoreTest, EvictionSparesBlobsBeingReadAndWalksOnlyTheOldest) {
  TempDir dir;
  BlobStoreOptions o = Options(dir);
  o.max_bytes = 4 * kChunk;
  o.low_watermark = 0.5;
  auto store = OpenStore(o);
  std::vector<std::string> blobs = UploadOldestFirst(*store, 4, 70);
  // The oldest is being read (in several requests); a FindMissing is no read and pins nothing.
  std::string part;
  uint64_t size = 0;
  ASSERT_TRUE(store->ReadRange(Digest::Of(blobs[0]).hex, 0, 10, &part, &size).ok());
  std::string extra = RandomBytes(10, 79);
  ASSERT_TRUE(Upload(*store, Digest::Of(extra), extra).ok());
  auto evicted = store->EvictIfNeeded();
  ASSERT_TRUE(evicted.ok()) << evicted.status().ToString();
  EXPECT_EQ(*evicted, 3u);  // 1, 2 and 3: down to 2 chunks; 0 is pinned
  std::vector<Digest> all;
  for (const auto& b : blobs) all.push_back(Digest::Of(b));
  auto missing = store->FindMissing(all);
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(*missing, (std::vector<Digest>{all[1], all[2], all[3]}));
  EXPECT_EQ(ReadAll(*store, all[0]), blobs[0]);
  EXPECT_EQ(store->Stats().evicted_blobs, 3u);
}

TEST_P(BlobStoreTest, ReadsRacingPrunesGetWholeBlobsOrNotFound) {
  TempDir dir;
  auto store = OpenStore(Options(dir));
  std::string bytes = RandomBytes(6 * kChunk + 1, 80);
  Digest d = Digest::Of(bytes);
  ASSERT_TRUE(Upload(*store, d, bytes).ok());
  std::atomic<bool> stop{false};
  std::atomic<int> whole{0}, not_found{0};
  std::thread reader([&] {
    while (!stop.load()) {
      std::string out;
      uint64_t size = 0;
      Status s = store->ReadRange(d.hex, 0, d.size, &out, &size);
      if (s.ok()) {
        ASSERT_EQ(out, bytes);
        ++whole;
      } else {
        ASSERT_EQ(s.code(), StatusCode::kNotFound) << s.ToString();
        ++not_found;
      }
    }
  });
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE(store->Prune({}).ok());
    ASSERT_TRUE(Upload(*store, d, bytes).ok());
  }
  // Both outcomes were seen at least once in most runs; only the bytes are asserted.
  stop = true;
  reader.join();
  EXPECT_GT(whole.load() + not_found.load(), 0);
}

TEST_P(BlobStoreTest, DeleteRefRemovesTheNameOnly) {
  TempDir dir;
  auto store = OpenStore(Options(dir));
  std::string manifest = "{}";
  ASSERT_TRUE(Upload(*store, Digest::Of(manifest), manifest).ok());
  ASSERT_TRUE(store->PutRef("app:1", Digest::Of(manifest)).ok());
  ASSERT_TRUE(store->DeleteRef("app:1").ok());
  auto got = store->GetRef("app:1");
  ASSERT_TRUE(got.ok());
  EXPECT_FALSE(got->has_value());
  EXPECT_EQ(store->DeleteRef("app:1").code(), StatusCode::kNotFound);
  EXPECT_TRUE(store->Stat(Digest::Of(manifest).hex).ok());  // the blob stays until pruned
}

TEST_P(BlobStoreTest, StoreWithoutAccessIndexGetsOneOnOpen) {
  TempDir dir;
  BlobStoreOptions o = Options(dir);
  std::string a = RandomBytes(10, 90), b = RandomBytes(20, 91);
  {
    auto store = OpenStore(o);
    ASSERT_TRUE(Upload(*store, Digest::Of(a), a).ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    ASSERT_TRUE(Upload(*store, Digest::Of(b), b).ok());
  }
  {
    // As a store written before the atime family existed: no index, no marker.
    RawDb raw(o.data_dir);
    ASSERT_TRUE(raw.db->DropColumnFamily(raw.Family("atime")).ok());
    ASSERT_TRUE(
        raw.db->Delete({}, raw.Family(rocksdb::kDefaultColumnFamilyName), "atime_index_v1").ok());
  }
  EXPECT_EQ(CountKeys(o.data_dir, "atime"), 0u);
  {
    auto store = OpenStore(o);
    BlobStore::PruneOptions prune;
    prune.keep_bytes = b.size();  // the older one goes
    auto r = store->Prune(prune);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->blobs, 1u);
    EXPECT_FALSE(store->Stat(Digest::Of(a).hex).ok());
    EXPECT_TRUE(store->Stat(Digest::Of(b).hex).ok());
  }
  EXPECT_EQ(CountKeys(o.data_dir, "atime"), 1u);
}

}  // namespace
}  // namespace stagefarm::cache

namespace stagefarm::cache {
namespace {

// Each upload in a file holds a descriptor until its commit: at most a quarter of the process's
// open-files limit of them at once, however many uploads max_uploads allows.
TEST(BlobStoreLimits, UploadsInFilesStayWithinTheOpenFilesLimit) {
  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &saved), 0);
  rlimit low = saved;
  low.rlim_cur = 128;  // a quarter: 32 uploads in files
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
  struct Restore {
    rlimit saved;
    ~Restore() { ::setrlimit(RLIMIT_NOFILE, &saved); }
  } restore{saved};
  g_file_blob_bytes = 0;  // every upload in a file
  TempDir dir;
  auto store = OpenStore(Options(dir));
  std::vector<uint64_t> ids;
  for (int i = 0; i < 32; ++i) {
    auto begin = store->BeginUpload(Digest::Of(RandomBytes(100, 1000 + i)), "p");
    ASSERT_TRUE(begin.ok()) << i << ": " << begin.status().ToString();
    ids.push_back(begin->upload_id);
  }
  std::string more = RandomBytes(100, 2000);
  auto refused = store->BeginUpload(Digest::Of(more), "p");
  EXPECT_EQ(refused.status().code(), StatusCode::kResourceExhausted);
  store->AbortUpload(ids.back(), "p");  // one file closes: room for one more
  EXPECT_TRUE(Upload(*store, Digest::Of(more), more).ok());
  EXPECT_EQ(ReadAll(*store, Digest::Of(more)), more);
}

}  // namespace
}  // namespace stagefarm::cache
