// Cache server throughput on loopback, driven by the remote client. The server is the one at
// $STAGEFARM_CACHE_BENCH_ENDPOINT (bench/cache_bench.sh starts `stagefarm cache` as its own
// process, so that its memory can be measured apart from the client's), or else a CacheService
// in this process on a temp dir under $TMPDIR. bench/cache_bench.sh prints the machine's
// single-core SHA-256 rate and raw disk write rate beside these figures.
//
// Blobs are streamed from a generator (tests/support/blob_generator.h), never held whole in
// memory, so the 1 GiB cases measure the server and not the client's allocator.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <deque>
#include <filesystem>
#include <future>
#include <thread>

#include "stagefarm/cache/blob_store.h"
#include "stagefarm/cache/cache_service.h"
#include "stagefarm/cache/file_writer.h"
#include "stagefarm/common/allocator.h"
#include "stagefarm/common/cache_client.h"
#include "stagefarm/common/cache_protocol.h"
#include "stagefarm/common/transport.h"
#include "stagefarm/common/unique_fd.h"
#include "support/blob_generator.h"

namespace stagefarm::cache {
namespace {

using Generator = testing::BlobGenerator;

// The server: external if the script started one, else in this process.
struct Fixture {
  Fixture() {
    if (const char* e = std::getenv("STAGEFARM_CACHE_BENCH_ENDPOINT"); e != nullptr && *e) {
      endpoint = e;
      return;
    }
    std::string tmpl = (std::filesystem::temp_directory_path() / "sf-cache-bench-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) std::abort();
    dir = tmpl;
    CacheServerOptions o;
    o.data_dir = dir;
    auto s = CacheService::Open(o, nullptr);
    if (!s.ok()) std::abort();
    service = std::move(s).value();
    std::promise<std::string> ready;
    auto bound = ready.get_future();
    thread = std::thread([&] {
      service->Serve(transport, "tcp://127.0.0.1:0", false,
                     [&](const std::string& e) { ready.set_value(e); })
          .IgnoreError();
    });
    endpoint = bound.get();
  }
  ~Fixture() {
    if (!service) return;
    service->Stop();
    thread.join();
    service.reset();
    std::filesystem::remove_all(dir);
  }
  Transport transport;
  std::string dir, endpoint;
  std::unique_ptr<CacheService> service;
  std::thread thread;
};

Fixture& F() {
  static Fixture f;
  return f;
}

// Fresh per process and run, so a reused external server never dedups a Put.
uint64_t NextSeed() {
  static uint64_t seed = static_cast<uint64_t>(
      std::chrono::system_clock::now().time_since_epoch().count());
  return ++seed;
}

// 1 MiB, 64 MiB and 1 GiB, three times each, in wall-clock milliseconds.
void BlobSizes(benchmark::internal::Benchmark* b) {
  b->Arg(1 << 20)->Arg(64 << 20)->Arg(1 << 30)->Iterations(3);
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

void BM_Put(benchmark::State& state) {
  auto client = ConnectCache(F().transport, F().endpoint);
  const uint64_t size = state.range(0);
  for (auto _ : state) {
    state.PauseTiming();
    uint64_t seed = NextSeed();
    Digest d = Generator(seed, size).digest();
    Generator source(seed, size);
    state.ResumeTiming();
    Status s = client->Put(d, std::ref(source));
    if (!s.ok()) state.SkipWithError(s.ToString().c_str());
  }
  state.SetBytesProcessed(state.iterations() * size);
}
BENCHMARK(BM_Put)->Apply(BlobSizes);

void BM_Get(benchmark::State& state) {
  auto client = ConnectCache(F().transport, F().endpoint);
  const uint64_t size = state.range(0);
  uint64_t seed = NextSeed();
  Digest d = Generator(seed, size).digest();
  Generator source(seed, size);
  if (!client->Put(d, std::ref(source)).ok()) std::abort();
  for (auto _ : state) {
    uint64_t n = 0;
    Status s = client->Read(d, 0, 0, [&](std::string_view b) {
      n += b.size();
      return Status();
    });
    if (!s.ok() || n != size) state.SkipWithError("read failed");
  }
  state.SetBytesProcessed(state.iterations() * size);
}
BENCHMARK(BM_Get)->Apply(BlobSizes);

// Half present, half absent; stored once per process, as Google Benchmark calls a benchmark
// function several times while it settles the iteration count.
const std::vector<Digest>& FindMissingDigests() {
  static const std::vector<Digest> digests = [] {
    auto client = ConnectCache(F().transport, F().endpoint);
    std::vector<Digest> out;
    uint64_t seed = NextSeed();
    for (int i = 0; i < 10000; ++i) {
      std::string b = "present-" + std::to_string(seed) + "-" + std::to_string(i);
      if (i % 2 == 0 && !client->PutBytes(b).ok()) std::abort();
      out.push_back(Digest::Of(i % 2 == 0 ? b : "absent-" + b));
    }
    return out;
  }();
  return digests;
}

void BM_FindMissing10k(benchmark::State& state) {
  const auto& digests = FindMissingDigests();
  auto client = ConnectCache(F().transport, F().endpoint);
  for (auto _ : state) {
    auto m = client->FindMissing(digests);
    if (!m.ok() || m->size() != 5000) state.SkipWithError("FindMissing failed");
  }
}
BENCHMARK(BM_FindMissing10k)->Unit(benchmark::kMillisecond)->UseRealTime();

// The store's write path without the network, in this process: each 1 MiB chunk of a 1 GiB
// blob hashed (argument 1) or not (0) and written through the server's FileWriter, synced as it
// goes, as a large upload is, and synced once more at the end. The ceilings a Put over loopback
// is measured against: the disk's durable write rate, and that with the hash beside it.
void BM_LocalIngest(benchmark::State& state) {
  const bool hash = state.range(0) != 0;
  const uint64_t size = 1ull << 30;
  std::string dir = (std::filesystem::temp_directory_path() / "sf-ingest-XXXXXX").string();
  if (mkdtemp(dir.data()) == nullptr) std::abort();
  const std::string path = dir + "/blob";
  FileWriter writer(BlobStore::kWriterThreads, BlobStore::kWriterBytes);
  for (auto _ : state) {
    state.PauseTiming();
    Generator source(NextSeed(), size);
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!fd) std::abort();
    auto writes = std::make_shared<FileWrites>();
    state.ResumeTiming();
    Sha256 hasher;
    for (uint64_t offset = 0; offset < size; offset += kCacheChunkSize) {
      std::shared_ptr<char[]> buf(new char[kCacheChunkSize]);
      const size_t n = *source(buf.get(), kCacheChunkSize);
      if (hash) hasher.Update(std::string_view(buf.get(), n));
      writer.Write(fd.get(), offset, Frame(buf, std::string_view(buf.get(), n)), writes,
                   BlobStore::kWritesPerUpload);
    }
    if (hash) benchmark::DoNotOptimize(hasher.Finish());
    if (!writes->Wait().ok() || ::fdatasync(fd.get()) != 0) state.SkipWithError("write failed");
    state.PauseTiming();
    fd.reset();
    ::unlink(path.c_str());
    state.ResumeTiming();
  }
  state.SetBytesProcessed(state.iterations() * size);
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_LocalIngest)
    ->ArgName("hash")
    ->Arg(0)
    ->Arg(1)
    ->Iterations(3)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

constexpr int kActions = 500;

const std::vector<std::string>& ActionKeys() {
  static const std::vector<std::string> keys = [] {
    auto c = ConnectCache(F().transport, F().endpoint);
    std::vector<std::string> out;
    uint64_t seed = NextSeed();
    for (int i = 0; i < kActions; ++i) {
      std::string tag = std::to_string(seed) + "-" + std::to_string(i);
      std::string layer = "layer-" + tag, toc = "toc-" + tag;
      if (!c->PutBytes(layer).ok() || !c->PutBytes(toc).ok()) std::abort();
      ActionResult r{LayerRef{Digest::Of(layer), Digest::Of(toc)}, "RUN step", 1.0};
      out.push_back(Digest::Of("key-" + tag).hex);  // as a step key is (see step_keys.cc)
      if (!c->PutAction(out.back(), r).ok()) std::abort();
    }
    return out;
  }();
  return keys;
}

// One request at a time: the round-trip latency.
void BM_ActionCacheGet(benchmark::State& state) {
  const auto& keys = ActionKeys();
  auto client = ConnectCache(F().transport, F().endpoint);
  uint64_t i = state.thread_index();
  for (auto _ : state) {
    auto r = client->GetAction(keys[i++ % keys.size()]);
    if (!r.ok() || !r->has_value()) state.SkipWithError("GetAction missed");
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ActionCacheGet)->Threads(1)->UseRealTime();

// A window of requests in flight per client, as a coordinator resolving a build's steps would
// send them: the server's capacity rather than the loopback latency. The window is refilled when
// half of it has come back, in one burst, as a client with a batch of lookups sends them: one
// request per reply would wake the client's ZeroMQ I/O thread for every request, and the client
// shares the machine's cores with the server.
void BM_ActionCacheGetPipelined(benchmark::State& state) {
  const auto& keys = ActionKeys();
  const size_t window = state.range(0);
  auto socket = F().transport.Connect(F().endpoint);
  if (!socket.ok()) std::abort();
  RpcChannel ch(std::move(socket).value());
  std::deque<uint64_t> in_flight;
  uint64_t i = state.thread_index() * 7919;
  auto send = [&] {
    Message m;
    m.method = Method::kGetAction;
    m.body = Encode(GetActionRequest{keys[i++ % keys.size()]});
    auto id = ch.SendRequest(std::move(m));
    if (!id.ok()) std::abort();
    in_flight.push_back(*id);
  };
  for (auto _ : state) {
    if (in_flight.size() <= window / 2) {
      while (in_flight.size() < window) send();
    }
    auto reply = ch.AwaitReply(in_flight.front(), std::chrono::seconds(10));
    in_flight.pop_front();
    GetActionResponse resp;
    if (!reply.ok() || !Decode(reply->body, &resp).ok() || !resp.result) {
      state.SkipWithError("GetAction missed");
      break;
    }
  }
  for (uint64_t id : in_flight) ch.AwaitReply(id, std::chrono::seconds(10)).status().IgnoreError();
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ActionCacheGetPipelined)->Arg(64)->Threads(1)->Threads(4)->UseRealTime();

}  // namespace
}  // namespace stagefarm::cache

// The client side allocates as the stagefarm binary does (cli/main.cc).
int main(int argc, char** argv) {
  stagefarm::TuneAllocatorForChunks();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
