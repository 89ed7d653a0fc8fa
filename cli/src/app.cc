#include "stagefarm/cli/app.h"

#include <prometheus/exposer.h>
#include <prometheus/registry.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <thread>

#include "stagefarm/cache/cache_service.h"
#include "stagefarm/cli/build_command.h"
#include "stagefarm/cli/daemon.h"
#include "stagefarm/cli/embedded_farm.h"
#include "stagefarm/cli/farm_connection.h"
#include "stagefarm/cli/progress.h"
#include "stagefarm/common/build_plan.h"
#include "stagefarm/common/dockerfile_parser.h"
#include "stagefarm/common/image_import.h"
#include "stagefarm/common/image_ref.h"
#include "stagefarm/common/log.h"
#include "stagefarm/common/oci.h"
#include "stagefarm/coordinator/coordinator.h"
#include "stagefarm/worker/host_check.h"
#include "stagefarm/worker/worker_daemon.h"

namespace stagefarm::cli {
namespace {

int Fail(const Status& s, int code = 1) {
  std::fprintf(stderr, "stagefarm: %s\n", s.message().c_str());
  return code;
}

std::string Hostname() {
  char host[256] = "localhost";
  gethostname(host, sizeof host - 1);
  return host;
}

struct DaemonFlags {
  std::string listen;
  std::string metrics_listen;
  bool insecure = false;
};

void AddDaemonFlags(CLI::App* app, DaemonFlags* f, const std::string& default_listen) {
  f->listen = default_listen;
  app->add_option("--listen", f->listen, "ZeroMQ endpoint to bind")->capture_default_str();
  app->add_option("--metrics-listen", f->metrics_listen,
                  "HOST:PORT for Prometheus metrics on /metrics");
  app->add_flag("--insecure", f->insecure, "allow a non-loopback --listen without --curve-keys");
}

// --- daemons ----------------------------------------------------------------------------------

int RunCache(const DaemonFlags& df, const std::string& data, const std::string& max_bytes) {
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
  coordinator::Coordinator coord(transport, opts, registry.get());
  OnShutdownSignal([&coord] { coord.Stop(); });
  Status st = coord.Serve(df.listen, df.insecure, [&](const std::string& ep) {
    LogInfo("coordinator listening on " + ep + ", cache " + opts.cache_endpoint);
  });
  return st.ok() ? 0 : Fail(st);
}

int RunWorker(const std::string& metrics_listen, worker::WorkerDaemonOptions opts) {
  if (opts.name.empty()) opts.name = Hostname() + "/" + std::to_string(getpid());
  if (opts.executor.root.empty()) opts.executor.root = DefaultHome() + "/worker";
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
  worker::WorkerDaemon daemon(transport, opts, registry.get());
  OnShutdownSignal([&daemon] { daemon.Stop(); });
  LogInfo("worker " + opts.name + " (" + std::to_string(opts.slots) + " slots, " + *runtime +
          ") -> coordinator " + opts.coordinator_endpoint);
  Status st = daemon.Run();
  return st.ok() ? 0 : Fail(st);
}

int RunUp(int workers, const std::string& home, const std::string& coord_listen,
          const std::string& cache_listen) {
  std::mutex mu;
  std::condition_variable cv;
  bool stop = false;
  OnShutdownSignal([&] {
    std::lock_guard lock(mu);
    stop = true;
    cv.notify_all();
  });
  Transport transport;
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

// --- images -----------------------------------------------------------------------------------

int RunImageImport(const FarmTarget& target, const std::string& src, const std::string& name) {
  Transport transport;
  StatusOr<FarmConnection> conn = ConnectFarm(transport, target, /*need_coordinator=*/false);
  if (!conn.ok()) return Fail(conn.status());
  std::unique_ptr<CacheClient> cache = ConnectCache(transport, conn->cache_endpoint);
  StatusOr<Digest> manifest = ImportImage(*cache, src);
  if (!manifest.ok()) return Fail(manifest.status().Annotate("import " + src));
  std::string ref = NormalizeImageRef(name);
  if (Status s = cache->PutRef(ref, *manifest); !s.ok()) return Fail(s);
  std::printf("imported %s as %s (%s)\n", src.c_str(), FamiliarImageRef(ref).c_str(),
              manifest->str().c_str());
  return 0;
}

int RunImageLs(const FarmTarget& target) {
  Transport transport;
  StatusOr<FarmConnection> conn = ConnectFarm(transport, target, false);
  if (!conn.ok()) return Fail(conn.status());
  std::unique_ptr<CacheClient> cache = ConnectCache(transport, conn->cache_endpoint);
  auto refs = cache->ListRefs();
  if (!refs.ok()) return Fail(refs.status());
  std::printf("%-40s %-20s %10s\n", "REPOSITORY:TAG", "IMAGE ID", "SIZE");
  for (const auto& [name, manifest] : *refs) {
    StatusOr<ImageRecord> image = LoadImage(*cache, manifest);
    if (!image.ok()) {
      std::printf("%-40s %-20s %10s\n", FamiliarImageRef(name).c_str(), "(missing)", "-");
      continue;
    }
    uint64_t size = 0;
    for (const LayerRef& l : image->layers) size += l.diff_id.size;
    std::printf("%-40s %-20s %10s\n", FamiliarImageRef(name).c_str(),
                image->config_digest.hex.substr(0, 12).c_str(), HumanSize(size).c_str());
  }
  return 0;
}

int RunImageInspect(const FarmTarget& target, const std::string& name) {
  Transport transport;
  StatusOr<FarmConnection> conn = ConnectFarm(transport, target, false);
  if (!conn.ok()) return Fail(conn.status());
  std::unique_ptr<CacheClient> cache = ConnectCache(transport, conn->cache_endpoint);
  auto manifest = cache->GetRef(NormalizeImageRef(name));
  if (!manifest.ok()) return Fail(manifest.status());
  if (!*manifest) return Fail(NotFoundError("no image " + name));
  StatusOr<ImageRecord> image = LoadImage(*cache, **manifest);
  if (!image.ok()) return Fail(image.status());
  StatusOr<std::string> config = cache->ReadBytes(image->config_digest);
  if (!config.ok()) return Fail(config.status());
  nlohmann::json j = nlohmann::json::parse(*config, nullptr, false);
  j["Id"] = image->config_digest.str();
  j["Manifest"] = image->manifest.str();
  std::printf("%s\n", j.dump(2).c_str());
  return 0;
}

int RunDebugDockerfile(const std::string& file, bool dump,
                       const std::vector<std::string>& build_args, const std::string& target) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return Fail(NotFoundError("cannot read " + file), 2);
  std::string text(std::istreambuf_iterator<char>(in), {});
  if (dump) {
    StatusOr<frontend::ParsedDockerfile> parsed = frontend::ParseDockerfile(text, file);
    if (!parsed.ok()) return Fail(parsed.status());
    std::fputs(frontend::DumpParseTree(*parsed).c_str(), stdout);
    return 0;
  }
  frontend::BuildOptions opts;
  opts.filename = file;
  opts.target = target;
  for (const std::string& a : build_args) {
    size_t eq = a.find('=');
    opts.build_args[a.substr(0, eq)] = eq == std::string::npos ? "" : a.substr(eq + 1);
  }
  StatusOr<frontend::BuildPlan> plan = frontend::Resolve(
      text, opts, [](const std::string&) -> StatusOr<ImageConfig> { return ImageConfig{}; });
  if (!plan.ok()) return Fail(plan.status());
  std::fputs(frontend::DescribePlan(*plan).c_str(), stdout);
  return 0;
}

}  // namespace

int Main(int argc, char** argv) {
  CLI::App app{"stagefarm: a distributed build farm for Dockerfiles"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "stagefarm 0.1.0");
  bool verbose = false;
  app.add_flag("--debug", verbose, "log debug messages");

  FarmTarget farm;
  auto add_farm_flags = [&](CLI::App* c) {
    c->add_option("--farm", farm.farm, "coordinator endpoint (or STAGEFARM_FARM); none: embedded");
    c->add_option("--cache", farm.cache, "cache server endpoint (or STAGEFARM_CACHE)");
    c->add_option("--home", farm.home, "embedded farm's store (or STAGEFARM_HOME)");
  };

  // cache
  DaemonFlags cache_df;
  std::string cache_data, cache_max;
  CLI::App* cache_cmd = app.add_subcommand("cache", "run the cache server");
  AddDaemonFlags(cache_cmd, &cache_df, "tcp://127.0.0.1:7701");
  cache_cmd->add_option("--data", cache_data, "RocksDB directory");
  cache_cmd->add_option("--max-bytes", cache_max, "evict past this size (e.g. 200G)");

  // coordinator
  DaemonFlags coord_df;
  coordinator::CoordinatorOptions coord_opts;
  double heartbeat_timeout = 10;
  CLI::App* coord_cmd = app.add_subcommand("coordinator", "run the coordinator");
  AddDaemonFlags(coord_cmd, &coord_df, "tcp://127.0.0.1:7700");
  coord_cmd->add_option("--cache", coord_opts.cache_endpoint, "cache server endpoint")->required();
  coord_cmd->add_option("--advertise-cache", coord_opts.advertised_cache_endpoint,
                        "cache endpoint to give clients, if not --cache");
  coord_cmd->add_option("--cache-salt", coord_opts.cache_salt, "changes every cache key");
  coord_cmd->add_option("--heartbeat-timeout", heartbeat_timeout,
                        "seconds without heartbeat before a worker is lost")
      ->capture_default_str();

  // worker
  worker::WorkerDaemonOptions wopts;
  std::string worker_metrics, worker_memory;
  CLI::App* worker_cmd = app.add_subcommand("worker", "run a worker");
  worker_cmd->add_option("--coordinator", wopts.coordinator_endpoint, "coordinator endpoint")
      ->required();
  worker_cmd->add_option("--cache", wopts.cache_endpoint, "cache server endpoint")->required();
  worker_cmd->add_option("--root", wopts.executor.root, "layer store and scratch directory");
  worker_cmd->add_option("--name", wopts.name, "unique name in the farm (default host/pid)");
  worker_cmd->add_option("--slots", wopts.slots, "tasks run at once")->capture_default_str();
  worker_cmd->add_option("--runtime", wopts.executor.runtime, "OCI runtime: crun or runc")
      ->capture_default_str();
  worker_cmd->add_option("--network-policy", wopts.executor.network_policy,
                         "default or none (every RUN without network)")
      ->capture_default_str();
  worker_cmd->add_option("--memory", worker_memory, "memory limit per step (e.g. 4G)");
  worker_cmd->add_option("--pids", wopts.executor.pids_limit, "pids limit per step");
  worker_cmd->add_option("--cpus", wopts.executor.cpus, "CPU limit per step");
  worker_cmd->add_option("--step-timeout", wopts.executor.step_timeout_seconds,
                         "seconds before a step is killed")
      ->capture_default_str();
  worker_cmd->add_option("--metrics-listen", worker_metrics, "HOST:PORT for Prometheus metrics");

  // build
  BuildFlags bf;
  CLI::App* build_cmd = app.add_subcommand("build", "build a Dockerfile (docker build's flags)");
  build_cmd->add_option("PATH", bf.context, "build context directory")->required();
  build_cmd->add_option("-f,--file", bf.file, "Dockerfile (default PATH/Dockerfile; - for stdin)");
  build_cmd->add_option("-t,--tag", bf.tags, "name:tag for the result (repeatable)");
  build_cmd->add_option("--build-arg", bf.build_args, "KEY=VALUE or KEY (repeatable)");
  build_cmd->add_option("--target", bf.target, "stage to build");
  build_cmd->add_option("--label", bf.labels, "KEY=VALUE label on the image (repeatable)");
  build_cmd->add_flag("--no-cache", bf.no_cache, "do not use cached steps");
  build_cmd->add_option("--no-cache-filter", bf.no_cache_filter, "stages not to use the cache for");
  build_cmd->add_option("--platform", bf.platform, "target platform (linux/amd64)");
  build_cmd->add_option("--progress", bf.progress, "auto, plain, tty or quiet");
  build_cmd->add_flag("-q,--quiet", bf.quiet, "print only the image ID");
  build_cmd->add_option("--iidfile", bf.iidfile, "write the image ID to this file");
  build_cmd->add_option("-o,--output", bf.outputs, "type=oci,dest=FILE");
  build_cmd->add_option("--network", bf.network, "network for RUN: default or none");
  add_farm_flags(build_cmd);

  // up
  int up_workers = 2;
  std::string up_home, up_coord = "tcp://127.0.0.1:7700", up_cache = "tcp://127.0.0.1:7701";
  CLI::App* up_cmd = app.add_subcommand("up", "run a whole farm on this machine");
  up_cmd->add_option("--workers", up_workers, "worker count")->capture_default_str();
  up_cmd->add_option("--home", up_home, "store directory (default STAGEFARM_HOME)");
  up_cmd->add_option("--listen", up_coord, "coordinator endpoint")->capture_default_str();
  up_cmd->add_option("--cache-listen", up_cache, "cache endpoint")->capture_default_str();

  // image
  CLI::App* image_cmd = app.add_subcommand("image", "manage images in the farm's store");
  image_cmd->require_subcommand(1);
  std::string import_src, import_name, inspect_name;
  CLI::App* import_cmd = image_cmd->add_subcommand(
      "import", "import an OCI layout, OCI archive or docker save tarball");
  import_cmd->add_option("SRC", import_src, "directory or tarball")->required();
  import_cmd->add_option("NAME", import_name, "name[:tag] to give it")->required();
  add_farm_flags(import_cmd);
  CLI::App* ls_cmd = image_cmd->add_subcommand("ls", "list images");
  add_farm_flags(ls_cmd);
  CLI::App* inspect_cmd = image_cmd->add_subcommand("inspect", "print an image's config as JSON");
  inspect_cmd->add_option("NAME", inspect_name, "image name")->required();
  add_farm_flags(inspect_cmd);

  // debug
  CLI::App* debug_cmd = app.add_subcommand("debug", "developer tools");
  debug_cmd->require_subcommand(1);
  std::string debug_file;
  bool debug_dump = false;
  CLI::App* df_cmd = debug_cmd->add_subcommand("dockerfile", "print a Dockerfile's stages");
  df_cmd->add_option("FILE", debug_file, "Dockerfile")->required();
  df_cmd->add_flag("--dump", debug_dump, "print the parse tree instead");
  df_cmd->add_option("--build-arg", bf.build_args, "KEY=VALUE");
  df_cmd->add_option("--target", bf.target, "stage to build");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  bool daemon_cmd = cache_cmd->parsed() || coord_cmd->parsed() || worker_cmd->parsed() ||
                    up_cmd->parsed();
  // Commands a person waits on show progress, not the embedded farm's daemon logs.
  if (!daemon_cmd) SetLogLevel(LogLevel::kWarning);
  if (verbose) SetLogLevel(LogLevel::kDebug);

  if (daemon_cmd) BlockShutdownSignals();
  if (cache_cmd->parsed()) return RunCache(cache_df, cache_data, cache_max);
  if (coord_cmd->parsed()) {
    coord_opts.heartbeat_timeout =
        std::chrono::milliseconds(static_cast<int64_t>(heartbeat_timeout * 1000));
    return RunCoordinator(coord_df, coord_opts);
  }
  if (worker_cmd->parsed()) {
    if (!worker_memory.empty()) {
      StatusOr<uint64_t> n = ParseBytes(worker_memory);
      if (!n.ok()) return Fail(n.status(), 2);
      wopts.executor.memory_limit_bytes = *n;
    }
    return RunWorker(worker_metrics, wopts);
  }
  if (build_cmd->parsed()) {
    bf.farm = farm;
    if (bf.progress == "quiet") bf.quiet = true;
    return RunBuild(bf);
  }
  if (up_cmd->parsed()) return RunUp(up_workers, up_home, up_coord, up_cache);
  if (import_cmd->parsed()) return RunImageImport(farm, import_src, import_name);
  if (ls_cmd->parsed()) return RunImageLs(farm);
  if (inspect_cmd->parsed()) return RunImageInspect(farm, inspect_name);
  if (df_cmd->parsed()) return RunDebugDockerfile(debug_file, debug_dump, bf.build_args, bf.target);
  return 2;
}

}  // namespace stagefarm::cli
