// The cache server killed with SIGKILL at random moments while clients upload and commit blobs,
// over and over (at least 200 kills). After every restart:
//   - every blob whose commit was acknowledged is stored and reads back bit-exact;
//   - no blob whose commit was never sent is visible, nor one whose bytes did not match;
//   - a blob whose commit was sent but not answered (the kill came in between) is either stored
//     bit-exact or absent, and stays so from then on;
//   - the store's counters (blobs, bytes) agree with exactly the visible blobs, and no upload
//     survives the restart.
// The clients speak the protocol themselves (not through CacheClient::Put) so the test knows
// exactly whether a commit was sent.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstring>
#include <deque>
#include <filesystem>
#include <mutex>
#include <random>
#include <regex>
#include <thread>
#include <unordered_set>

#include "stagefarm/common/cache_client.h"
#include "stagefarm/common/cache_protocol.h"
#include "stagefarm/common/digest.h"
#include "stagefarm/common/transport.h"
#include "support/process.h"

namespace stagefarm::testing {
namespace {

using namespace std::chrono_literals;

const std::string kBin = STAGEFARM_BINARY;

constexpr int kKills = 200;
constexpr auto kRequestTimeout = 100ms;  // the wait after each kill

uint64_t SplitMix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Blob contents are a pure function of their index, so the test keeps only digests. Mostly
// small blobs (one chunk), some of several chunks.
std::string BlobBytes(uint64_t index) {
  uint64_t r = SplitMix(index * 7919 + 1);
  uint64_t size;
  switch (r % 20) {
    case 0:
      size = (1 << 20) + r % (2 << 20);  // 1..3 MiB: several chunks
      break;
    case 1:
    case 2:
      size = r % (1 << 20);  // up to a chunk
      break;
    default:
      size = 1 + r % (16 << 10);
  }
  std::string out(size, '\0');
  uint64_t s = SplitMix(r);
  for (size_t i = 0; i < size; i += 8) {
    s = SplitMix(s);
    std::memcpy(out.data() + i, &s, std::min<size_t>(8, size - i));
  }
  return out;
}

enum class Fate {
  kNotCommitted,  // the commit was never sent (or refused): must never be visible
  kInDoubt,       // commit sent, no answer: resolved at the next restart
  kAcked,         // commit acknowledged: must be stored, bit-exact, forever
};

struct Record {
  uint64_t index = 0;
  Digest digest;
  Fate fate = Fate::kNotCommitted;
  bool corrupt = false;        // bytes sent differ from the digest: must never be visible
  bool verified_once = false;  // read back bit-exact after it became acknowledged
};

struct Ledger {
  std::mutex mu;
  std::deque<Record> records;  // stable addresses
  std::atomic<uint64_t> next_index{0};
};

Message Request(Method method, std::string body) {
  Message m;
  m.method = method;
  m.body = std::move(body);
  return m;
}

// Uploads blobs until `stop`, writing each one's fate to the ledger.
class Uploader {
 public:
  Uploader(Transport& transport, std::string endpoint, Ledger& ledger, uint64_t seed)
      : transport_(transport), endpoint_(std::move(endpoint)), ledger_(ledger), rng_(seed) {}

  void Run(const std::atomic<bool>& stop) {
    while (!stop.load()) {
      auto channel = transport_.Connect(endpoint_);
      if (!channel.ok()) {
        ADD_FAILURE() << channel.status().ToString();
        return;
      }
      RpcChannel ch(std::move(channel).value());
      // A failed request leaves the channel in doubt: start over on a fresh one.
      while (!stop.load() && UploadOne(ch)) {
      }
    }
  }

 private:
  // Returns false when the server stopped answering.
  bool UploadOne(RpcChannel& ch) {
    Record* rec;
    std::string bytes;
    {
      uint64_t index = ledger_.next_index.fetch_add(1);
      bytes = BlobBytes(index);
      std::lock_guard lock(ledger_.mu);
      rec = &ledger_.records.emplace_back();
      rec->index = index;
      rec->digest = Digest::Of(bytes);
      rec->corrupt = rng_() % 16 == 0;
    }
    if (rec->corrupt) bytes[rng_() % bytes.size()] ^= 0x5a;  // same size, other bytes

    auto begin_reply = ch.Call(Request(Method::kBeginUpload, Encode(BeginUploadRequest{rec->digest})),
                               kRequestTimeout);
    if (!begin_reply.ok()) return Gone(begin_reply.status());
    BeginUploadResponse begin;
    EXPECT_TRUE(Decode(begin_reply->body, &begin).ok());
    EXPECT_FALSE(begin.exists) << rec->digest.str() << " stored before its upload";
    if (begin.exists) return true;
    EXPECT_EQ(begin.chunk_size, kCacheChunkSize);

    // Chunks pipelined under the granted credit.
    std::deque<uint64_t> in_flight;
    uint64_t sent = 0;
    // Some uploads are abandoned half way: their blobs must never appear.
    uint64_t stop_at = rng_() % 10 == 0 ? bytes.size() / 2 : bytes.size();
    while (sent < stop_at || !in_flight.empty()) {
      while (sent < stop_at && in_flight.size() < std::max<uint32_t>(begin.credit, 1)) {
        uint64_t n = std::min<uint64_t>(begin.chunk_size, bytes.size() - sent);
        Message m = Request(Method::kUploadChunk, Encode(UploadChunkRequest{begin.upload_id, sent}));
        m.data.push_back(bytes.substr(sent, n));
        auto id = ch.SendRequest(std::move(m));
        if (!id.ok()) return false;
        in_flight.push_back(*id);
        sent += n;
      }
      if (in_flight.empty()) break;
      auto reply = ch.AwaitReply(in_flight.front(), kRequestTimeout);
      in_flight.pop_front();
      if (!reply.ok()) return Gone(reply.status());
    }
    if (stop_at < bytes.size()) return true;  // never committed; the server drops it on restart

    // From here the commit may have happened whatever we hear back.
    {
      std::lock_guard lock(ledger_.mu);
      rec->fate = Fate::kInDoubt;
    }
    auto commit =
        ch.Call(Request(Method::kCommitUpload, Encode(CommitUploadRequest{begin.upload_id, {}})),
                kRequestTimeout);
    std::lock_guard lock(ledger_.mu);
    if (commit.ok()) {
      EXPECT_FALSE(rec->corrupt) << "a commit of wrong bytes was acknowledged";
      rec->fate = Fate::kAcked;
      return true;
    }
    if (commit.status().code() == StatusCode::kDataLoss) {
      EXPECT_TRUE(rec->corrupt) << commit.status().ToString();
      rec->fate = Fate::kNotCommitted;
      return true;
    }
    // Unavailable / DeadlineExceeded: the kill came between commit and reply.
    return Gone(commit.status());
  }

  // A failed request: the server was killed (no reply) or, a test failure, refused it.
  static bool Gone(const Status& s) {
    EXPECT_TRUE(s.code() == StatusCode::kDeadlineExceeded || s.code() == StatusCode::kUnavailable)
        << s.ToString();
    return false;
  }

  Transport& transport_;
  const std::string endpoint_;
  Ledger& ledger_;
  std::mt19937_64 rng_;
};

class CrashTest : public ::testing::Test {
 protected:
  // Starts the server on the data dir; returns its endpoint (empty if it did not come up).
  std::string Start() {
    server_ = std::make_unique<ChildProcess>(
        std::vector<std::string>{kBin, "cache", "--listen", "tcp://127.0.0.1:0", "--data",
                                 data_.path()},
        logs_.path() + "/cache-" + std::to_string(starts_++));
    auto ep = server_->WaitForStderr(std::regex("cache server listening on (tcp://[0-9.:]+)"), 30s);
    return ep.value_or("");
  }
  void Kill() {
    server_->Kill(SIGKILL);
    server_->Wait(10s);
    ++kills_;
  }

  // Checks the store against the ledger; resolves commits in doubt. Reads back bit-exact every
  // blob acknowledged since the last check and `sample` older ones (all of them if sample < 0).
  void Verify(const std::string& endpoint, int sample) {
    std::unique_ptr<CacheClient> client = ConnectCache(transport_, endpoint);
    std::vector<Record*> all;
    for (Record& r : ledger_.records) all.push_back(&r);
    std::vector<Digest> digests;
    for (Record* r : all) digests.push_back(r->digest);
    auto missing = client->FindMissing(digests);
    ASSERT_TRUE(missing.ok()) << missing.status().ToString();
    std::unordered_set<std::string> absent;
    for (const Digest& d : *missing) absent.insert(d.hex);

    uint64_t blobs = 0, bytes = 0;
    std::vector<Record*> to_read;
    for (Record* r : all) {
      bool present = !absent.count(r->digest.hex);
      switch (r->fate) {
        case Fate::kAcked:
          ASSERT_TRUE(present) << "acknowledged blob " << r->index << " " << r->digest.str()
                               << " lost after restart " << starts_;
          break;
        case Fate::kNotCommitted:
          ASSERT_FALSE(present) << "unacknowledged blob " << r->index << " (corrupt "
                                << r->corrupt << ") visible after restart " << starts_;
          break;
        case Fate::kInDoubt:
          ++in_doubt_resolved_;
          if (r->corrupt) {
            ASSERT_FALSE(present) << "wrong bytes of " << r->index << " visible";
          }
          r->fate = present ? Fate::kAcked : Fate::kNotCommitted;
          break;
      }
      if (r->fate == Fate::kAcked) {
        ++blobs;
        bytes += r->digest.size;
        if (!r->verified_once) to_read.push_back(r);
      }
    }
    std::vector<Record*> old;
    for (Record* r : all) {
      if (r->fate == Fate::kAcked && r->verified_once) old.push_back(r);
    }
    if (sample < 0) {
      to_read.insert(to_read.end(), old.begin(), old.end());
    } else {
      std::shuffle(old.begin(), old.end(), rng_);
      old.resize(std::min<size_t>(old.size(), sample));
      to_read.insert(to_read.end(), old.begin(), old.end());
    }
    for (Record* r : to_read) {
      auto got = client->ReadBytes(r->digest, 8 << 20);
      ASSERT_TRUE(got.ok()) << r->index << ": " << got.status().ToString();
      ASSERT_TRUE(*got == BlobBytes(r->index)) << "blob " << r->index << " differs after restart";
      r->verified_once = true;
      ++reads_;
    }

    auto stats = QueryCacheStats(transport_, endpoint);
    ASSERT_TRUE(stats.ok()) << stats.status().ToString();
    EXPECT_EQ(stats->blobs, blobs) << "after restart " << starts_;
    EXPECT_EQ(stats->bytes, bytes) << "after restart " << starts_;
    EXPECT_EQ(stats->uploads_in_progress, 0u);
    // Blobs of a chunk and more are files of their own (BlobStoreOptions::file_blob_bytes): after
    // a restart exactly the acknowledged ones have a file, nothing of an unfinished upload stays.
    size_t files = 0, file_blobs = 0;
    for ([[maybe_unused]] const auto& e :
         std::filesystem::directory_iterator(data_.path() + "/files")) {
      ++files;
    }
    for (const Record* r : all) {
      if (r->fate == Fate::kAcked && r->digest.size >= kCacheChunkSize) ++file_blobs;
    }
    EXPECT_EQ(files, file_blobs) << "after restart " << starts_;
  }

  Transport transport_;
  TempDir data_;
  TempDir logs_;
  Ledger ledger_;
  std::unique_ptr<ChildProcess> server_;
  std::mt19937_64 rng_{20261123};
  int starts_ = 0;
  int kills_ = 0;
  uint64_t in_doubt_resolved_ = 0;
  uint64_t reads_ = 0;
};

TEST_F(CrashTest, AcknowledgedBlobsSurviveSigkillAndNothingElseAppears) {
  int kills_while_uploading = 0;
  auto started = std::chrono::steady_clock::now();
  while (kills_ < kKills) {
    if (rng_() % 10 == 0) {
      // Killed while opening the store (and removing the last run's unfinished uploads).
      server_ = std::make_unique<ChildProcess>(
          std::vector<std::string>{kBin, "cache", "--listen", "tcp://127.0.0.1:0", "--data",
                                   data_.path()},
          logs_.path() + "/cache-" + std::to_string(starts_++));
      std::this_thread::sleep_for(std::chrono::milliseconds(rng_() % 60));
      Kill();
      continue;
    }
    std::string endpoint = Start();
    ASSERT_FALSE(endpoint.empty()) << server_->Stderr();
    Verify(endpoint, 8);
    if (HasFatalFailure()) return;

    std::atomic<bool> stop{false};
    std::vector<std::thread> threads;
    std::vector<std::unique_ptr<Uploader>> uploaders;
    for (int i = 0; i < 2; ++i) {
      uploaders.push_back(std::make_unique<Uploader>(transport_, endpoint, ledger_, rng_()));
      threads.emplace_back([&u = *uploaders.back(), &stop] { u.Run(stop); });
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5 + rng_() % 120));
    Kill();
    ++kills_while_uploading;
    stop.store(true);
    for (auto& t : threads) t.join();
  }
  // The last restart reads every acknowledged blob.
  std::string endpoint = Start();
  ASSERT_FALSE(endpoint.empty()) << server_->Stderr();
  Verify(endpoint, -1);
  server_->Kill(SIGTERM);
  EXPECT_EQ(server_->Wait(30s), std::optional<int>(0)) << server_->Stderr();

  uint64_t acked = 0, never = 0;
  for (const Record& r : ledger_.records) (r.fate == Fate::kAcked ? acked : never)++;
  std::printf("%.1f s: %d kills (%d while uploading), %zu uploads: %lu acknowledged, %lu not, %lu commits "
              "in doubt resolved, %lu bit-exact reads\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count(),
              kills_, kills_while_uploading, ledger_.records.size(), acked, never,
              in_doubt_resolved_, reads_);
  EXPECT_GE(kills_, kKills);
  // The test proves something only if the kills hit real work.
  EXPECT_GT(acked, 200u);
  EXPECT_GT(never, 20u);
}

}  // namespace
}  // namespace stagefarm::testing
