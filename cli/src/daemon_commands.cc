#include "stagefarm/cli/commands.h"

#include <prometheus/exposer.h>
#include <prometheus/registry.h>
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "stagefarm/cache/cache_service.h"
#include "stagefarm/cli/curve_keys.h"
#include "stagefarm/cli/daemon.h"
#include "stagefarm/cli/embedded_farm.h"
#include "stagefarm/cli/label_flags.h"
#include "stagefarm/common/log.h"
#include "stagefarm/common/thread_name.h"
#include "stagefarm/coordinator/coordinator.h"
#include "stagefarm/worker/host_check.h"
#include "stagefarm/worker/worker_daemon.h"

namespace stagefarm::cli {
namespace {

std::string Hostname() {
  char host[256] = "localhost";
  gethostname(host, sizeof host - 1);
  return host;
}

struct DaemonFlags {
  std::string listen;
  std::string metrics_listen;
  bool insecure = false;
  std::string curve_keys;
};

void AddDaemonFlags(CLI::App* app, DaemonFlags* f, const std::string& default_listen) {
  f->listen = default_listen;
  app->add_option("--listen", f->listen, "ZeroMQ endpoint to bind")->capture_default_str();
  app->add_option("--metrics-listen", f->metrics_listen,
                  "HOST:PORT for Prometheus metrics on /metrics");
  app->add_flag("--insecure", f->insecure, "allow a non-loopback --listen without --curve-keys");
  app->add_option("--curve-keys", f->curve_keys,
                  "CURVE key directory: the server key pair and the accepted worker and client "
                  "public keys (see `stagefarm keys generate`)");
}

// --- daemons ----------------------------------------------------------------------------------

int RunCache(const DaemonFlags& df, const std::string& data, const std::string& max_bytes) {
  // Before any thread starts, so that all of them (RocksDB's, ZeroMQ's, the server's) inherit it.
  if (!UseBatchScheduling()) LogWarning("cannot use SCHED_BATCH; the cache server may be slower");
  // RocksDB's tables, the files of large uploads and the clients' sockets: the soft limit of
  // open files (often 1024) goes up to the hard one, as for any database server.
  if (rlimit files{}; ::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &files) != 0) LogWarning("cannot raise the open files limit");
  }
  cache::CacheServerOptions opts;
  opts.data_dir = data.empty() ? DefaultHome() + "/cache" : data;
  if (!max_bytes.empty()) {
    StatusOr<uint64_t> n = ParseBytes(max_bytes);
    if (!n.ok()) return Fail(n.status(), 2);
    opts.max_bytes = *n;
  }
  auto registry = std::make_shared<prometheus::Registry>();
  StatusOr<std::unique_ptr<cache::CacheService>> svc = cache::CacheService::Open(opts, registry.get());
  if (!svc.ok()) return Fail(svc.status());
  StatusOr<std::unique_ptr<prometheus::Exposer>> exposer = ServeMetrics(df.metrics_listen, registry);
  if (!exposer.ok()) return Fail(exposer.status(), 2);
  cache::CacheService* s = svc->get();
  OnShutdownSignal([s] { s->Stop(); });
  Transport transport;
  if (Status k = UseCurveKeys(transport, df.curve_keys, PeerRole::kServer); !k.ok()) {
    return Fail(k, 2);
  }
  Status st = s->Serve(transport, df.listen, df.insecure, [&](const std::string& ep) {
    LogInfo("cache server listening on " + ep + ", data in " + opts.data_dir);
  });
  return st.ok() ? 0 : Fail(st);
}

int RunCoordinator(const DaemonFlags& df, coordinator::CoordinatorOptions opts) {
  auto registry = std::make_shared<prometheus::Registry>();
  StatusOr<std::unique_ptr<prometheus::Exposer>> exposer = ServeMetrics(df.metrics_listen, registry);
  if (!exposer.ok()) return Fail(exposer.status(), 2);
  Transport transport;
  if (Status k = UseCurveKeys(transport, df.curve_keys, PeerRole::kServer); !k.ok()) {
    return Fail(k, 2);
  }
  coordinator::Coordinator coord(transport, opts, registry.get());
  OnShutdownSignal([&coord] { coord.Stop(); });
  Status st = coord.Serve(df.listen, df.insecure, [&](const std::string& ep) {
    LogInfo("coordinator listening on " + ep + ", cache " + opts.cache_endpoint);
  });
  return st.ok() ? 0 : Fail(st);
}

int RunWorker(const std::string& metrics_listen, const std::string& curve_keys,
              worker::WorkerDaemonOptions opts) {
  if (opts.name.empty()) opts.name = Hostname() + "/" + std::to_string(getpid());
  if (opts.executor.root.empty()) opts.executor.root = DefaultHome() + "/worker";
  // The OCI runtime runs in another directory: every path it is given must be absolute.
  opts.executor.root = std::filesystem::absolute(opts.executor.root).lexically_normal().string();
  StatusOr<std::string> runtime = worker::CheckHost(opts.executor);
  if (!runtime.ok()) return Fail(runtime.status());
  if (*runtime != opts.executor.runtime) {
    LogWarning("using " + *runtime + " instead of " + opts.executor.runtime);
  }
  opts.executor.runtime = *runtime;
  auto registry = std::make_shared<prometheus::Registry>();
  StatusOr<std::unique_ptr<prometheus::Exposer>> exposer = ServeMetrics(metrics_listen, registry);
  if (!exposer.ok()) return Fail(exposer.status(), 2);
  Transport transport;
  if (Status k = UseCurveKeys(transport, curve_keys, PeerRole::kWorker); !k.ok()) {
    return Fail(k, 2);
  }
  worker::WorkerDaemon daemon(transport, opts, registry.get());
  // The first signal drains (running tasks finish or are handed back); a second one hands back now.
  OnShutdownSignal([&daemon, signals = 0]() mutable {
    if (signals++ == 0) {
      daemon.Drain();
    } else {
      daemon.Stop();
    }
  });
  LogInfo("worker " + opts.name + " (" + std::to_string(opts.slots) + " slots, " + *runtime +
          ") -> coordinator " + opts.coordinator_endpoint);
  Status st = daemon.Run();
  return st.ok() ? 0 : Fail(st);
}

int RunUp(int workers, const std::string& home, const std::string& coord_listen,
          const std::string& cache_listen, const std::string& curve_keys = {}) {
  std::mutex mu;
  std::condition_variable cv;
  bool stop = false;
  OnShutdownSignal([&] {
    std::lock_guard lock(mu);
    stop = true;
    cv.notify_all();
  });
  Transport transport;
  // The whole farm shares the server key; clients present theirs.
  if (Status k = UseCurveKeys(transport, curve_keys, PeerRole::kServer); !k.ok()) {
    return Fail(k, 2);
  }
  EmbeddedFarmOptions opts;
  opts.home = home.empty() ? DefaultHome() : home;
  opts.workers = workers;
  opts.coordinator_endpoint = coord_listen;
  opts.cache_endpoint = cache_listen;
  StatusOr<std::unique_ptr<EmbeddedFarm>> farm = EmbeddedFarm::Start(transport, opts, nullptr);
  if (!farm.ok()) return Fail(farm.status());
  std::printf("stagefarm is up: %d workers, store in %s\n", workers, opts.home.c_str());
  std::printf("  coordinator %s\n  cache       %s\n", (*farm)->coordinator_endpoint().c_str(),
              (*farm)->cache_endpoint().c_str());
  std::printf("build with:  stagefarm build --farm %s -t NAME PATH\n(Ctrl-C stops the farm)\n",
              (*farm)->coordinator_endpoint().c_str());
  std::fflush(stdout);
  std::unique_lock lock(mu);
  cv.wait(lock, [&] { return stop; });
  std::printf("stopping\n");
  return 0;
}

}  // namespace

void AddDaemonCommands(CLI::App& app, CommandContext& ctx) {
  // cache
  auto cache_df = std::make_shared<DaemonFlags>();
  auto cache_data = std::make_shared<std::string>();
  auto cache_max = std::make_shared<std::string>();
  CLI::App* cache_cmd = app.add_subcommand("cache", "run the cache server");
  AddDaemonFlags(cache_cmd, cache_df.get(), "tcp://127.0.0.1:7701");
  cache_cmd->add_option("--data", *cache_data, "RocksDB directory");
  cache_cmd->add_option("--max-bytes", *cache_max, "evict past this size (e.g. 200G)");
  cache_cmd->callback([&ctx, cache_df, cache_data, cache_max] {
    ctx.daemon = true;
    ctx.run = [=] { return RunCache(*cache_df, *cache_data, *cache_max); };
  });

  // coordinator
  auto coord_df = std::make_shared<DaemonFlags>();
  auto coord_opts = std::make_shared<coordinator::CoordinatorOptions>();
  auto heartbeat_timeout = std::make_shared<double>(10);
  CLI::App* coord_cmd = app.add_subcommand("coordinator", "run the coordinator");
  AddDaemonFlags(coord_cmd, coord_df.get(), "tcp://127.0.0.1:7700");
  coord_cmd->add_option("--cache", coord_opts->cache_endpoint, "cache server endpoint")->required();
  coord_cmd->add_option("--advertise-cache", coord_opts->advertised_cache_endpoint,
                        "cache endpoint to give clients, if not --cache");
  coord_cmd->add_option("--cache-salt", coord_opts->cache_salt, "changes every cache key");
  coord_cmd->add_option("--heartbeat-timeout", *heartbeat_timeout,
                        "seconds without heartbeat before a worker is lost")
      ->capture_default_str();
  auto client_timeout = std::make_shared<double>(5);
  coord_cmd->add_option("--client-timeout", *client_timeout,
                        "seconds without a keepalive before a build's client is gone")
      ->capture_default_str();
  coord_cmd->callback([&ctx, coord_df, coord_opts, heartbeat_timeout, client_timeout] {
    ctx.daemon = true;
    coord_opts->heartbeat_timeout =
        std::chrono::milliseconds(static_cast<int64_t>(*heartbeat_timeout * 1000));
    coord_opts->client_timeout =
        std::chrono::milliseconds(static_cast<int64_t>(*client_timeout * 1000));
    ctx.run = [=] { return RunCoordinator(*coord_df, *coord_opts); };
  });

  // worker
  auto wopts = std::make_shared<worker::WorkerDaemonOptions>();
  auto worker_metrics = std::make_shared<std::string>();
  auto worker_memory = std::make_shared<std::string>();
  auto worker_max_disk = std::make_shared<std::string>();
  CLI::App* worker_cmd = app.add_subcommand("worker", "run a worker");
  worker_cmd->add_option("--coordinator", wopts->coordinator_endpoint, "coordinator endpoint")
      ->required();
  worker_cmd->add_option("--cache", wopts->cache_endpoint, "cache server endpoint")->required();
  worker_cmd->add_option("--root", wopts->executor.root, "layer store and scratch directory");
  worker_cmd->add_option("--name", wopts->name, "unique name in the farm (default host/pid)");
  worker_cmd->add_option("--slots", wopts->slots, "tasks run at once")->capture_default_str();
  worker_cmd->add_option("--runtime", wopts->executor.runtime, "OCI runtime: crun or runc")
      ->capture_default_str();
  worker_cmd->add_option("--network-policy", wopts->executor.network_policy,
                         "default or none (every RUN without network)")
      ->capture_default_str();
  worker_cmd->add_option("--memory", *worker_memory, "memory limit per step (e.g. 4G)");
  worker_cmd->add_option("--pids", wopts->executor.pids_limit, "pids limit per step");
  worker_cmd->add_option("--max-disk", *worker_max_disk,
                         "layer store budget (e.g. 20GB); least recently used layers no running "
                         "step needs are removed past it; 0 or absent: unbounded");
  worker_cmd->add_option("--cpus", wopts->executor.cpus, "CPU limit per step");
  worker_cmd->add_option("--drain-timeout", wopts->drain_timeout_seconds,
                         "seconds running tasks get to finish on SIGTERM before they are handed "
                         "back to the coordinator")
      ->capture_default_str();
  worker_cmd->add_option("--step-timeout", wopts->executor.step_timeout_seconds,
                         "seconds before a step is killed")
      ->capture_default_str();
  worker_cmd->add_option("--metrics-listen", *worker_metrics, "HOST:PORT for Prometheus metrics");
  auto worker_labels = std::make_shared<std::vector<std::string>>();
  worker_cmd->add_option("--label", *worker_labels,
                         "KEY=VALUE this worker offers (repeatable); builds with --worker-label "
                         "KEY=VALUE run only on workers that have it");
  auto worker_keys = std::make_shared<std::string>();
  worker_cmd->add_option("--curve-keys", *worker_keys,
                         "CURVE key directory: this worker's key pair and the server public key");
  worker_cmd->callback([&ctx, wopts, worker_metrics, worker_memory, worker_max_disk, worker_keys,
                        worker_labels] {
    ctx.daemon = true;
    ctx.run = [=] {
      StatusOr<std::map<std::string, std::string>> labels =
          ParseLabelFlags("--label", *worker_labels);
      if (!labels.ok()) return Fail(labels.status(), 2);
      wopts->labels = std::move(*labels);
      if (!worker_memory->empty()) {
        StatusOr<uint64_t> n = ParseBytes(*worker_memory);
        if (!n.ok()) return Fail(n.status(), 2);
        wopts->executor.memory_limit_bytes = *n;
      }
      if (!worker_max_disk->empty()) {
        StatusOr<uint64_t> n = ParseBytes(*worker_max_disk);
        if (!n.ok()) return Fail(n.status().Annotate("--max-disk"), 2);
        wopts->executor.max_disk_bytes = *n;
      }
      return RunWorker(*worker_metrics, *worker_keys, *wopts);
    };
  });

  // up
  struct UpFlags {
    int workers = 2;
    std::string home, coord = "tcp://127.0.0.1:7700", cache = "tcp://127.0.0.1:7701";
  };
  auto up = std::make_shared<UpFlags>();
  CLI::App* up_cmd = app.add_subcommand("up", "run a whole farm on this machine");
  up_cmd->add_option("--workers", up->workers, "worker count")->capture_default_str();
  up_cmd->add_option("--home", up->home, "store directory (default STAGEFARM_HOME)");
  up_cmd->add_option("--listen", up->coord, "coordinator endpoint")->capture_default_str();
  up_cmd->add_option("--cache-listen", up->cache, "cache endpoint")->capture_default_str();
  auto up_keys = std::make_shared<std::string>();
  up_cmd->add_option("--curve-keys", *up_keys, "CURVE key directory with the server key pair");
  up_cmd->callback([&ctx, up, up_keys] {
    ctx.daemon = true;
    ctx.run = [=] { return RunUp(up->workers, up->home, up->coord, up->cache, *up_keys); };
  });
}

}  // namespace stagefarm::cli
