#include "stagefarm/worker/executor.h"

#include <fcntl.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <vector>

#include "stagefarm/common/clean_path.h"
#include "stagefarm/common/layer_tar.h"
#include "stagefarm/common/log.h"
#include "stagefarm/common/unique_fd.h"
#include "stagefarm/worker/copy.h"
#include "stagefarm/worker/fs_util.h"
#include "stagefarm/worker/oci_spec.h"
#include "stagefarm/worker/overlay_mount.h"
#include "stagefarm/worker/sandbox.h"
#include "stagefarm/worker/step_cgroup.h"
#include "stagefarm/worker/user_db.h"

namespace stagefarm::worker {

namespace {

constexpr size_t kTailBytes = 64 << 10;
constexpr int kTailLines = 20;

std::string LastLines(const std::string& text, int lines) {
  size_t pos = text.size();
  if (pos > 0 && text[pos - 1] == '\n') --pos;
  int count = 0;
  for (; pos > 0; --pos) {
    if (text[pos - 1] == '\n' && ++count == lines) break;
  }
  return text.substr(pos);
}

std::string StepPrefix(const StepSpec& step) {
  return "Dockerfile:" + std::to_string(step.line) + ": " + step.text + ": ";
}

// The host's resolv.conf, unless it points at a local stub resolver that the sandbox (with its
// own loopback) cannot reach; then systemd-resolved's upstream list, as BuildKit does.
std::string ResolvConf() {
  auto host = ReadFile("/etc/resolv.conf", 1 << 20);
  if (host.ok() && host->find("nameserver 127.") == std::string::npos) return *host;
  auto upstream = ReadFile("/run/systemd/resolve/resolv.conf", 1 << 20);
  if (upstream.ok()) return *upstream;
  return host.ok() ? *host : "";
}

// COPY <<EOF: after the step's sources, each heredoc is a file of its own under `scratch` (0644,
// owned by the worker's root, the mtime of context files), copied by `base`'s rules as the one
// source it is, as BuildKit copies each from a scratch state of its own.
Status CopyHeredocs(const std::vector<HeredocFile>& heredocs, const CopyRequest& base,
                    const std::string& scratch, const std::string& rootfs) {
  for (size_t i = 0; i < heredocs.size(); ++i) {
    const HeredocFile& doc = heredocs[i];
    // BuildKit writes the file at the name taken as a path in an empty root: "../x" is "x", and
    // "a/b" fails, "a" being no directory there.
    const std::string name = CleanSlashPath("/" + doc.name).substr(1);
    if (!IsEntryName(name)) {
      return NotFoundError(base.instruction + " failed: heredoc <<" + doc.name + ": open /" +
                           name + ": no such file or directory");
    }
    const std::string dir = scratch + "/" + std::to_string(i);
    SF_RETURN_IF_ERROR(MakeDirs(dir, 0700));
    const std::string file = dir + "/" + name;
    SF_RETURN_IF_ERROR(WriteFile(file, doc.content, 0644));
    const struct timespec times[2] = {{base.default_mtime, 0}, {base.default_mtime, 0}};
    if (::utimensat(AT_FDCWD, file.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0) {
      return ErrnoError("utimensat " + file, errno);
    }
    CopyRequest copy = base;
    copy.sources = {name};
    copy.extract_archives = false;  // ADD <<EOF is never unpacked
    copy.remote = nullptr;
    SF_ASSIGN_OR_RETURN(auto source, MakeDirSource(dir));
    SF_RETURN_IF_ERROR(ApplyCopy(copy, *source, rootfs));
  }
  return Status();
}

bool Lexists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

// Writes `dir` as a layer straight into a streamed upload, without a tar on the worker's disk.
// Measured with a 512 MiB layer: the tar file cost 1.2 s of a 5.5 s step, and the worker's own
// hash is all the upload has to wait for.
StatusOr<WrittenLayer> StreamLayer(CacheClient& cache, const std::string& dir,
                                   const LayerWriteOptions& options) {
  SF_ASSIGN_OR_RETURN(std::unique_ptr<BlobUpload> upload, cache.StartUpload());
  SF_ASSIGN_OR_RETURN(
      WrittenLayer written,
      WriteLayerTo(
          dir, [&](std::string_view bytes) { return upload->Write(bytes); }, options));
  SF_RETURN_IF_ERROR(upload->Commit(written.diff_id));
  return written;
}

}  // namespace

struct Executor::StepContext {
  const StageTask& task;
  uint32_t index;
  const StepSpec& step;
  CacheClient& cache;
  const EventSink& on_event;
  const std::atomic<bool>& cancelled;
  const std::vector<LayerRef>& lowers;  // lowest first
  LayerStore::Pin& pin;                 // the task's layers, kept from eviction until it ends
  // Results.
  LayerRef layer;
  int32_t exit_code = 0;
  std::string output_tail;
};

struct Executor::Metrics {
  explicit Metrics(prometheus::Registry* r) {
    if (r == nullptr) {
      own = std::make_unique<prometheus::Registry>();
      r = own.get();
    }
    steps = &prometheus::BuildCounter()
                 .Name("stagefarm_worker_steps_total")
                 .Help("Steps run by this worker, by kind (run, copy, add, workdir) and outcome")
                 .Register(*r);
    duration = &prometheus::BuildHistogram()
                    .Name("stagefarm_worker_step_duration_seconds")
                    .Help("Wall time of steps run by this worker, by kind")
                    .Register(*r);
    layer_bytes = &prometheus::BuildCounter()
                       .Name("stagefarm_worker_layer_bytes_total")
                       .Help("Bytes of the layers this worker produced (uncompressed tar)")
                       .Register(*r)
                       .Add({});
    store_bytes = &prometheus::BuildGauge()
                       .Name("stagefarm_worker_layer_store_bytes")
                       .Help("Disk usage of the layers in the local layer store")
                       .Register(*r)
                       .Add({});
  }
  void Step(StepKind kind, const Status& status, double seconds) {
    const char* k = kind == StepKind::kRun    ? "run"
                    : kind == StepKind::kCopy ? "copy"
                    : kind == StepKind::kAdd  ? "add"
                                              : "workdir";
    const char* outcome = status.ok()                               ? "success"
                          : status.code() == StatusCode::kCancelled ? "cancelled"
                                                                    : "failure";
    steps->Add({{"kind", k}, {"outcome", outcome}}).Increment();
    duration
        ->Add({{"kind", k}}, prometheus::Histogram::BucketBoundaries{0.05, 0.1, 0.25, 0.5, 1, 2.5,
                                                                     5, 10, 30, 60, 300, 1800})
        .Observe(seconds);
  }
  std::unique_ptr<prometheus::Registry> own;
  prometheus::Family<prometheus::Counter>* steps;
  prometheus::Family<prometheus::Histogram>* duration;
  prometheus::Counter* layer_bytes;
  prometheus::Gauge* store_bytes;
};

Executor::Executor(WorkerOptions options, prometheus::Registry* registry)
    : options_(std::move(options)),
      metrics_(std::make_unique<Metrics>(registry)),
      layers_(options_.root + "/layers", options_.max_disk_bytes),
      caches_(options_.root + "/cache-mounts") {}

Executor::~Executor() = default;

void Executor::Cancel(const std::string& task_id) {
  std::lock_guard lock(mu_);
  auto [begin, end] = running_.equal_range(task_id);
  for (auto it = begin; it != end; ++it) it->second->store(true);
}

TaskDone Executor::Run(const StageTask& task, CacheClient& cache, const EventSink& on_event) {
  auto cancelled = std::make_shared<std::atomic<bool>>(false);
  std::multimap<std::string, std::shared_ptr<std::atomic<bool>>>::iterator registration;
  {
    std::lock_guard lock(mu_);
    registration = running_.emplace(task.task_id, cancelled);
  }
  TaskDone done;
  done.task_id = task.task_id;
  std::vector<LayerRef> lowers = task.base_layers;
  // Every layer the task reads stays in the store until it ends (the ones it makes are added as
  // they are made).
  LayerStore::Pin pin = layers_.MakePin();
  for (const auto& layer : task.base_layers) pin.Add(layer.diff_id);
  for (const auto& step : task.steps) {
    for (const auto& layer : step.from_layers) pin.Add(layer.diff_id);
    for (const auto& mount : step.mounts) {
      for (const auto& layer : mount.from_layers) pin.Add(layer.diff_id);
    }
  }
  for (uint32_t i = 0; i < task.steps.size(); ++i) {
    const StepSpec& step = task.steps[i];
    if (cancelled->load()) {
      done.status = CancelledError("task " + task.task_id + " cancelled");
      done.failed_step = static_cast<int32_t>(i);
      break;
    }
    TaskEvent started;
    started.task_id = task.task_id;
    started.kind = TaskEvent::Kind::kStepStarted;
    started.step = i;
    on_event(started);

    auto t0 = std::chrono::steady_clock::now();
    StepContext ctx{task, i, step, cache, on_event, *cancelled, lowers, pin, {}, 0, {}};
    Status s = RunStep(ctx);
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    metrics_->Step(step.kind, s, seconds);
    metrics_->store_bytes->Set(static_cast<double>(layers_.bytes()));
    if (!s.ok()) {
      done.status = std::move(s);
      done.failed_step = static_cast<int32_t>(i);
      done.exit_code = ctx.exit_code;
      done.log_tail = LastLines(ctx.output_tail, kTailLines);
      break;
    }
    // Recorded only after the layer and its TOC are uploaded (the server checks they exist).
    Status recorded = cache.PutAction(step.key, ActionResult{ctx.layer, step.created_by, seconds});
    if (!recorded.ok()) {
      done.status = recorded.Annotate(StepPrefix(step) + "recording the step's result");
      done.failed_step = static_cast<int32_t>(i);
      break;
    }
    lowers.push_back(ctx.layer);
    done.layers.push_back(ctx.layer);
    done.seconds.push_back(seconds);

    TaskEvent finished;
    finished.task_id = task.task_id;
    finished.kind = TaskEvent::Kind::kStepDone;
    finished.step = i;
    finished.seconds = seconds;
    finished.layer = ctx.layer;
    on_event(finished);
  }
  {
    std::lock_guard lock(mu_);
    running_.erase(registration);
  }
  return done;
}

Status Executor::RunStep(StepContext& ctx) {
  const StepSpec& step = ctx.step;
  const std::string prefix = StepPrefix(step);

  // 1. The layers below, extracted once in the shared store.
  std::vector<std::string> lower_dirs;
  for (const auto& layer : ctx.lowers) {
    auto dir = layers_.Ensure(layer.diff_id, ctx.cache);
    if (!dir.ok()) return dir.status().Annotate(prefix + "preparing the rootfs");
    lower_dirs.push_back(*dir);
  }

  // 2. A temp dir for the step (declared before every mount inside it, so it outlives them).
  SF_ASSIGN_OR_RETURN(TempDir dir, TempDir::Make(options_.root + "/steps", "step-"));
  const std::string& d = dir.path();
  for (const char* sub : {"/upper", "/work", "/merged", "/empty", "/bundle", "/from"}) {
    if (::mkdir((d + sub).c_str(), 0755) != 0) return ErrnoError("mkdir " + d + sub, errno);
  }
  const std::string upper = d + "/upper", merged = d + "/merged";
  auto rootfs = MountOverlay({lower_dirs, d + "/empty", upper, d + "/work"}, merged);
  if (!rootfs.ok()) return rootfs.status().Annotate(prefix + "mounting the rootfs");

  // 3. The step itself.
  if (step.kind == StepKind::kRun) {
    UniqueFd root_fd(::open(merged.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!root_fd) return ErrnoError("open " + merged, errno);
    auto user = ResolveUser(root_fd.get(), step.user);
    if (!user.ok()) return user.status().Annotate(prefix + "USER " + step.user);
    std::string workdir = step.workdir.empty() ? "/" : step.workdir;
    // Like docker build: a missing WORKDIR is created (and becomes part of the layer).
    auto wd = MakeDirsInRoot(root_fd.get(), workdir, 0755, user->uid, user->gid);
    if (!wd.ok()) return wd.status().Annotate(prefix + "WORKDIR " + workdir);

    // The mount points /proc, /sys and /dev stay in the layer, as in BuildKit's: made here as
    // runc makes them (0755, root's) when the image lacks them.
    for (const char* p : {"proc", "sys", "dev"}) {
      if (Lexists(merged + "/" + p)) continue;
      auto made = MakeDirsInRoot(root_fd.get(), p, 0755, 0, 0);
      if (!made.ok()) return made.status().Annotate(prefix + "making /" + p);
    }
    // RUN --mount: held until the command is done; their mount points never reach the layer.
    RunMountEnv mount_env{&layers_,       &ctx.cache,    &caches_, &ctx.task.secrets,
                          &ctx.cancelled, d + "/mounts", workdir};
    const uint32_t timeout =
        ctx.task.timeout_seconds ? ctx.task.timeout_seconds : options_.step_timeout_seconds;
    if (timeout > 0) {
      mount_env.deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout);
    }
    if (::mkdir(mount_env.scratch_dir.c_str(), 0755) != 0) {
      return ErrnoError("mkdir " + mount_env.scratch_dir, errno);
    }
    auto run_mounts = PrepareRunMounts(step.mounts, mount_env);
    if (!run_mounts.ok()) return run_mounts.status().Annotate(prefix.substr(0, prefix.size() - 2));
    // The stubs of the files bound over /etc go as those of the RUN --mount targets do (not
    // through a symlink: MountStubs would make a dangling one's target a directory).
    std::vector<std::string> stub_targets = run_mounts->targets();
    for (const std::string& file : SandboxMountPoints()) {
      struct stat st;
      if (::lstat((merged + file).c_str(), &st) != 0 || !S_ISLNK(st.st_mode)) {
        stub_targets.push_back(file);
      }
    }
    SF_ASSIGN_OR_RETURN(MountStubs stubs, MountStubs::Record(root_fd.get(), upper, stub_targets));
    SandboxConfig config;
    config.args = step.argv;
    config.env = step.env;
    config.env.insert(config.env.end(), run_mounts->env().begin(), run_mounts->env().end());
    config.mounts = run_mounts->sandbox_mounts();
    // A RUN heredoc script (`#!...`) is an executable file at /dev/pipes/<name>, as BuildKit's.
    if (!step.heredocs.empty()) {
      const std::string pipes = d + "/pipes";
      if (::mkdir(pipes.c_str(), 0755) != 0) return ErrnoError("mkdir " + pipes, errno);
      for (const HeredocFile& doc : step.heredocs) {
        SF_RETURN_IF_ERROR(WriteFile(pipes + "/" + doc.name, doc.content, 0755));
      }
      config.mounts.push_back(SandboxMount{"/dev/pipes", "bind", pipes,
                                           {"rbind", "rprivate", "nosuid", "nodev", "ro"}});
    }
    config.cwd = workdir;
    config.user = *user;
    config.rootfs = merged;
    config.isolated_network = step.network == "none" || options_.network_policy == "none";
    config.hosts_file = d + "/hosts";
    config.resolv_conf_file = d + "/resolv.conf";
    config.cpus = options_.cpus;
    // Unique on the host: container ids name cgroups, and an embedded farm runs several
    // executors in one process.
    static std::atomic<uint64_t> process_wide_id{0};
    const std::string container_id = "stagefarm-" + std::to_string(::getpid()) + "-" +
                                     std::to_string(process_wide_id.fetch_add(1));
    // Memory and pids limits live on a cgroup of ours around the container's, so that after the
    // container is gone we can still tell an OOM kill from any other failure.
    StepCgroup cgroup;
    if (options_.memory_limit_bytes > 0 || options_.pids_limit > 0) {
      auto made =
          StepCgroup::Create(container_id, options_.memory_limit_bytes, options_.pids_limit);
      if (!made.ok()) return made.status().Annotate(prefix + "setting up the step's limits");
      cgroup = std::move(*made);
      config.cgroups_path = cgroup.runtime_path();
    }
    SF_RETURN_IF_ERROR(
        WriteFile(config.hosts_file, "127.0.0.1\tlocalhost " + config.hostname +
                                         "\n"
                                         "::1\tlocalhost ip6-localhost ip6-loopback\n"));
    SF_RETURN_IF_ERROR(WriteFile(config.resolv_conf_file, ResolvConf()));
    // With secrets in its env, config.json stays on the step's private tmpfs, off the disk.
    std::string bundle = d + "/bundle";
    if (!run_mounts->private_dir().empty()) {
      bundle = run_mounts->private_dir() + "/bundle";
      SF_RETURN_IF_ERROR(MakeDirs(bundle, 0700));
    }
    SF_RETURN_IF_ERROR(WriteFile(bundle + "/config.json", MakeOciConfig(config), 0600));

    SandboxRequest run;
    run.runtime = options_.runtime;
    // The runtime keeps a copy of the config in its state dir: that goes to the tmpfs too.
    run.state_root = run_mounts->private_dir().empty() ? options_.root + "/runtime"
                                                       : run_mounts->private_dir() + "/runtime";
    SF_RETURN_IF_ERROR(MakeDirs(run.state_root, 0700));
    run.bundle_dir = bundle;
    run.container_id = container_id;
    run.timeout_seconds = timeout;
    run.cancelled = &ctx.cancelled;
    run.on_output = [&](std::string_view chunk) {
      ctx.output_tail.append(chunk);
      if (ctx.output_tail.size() > 2 * kTailBytes)
        ctx.output_tail.erase(0, ctx.output_tail.size() - kTailBytes);
      TaskEvent log;
      log.task_id = ctx.task.task_id;
      log.kind = TaskEvent::Kind::kLog;
      log.step = ctx.index;
      log.log = std::string(chunk);
      ctx.on_event(log);
    };
    auto exit_code = RunSandbox(run);
    SF_RETURN_IF_ERROR(run_mounts->Release());
    SF_RETURN_IF_ERROR(rootfs->Unmount());
    if (!exit_code.ok()) return exit_code.status().Annotate(prefix.substr(0, prefix.size() - 2));
    if (*exit_code != 0) {
      ctx.exit_code = *exit_code;
      if (cgroup.OomKilled(*exit_code)) {
        return Status(StatusCode::kUnknown,
                      prefix + "out of memory: the step used more than its memory limit of " +
                          std::to_string(options_.memory_limit_bytes >> 20) +
                          " MiB and was killed (exit code: " + std::to_string(*exit_code) + ")");
      }
      return Status(StatusCode::kUnknown, prefix +
                                              "process did not complete successfully: exit code: " +
                                              std::to_string(*exit_code));
    }
    stubs.Remove(upper);
  } else if (step.kind == StepKind::kWorkdir) {
    // BuildKit's WORKDIR: mkdir -p, 0755, the directories it makes owned by USER (resolved as
    // --chown is); an existing directory is left alone (the layer is then empty).
    UniqueFd root_fd(::open(merged.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!root_fd) return ErrnoError("open " + merged, errno);
    auto owner = ResolveOwner(root_fd.get(), step.user);
    if (!owner.ok()) return owner.status().Annotate(prefix + "USER " + step.user);
    // Through the image's symlinks, as BuildKit's mkdir: a dangling link's target is made.
    auto dir = ResolveSourceInDir(merged, step.workdir, /*may_be_missing=*/true);
    if (!dir.ok()) return dir.status().Annotate(prefix.substr(0, prefix.size() - 2));
    auto made = MakeDirsInRoot(root_fd.get(), *dir, 0755, owner->uid, owner->gid);
    if (!made.ok()) return made.status().Annotate(prefix.substr(0, prefix.size() - 2));
    made->reset();
    root_fd.reset();
    SF_RETURN_IF_ERROR(rootfs->Unmount());
  } else {
    CopyRequest copy;
    copy.sources = step.sources;
    copy.dest = step.dest;
    copy.workdir = step.workdir.empty() ? "/" : step.workdir;
    copy.chown = step.chown;
    copy.chmod = step.chmod;
    // Context trees carry no mtimes (they never enter a digest): files from the context get
    // mtime 0, or SOURCE_DATE_EPOCH when the task has one. Files from a stage keep theirs.
    copy.default_mtime = ctx.task.source_date_epoch >= 0 ? ctx.task.source_date_epoch : 0;
    copy.instruction = step.kind == StepKind::kAdd ? "ADD" : "COPY";
    copy.parents = step.parents;
    copy.excludes = step.excludes;
    // A linked copy is made onto an empty tree that is the step's layer on its own (copy.h).
    copy.link = LinkedCopy(step.link, step.chmod);
    const std::string& into = copy.link ? upper : merged;
    if (copy.link) SF_RETURN_IF_ERROR(rootfs->Unmount());
    Status copied;
    if (step.from_layers.empty()) {
      copy.extract_archives = step.kind == StepKind::kAdd && step.unpack.value_or(true);
      copy.extract_remote = step.kind == StepKind::kAdd && step.unpack.value_or(false);
      copy.scratch_dir = d + "/scratch";
      if (::mkdir(copy.scratch_dir.c_str(), 0700) != 0) {
        return ErrnoError("mkdir " + copy.scratch_dir, errno);
      }
      auto source = MakeContextSource(ctx.cache, step.context_root);
      auto remote = MakeRemoteSource(ctx.cache, step.remote_files);
      copy.remote = remote.get();
      if (!step.sources.empty() || step.heredocs.empty()) copied = ApplyCopy(copy, *source, into);
    } else {
      std::vector<std::string> from_dirs;
      for (const auto& layer : step.from_layers) {
        auto from = layers_.Ensure(layer.diff_id, ctx.cache);
        if (!from.ok()) return from.status().Annotate(prefix + "preparing the source stage");
        from_dirs.push_back(*from);
      }
      SF_ASSIGN_OR_RETURN(ScopedMount from_fs,
                          MountOverlay({from_dirs, d + "/empty", "", ""}, d + "/from"));
      SF_ASSIGN_OR_RETURN(auto source, MakeDirSource(d + "/from"));
      if (!step.sources.empty() || step.heredocs.empty()) copied = ApplyCopy(copy, *source, into);
      source.reset();
      SF_RETURN_IF_ERROR(from_fs.Unmount());
    }
    if (copied.ok() && !step.heredocs.empty()) {
      copied = CopyHeredocs(step.heredocs, copy, d + "/heredocs", into);
    }
    SF_RETURN_IF_ERROR(rootfs->Unmount());
    if (!copied.ok()) return copied.Annotate(prefix.substr(0, prefix.size() - 2));
  }

  // 4. The upper dir is the diff: write it as a layer, upload it and its TOC.
  LayerWriteOptions write_options;
  write_options.source_date_epoch = ctx.task.source_date_epoch;
  const std::string tar = d + "/layer.tar";
  // The layer streams to the cache as it is written, unless its times are clamped: then the
  // worker keeps the tar to extract (see below). A failed stream (the server unreachable for a
  // moment, say) is written again to a file, whose upload is retried.
  StatusOr<WrittenLayer> written = UnavailableError("not streamed");
  bool streamed = false;
  if (ctx.task.source_date_epoch < 0) {
    written = StreamLayer(ctx.cache, upper, write_options);
    streamed = written.ok();
    if (!written.ok()) {
      LogWarning(prefix + "streaming the layer to the cache failed (" +
                 written.status().ToString() + "); writing it to a file to upload");
    }
  }
  if (!written.ok()) {
    written = WriteLayer(upper, tar, write_options);
    if (!written.ok()) return written.status().Annotate(prefix + "writing the layer");
    Status put = ctx.cache.PutFile(tar, written->diff_id);
    if (!put.ok()) return put.Annotate(prefix + "uploading the layer");
  }
  Digest toc_digest;
  Status put = ctx.cache.PutBytes(written->toc_blob, &toc_digest);
  if (!put.ok()) return put.Annotate(prefix + "uploading the layer's TOC");
  ctx.layer = LayerRef{written->diff_id, toc_digest};
  metrics_->layer_bytes->Increment(static_cast<double>(written->diff_id.size));
  // The next step stacks on this layer. Its files are the upper dir's, unless their times were
  // clamped in the tar, or files named like whiteouts are whiteouts in it: then the layer is
  // extracted as every other worker extracts it, from the tar or, when it was streamed, from
  // the cache.
  ctx.pin.Add(written->diff_id);
  Status kept;
  if (ctx.task.source_date_epoch < 0 && !written->whiteout_named) {
    kept = layers_.Adopt(written->diff_id, upper, written->disk_bytes);
  } else if (!streamed) {
    kept = layers_.Insert(written->diff_id, tar);
  } else {
    kept = layers_.Ensure(written->diff_id, ctx.cache).status();
  }
  if (!kept.ok()) return kept.Annotate(prefix + "storing the layer");
  return Status();
}

}  // namespace stagefarm::worker
