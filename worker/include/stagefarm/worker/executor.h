// The worker's execution engine: runs the steps of a StageTask, each in a fresh overlay rootfs,
// turns every step's changes into a layer, uploads it and records the step in the action cache.
//
// Thread-safe: several tasks may run at once, each on its own thread with its own CacheClient.
// Whatever happens (failure, cancellation, timeout) nothing stays mounted and every temp dir
// under <root>/steps is removed before Run returns.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "stagefarm/common/cache_client.h"
#include "stagefarm/common/worker_protocol.h"
#include "stagefarm/worker/layer_store.h"
#include "stagefarm/worker/run_mounts.h"
#include "stagefarm/worker/worker_options.h"

namespace prometheus {
class Registry;
}

namespace stagefarm::worker {

class Executor {
 public:
  // `options.runtime` should be what CheckHost returned. `registry` (borrowed, may be null) gets
  // stagefarm_worker_steps_total{kind,outcome}, stagefarm_worker_step_duration_seconds{kind},
  // stagefarm_worker_layer_bytes_total and stagefarm_worker_layer_store_bytes.
  explicit Executor(WorkerOptions options, prometheus::Registry* registry = nullptr);
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Called on the thread running the task.
  using EventSink = std::function<void(const TaskEvent&)>;

  // Runs every step of `task` in order, using `cache` (borrowed, used by this thread only). For
  // each step: kStepStarted, kLog chunks as the command writes, kStepDone with the layer. Stops at
  // the first failing step: TaskDone.status says why (with the Dockerfile line), failed_step and,
  // for a RUN, exit_code and log_tail (its last ~20 lines). Cancelled when Cancel() was called.
  TaskDone Run(const StageTask& task, CacheClient& cache, const EventSink& on_event);

  // Stops the task: its running sandbox is killed within about a second and Run returns
  // Cancelled. Unknown (finished or not yet started) task ids are ignored.
  void Cancel(const std::string& task_id);

  LayerStore& layer_store() { return layers_; }

 private:
  struct StepContext;
  // Runs one step; fills `done` on failure.
  Status RunStep(StepContext& ctx);

  struct Metrics;
  const WorkerOptions options_;
  std::unique_ptr<Metrics> metrics_;
  LayerStore layers_;
  CacheMounts caches_;  // RUN --mount=type=cache directories, <root>/cache-mounts
  std::mutex mu_;  // guards running_
  std::multimap<std::string, std::shared_ptr<std::atomic<bool>>> running_;
};

}  // namespace stagefarm::worker
