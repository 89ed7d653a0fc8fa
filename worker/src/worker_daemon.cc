#include "stagefarm/worker/worker_daemon.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <atomic>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "stagefarm/common/cache_client.h"
#include "stagefarm/common/log.h"
#include "stagefarm/common/worker_protocol.h"
#include "stagefarm/worker/executor.h"

namespace stagefarm::worker {
namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kHeartbeatEvery = std::chrono::seconds(1);
// Registration retries back off exponentially between these, each delay jittered by +-50%, so a
// farm whose coordinator restarts does not register all at once.
constexpr auto kRegisterRetryMin = std::chrono::milliseconds(500);
constexpr auto kRegisterRetryMax = std::chrono::milliseconds(8000);

Clock::duration Jittered(std::chrono::milliseconds base, std::mt19937& rng) {
  std::uniform_real_distribution<double> f(0.5, 1.5);
  return std::chrono::duration_cast<Clock::duration>(base * f(rng));
}

// The layers extracted under <root>/layers (their diffID hex), for placement by the coordinator.
std::vector<std::string> HeldLayers(const std::string& root) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(root + "/layers", ec)) {
    std::string name = e.path().filename().string();
    if (name.size() == 64 && name.find_first_not_of("0123456789abcdef") == std::string::npos) {
      out.push_back(std::move(name));
    }
  }
  return out;  // a missing directory is an empty store
}

}  // namespace

struct WorkerDaemon::Impl {
  Impl(Transport& t, WorkerDaemonOptions o, prometheus::Registry* r)
      : transport(t),
        options(std::move(o)),
        own_registry(r ? nullptr : std::make_shared<prometheus::Registry>()),
        registry(r ? r : own_registry.get()),
        executor(options.executor, registry) {
    slots_busy = &prometheus::BuildGauge()
                      .Name("stagefarm_worker_slots_busy")
                      .Help("Task slots in use")
                      .Register(*registry)
                      .Add({});
    tasks_total = &prometheus::BuildCounter()
                       .Name("stagefarm_worker_tasks_total")
                       .Help("Stage tasks finished, by outcome")
                       .Register(*registry);
  }

  void Post(Method method, std::string body) {
    Message m;
    m.method = method;
    m.body = std::move(body);
    std::lock_guard lock(mu);
    outbox.push_back(std::move(m));
  }

  void StartTask(StageTask task) {
    std::string id = task.task_id;
    std::lock_guard lock(mu);
    if (running.count(id)) return;  // the coordinator sent it twice; one run answers both
    slots_busy->Increment();
    running[id] = std::thread([this, task = std::move(task)]() mutable {
      std::unique_ptr<CacheClient> cache = ConnectCache(transport, options.cache_endpoint);
      TaskDone done = executor.Run(
          task, *cache, [this](const TaskEvent& e) { Post(Method::kTaskEvent, Encode(e)); });
      done.task_id = task.task_id;
      // Only what the hand-back stopped is handed back: a step that failed by itself keeps its
      // error, or the coordinator would run it again without counting the attempt.
      if (handing_back && done.status.code() == StatusCode::kCancelled) {
        done = HandedBack(task.task_id);
      }
      tasks_total->Add({{"outcome", done.status.ok() ? "success" : "failure"}}).Increment();
      // Queued together: Serve sends the TaskDone before it reaps the task, so every heartbeat
      // that leaves the task out follows its TaskDone (the coordinator reads a task missing from
      // a heartbeat as a run that ended).
      Message m;
      m.method = Method::kTaskDone;
      m.body = Encode(done);
      std::lock_guard lock(mu);
      outbox.push_back(std::move(m));
      finished.push_back(task.task_id);
    });
  }

  static TaskDone HandedBack(const std::string& id) {
    TaskDone done;
    done.task_id = id;
    done.status = UnavailableError("the worker is shutting down");
    done.handed_back = true;
    return done;
  }

  // Joins the threads of tasks `done`, whose TaskDone has been sent.
  void ReapFinished(const std::vector<std::string>& done) {
    std::vector<std::thread> joinable;
    {
      std::lock_guard lock(mu);
      for (const std::string& id : done) {
        auto it = running.find(id);
        if (it == running.end()) continue;
        joinable.push_back(std::move(it->second));
        running.erase(it);
        slots_busy->Decrement();
      }
    }
    for (std::thread& t : joinable) t.join();
  }

  Transport& transport;
  WorkerDaemonOptions options;
  std::shared_ptr<prometheus::Registry> own_registry;  // when the caller gave none
  prometheus::Registry* registry;
  Executor executor;  // after the registry: it registers the step metrics there
  prometheus::Gauge* slots_busy;
  prometheus::Family<prometheus::Counter>* tasks_total;
  std::atomic<bool> stop{false};
  std::atomic<bool> drain{false};
  std::atomic<bool> handing_back{false};  // cancelled tasks report "handed back"

  std::mutex mu;  // guards outbox, running, finished
  std::deque<Message> outbox;
  std::map<std::string, std::thread> running;
  std::vector<std::string> finished;  // tasks whose TaskDone is in the outbox
};

WorkerDaemon::WorkerDaemon(Transport& transport, WorkerDaemonOptions options,
                           prometheus::Registry* registry)
    : impl_(std::make_unique<Impl>(transport, std::move(options), registry)) {}

WorkerDaemon::~WorkerDaemon() { Stop(); }

void WorkerDaemon::Stop() { impl_->stop = true; }

void WorkerDaemon::Drain() { impl_->drain = true; }

Status WorkerDaemon::Run() {
  Impl& d = *impl_;
  SF_ASSIGN_OR_RETURN(std::unique_ptr<ClientSocket> socket,
                      d.transport.Connect(d.options.coordinator_endpoint));
  RegisterWorkerRequest reg{
      d.options.name, d.options.slots, d.options.platform, d.options.labels, {}};
  std::mt19937 rng(std::random_device{}());
  bool registered = false;
  uint64_t next_id = 1;
  uint64_t register_id = 0;
  auto register_backoff = kRegisterRetryMin;
  auto next_register = Clock::now();
  auto last_heartbeat = Clock::now();
  bool draining = false;
  auto drain_deadline = Clock::time_point::max();
  uint64_t farewell_id = 0;  // the last heartbeat, sent when nothing runs any more
  auto farewell_deadline = Clock::time_point::max();

  while (true) {
    auto now = Clock::now();
    if (!draining && (d.drain || d.stop)) {
      draining = true;
      drain_deadline = d.stop ? now : now + std::chrono::seconds(d.options.drain_timeout_seconds);
      last_heartbeat = Clock::time_point();  // tell the coordinator now
      LogInfo("worker " + d.options.name + ": shutting down; running tasks get " +
              std::to_string(d.stop ? 0 : d.options.drain_timeout_seconds) + " s to finish");
    }
    if (draining && d.stop) drain_deadline = std::min(drain_deadline, now);
    if (draining && now >= drain_deadline) {
      std::lock_guard lock(d.mu);
      if (!d.handing_back && !d.running.empty()) {
        LogInfo("worker " + d.options.name + ": handing back " + std::to_string(d.running.size()) +
                " running tasks");
      }
      d.handing_back = true;
      // Every pass: a task whose thread had not reached the executor yet is cancelled once it has.
      for (const auto& [id, t] : d.running) d.executor.Cancel(id);
    }
    bool idle = false;
    if (draining) {
      std::lock_guard lock(d.mu);
      idle = d.running.empty() && d.outbox.empty();
    }
    if (idle && (!registered || now >= farewell_deadline)) break;
    if (idle && farewell_id == 0) {
      // The last heartbeat says "draining, nothing runs": the coordinator forgets this worker.
      // Its answer (or a short wait) tells that everything sent before it was delivered.
      last_heartbeat = Clock::time_point();
      farewell_deadline = now + std::chrono::seconds(2);
    }
    if (!registered && now >= next_register) {
      reg.running_tasks.clear();
      {
        std::lock_guard lock(d.mu);
        for (const auto& [id, t] : d.running) reg.running_tasks.push_back(id);
      }
      Message m;
      m.method = Method::kRegisterWorker;
      m.request_id = register_id = next_id++;
      m.body = Encode(reg);
      SF_RETURN_IF_ERROR(socket->Send(m));
      next_register = now + Jittered(register_backoff, rng);
      register_backoff = std::min(register_backoff * 2, kRegisterRetryMax);
    }
    if (registered && now - last_heartbeat >= kHeartbeatEvery) {
      HeartbeatRequest hb;
      hb.name = d.options.name;
      hb.draining = draining;
      {
        std::lock_guard lock(d.mu);
        for (const auto& [id, t] : d.running) hb.running_tasks.push_back(id);
      }
      hb.busy_slots = static_cast<uint32_t>(hb.running_tasks.size());
      hb.layers = HeldLayers(d.options.executor.root);
      Message m;
      m.method = Method::kHeartbeat;
      m.request_id = next_id++;
      if (idle && farewell_id == 0) farewell_id = m.request_id;
      m.body = Encode(hb);
      SF_RETURN_IF_ERROR(socket->Send(m));
      last_heartbeat = now;
    }

    Message in;
    StatusOr<bool> got = socket->Receive(&in, std::chrono::milliseconds(10));
    if (!got.ok()) {
      LogWarning("worker " + d.options.name + ": " + got.status().ToString());
    } else if (*got) {
      switch (in.method) {
        case Method::kRegisterWorker:
          if (in.request_id != register_id) break;
          if (in.status.ok()) {
            registered = true;
            register_backoff = kRegisterRetryMin;
            last_heartbeat = Clock::now();
            LogInfo("worker " + d.options.name + " registered with " +
                    d.options.coordinator_endpoint);
          } else {
            LogWarning("worker " + d.options.name +
                       ": registration refused: " + in.status.ToString());
          }
          break;
        case Method::kHeartbeat:
          if (farewell_id != 0 && in.request_id == farewell_id) {
            farewell_deadline = Clock::now();
            break;
          }
          if (in.status.code() == StatusCode::kNotFound && registered) {
            LogWarning("worker " + d.options.name + ": coordinator forgot us; registering again");
            registered = false;
            next_register = Clock::now() + Jittered(kRegisterRetryMin, rng);
          }
          break;
        case Method::kAssignTask: {
          StageTask task;
          Status s = Decode(in.body, &task);
          if (!s.ok()) {
            LogWarning("worker " + d.options.name + ": bad task: " + s.ToString());
            break;
          }
          if (draining) {
            d.Post(Method::kTaskDone, Encode(Impl::HandedBack(task.task_id)));
            break;
          }
          LogInfo("worker " + d.options.name + ": task " + task.task_id + " (stage " + task.stage +
                  ", " + std::to_string(task.steps.size()) + " steps)");
          d.StartTask(std::move(task));
          break;
        }
        case Method::kCancelTask: {
          CancelTaskRequest req;
          if (Decode(in.body, &req).ok()) {
            LogInfo("worker " + d.options.name + ": cancelling task " + req.task_id);
            d.executor.Cancel(req.task_id);
          }
          break;
        }
        default:
          break;
      }
    }

    std::deque<Message> out;
    std::vector<std::string> done;
    {
      std::lock_guard lock(d.mu);
      out.swap(d.outbox);
      done.swap(d.finished);
    }
    for (Message& m : out) {
      m.request_id = next_id++;
      SF_RETURN_IF_ERROR(socket->Send(m));
    }
    d.ReapFinished(done);
  }

  // Nothing should run any more; join whatever is left (registration never happened, say).
  std::vector<std::thread> threads;
  {
    std::lock_guard lock(d.mu);
    for (auto& [id, t] : d.running) {
      d.executor.Cancel(id);
      threads.push_back(std::move(t));
    }
    d.running.clear();
  }
  for (std::thread& t : threads) t.join();
  return Status();
}

}  // namespace stagefarm::worker
