// Cache server throughput on loopback: a real CacheService (RocksDB in a temp dir under $TMPDIR)
// served on tcp://127.0.0.1, driven by the remote client. bench/cache_bench.sh prints the
// machine's single-core SHA-256 rate and raw disk write rate beside these figures.
#include <benchmark/benchmark.h>

#include <cstring>
#include <filesystem>
#include <future>
#include <random>
#include <thread>

#include "stagefarm/cache/cache_service.h"
#include "stagefarm/common/cache_client.h"
#include "stagefarm/common/cache_protocol.h"

namespace stagefarm::cache {
namespace {

std::string Bytes(size_t n, uint64_t seed) {
  std::string out(n, '\0');
  std::mt19937_64 rng(seed);
  for (size_t i = 0; i + 8 <= n; i += 8) {
    uint64_t v = rng();
    std::memcpy(out.data() + i, &v, 8);
  }
  return out;
}

// One server for the whole run.
struct Fixture {
  Fixture() {
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

uint64_t seed_counter = 1;

void BM_Put(benchmark::State& state) {
  auto client = ConnectCache(F().transport, F().endpoint);
  const size_t size = state.range(0);
  for (auto _ : state) {
    state.PauseTiming();
    std::string blob = Bytes(size, seed_counter++);  // fresh bytes: no dedup
    state.ResumeTiming();
    Status s = client->PutBytes(blob);
    if (!s.ok()) state.SkipWithError(s.ToString().c_str());
  }
  state.SetBytesProcessed(state.iterations() * size);
}
BENCHMARK(BM_Put)->Arg(1 << 20)->Arg(64 << 20)->Arg(1 << 30)->Iterations(3)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_Get(benchmark::State& state) {
  auto client = ConnectCache(F().transport, F().endpoint);
  const size_t size = state.range(0);
  std::string blob = Bytes(size, 1000 + size);
  Digest d;
  if (!client->PutBytes(blob, &d).ok()) std::abort();
  blob.clear();
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
BENCHMARK(BM_Get)->Arg(1 << 20)->Arg(64 << 20)->Arg(1 << 30)->Iterations(3)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_FindMissing10k(benchmark::State& state) {
  auto client = ConnectCache(F().transport, F().endpoint);
  std::vector<Digest> digests;
  for (int i = 0; i < 10000; ++i) {
    std::string b = "present-" + std::to_string(i);
    Digest d;
    if (i % 2 == 0 && !client->PutBytes(b, &d).ok()) std::abort();
    digests.push_back(Digest::Of(i % 2 == 0 ? b : "absent-" + std::to_string(i)));
  }
  for (auto _ : state) {
    auto m = client->FindMissing(digests);
    if (!m.ok() || m->size() != 5000) state.SkipWithError("FindMissing failed");
  }
}
BENCHMARK(BM_FindMissing10k)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_ActionCacheGet(benchmark::State& state) {
  auto client = ConnectCache(F().transport, F().endpoint);
  static std::once_flag once;
  std::call_once(once, [] {
    auto c = ConnectCache(F().transport, F().endpoint);
    for (int i = 0; i < 1000; ++i) {
      std::string layer = "layer-" + std::to_string(i), toc = "toc-" + std::to_string(i);
      if (!c->PutBytes(layer).ok() || !c->PutBytes(toc).ok()) std::abort();
      ActionResult r{LayerRef{Digest::Of(layer), Digest::Of(toc)}, "RUN step", 1.0};
      if (!c->PutAction("key-" + std::to_string(i), r).ok()) std::abort();
    }
  });
  uint64_t i = state.thread_index();
  for (auto _ : state) {
    auto r = client->GetAction("key-" + std::to_string(i++ % 1000));
    if (!r.ok() || !r->has_value()) state.SkipWithError("GetAction missed");
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ActionCacheGet)->Threads(1)->Threads(4)->UseRealTime();

}  // namespace
}  // namespace stagefarm::cache

BENCHMARK_MAIN();
