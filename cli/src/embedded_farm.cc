#include "stagefarm/cli/embedded_farm.h"

#include <unistd.h>

#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <thread>

#include "stagefarm/cache/cache_service.h"
#include "stagefarm/common/build_protocol.h"
#include "stagefarm/common/log.h"
#include "stagefarm/coordinator/coordinator.h"
#include "stagefarm/worker/host_check.h"
#include "stagefarm/worker/worker_daemon.h"

namespace stagefarm::cli {

std::string DefaultHome() {
  if (const char* h = std::getenv("STAGEFARM_HOME"); h && *h) return h;
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : "/root") + "/.local/share/stagefarm";
}

struct EmbeddedFarm::Impl {
  std::unique_ptr<cache::CacheService> cache;
  std::unique_ptr<coordinator::Coordinator> coordinator;
  std::vector<std::unique_ptr<worker::WorkerDaemon>> workers;
  std::vector<std::thread> threads;
  std::string cache_endpoint, coordinator_endpoint;

  ~Impl() {
    // Workers first, while the coordinator still answers their farewell (threads holds the cache
    // server's, then the coordinator's, then one per worker).
    for (auto& w : workers) w->Stop();
    for (size_t i = threads.size(); i > threads.size() - workers.size(); --i) threads[i - 1].join();
    if (coordinator) coordinator->Stop();
    if (cache) cache->Stop();
    for (auto& t : threads) {
      if (t.joinable()) t.join();
    }
  }
};

EmbeddedFarm::EmbeddedFarm() : impl_(std::make_unique<Impl>()) {}
EmbeddedFarm::~EmbeddedFarm() = default;

const std::string& EmbeddedFarm::coordinator_endpoint() const {
  return impl_->coordinator_endpoint;
}
const std::string& EmbeddedFarm::cache_endpoint() const { return impl_->cache_endpoint; }

namespace {

// Runs `serve` on a new thread and waits until it reports its bound endpoint (or fails).
template <typename Serve>
StatusOr<std::string> StartServer(std::vector<std::thread>& threads, const std::string& what,
                                  Serve serve) {
  struct Shared {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    std::string endpoint;
    Status status;
  };
  auto shared = std::make_shared<Shared>();
  threads.emplace_back([shared, serve, what]() {
    Status s = serve([shared](const std::string& ep) {
      std::lock_guard lock(shared->mu);
      shared->endpoint = ep;
      shared->done = true;
      shared->cv.notify_all();
    });
    if (!s.ok()) LogError(what + ": " + s.ToString());
    std::lock_guard lock(shared->mu);
    if (!shared->done) {
      shared->status = s.ok() ? InternalError(what + " stopped before listening") : s;
      shared->done = true;
      shared->cv.notify_all();
    }
  });
  std::unique_lock lock(shared->mu);
  shared->cv.wait(lock, [&] { return shared->done; });
  if (!shared->status.ok()) return shared->status;
  return shared->endpoint;
}

}  // namespace

StatusOr<std::unique_ptr<EmbeddedFarm>> EmbeddedFarm::Start(Transport& transport,
                                                            EmbeddedFarmOptions options,
                                                            prometheus::Registry* registry) {
  std::unique_ptr<EmbeddedFarm> farm(new EmbeddedFarm());
  Impl& d = *farm->impl_;
  std::error_code ec;
  std::filesystem::create_directories(options.home, ec);
  if (ec) return ErrnoError("create " + options.home, ec.value());

  worker::WorkerOptions wopts;
  wopts.runtime = options.runtime;
  wopts.root = options.home + "/workers/0";
  std::string runtime = options.runtime;
  if (options.with_coordinator && options.workers > 0) {
    SF_ASSIGN_OR_RETURN(runtime, worker::CheckHost(wopts));
  }

  cache::CacheServerOptions copts;
  copts.data_dir = options.home + "/cache";
  copts.max_bytes = options.cache_max_bytes;
  SF_ASSIGN_OR_RETURN(d.cache, cache::CacheService::Open(copts, registry));
  cache::CacheService* cache = d.cache.get();
  SF_ASSIGN_OR_RETURN(
      d.cache_endpoint,
      StartServer(d.threads, "cache server", [&transport, cache, ep = options.cache_endpoint](
                                                 const std::function<void(const std::string&)>& ready) {
        return cache->Serve(transport, ep, /*insecure=*/false, ready);
      }));

  if (!options.with_coordinator) return farm;

  coordinator::CoordinatorOptions coord_opts;
  coord_opts.cache_endpoint = d.cache_endpoint;
  d.coordinator = std::make_unique<coordinator::Coordinator>(transport, coord_opts, registry);
  coordinator::Coordinator* coord = d.coordinator.get();
  SF_ASSIGN_OR_RETURN(
      d.coordinator_endpoint,
      StartServer(d.threads, "coordinator", [coord, ep = options.coordinator_endpoint](
                                                const std::function<void(const std::string&)>& ready) {
        return coord->Serve(ep, /*insecure=*/false, ready);
      }));

  char host[256] = "localhost";
  gethostname(host, sizeof host - 1);
  for (int i = 0; i < options.workers; ++i) {
    worker::WorkerDaemonOptions w;
    w.name = std::string(host) + "/worker-" + std::to_string(i + 1);
    w.coordinator_endpoint = d.coordinator_endpoint;
    w.cache_endpoint = d.cache_endpoint;
    w.slots = options.slots_per_worker;
    w.executor = wopts;
    w.executor.runtime = runtime;
    w.executor.root = options.home + "/workers/" + std::to_string(i + 1);
    d.workers.push_back(std::make_unique<worker::WorkerDaemon>(transport, w, registry));
    worker::WorkerDaemon* daemon = d.workers.back().get();
    d.threads.emplace_back([daemon, name = w.name]() {
      Status s = daemon->Run();
      if (!s.ok()) LogError(name + ": " + s.ToString());
    });
  }

  // Wait until the coordinator knows all workers, so the first build spreads over them.
  SF_ASSIGN_OR_RETURN(std::unique_ptr<ClientSocket> sock, transport.Connect(d.coordinator_endpoint));
  RpcChannel rpc(std::move(sock));
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (;;) {
    Message ping;
    ping.method = Method::kPing;
    StatusOr<Message> reply = rpc.Call(std::move(ping), std::chrono::milliseconds(1000));
    FarmInfo info;
    if (reply.ok() && Decode(reply->body, &info).ok() &&
        info.workers >= static_cast<uint32_t>(options.workers)) {
      break;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return DeadlineExceededError("the embedded farm's workers did not register within 10 s");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return farm;
}

}  // namespace stagefarm::cli
