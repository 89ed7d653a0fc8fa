// The cache server's serving behaviour over tcp://127.0.0.1: one client's slow requests or stalls
// do not delay another's; prune and stats as `stagefarm du` / `stagefarm prune` use them;
// eviction is counted in the metrics.
#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <algorithm>
#include <future>
#include <thread>

#include "cache_test_util.h"
#include "stagefarm/cache/cache_service.h"
#include "stagefarm/common/cache_client.h"
#include "stagefarm/common/cache_protocol.h"
#include "stagefarm/common/oci.h"
#include "support/proc_status.h"

namespace stagefarm::cache {
namespace {

using namespace std::chrono_literals;
using testing::RandomBytes;
using testing::TempDir;

constexpr uint64_t kMiB = 1 << 20;

double MetricValue(prometheus::Registry& registry, const std::string& name) {
  for (const auto& family : registry.Collect()) {
    if (family.name != name) continue;
    double sum = 0;
    for (const auto& m : family.metric) sum += m.counter.value + m.gauge.value;
    return sum;
  }
  return -1;  // not registered
}

class Server {
 public:
  Server(Transport& transport, CacheServerOptions o, prometheus::Registry* registry) {
    auto service = CacheService::Open(o, registry);
    EXPECT_TRUE(service.ok()) << service.status().ToString();
    service_ = std::move(service).value();
    std::promise<std::string> ready;
    auto bound = ready.get_future();
    thread_ = std::thread([&] {
      Status s = service_->Serve(transport, "tcp://127.0.0.1:0", false,
                                 [&](const std::string& e) { ready.set_value(e); });
      EXPECT_TRUE(s.ok()) << s.ToString();
    });
    endpoint_ = bound.get();
  }
  ~Server() {
    service_->Stop();
    thread_.join();
  }
  const std::string& endpoint() const { return endpoint_; }

 private:
  std::unique_ptr<CacheService> service_;
  std::thread thread_;
  std::string endpoint_;
};

class ServingTest : public ::testing::Test {
 protected:
  CacheServerOptions Options() {
    CacheServerOptions o;
    o.data_dir = dir_.path() + "/db";
    return o;
  }
  Message Request(Method method, std::string body) {
    Message m;
    m.method = method;
    m.body = std::move(body);
    return m;
  }
  TempDir dir_;
  Transport transport_;
  prometheus::Registry registry_;
};

double Seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

// Keeps `depth` copies of a request in flight on a channel of its own until stopped, counting
// the replies: answered, refused as busy, or anything else.
class Flood {
 public:
  Flood(RpcChannel& channel, Message request, size_t depth) {
    thread_ = std::thread([this, &channel, request = std::move(request), depth] {
      std::deque<uint64_t> in_flight;
      while (!stop_.load()) {
        while (in_flight.size() < depth) {
          auto id = channel.SendRequest(request);
          if (!id.ok()) {
            ++failed;
            return;
          }
          in_flight.push_back(*id);
        }
        auto reply = channel.AwaitReply(in_flight.front(), 60s);
        in_flight.pop_front();
        ++(reply.ok() ? answered : reply.status().code() == StatusCode::kUnavailable ? busy
                                                                                     : failed);
      }
      for (uint64_t id : in_flight) channel.AwaitReply(id, 60s).status().IgnoreError();
    });
  }
  ~Flood() { Stop(); }
  void Stop() {
    if (stop_.exchange(true)) return;
    thread_.join();
  }
  std::atomic<int> answered{0}, busy{0}, failed{0};

 private:
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// Client A keeps several FindMissing requests of 20,000 digests queued (each takes the server
// tens of milliseconds); client B's reads must not wait behind them.
TEST_F(ServingTest, OneClientsSlowRequestsDoNotDelayAnothersReads) {
  Server server(transport_, Options(), &registry_);
  auto b = ConnectCache(transport_, server.endpoint());
  std::string blob = RandomBytes(64 << 10, 1);
  Digest d;
  ASSERT_TRUE(b->PutBytes(blob, &d).ok());

  FindMissingRequest big;
  for (int i = 0; i < 20000; ++i) big.digests.push_back(Digest::Of(std::to_string(i)));
  const std::string big_body = Encode(big);
  auto socket = transport_.Connect(server.endpoint());
  ASSERT_TRUE(socket.ok());
  RpcChannel a(std::move(socket).value());
  // How long one takes when alone.
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(a.Call(Request(Method::kFindMissing, big_body), 30s).ok());
  double alone = Seconds(std::chrono::steady_clock::now() - t0);

  Flood flood(a, Request(Method::kFindMissing, big_body), 4);
  std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int>(alone * 1000)));
  std::vector<double> latencies;
  auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(
                                                    std::max(1.0, 10 * alone));
  while (std::chrono::steady_clock::now() < end) {
    auto start = std::chrono::steady_clock::now();
    auto got = b->ReadBytes(d);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    ASSERT_EQ(*got, blob);
    latencies.push_back(Seconds(std::chrono::steady_clock::now() - start));
  }
  flood.Stop();
  const int slow_done = flood.answered.load();
  EXPECT_EQ(flood.busy.load() + flood.failed.load(), 0);
  std::sort(latencies.begin(), latencies.end());
  double median = latencies[latencies.size() / 2];
  std::printf("FindMissing(20k) alone %.1f ms; %d of them during %zu reads; read median %.2f ms, "
              "max %.2f ms\n",
              alone * 1e3, slow_done, latencies.size(), median * 1e3,
              latencies.back() * 1e3);
  EXPECT_GE(slow_done, 2);
  // Behind a queue of four slow requests a read would wait at least one of them.
  EXPECT_LT(median, alone / 4);
  EXPECT_GT(latencies.size(), 20u);
}

// A client that stops half way through an upload, and one that asks for many chunks and never
// reads the replies, hold no server thread: others upload and read as usual.
TEST_F(ServingTest, StalledClientsDoNotBlockOthers) {
  Server server(transport_, Options(), &registry_);
  auto other = ConnectCache(transport_, server.endpoint());
  std::string big = RandomBytes(4 * kMiB, 2);
  Digest big_digest;
  ASSERT_TRUE(other->PutBytes(big, &big_digest).ok());

  // Stalled uploader: begins, sends one chunk of four, then nothing.
  auto s1 = transport_.Connect(server.endpoint());
  ASSERT_TRUE(s1.ok());
  RpcChannel stalled_upload(std::move(s1).value());
  std::string never = RandomBytes(4 * kMiB, 3);
  auto begin = stalled_upload.Call(
      Request(Method::kBeginUpload, Encode(BeginUploadRequest{Digest::Of(never)})), 5s);
  ASSERT_TRUE(begin.ok());
  BeginUploadResponse br;
  ASSERT_TRUE(Decode(begin->body, &br).ok());
  Message chunk = Request(Method::kUploadChunk, Encode(UploadChunkRequest{br.upload_id, 0}));
  chunk.data.push_back(never.substr(0, kMiB));
  ASSERT_TRUE(stalled_upload.Call(chunk, 5s).ok());

  // Stalled reader: 60 reads of a MiB each, replies never read.
  auto s2 = transport_.Connect(server.endpoint());
  ASSERT_TRUE(s2.ok());
  RpcChannel stalled_reader(std::move(s2).value());
  for (int i = 0; i < 60; ++i) {
    ASSERT_TRUE(stalled_reader
                    .SendRequest(Request(Method::kReadBlob,
                                         Encode(ReadBlobRequest{big_digest, (i % 4) * kMiB, kMiB})))
                    .ok());
  }

  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 5; ++i) {
    std::string bytes = RandomBytes(2 * kMiB + i, 10 + i);
    Digest d;
    ASSERT_TRUE(other->PutBytes(bytes, &d).ok());
    auto back = other->ReadBytes(d);
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_EQ(*back, bytes);
  }
  auto back = other->ReadBytes(big_digest);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, big);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  // The stalled upload is still open, not visible.
  auto missing = other->FindMissing({Digest::Of(never)});
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(missing->size(), 1u);
}

// Client A keeps the server's queue as full as it may with FindMissing requests of 100,000
// digests (about 9 MiB each); client B's uploads, whose chunks are not retried when refused as
// busy, must all go through: other requests have their own budget, and one peer only a part.
TEST_F(ServingTest, OneClientsLargeRequestsDoNotCrowdOutAnothersUploads) {
  Server server(transport_, Options(), &registry_);
  FindMissingRequest big;
  for (size_t i = 0; i < kCacheMaxFindMissing; ++i) {
    big.digests.push_back(Digest::Of(std::to_string(i)));
  }
  const std::string big_body = Encode(big);
  ASSERT_GT(big_body.size(), 8 * kMiB);
  auto socket = transport_.Connect(server.endpoint());
  ASSERT_TRUE(socket.ok());
  RpcChannel a(std::move(socket).value());
  Flood flood(a, Request(Method::kFindMissing, big_body), 10);
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (flood.answered.load() + flood.busy.load() < 10 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_GE(flood.answered.load() + flood.busy.load(), 10);
  auto b = ConnectCache(transport_, server.endpoint());
  for (int i = 0; i < 6; ++i) {
    std::string bytes = RandomBytes(12 * kMiB + i, 40 + i);
    Digest d;
    Status put = b->PutBytes(bytes, &d);
    EXPECT_TRUE(put.ok()) << i << ": " << put.ToString();
  }
  flood.Stop();
  EXPECT_EQ(flood.failed.load(), 0);
}

uint64_t RssBytes() { return stagefarm::testing::ProcStatusBytes("self", "VmRSS"); }

// A peer that asks for 800 reads of a MiB and never reads the replies (its ZeroMQ socket takes
// one and its TCP buffer little more): once ZeroMQ holds kMaxUnsentBytesPerPeer (16 MiB) of its
// replies its requests wait, and past its queue are refused, so the server holds some 16 MiB for
// it rather than 800 MiB (or, with only ZeroMQ's bound of kMaxUnsentRepliesPerPeer replies, 256).
// The server goes on serving others, and the peer, once it reads, gets the replies held for it
// and is served again.
TEST_F(ServingTest, APeerThatDoesNotReadHoldsABoundedAmountOfReplies) {
  Server server(transport_, Options(), &registry_);
  auto other = ConnectCache(transport_, server.endpoint());
  std::string blob = RandomBytes(4 * kMiB, 6);
  Digest d;
  ASSERT_TRUE(other->PutBytes(blob, &d).ok());
  const uint64_t before = RssBytes();
  testing::RawPeer raw(transport_.context(), server.endpoint(), /*rcvhwm=*/1,
                       /*rcvbuf=*/64 << 10);
  uint64_t peak = 0;
  auto read = [&](uint64_t id) {
    Message m = Request(Method::kReadBlob, Encode(ReadBlobRequest{d, (id % 4) * kMiB, kMiB}));
    m.request_id = id;
    return raw.Send(EncodeFrames(m));
  };
  for (int i = 0; i < 800; ++i) {
    ASSERT_TRUE(read(i + 1));
    if (i % 16 == 15) {  // paced below the server's queue of 64 requests per peer
      std::this_thread::sleep_for(20ms);
      peak = std::max(peak, RssBytes());
    }
  }
  std::this_thread::sleep_for(500ms);
  peak = std::max(peak, RssBytes());
  const double grown_mib = (peak - std::min(peak, before)) / double(kMiB);
  std::printf("800 unread reads of 1 MiB: this process grew by %.0f MiB\n", grown_mib);
  EXPECT_LT(grown_mib, 80);
  auto back = other->ReadBytes(d);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, blob);

  // Now it reads: the replies held for it come, and the refusals. (The replies to the requests
  // that waited are made as it reads, but ZeroMQ drops most of them: the refusals filled its
  // count of 256 replies for the peer, which it takes back only in steps of half.)
  raw.SetReceiveTimeout(1000);
  size_t served = 0, busy = 0;
  for (std::vector<std::string> frames; !(frames = raw.Receive()).empty();) {
    Message reply;
    ASSERT_TRUE(DecodeFrames(frames, &reply).ok());
    if (reply.status.ok()) {
      ASSERT_EQ(reply.data.size(), 1u);
      EXPECT_TRUE(reply.data[0].view() ==
                  std::string_view(blob).substr(reply.request_id % 4 * kMiB, kMiB));
      ++served;
    } else {
      EXPECT_EQ(reply.status.code(), StatusCode::kUnavailable) << reply.status.ToString();
      ++busy;
    }
  }
  std::printf("then read %zu replies with data and %zu refusals\n", served, busy);
  EXPECT_GE(served, 16u);
  EXPECT_GT(busy, 0u);
  // It is served again: nothing of it is held now.
  ASSERT_TRUE(read(1000));
  Message last;
  ASSERT_TRUE(DecodeFrames(raw.Receive(), &last).ok());
  EXPECT_TRUE(last.status.ok()) << last.status.ToString();
  EXPECT_EQ(last.request_id, 1000u);
}

std::string PutOrDie(CacheClient& c, const std::string& bytes) {
  Digest d;
  Status s = c.PutBytes(bytes, &d);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return d.hex;
}

TEST_F(ServingTest, PruneKeepsWhatImagesNeedUnlessAll) {
  Server server(transport_, Options(), &registry_);
  auto c = ConnectCache(transport_, server.endpoint());
  // An image: layer + TOC + config + manifest, named by a ref.
  std::string layer = RandomBytes(300 << 10, 4), toc = RandomBytes(1000, 5),
              config = "{\"config\":{}}";
  Digest layer_d = Digest::Of(layer), toc_d = Digest::Of(toc), config_d = Digest::Of(config);
  PutOrDie(*c, layer);
  PutOrDie(*c, toc);
  PutOrDie(*c, config);
  std::string manifest = SerializeManifest(MakeStoredManifest(config_d, {{layer_d, toc_d}}));
  Digest manifest_d = Digest::Of(manifest);
  PutOrDie(*c, manifest);
  ASSERT_TRUE(c->PutRef("docker.io/library/app:latest", manifest_d).ok());
  // Unreferenced blobs, used oldest first.
  std::vector<Digest> loose;
  for (int i = 0; i < 3; ++i) {
    std::string b = RandomBytes(100 << 10, 20 + i);
    PutOrDie(*c, b);
    loose.push_back(Digest::Of(b));
    std::this_thread::sleep_for(5ms);  // distinct access times
  }
  auto st = QueryCacheStats(transport_, server.endpoint());
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  EXPECT_EQ(st->blobs, 7u);
  EXPECT_EQ(st->refs, 1u);
  const uint64_t image_bytes = layer.size() + toc.size() + config.size() + manifest.size();
  EXPECT_EQ(st->bytes, image_bytes + 300u * 1024);

  // Dry run: counts, removes nothing.
  PruneCacheRequest req;
  req.dry_run = true;
  auto r = PruneCache(transport_, server.endpoint(), req);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->blobs, 3u);
  EXPECT_EQ(r->bytes, 300u * 1024);
  st = QueryCacheStats(transport_, server.endpoint());  // (a FindMissing would touch them)
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->blobs, 7u);

  // keep_bytes: only the oldest loose blob has to go.
  req = PruneCacheRequest{};
  req.keep_bytes = image_bytes + 200 * 1024;
  r = PruneCache(transport_, server.endpoint(), req);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->blobs, 1u);
  auto missing = c->FindMissing(loose);
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(*missing, std::vector<Digest>{loose[0]});

  // Everything unreferenced.
  r = PruneCache(transport_, server.endpoint(), PruneCacheRequest{});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->blobs, 2u);
  EXPECT_EQ(r->blobs_left, 4u);
  EXPECT_EQ(r->bytes_left, image_bytes);
  missing = c->FindMissing({layer_d, toc_d, config_d, manifest_d});
  ASSERT_TRUE(missing.ok());
  EXPECT_TRUE(missing->empty());

  // --all: the image goes, and its ref with it.
  req = PruneCacheRequest{};
  req.all = true;
  r = PruneCache(transport_, server.endpoint(), req);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->blobs, 4u);
  EXPECT_EQ(r->refs, 1u);
  st = QueryCacheStats(transport_, server.endpoint());
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->blobs, 0u);
  EXPECT_EQ(st->bytes, 0u);
  auto refs = c->ListRefs();
  ASSERT_TRUE(refs.ok());
  EXPECT_TRUE(refs->empty());
}

TEST_F(ServingTest, EvictionsAreCounted) {
  CacheServerOptions o = Options();
  o.max_bytes = 3 * kMiB;
  Server server(transport_, o, &registry_);
  auto c = ConnectCache(transport_, server.endpoint());
  for (int i = 0; i < 5; ++i) PutOrDie(*c, RandomBytes(kMiB, 40 + i));
  auto deadline = std::chrono::steady_clock::now() + 10s;
  // Evicted in the background; the size gauges follow at the next housekeeping.
  while ((MetricValue(registry_, "stagefarm_cache_evictions_total") < 3 ||
          MetricValue(registry_, "stagefarm_cache_blobs") > 2) &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(50ms);
  }
  // 5 MiB down to 90% of 3 MiB: three blobs go.
  EXPECT_EQ(MetricValue(registry_, "stagefarm_cache_evictions_total"), 3);
  EXPECT_LE(MetricValue(registry_, "stagefarm_cache_bytes"), 2.7 * kMiB + 1);
  EXPECT_EQ(MetricValue(registry_, "stagefarm_cache_blobs"), 2);
}

TEST_F(ServingTest, EveryDesignMetricIsRegisteredWithHelp) {
  Server server(transport_, Options(), &registry_);
  auto c = ConnectCache(transport_, server.endpoint());
  PutOrDie(*c, "x");
  ASSERT_TRUE(c->GetAction("k").ok());
  std::map<std::string, std::string> help;
  for (const auto& f : registry_.Collect()) help[f.name] = f.help;
  for (const char* name :
       {"stagefarm_cache_bytes", "stagefarm_cache_blobs", "stagefarm_cache_ops_total",
        "stagefarm_cache_op_seconds", "stagefarm_cache_transfer_bytes_total",
        "stagefarm_cache_evictions_total", "stagefarm_cache_ac_lookups_total"}) {
    ASSERT_TRUE(help.count(name)) << name;
    EXPECT_FALSE(help[name].empty()) << name;
  }
}

}  // namespace
}  // namespace stagefarm::cache
