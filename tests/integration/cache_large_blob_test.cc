// A 1 GiB blob through a real `stagefarm cache` server and the remote client: uploaded from a
// generator, read back whole and in a range at its end, bit-exact (by SHA-256), while the memory
// of both processes is sampled. Neither may hold the blob: the server stays under 300 MiB (the
// issue's bound) and the client grows by less than 64 MiB.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "stagefarm/common/cache_client.h"
#include "stagefarm/common/cache_protocol.h"
#include "stagefarm/common/digest.h"
#include "stagefarm/common/transport.h"
#include "support/blob_generator.h"
#include "support/cache_server.h"
#include "support/proc_status.h"
#include "support/process.h"

namespace stagefarm::testing {
namespace {

using namespace std::chrono_literals;

constexpr uint64_t kGiB = uint64_t{1} << 30;
constexpr uint64_t kMiB = uint64_t{1} << 20;

// Samples the resident memory of the server and of this process until destroyed.
class MemorySampler {
 public:
  explicit MemorySampler(pid_t server) : server_(std::to_string(server)) {
    thread_ = std::thread([this] {
      while (!stop_.load()) {
        server_max_ = std::max<uint64_t>(server_max_, ProcStatusBytes(server_, "VmRSS"));
        self_max_ = std::max<uint64_t>(self_max_, ProcStatusBytes("self", "VmRSS"));
        std::this_thread::sleep_for(20ms);
      }
    });
  }
  ~MemorySampler() { Stop(); }
  void Stop() {
    if (stop_.exchange(true)) return;
    thread_.join();
  }
  uint64_t server_max() const { return server_max_; }
  uint64_t self_max() const { return self_max_; }

 private:
  const std::string server_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> server_max_{0}, self_max_{0};
  std::thread thread_;
};

TEST(CacheLargeBlob, OneGiBRoundTripsWithBoundedMemory) {
  TempDir dir;
  CacheServerProcess server = StartCacheServer(dir.path() + "/data");
  ASSERT_FALSE(server.endpoint.empty()) << server.process->Stderr();
  const pid_t server_pid = server.process->pid();

  BlobGenerator gen(7, kGiB);
  const Digest digest = gen.digest();
  const uint64_t self_before = ProcStatusBytes("self", "VmRSS");
  Transport transport;
  RemoteCacheOptions options;
  options.request_timeout = 60s;  // a commit flushes up to a memtable of chunks
  auto client = ConnectCache(transport, server.endpoint, options);
  MemorySampler sampler(server_pid);

  auto t0 = std::chrono::steady_clock::now();
  Status put = client->Put(digest, std::ref(gen));
  ASSERT_TRUE(put.ok()) << put.ToString();
  auto t1 = std::chrono::steady_clock::now();
  auto missing = client->FindMissing({digest});
  ASSERT_TRUE(missing.ok()) << missing.status().ToString();
  EXPECT_TRUE(missing->empty());

  Sha256 hash;
  uint64_t got = 0;
  Status read = client->Read(digest, 0, 0, [&](std::string_view bytes) {
    hash.Update(bytes);
    got += bytes.size();
    return Status();
  });
  auto t2 = std::chrono::steady_clock::now();
  ASSERT_TRUE(read.ok()) << read.ToString();
  EXPECT_EQ(got, kGiB);
  EXPECT_EQ(hash.Finish(), digest);

  // A range across the last chunk boundary, against the generator's bytes there.
  const uint64_t offset = kGiB - kMiB - 100, length = 300;
  std::string range;
  ASSERT_TRUE(client->Read(digest, offset, length, [&](std::string_view b) {
                      range.append(b);
                      return Status();
                    }).ok());
  BlobGenerator again(7, kGiB);
  std::string skip(kMiB, '\0');
  for (uint64_t pos = 0; pos < offset;) {
    pos += *again(skip.data(), std::min<uint64_t>(skip.size(), offset - pos));
  }
  std::string expected(length, '\0');
  ASSERT_EQ(*again(expected.data(), length), length);
  EXPECT_EQ(range, expected);

  sampler.Stop();
  const uint64_t server_peak = ProcStatusBytes(std::to_string(server_pid), "VmHWM");
  std::printf("1 GiB: put %.1f s, read %.1f s; server peak RSS %.0f MiB (sampled max %.0f MiB), "
              "client RSS +%.0f MiB\n",
              std::chrono::duration<double>(t1 - t0).count(),
              std::chrono::duration<double>(t2 - t1).count(), server_peak / double(kMiB),
              sampler.server_max() / double(kMiB),
              (sampler.self_max() - std::min(sampler.self_max(), self_before)) / double(kMiB));
  EXPECT_GT(server_peak, 0u);
  EXPECT_LT(server_peak, 300 * kMiB);
  EXPECT_LT(sampler.server_max(), 300 * kMiB);
  EXPECT_LT(sampler.self_max() - std::min(sampler.self_max(), self_before), 64 * kMiB);
}

}  // namespace
}  // namespace stagefarm::testing
