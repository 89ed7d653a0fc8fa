#include "stagefarm/coordinator/coordinator.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <sys/random.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <deque>
#include <map>
#include <random>
#include <set>

#include "stagefarm/common/build_plan.h"
#include "stagefarm/common/build_protocol.h"
#include "stagefarm/common/cache_client.h"
#include "stagefarm/common/image_ref.h"
#include "stagefarm/common/log.h"
#include "stagefarm/common/oci.h"
#include "stagefarm/common/worker_protocol.h"
#include "stagefarm/coordinator/fair_queue.h"
#include "stagefarm/coordinator/step_keys.h"
#include "step_spec.h"

namespace stagefarm::coordinator {
namespace {

using Clock = std::chrono::steady_clock;
using frontend::ResolvedStage;
using frontend::ResolvedStep;

// A build id: whoever holds it may follow the build's tasks (workers see it), so it comes from
// the kernel's generator and cannot be predicted from the ids a client has seen.
std::string RandomId() {
  unsigned char bytes[8];
  SF_CHECK(getrandom(bytes, sizeof bytes, 0) == static_cast<ssize_t>(sizeof bytes));
  char buf[17];
  for (size_t i = 0; i < sizeof bytes; ++i) std::snprintf(buf + 2 * i, 3, "%02x", bytes[i]);
  return buf;
}

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

struct WorkerInfo {
  std::string peer;
  std::string name;
  uint32_t slots = 1;
  std::string platform;
  std::set<std::string> tasks;
  // Tasks it was told to cancel and may still run: none of them is given to it again until it
  // reports the run ended (its TaskDone, or a heartbeat without it). A worker runs one task of an
  // id at a time, and a run being cancelled would answer for the new one with its cancellation.
  std::set<std::string> cancelling;
  std::set<std::string> layers;  // diffID hex it holds (its last heartbeat, plus what we sent it)
  Clock::time_point last_seen;
  bool draining = false;  // shutting down (said so, or handed a task back): no new tasks
  std::map<std::string, std::string> labels;  // what it offers (stagefarm worker --label)

  bool HasSlot() const { return !draining && tasks.size() < slots; }
  // It may run a task for `task_platform` that needs the labels `constraints`, busy or not.
  bool Offers(const std::string& task_platform,
              const std::map<std::string, std::string>& constraints) const {
    if (draining || platform != task_platform) return false;
    return std::all_of(constraints.begin(), constraints.end(), [&](const auto& c) {
      auto it = labels.find(c.first);
      return it != labels.end() && it->second == c.second;
    });
  }
  bool Free(const std::string& task_platform,
            const std::map<std::string, std::string>& constraints) const {
    return HasSlot() && Offers(task_platform, constraints);
  }
};

// Who waits for a task: a stage of a build. Builds that share a task may have its steps at other
// places in their stages (after other ENVs, say), so each waiter has its own step positions.
struct Waiter {
  std::string build_id;
  size_t stage = 0;                // position in the build's plan
  std::vector<size_t> step_index;  // spec.steps[i] is the stage's resolved step step_index[i]
};

struct Task {
  StageTask spec;
  std::vector<Waiter> waiters;
  std::string worker_peer;  // empty while queued
  // Every worker connection it was given to: only these may report it done (a worker given up on
  // may still finish it).
  std::set<std::string> assigned_peers;
  int attempts = 0;
  Clock::time_point queued_at;
  std::string tenant;  // of the build that first asked for it
  QueueKey queue_key;  // its place in the tenant's queue while queued
  // Where it may run: a worker of this platform carrying these labels (part of the task's id).
  std::string platform;
  std::map<std::string, std::string> constraints;
};

struct StageState {
  enum class State { kWaiting, kQueued, kDone, kFailed } state = State::kWaiting;
  std::vector<std::string> keys;  // per resolved step
  std::vector<LayerRef> layers;   // the stage's filesystem when done (lowest first)
  std::vector<HistoryEntry> history;
  std::string last_key;
  std::string worker;
  bool cached = false;
  Clock::time_point started;
  double seconds = 0;
  std::string task_id;
};

struct Build {
  std::string id;
  std::string client_peer;
  uint64_t request_id = 0;
  BuildRequest request;
  std::string filename;  // the Dockerfile's name in messages
  frontend::BuildPlan plan;
  std::map<std::string, ImageRecord> images;  // external images by reference as written
  std::optional<int64_t> source_date_epoch;   // the build arg SOURCE_DATE_EPOCH, checked
  std::vector<StageState> stages;             // parallel to plan.stages
  Clock::time_point started;
  bool finished = false;
  bool told_waiting = false;  // the user knows no registered worker fits its tasks

  // External image `ref`, which planning resolved.
  StatusOr<const ImageRecord*> Image(const std::string& ref) const {
    auto it = images.find(ref);
    if (it == images.end()) return InternalError("image \"" + ref + "\" was not resolved");
    return &it->second;
  }
};

}  // namespace

struct Coordinator::Impl {
  Impl(Transport& t, CoordinatorOptions o, prometheus::Registry* r)
      : transport(t), options(std::move(o)), registry(r) {
    if (registry == nullptr) {
      own_registry = std::make_shared<prometheus::Registry>();
      registry = own_registry.get();
    }
    builds_total = &prometheus::BuildCounter()
                        .Name("stagefarm_builds_total")
                        .Help("Builds finished, by outcome")
                        .Register(*registry);
    stages_total = &prometheus::BuildCounter()
                        .Name("stagefarm_stages_total")
                        .Help("Stages finished: executed on a worker, cached, or deduplicated")
                        .Register(*registry);
    retries_total = &prometheus::BuildCounter()
                         .Name("stagefarm_task_retries_total")
                         .Help("Tasks handed to another worker after theirs disappeared")
                         .Register(*registry)
                         .Add({});
    queue_depth = &prometheus::BuildGauge()
                       .Name("stagefarm_queue_depth")
                       .Help("Tasks waiting for a worker slot")
                       .Register(*registry)
                       .Add({});
    workers_gauge = &prometheus::BuildGauge()
                         .Name("stagefarm_workers")
                         .Help("Registered workers by state")
                         .Register(*registry);
    build_seconds = &prometheus::BuildHistogram()
                         .Name("stagefarm_build_duration_seconds")
                         .Help("Wall time of finished builds")
                         .Register(*registry)
                         .Add({}, prometheus::Histogram::BucketBoundaries{
                                      0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1200, 3600});
    stage_queue_seconds = &prometheus::BuildHistogram()
                               .Name("stagefarm_stage_queue_seconds")
                               .Help("Time tasks waited for a worker slot")
                               .Register(*registry)
                               .Add({}, prometheus::Histogram::BucketBoundaries{
                                            0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120, 600});
    schedule_seconds = &prometheus::BuildHistogram()
                            .Name("stagefarm_schedule_seconds")
                            .Help("Coordinator time to place one task: choose it, choose its "
                                  "worker, encode and send it")
                            .Register(*registry)
                            .Add({}, prometheus::Histogram::BucketBoundaries{
                                         1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 1e-1});
  }

  // --- messages -------------------------------------------------------------------------------
  void Handle(const std::string& peer, const Message& m);
  void HandleSubmit(const std::string& peer, const Message& m);
  void HandleCancel(const std::string& peer, const Message& m);
  void HandleKeepAlive(const std::string& peer, const Message& m);
  void HandleRegister(const std::string& peer, const Message& m);
  void HandleHeartbeat(const std::string& peer, const Message& m);
  void HandleTaskEvent(const std::string& peer, const Message& m);
  void HandleTaskDone(const std::string& peer, const Message& m);

  // --- builds ---------------------------------------------------------------------------------
  Status Plan(Build& b);
  // Starts every waiting stage whose dependencies are done; finishes the build when its target
  // stage is done.
  void Advance(Build& b);
  Status StartStage(Build& b, size_t s);
  void StageDone(Build& b, size_t s);
  Status Assemble(Build& b);
  void FailBuild(Build& b, BuildEvent failure);
  void Emit(Build& b, BuildEvent e);
  StatusOr<const FsIndex*> StageFs(const std::vector<LayerRef>& layers);
  // For a RUN's mounts: the filesystem each from= names (into `layers`, parallel to step.mounts)
  // and the digest of what its bind mounts mount ("" when none). Refuses type=ssh.
  StatusOr<std::string> RunMountSources(Build& b, const ResolvedStep& step,
                                        const std::map<int, size_t>& pos, const std::string& where,
                                        std::optional<ContextTree>& context,
                                        std::vector<std::vector<LayerRef>>* layers);

  // --- scheduling -----------------------------------------------------------------------------
  void Enqueue(Build& b, size_t s, StageTask spec, std::vector<size_t> step_index);
  // Tells the builds waiting for queued task `t`, once per build, when no registered worker can
  // ever take it (its platform or labels): it waits for one to register.
  void TellIfNoWorkerFits(const Task& t);
  void Schedule();
  void CheckWorkers();
  // Cancels the builds whose client has gone silent.
  void CheckClients();
  void Unqueue(Task& t);
  // Compares what worker `w` says it runs with what it was given (see coordinator.h).
  void Reconcile(WorkerInfo& w, const std::vector<std::string>& running);
  // Hands queued task `id` to worker `w` and tells the builds waiting for it.
  void Assign(const std::string& id, WorkerInfo& w, bool resumed);
  void LoseWorker(const std::string& peer, const std::string& why);
  // Queues task `id` again (ahead of new work) after its worker `worker` lost it for `why`, or
  // fails its builds when it has had its attempts.
  void RetryTask(const std::string& id, const std::string& worker, const std::string& why);
  void Send(const std::string& peer, Method method, uint64_t request_id, std::string body);
  // Tells the worker at `peer` to stop task `id`, which is no longer its.
  void CancelOn(const std::string& peer, const std::string& id);
  void UpdateWorkerGauge();

  Transport& transport;
  CoordinatorOptions options;
  prometheus::Registry* registry;
  std::shared_ptr<prometheus::Registry> own_registry;
  prometheus::Family<prometheus::Counter>* builds_total;
  prometheus::Family<prometheus::Counter>* stages_total;
  prometheus::Counter* retries_total;
  prometheus::Gauge* queue_depth;
  prometheus::Family<prometheus::Gauge>* workers_gauge;
  prometheus::Histogram* build_seconds;
  prometheus::Histogram* stage_queue_seconds;
  prometheus::Histogram* schedule_seconds;

  std::atomic<bool> stop{false};
  std::unique_ptr<ServerSocket> socket;
  std::unique_ptr<CacheClient> cache;
  std::map<std::string, std::unique_ptr<Build>> builds;
  std::map<std::string, WorkerInfo> workers;  // by peer identity
  std::map<std::string, Task> tasks;          // by task id
  FairQueue queue;                            // task ids waiting for a worker
  int64_t next_seq = 0;                       // for new tasks; retries take -next_retry_seq
  int64_t next_retry_seq = 0;
  std::map<std::string, Clock::time_point> clients;  // client peer -> last message from it
  std::map<std::string, FsIndex> fs_cache;    // stage filesystems by the key of their layer list
};

Coordinator::Coordinator(Transport& transport, CoordinatorOptions options,
                         prometheus::Registry* registry)
    : impl_(std::make_unique<Impl>(transport, std::move(options), registry)) {}

Coordinator::~Coordinator() = default;

void Coordinator::Stop() { impl_->stop = true; }

Status Coordinator::Serve(const std::string& endpoint, bool insecure,
                          const std::function<void(const std::string&)>& on_ready) {
  Impl& d = *impl_;
  SF_ASSIGN_OR_RETURN(d.socket, d.transport.Bind(endpoint, insecure));
  d.cache = ConnectCache(d.transport, d.options.cache_endpoint);
  if (on_ready) on_ready(d.socket->endpoint());
  auto last_check = Clock::now();
  while (!d.stop) {
    std::string peer;
    Message m;
    StatusOr<bool> got = d.socket->Receive(&peer, &m, std::chrono::milliseconds(100));
    if (!got.ok()) return got.status();
    if (*got) {
      if (auto c = d.clients.find(peer); c != d.clients.end()) c->second = Clock::now();
      d.Handle(peer, m);
    }
    for (auto it = d.builds.begin(); it != d.builds.end();) {
      it = it->second->finished ? d.builds.erase(it) : std::next(it);
    }
    if (Clock::now() - last_check > std::chrono::milliseconds(200)) {
      d.CheckWorkers();
      d.CheckClients();
      last_check = Clock::now();
    }
    d.Schedule();
  }
  return Status();
}

void Coordinator::Impl::Send(const std::string& peer, Method method, uint64_t request_id,
                             std::string body) {
  Message m;
  m.method = method;
  m.request_id = request_id;
  m.body = std::move(body);
  // A peer that went away is noticed through heartbeats, not here.
  socket->Send(peer, m).IgnoreError();
}

void Coordinator::Impl::CancelOn(const std::string& peer, const std::string& id) {
  Send(peer, Method::kCancelTask, 0, Encode(CancelTaskRequest{id}));
  if (auto w = workers.find(peer); w != workers.end()) {
    w->second.tasks.erase(id);
    w->second.cancelling.insert(id);
  }
}

void Coordinator::Impl::Handle(const std::string& peer, const Message& m) {
  // With CURVE the transport knows which key list the peer is in (transport.h PeerRole): a
  // worker's key cannot submit builds, a client's key cannot act as a worker.
  PeerRole role = socket->last_peer_role();
  bool worker_method = m.method == Method::kRegisterWorker || m.method == Method::kHeartbeat ||
                       m.method == Method::kTaskEvent || m.method == Method::kTaskDone;
  bool client_method = m.method == Method::kSubmitBuild || m.method == Method::kCancelBuild;
  if ((role == PeerRole::kWorker && client_method) ||
      (role == PeerRole::kClient && worker_method)) {
    socket->Send(peer, m.ErrorReply(PermissionDeniedError(
                           "a " + std::string(PeerRoleName(role)) + " key may not call " +
                           std::string(MethodName(m.method)))))
        .IgnoreError();
    return;
  }
  switch (m.method) {
    case Method::kSubmitBuild: return HandleSubmit(peer, m);
    case Method::kCancelBuild: return HandleCancel(peer, m);
    case Method::kKeepAlive: return HandleKeepAlive(peer, m);
    case Method::kRegisterWorker: return HandleRegister(peer, m);
    case Method::kHeartbeat: return HandleHeartbeat(peer, m);
    case Method::kTaskEvent: return HandleTaskEvent(peer, m);
    case Method::kTaskDone: return HandleTaskDone(peer, m);
    case Method::kPing: {
      FarmInfo info;
      info.cache_endpoint = options.advertised_cache_endpoint.empty()
                                ? options.cache_endpoint
                                : options.advertised_cache_endpoint;
      info.platform = options.platform;
      info.workers = static_cast<uint32_t>(workers.size());
      socket->Send(peer, m.Reply(Encode(info))).IgnoreError();
      return;
    }
    default:
      socket->Send(peer, m.ErrorReply(InvalidArgumentError(
                             "the coordinator has no method " +
                             std::to_string(static_cast<int>(m.method)))))
          .IgnoreError();
  }
}

// --- builds -----------------------------------------------------------------------------------

void Coordinator::Impl::Emit(Build& b, BuildEvent e) {
  e.time = SecondsSince(b.started);
  Send(b.client_peer, Method::kBuildEvent, b.request_id, Encode(e));
}

void Coordinator::Impl::FailBuild(Build& b, BuildEvent failure) {
  if (b.finished) return;
  b.finished = true;
  failure.kind = BuildEvent::Kind::kBuildFailed;
  Emit(b, std::move(failure));
  builds_total->Add({{"outcome", "failed"}}).Increment();
  build_seconds->Observe(SecondsSince(b.started));
  // Detach from tasks; a task nobody else waits for is cancelled on its worker.
  for (auto it = tasks.begin(); it != tasks.end();) {
    Task& t = it->second;
    std::erase_if(t.waiters, [&](const Waiter& w) { return w.build_id == b.id; });
    if (!t.waiters.empty()) {
      ++it;
      continue;
    }
    if (!t.worker_peer.empty()) CancelOn(t.worker_peer, it->first);
    if (t.worker_peer.empty()) Unqueue(t);
    it = tasks.erase(it);
  }
}

void Coordinator::Impl::HandleSubmit(const std::string& peer, const Message& m) {
  auto b = std::make_unique<Build>();
  Status s = Decode(m.body, &b->request);
  if (!s.ok()) {
    socket->Send(peer, m.ErrorReply(s)).IgnoreError();
    return;
  }
  b->id = RandomId();
  b->client_peer = peer;
  b->request_id = m.request_id;
  b->started = Clock::now();
  if (b->request.tenant.empty()) b->request.tenant = "default";
  clients[peer] = Clock::now();
  socket->Send(peer, m.Reply(Encode(SubmitBuildResponse{b->id}))).IgnoreError();
  Build& build = *b;
  builds[b->id] = std::move(b);
  Status planned = Plan(build);
  if (!planned.ok()) {
    BuildEvent e;
    e.error = planned.message();
    FailBuild(build, std::move(e));
    return;
  }
  Advance(build);
}

void Coordinator::Impl::HandleCancel(const std::string& peer, const Message& m) {
  CancelBuildRequest req;
  Status s = Decode(m.body, &req);
  if (!s.ok()) {
    socket->Send(peer, m.ErrorReply(s)).IgnoreError();
    return;
  }
  auto it = builds.find(req.build_id);
  // Only the client that submitted a build may cancel it; to others it does not exist.
  if (it == builds.end() || it->second->client_peer != peer) {
    socket->Send(peer, m.ErrorReply(NotFoundError("no build " + req.build_id))).IgnoreError();
    return;
  }
  BuildEvent e;
  e.error = "build cancelled";
  FailBuild(*it->second, std::move(e));
  socket->Send(peer, m.Reply()).IgnoreError();
}

void Coordinator::Impl::HandleKeepAlive(const std::string& peer, const Message& m) {
  CancelBuildRequest req;
  Status s = Decode(m.body, &req);
  if (!s.ok()) {
    socket->Send(peer, m.ErrorReply(s)).IgnoreError();
    return;
  }
  auto it = builds.find(req.build_id);
  if (it == builds.end() || it->second->client_peer != peer) {
    // Finished builds send their last event before this reply, so an unknown build is one a
    // previous coordinator process ran.
    socket->Send(peer, m.ErrorReply(UnavailableError(
                           "the coordinator restarted and lost build " + req.build_id +
                           "; run the build again (finished steps are cached)")))
        .IgnoreError();
    return;
  }
  socket->Send(peer, m.Reply()).IgnoreError();
}

void Coordinator::Impl::CheckClients() {
  auto now = Clock::now();
  std::set<std::string> live;
  for (auto& [id, b] : builds) {
    if (b->finished) continue;
    auto c = clients.find(b->client_peer);
    if (c != clients.end() && now - c->second <= options.client_timeout) {
      live.insert(b->client_peer);
      continue;
    }
    LogWarning("build " + id + ": its client has been silent for " +
               std::to_string(options.client_timeout.count()) + " ms; cancelling it");
    BuildEvent e;
    e.error = "build cancelled: the client went away";
    FailBuild(*b, std::move(e));
  }
  std::erase_if(clients, [&](const auto& c) { return !live.count(c.first); });
}

Status Coordinator::Impl::Plan(Build& b) {
  SF_ASSIGN_OR_RETURN(std::string text, cache->ReadBytes(b.request.dockerfile, 16 << 20));
  frontend::BuildOptions opts;
  opts.build_args = b.request.build_args;
  opts.target = b.request.target;
  opts.platform = b.request.platform.empty() ? options.platform : b.request.platform;
  opts.filename = b.request.dockerfile_name.empty() ? "Dockerfile" : b.request.dockerfile_name;
  b.filename = opts.filename;
  if (opts.platform != options.platform) {
    return InvalidArgumentError("platform " + opts.platform + " is not supported by this farm (" +
                                options.platform + ")");
  }
  if (auto epoch = b.request.build_args.find("SOURCE_DATE_EPOCH");
      epoch != b.request.build_args.end()) {
    // Seconds since 1970 up to the end of year 9999, the last an image's "created" can write.
    constexpr int64_t kMaxEpoch = 253402300799;
    const std::string& v = epoch->second;
    int64_t secs = -1;
    auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), secs);
    if (ec != std::errc() || end != v.data() + v.size() || secs < 0 || secs > kMaxEpoch) {
      return InvalidArgumentError("invalid SOURCE_DATE_EPOCH \"" + v +
                                  "\": it must be a number of seconds from 0 to " +
                                  std::to_string(kMaxEpoch));
    }
    b.source_date_epoch = secs;
  }
  auto resolver = [&](const std::string& ref) -> StatusOr<ImageConfig> {
    if (auto it = b.images.find(ref); it != b.images.end()) return it->second.config;
    std::string name = NormalizeImageRef(ref);
    SF_ASSIGN_OR_RETURN(std::optional<Digest> manifest, cache->GetRef(name));
    if (!manifest) {
      return NotFoundError("image \"" + ref + "\" is not in the farm's store (import it with "
                           "`stagefarm image import SRC " + ref + "`)");
    }
    SF_ASSIGN_OR_RETURN(ImageRecord image, LoadImage(*cache, *manifest));
    BuildEvent e;
    e.kind = BuildEvent::Kind::kInfo;
    e.text = "resolved " + ref + " to " + name + "@" + manifest->str();
    Emit(b, std::move(e));
    ImageConfig config = image.config;
    b.images[ref] = std::move(image);
    return config;
  };
  SF_ASSIGN_OR_RETURN(b.plan, frontend::Resolve(text, opts, resolver));
  // A stage for another platform would wait for a worker that never comes (nothing emulates).
  for (const ResolvedStage& rs : b.plan.stages) {
    if (!rs.platform.empty() && rs.platform != options.platform) {
      return InvalidArgumentError(b.filename + ":" + std::to_string(rs.line) + ": FROM --platform=" +
                                  rs.platform + ": platform " + rs.platform +
                                  " is not supported by this farm (" + options.platform + ")");
    }
  }
  for (const std::string& w : b.plan.warnings) {
    BuildEvent e;
    e.kind = BuildEvent::Kind::kInfo;
    e.text = "warning: " + w;
    Emit(b, std::move(e));
  }
  b.stages.resize(b.plan.stages.size());
  return Status();
}

void Coordinator::Impl::Advance(Build& b) {
  // Stage positions by original index, for dependency checks.
  std::map<int, size_t> pos;
  for (size_t i = 0; i < b.plan.stages.size(); ++i) pos[b.plan.stages[i].index] = i;
  for (size_t i = 0; i < b.plan.stages.size() && !b.finished; ++i) {
    if (b.stages[i].state != StageState::State::kWaiting) continue;
    bool ready = true;
    for (int dep : b.plan.stages[i].deps) {
      auto p = pos.find(dep);
      if (p == pos.end() || b.stages[p->second].state != StageState::State::kDone) ready = false;
    }
    if (!ready) continue;
    Status s = StartStage(b, i);
    if (!s.ok()) {
      BuildEvent e;
      e.stage = b.plan.stages[i].display_name;
      e.error = s.message();
      FailBuild(b, std::move(e));
      return;
    }
  }
  if (b.finished) return;
  if (b.stages[b.plan.target].state == StageState::State::kDone) {
    Status s = Assemble(b);
    if (!s.ok()) {
      BuildEvent e;
      e.error = "assembling the image: " + s.message();
      FailBuild(b, std::move(e));
    }
  }
}

StatusOr<const FsIndex*> Coordinator::Impl::StageFs(const std::vector<LayerRef>& layers) {
  std::string id;
  for (const LayerRef& l : layers) id += l.toc.hex;
  auto it = fs_cache.find(id);
  if (it != fs_cache.end()) return &it->second;
  FsIndex fs;
  for (const LayerRef& l : layers) {
    SF_ASSIGN_OR_RETURN(std::string bytes, cache->ReadBytes(l.toc, 256 << 20));
    SF_ASSIGN_OR_RETURN(Toc toc, Toc::Parse(bytes));
    fs.Apply(toc);
  }
  if (fs_cache.size() > 256) fs_cache.clear();  // a crude bound; TOC indexes are rebuilt on demand
  return &fs_cache.emplace(id, std::move(fs)).first->second;
}

StatusOr<std::string> Coordinator::Impl::RunMountSources(
    Build& b, const ResolvedStep& step, const std::map<int, size_t>& pos, const std::string& where,
    std::optional<ContextTree>& context, std::vector<std::vector<LayerRef>>* layers) {
  std::string digests;  // one line per bind mount
  for (const frontend::RunMount& m : step.mounts) {
    if (m.type == "ssh") {
      return InvalidArgumentError(where + ": RUN --mount=type=ssh is not supported: this farm " +
                                  "does not forward SSH agents; pass credentials with --secret " +
                                  "and RUN --mount=type=secret instead");
    }
    std::vector<LayerRef> from;
    if (m.from_stage >= 0) {
      from = b.stages[pos.at(m.from_stage)].layers;
    } else if (!m.from.empty()) {
      SF_ASSIGN_OR_RETURN(const ImageRecord* image, b.Image(m.from));
      from = image->layers;
    }
    if (m.type == "bind") {
      std::string mounted = where + ": --mount source";
      if (m.from.empty()) {
        if (!context) context.emplace(*cache, b.request.context_root);
        SF_ASSIGN_OR_RETURN(std::string d, ContextSourcesDigest(*context, {m.source}, mounted));
        digests += d + "\n";
      } else {
        SF_ASSIGN_OR_RETURN(const FsIndex* fs, StageFs(from));
        SF_ASSIGN_OR_RETURN(std::string d, FsSourcesDigest(*fs, {m.source}, mounted));
        digests += d + "\n";
      }
    }
    layers->push_back(std::move(from));
  }
  return digests.empty() ? std::string() : Digest::Of(digests).hex;
}

Status Coordinator::Impl::StartStage(Build& b, size_t s) {
  const ResolvedStage& rs = b.plan.stages[s];
  StageState& st = b.stages[s];
  st.started = Clock::now();
  std::map<int, size_t> pos;
  for (size_t i = 0; i < b.plan.stages.size(); ++i) pos[b.plan.stages[i].index] = i;
  std::string platform = rs.platform.empty() ? options.platform : rs.platform;

  if (rs.base_stage >= 0) {
    const StageState& base = b.stages[pos.at(rs.base_stage)];
    st.last_key = base.last_key;
    st.layers = base.layers;
    st.history = base.history;
  } else if (rs.base == "scratch") {
    st.last_key = BaseKey(Digest{}, platform, options.cache_salt);
  } else {
    SF_ASSIGN_OR_RETURN(const ImageRecord* image, b.Image(rs.base));
    st.last_key = BaseKey(image->manifest, platform, options.cache_salt);
    st.layers = image->layers;
    st.history = image->history;
  }

  bool no_cache = b.request.no_cache ||
                  std::find(b.request.no_cache_filter.begin(), b.request.no_cache_filter.end(),
                            rs.name) != b.request.no_cache_filter.end();
  std::optional<ContextTree> context;
  StageTask spec;
  std::vector<size_t> step_index;
  bool missed = false;
  st.keys.resize(rs.steps.size());
  for (size_t i = 0; i < rs.steps.size(); ++i) {
    const ResolvedStep& step = rs.steps[i];
    std::string where = b.filename + ":" + std::to_string(step.line) + ": " + step.text;
    std::string sources_digest;
    std::vector<LayerRef> from_layers;
    std::vector<std::vector<LayerRef>> mount_layers;
    if (step.kind == frontend::StepKind::kRun && !step.mounts.empty()) {
      SF_ASSIGN_OR_RETURN(sources_digest,
                          RunMountSources(b, step, pos, where, context, &mount_layers));
    }
    if (step.kind == frontend::StepKind::kCopy || step.kind == frontend::StepKind::kAdd) {
      std::vector<std::string> local, urls;
      SF_RETURN_IF_ERROR(SplitCopySources(step, where, &local, &urls));
      if (step.from_stage >= 0) {
        from_layers = b.stages[pos.at(step.from_stage)].layers;
      } else if (!step.from_image.empty()) {
        SF_ASSIGN_OR_RETURN(const ImageRecord* image, b.Image(step.from_image));
        from_layers = image->layers;
      }
      const CopySelection selection{step.parents, step.excludes};
      if (step.from_stage >= 0 || !step.from_image.empty()) {
        SF_ASSIGN_OR_RETURN(const FsIndex* fs, StageFs(from_layers));
        SF_ASSIGN_OR_RETURN(sources_digest, FsSourcesDigest(*fs, local, where, selection));
      } else {
        if (!context) context.emplace(*cache, b.request.context_root);
        SF_ASSIGN_OR_RETURN(sources_digest,
                            ContextSourcesDigest(*context, local, where, selection));
      }
      if (!urls.empty()) {
        // ADD from URLs: the key holds what was fetched, not only the URL.
        SF_ASSIGN_OR_RETURN(std::string remote,
                            RemoteSourcesDigest(urls, b.request.remote_files, step.checksum,
                                                where, step.keep_git_dir.value_or(false)));
        sources_digest = Digest::Of(sources_digest + "\n" + remote).hex;
      }
    }
    st.last_key = st.keys[i] = StepKey(st.last_key, step, sources_digest);
    // The comment BuildKit's Dockerfile frontend gives every entry it writes; a step without
    // history text (ONBUILD) writes none.
    if (!step.created_by.empty()) {
      st.history.push_back(
          HistoryEntry{{}, step.created_by, "buildkit.dockerfile.v0", !step.makes_layer()});
    }
    if (!step.makes_layer()) continue;
    BuildEvent e;
    e.stage = rs.display_name;
    e.step = static_cast<int32_t>(i);
    e.line = step.line;
    e.text = step.text;
    if (!missed && !no_cache) {
      SF_ASSIGN_OR_RETURN(std::optional<ActionResult> hit, cache->GetAction(st.keys[i]));
      if (hit) {
        st.layers.push_back(hit->layer);
        e.kind = BuildEvent::Kind::kStepCached;
        e.layer_size = hit->layer.diff_id.size;
        Emit(b, std::move(e));
        continue;
      }
    }
    if (!missed) {
      missed = true;
      spec.base_layers = st.layers;
    }
    StepSpec w = MakeStepSpec(step, st.keys[i], b.request, std::move(from_layers),
                              std::move(mount_layers));
    spec.steps.push_back(std::move(w));
    step_index.push_back(i);
  }
  if (!missed) {
    st.cached = true;
    st.state = StageState::State::kDone;
    stages_total->Add({{"outcome", "cached"}}).Increment();
    StageDone(b, s);
    return Status();
  }
  spec.build_id = b.id;
  spec.stage = rs.display_name;
  spec.secrets = TaskSecrets(spec, b.request);
  if (b.source_date_epoch) spec.source_date_epoch = *b.source_date_epoch;
  // Identical work (same keys from the same starting filesystem, same worker constraints) is one
  // task whoever asks.
  std::string identity = spec.steps.front().key + spec.steps.back().key;
  for (const auto& [k, v] : b.request.worker_constraints) {
    identity += std::to_string(k.size()) + ":" + k + "=" + std::to_string(v.size()) + ":" + v;
  }
  spec.task_id = Digest::Of(identity).hex.substr(0, 16);
  st.state = StageState::State::kQueued;
  st.task_id = spec.task_id;
  Enqueue(b, s, std::move(spec), std::move(step_index));
  return Status();
}

void Coordinator::Impl::StageDone(Build& b, size_t s) {
  StageState& st = b.stages[s];
  st.seconds = SecondsSince(st.started);
  BuildEvent e;
  e.kind = BuildEvent::Kind::kStageDone;
  e.stage = b.plan.stages[s].display_name;
  e.worker = st.worker;
  e.seconds = st.seconds;
  Emit(b, std::move(e));
}

Status Coordinator::Impl::Assemble(Build& b) {
  size_t t = b.plan.target;
  const ResolvedStage& rs = b.plan.stages[t];
  StageState& st = b.stages[t];
  ImageRecord image;
  image.config = rs.steps.empty() ? rs.base_config : rs.steps.back().config();
  for (const auto& [k, v] : b.request.labels) image.config.labels[k] = v;
  image.layers = st.layers;
  image.history = st.history;
  if (b.source_date_epoch) {
    time_t secs = *b.source_date_epoch;
    char buf[32];
    struct tm tm;
    if (gmtime_r(&secs, &tm) == nullptr) return InternalError("SOURCE_DATE_EPOCH out of range");
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    image.created = buf;
  }
  SF_ASSIGN_OR_RETURN(image, StoreImage(*cache, std::move(image)));
  for (const std::string& tag : b.request.tags) {
    SF_RETURN_IF_ERROR(cache->PutRef(NormalizeImageRef(tag), image.manifest));
  }
  BuildEvent e;
  e.kind = BuildEvent::Kind::kBuildDone;
  e.manifest = image.manifest;
  e.config = image.config_digest;
  for (const LayerRef& l : image.layers) e.image_size += l.diff_id.size;
  for (size_t i = 0; i < b.plan.stages.size(); ++i) {
    StageSummary sum;
    sum.name = b.plan.stages[i].display_name;
    sum.worker = b.stages[i].worker;
    sum.cached = b.stages[i].cached;
    sum.seconds = b.stages[i].seconds;
    for (const LayerRef& l : b.stages[i].layers) sum.size += l.diff_id.size;
    e.stages.push_back(std::move(sum));
  }
  b.finished = true;
  Emit(b, std::move(e));
  builds_total->Add({{"outcome", "success"}}).Increment();
  build_seconds->Observe(SecondsSince(b.started));
  return Status();
}

// --- scheduling -------------------------------------------------------------------------------

void Coordinator::Impl::Enqueue(Build& b, size_t s, StageTask spec,
                                std::vector<size_t> step_index) {
  auto it = tasks.find(spec.task_id);
  if (it != tasks.end()) {
    // Another build already runs this work: wait for it too.
    Task& t = it->second;
    t.waiters.push_back(Waiter{b.id, s, std::move(step_index)});
    stages_total->Add({{"outcome", "deduplicated"}}).Increment();
    if (t.worker_peer.empty() && -b.request.priority < t.queue_key.neg_priority) {
      // A more urgent build now waits for it too.
      Unqueue(t);
      t.queue_key.neg_priority = -b.request.priority;
      queue.Push(t.tenant, t.queue_key);
    }
    if (!it->second.worker_peer.empty()) {
      BuildEvent e;
      e.kind = BuildEvent::Kind::kStageQueued;
      e.stage = b.plan.stages[s].display_name;
      e.worker = workers[it->second.worker_peer].name;
      e.text = "shared with another build";
      Emit(b, std::move(e));
    } else {
      TellIfNoWorkerFits(t);
    }
    return;
  }
  Task t;
  t.spec = std::move(spec);
  t.waiters.push_back(Waiter{b.id, s, std::move(step_index)});
  t.queued_at = Clock::now();
  t.tenant = b.request.tenant;
  t.queue_key = QueueKey{-b.request.priority, next_seq++, t.spec.task_id};
  t.platform = b.plan.stages[s].platform.empty() ? options.platform : b.plan.stages[s].platform;
  t.constraints = b.request.worker_constraints;
  queue.Push(t.tenant, t.queue_key);
  TellIfNoWorkerFits(tasks.emplace(t.spec.task_id, std::move(t)).first->second);
}

void Coordinator::Impl::TellIfNoWorkerFits(const Task& t) {
  for (const auto& [peer, w] : workers) {
    if (w.Offers(t.platform, t.constraints)) return;
  }
  std::string want = t.platform == options.platform ? "" : "platform=" + t.platform;
  for (const auto& [k, v] : t.constraints) want += (want.empty() ? "" : ", ") + k + "=" + v;
  for (const Waiter& wt : t.waiters) {
    auto b = builds.find(wt.build_id);
    if (b == builds.end() || b->second->told_waiting) continue;
    b->second->told_waiting = true;
    BuildEvent e;
    e.kind = BuildEvent::Kind::kInfo;
    e.text = "waiting for a worker with " + want;
    Emit(*b->second, std::move(e));
  }
}

void Coordinator::Impl::Unqueue(Task& t) { queue.Remove(t.tenant, t.queue_key); }

void Coordinator::Impl::Schedule() {
  while (!queue.empty()) {
    auto t0 = Clock::now();
    std::vector<WorkerInfo*> with_slot;
    for (auto& [peer, w] : workers) {
      if (w.HasSlot()) with_slot.push_back(&w);
    }
    if (with_slot.empty()) break;
    // A task no free worker can take (its platform, its labels, a run of it still being
    // cancelled there) waits without holding up others.
    auto can_take = [&](const WorkerInfo& w, const std::string& id, const Task& t) {
      return w.Free(t.platform, t.constraints) && !w.cancelling.count(id);
    };
    std::string tenant;
    const QueueKey* next = queue.PeekRunnable(&tenant, [&](const QueueKey& k) {
      const Task& t = tasks.at(k.task_id);
      return std::any_of(with_slot.begin(), with_slot.end(),
                         [&](const WorkerInfo* w) { return can_take(*w, k.task_id, t); });
    });
    if (next == nullptr) break;
    std::string id = next->task_id;
    const Task& t = tasks.at(id);
    // Most base-layer bytes already there (each layer counts at least one byte, so an empty
    // layer still counts), then most free slots, then fewest tasks.
    WorkerInfo* best = nullptr;
    uint64_t best_held = 0;
    for (WorkerInfo* candidate : with_slot) {
      WorkerInfo& w = *candidate;
      if (!can_take(w, id, t)) continue;
      uint64_t held = 0;
      for (const LayerRef& l : t.spec.base_layers) {
        if (w.layers.count(l.diff_id.hex)) held += std::max<uint64_t>(l.diff_id.size, 1);
      }
      auto free = [](const WorkerInfo& x) { return x.slots - x.tasks.size(); };
      if (best == nullptr || held > best_held ||
          (held == best_held && (free(w) > free(*best) ||
                                 (free(w) == free(*best) && w.tasks.size() < best->tasks.size())))) {
        best = &w;
        best_held = held;
      }
    }
    queue.MarkServed(tenant);
    Assign(id, *best, /*resumed=*/false);
    schedule_seconds->Observe(SecondsSince(t0));
  }
  queue_depth->Set(static_cast<double>(queue.size()));
}

void Coordinator::Impl::Assign(const std::string& id, WorkerInfo& w, bool resumed) {
  Task& t = tasks.at(id);
  Unqueue(t);
  t.worker_peer = w.peer;
  t.assigned_peers.insert(w.peer);
  w.tasks.insert(id);
  for (const LayerRef& l : t.spec.base_layers) w.layers.insert(l.diff_id.hex);
  stage_queue_seconds->Observe(SecondsSince(t.queued_at));
  if (!resumed) {
    ++t.attempts;
    Send(w.peer, Method::kAssignTask, 0, Encode(t.spec));
  }
  for (const Waiter& wt : t.waiters) {
    auto b = builds.find(wt.build_id);
    if (b == builds.end()) continue;
    b->second->stages[wt.stage].worker = w.name;
    BuildEvent e;
    e.kind = BuildEvent::Kind::kStageQueued;
    e.stage = b->second->plan.stages[wt.stage].display_name;
    e.worker = w.name;
    if (resumed) e.text = "the worker came back with the stage still running";
    Emit(*b->second, std::move(e));
  }
}

void Coordinator::Impl::UpdateWorkerGauge() {
  double busy = 0, idle = 0;
  for (const auto& [peer, w] : workers) (w.tasks.empty() ? idle : busy) += 1;
  workers_gauge->Add({{"state", "busy"}}).Set(busy);
  workers_gauge->Add({{"state", "idle"}}).Set(idle);
}

void Coordinator::Impl::HandleRegister(const std::string& peer, const Message& m) {
  RegisterWorkerRequest req;
  Status s = Decode(m.body, &req);
  if (!s.ok()) {
    socket->Send(peer, m.ErrorReply(s)).IgnoreError();
    return;
  }
  // The same worker under a new connection: it keeps the tasks it still runs; the others are
  // lost with the old connection.
  std::set<std::string> kept, cancelling;
  for (auto it = workers.begin(); it != workers.end(); ++it) {
    if (it->second.name != req.name || it->first == peer) continue;
    for (const std::string& id : req.running_tasks) {
      if (it->second.tasks.erase(id)) kept.insert(id);
      if (it->second.cancelling.count(id)) cancelling.insert(id);
    }
    LoseWorker(it->first, "worker " + req.name + " reconnected");
    break;
  }
  WorkerInfo& w = workers[peer];
  w.cancelling.insert(cancelling.begin(), cancelling.end());
  for (const std::string& id : kept) {
    // Losing the old connection may have failed the build that waited for it (another of its
    // tasks ran out of attempts); Reconcile below then cancels it on the worker.
    auto t = tasks.find(id);
    if (t == tasks.end()) continue;
    w.tasks.insert(id);
    t->second.worker_peer = peer;
    t->second.assigned_peers.insert(peer);
  }
  w.peer = peer;
  w.name = req.name;
  w.slots = req.slots;
  w.platform = req.platform.empty() ? options.platform : req.platform;
  w.labels = req.labels;
  w.last_seen = Clock::now();
  std::string labels;
  for (const auto& [k, v] : req.labels) labels += " " + k + "=" + v;
  LogInfo("worker " + req.name + " registered with " + std::to_string(req.slots) + " slots" +
          (labels.empty() ? "" : ", labels" + labels));
  socket->Send(peer, m.Reply()).IgnoreError();
  Reconcile(w, req.running_tasks);
  UpdateWorkerGauge();
}

void Coordinator::Impl::HandleHeartbeat(const std::string& peer, const Message& m) {
  auto it = workers.find(peer);
  if (it == workers.end()) {
    socket->Send(peer, m.ErrorReply(NotFoundError("unknown worker: register again")))
        .IgnoreError();
    return;
  }
  HeartbeatRequest hb;
  if (Status s = Decode(m.body, &hb); !s.ok()) {
    socket->Send(peer, m.ErrorReply(s)).IgnoreError();
    return;
  }
  WorkerInfo& w = it->second;
  w.last_seen = Clock::now();
  w.layers = std::set<std::string>(hb.layers.begin(), hb.layers.end());
  socket->Send(peer, m.Reply()).IgnoreError();
  if (hb.draining && !w.draining) LogInfo("worker " + w.name + " is shutting down: no new tasks");
  w.draining = w.draining || hb.draining;  // for good: a worker does not take it back
  Reconcile(w, hb.running_tasks);
  if (w.draining && w.tasks.empty() && hb.running_tasks.empty()) {
    LogInfo("worker " + w.name + " left the farm");
    workers.erase(it);
    UpdateWorkerGauge();
  }
}

void Coordinator::Impl::Reconcile(WorkerInfo& w, const std::vector<std::string>& running) {
  const std::string& peer = w.peer;
  // The runs it was told to cancel and no longer reports are over. (A worker sends a task's
  // TaskDone before the heartbeats that leave the task out.)
  const std::set<std::string> now_running(running.begin(), running.end());
  std::erase_if(w.cancelling, [&](const std::string& id) { return !now_running.count(id); });
  // What it runs that it should not: work given to another worker (after this one was thought
  // lost), or work nobody waits for any more. A task still queued is given back to it, unless
  // the run it reports is one it was told to cancel.
  for (const std::string& id : running) {
    if (w.cancelling.count(id)) continue;
    auto t = tasks.find(id);
    if (t != tasks.end() && t->second.worker_peer == peer) continue;
    if (t != tasks.end() && t->second.worker_peer.empty() && w.tasks.size() < w.slots) {
      LogInfo("worker " + w.name + " still runs task " + id + "; it keeps it");
      Assign(id, w, /*resumed=*/true);
      continue;
    }
    LogInfo("worker " + w.name + " runs task " + id + " that is " +
            (t == tasks.end() ? "no longer wanted" : "assigned elsewhere") + "; cancelling it");
    CancelOn(peer, id);
  }
}

void Coordinator::Impl::CheckWorkers() {
  std::vector<std::string> dead;
  for (const auto& [peer, w] : workers) {
    if (Clock::now() - w.last_seen > options.heartbeat_timeout) dead.push_back(peer);
  }
  for (const std::string& peer : dead) LoseWorker(peer, "worker stopped sending heartbeats");
}

void Coordinator::Impl::LoseWorker(const std::string& peer, const std::string& why) {
  auto wit = workers.find(peer);
  if (wit == workers.end()) return;
  WorkerInfo w = std::move(wit->second);
  workers.erase(wit);
  LogWarning(why + " (" + w.name + "); its " + std::to_string(w.tasks.size()) +
             " tasks go to other workers");
  for (const std::string& id : w.tasks) RetryTask(id, w.name, why);
  UpdateWorkerGauge();
}

void Coordinator::Impl::RetryTask(const std::string& id, const std::string& worker,
                                  const std::string& why) {
  auto it = tasks.find(id);
  if (it == tasks.end()) return;
  Task& t = it->second;
  t.worker_peer.clear();
  std::vector<Waiter> waiters = t.waiters;
  if (t.attempts >= options.max_attempts) {
    tasks.erase(it);
    for (const Waiter& wt : waiters) {
      auto b = builds.find(wt.build_id);
      if (b == builds.end()) continue;
      BuildEvent e;
      e.stage = b->second->plan.stages[wt.stage].display_name;
      e.error = "stage " + e.stage + " lost its worker " + std::to_string(options.max_attempts) +
                " times (last: " + worker + ", " + why + ")";
      FailBuild(*b->second, std::move(e));
    }
    return;
  }
  retries_total->Increment();
  t.queued_at = Clock::now();
  t.queue_key.seq = -(++next_retry_seq);  // ahead of new work
  queue.Push(t.tenant, t.queue_key);
  TellIfNoWorkerFits(t);
  for (const Waiter& wt : waiters) {
    auto b = builds.find(wt.build_id);
    if (b == builds.end()) continue;
    BuildEvent e;
    e.kind = BuildEvent::Kind::kStageRetried;
    e.stage = b->second->plan.stages[wt.stage].display_name;
    e.worker = worker;
    e.text = why + "; retrying elsewhere (attempt " + std::to_string(t.attempts + 1) + " of " +
             std::to_string(options.max_attempts) + ")";
    Emit(*b->second, std::move(e));
  }
}

void Coordinator::Impl::HandleTaskEvent(const std::string& peer, const Message& m) {
  TaskEvent ev;
  if (!Decode(m.body, &ev).ok()) return;  // events need no reply; a bad one is dropped
  auto it = tasks.find(ev.task_id);
  if (it == tasks.end() || it->second.worker_peer != peer) return;  // a stale or foreign event
  Task& t = it->second;
  for (const Waiter& w : t.waiters) {
    auto b = builds.find(w.build_id);
    if (b == builds.end() || ev.step >= w.step_index.size()) continue;
    const ResolvedStage& rs = b->second->plan.stages[w.stage];
    const ResolvedStep& step = rs.steps[w.step_index[ev.step]];
    BuildEvent e;
    e.stage = rs.display_name;
    e.step = static_cast<int32_t>(w.step_index[ev.step]);
    e.line = step.line;
    e.text = step.text;
    e.worker = workers.count(peer) ? workers[peer].name : "";
    switch (ev.kind) {
      case TaskEvent::Kind::kStepStarted: e.kind = BuildEvent::Kind::kStepStarted; break;
      case TaskEvent::Kind::kLog:
        e.kind = BuildEvent::Kind::kStepLog;
        e.log = ev.log;
        break;
      case TaskEvent::Kind::kStepDone:
        e.kind = BuildEvent::Kind::kStepDone;
        e.seconds = ev.seconds;
        e.layer_size = ev.layer.diff_id.size;
        break;
    }
    Emit(*b->second, std::move(e));
  }
}

void Coordinator::Impl::HandleTaskDone(const std::string& peer, const Message& m) {
  TaskDone done;
  if (!Decode(m.body, &done).ok()) return;
  auto it = tasks.find(done.task_id);
  if (auto w = workers.find(peer); w != workers.end()) {
    w->second.tasks.erase(done.task_id);
    w->second.cancelling.erase(done.task_id);
    w->second.last_seen = Clock::now();
  }
  if (it == tasks.end()) return;
  if (!it->second.assigned_peers.count(peer)) {
    // A run cancelled before this task was queued again, or a peer it was never given to.
    LogInfo("task " + done.task_id + ": ignoring the end of a run it was not given to");
    return;
  }
  if (done.handed_back) {
    // The worker is shutting down: the stage runs again elsewhere, and this was no attempt. It
    // gets no more tasks even if it never said it was draining, or the stage would go back to it
    // (it holds the base layers) and come back again; and then the hand-back counts as an
    // attempt, so that a worker that keeps registering again cannot do it for ever.
    if (it->second.worker_peer != peer) return;
    std::string name = workers.count(peer) ? workers[peer].name : "a worker";
    auto w = workers.find(peer);
    if (w != workers.end() && w->second.draining) --it->second.attempts;
    if (w != workers.end()) w->second.draining = true;
    RetryTask(done.task_id, name, "worker " + name + " is shutting down and handed the stage back");
    return;
  }
  if (it->second.worker_peer != peer) {
    // A worker we had given up on finished it after all: a success is as good as any (its
    // layers are in the cache); a failure is not news, another attempt is under way.
    if (!done.status.ok() || done.layers.size() != it->second.spec.steps.size()) return;
    if (it->second.worker_peer.empty()) {
      Unqueue(it->second);
    } else {
      CancelOn(it->second.worker_peer, done.task_id);
    }
  }
  Task t = std::move(it->second);
  tasks.erase(it);
  if (done.status.ok() && done.layers.size() != t.spec.steps.size()) {
    done.status = InternalError("worker returned " + std::to_string(done.layers.size()) +
                                " layers for " + std::to_string(t.spec.steps.size()) + " steps");
  }
  stages_total->Add({{"outcome", done.status.ok() ? "executed" : "failed"}}).Increment();
  for (const Waiter& w : t.waiters) {
    auto bit = builds.find(w.build_id);
    if (bit == builds.end()) continue;
    Build& b = *bit->second;
    if (b.finished) continue;
    StageState& st = b.stages[w.stage];
    if (!done.status.ok()) {
      st.state = StageState::State::kFailed;
      BuildEvent e;
      e.stage = b.plan.stages[w.stage].display_name;
      e.worker = workers.count(peer) ? workers[peer].name : "";
      if (done.failed_step >= 0 && static_cast<size_t>(done.failed_step) < w.step_index.size()) {
        const ResolvedStep& step = b.plan.stages[w.stage].steps[w.step_index[done.failed_step]];
        e.step = static_cast<int32_t>(w.step_index[done.failed_step]);
        e.line = step.line;
        e.text = step.text;
      }
      e.exit_code = done.exit_code;
      e.log = done.log_tail;
      e.error = done.status.message();
      FailBuild(b, std::move(e));
      continue;
    }
    st.layers = t.spec.base_layers;
    st.layers.insert(st.layers.end(), done.layers.begin(), done.layers.end());
    st.state = StageState::State::kDone;
    StageDone(b, w.stage);
    Advance(b);
  }
}

}  // namespace stagefarm::coordinator
