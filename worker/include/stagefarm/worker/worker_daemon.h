// The worker process's network side: registers with the coordinator, heartbeats, receives stage
// tasks and runs each on its own thread with the Executor, streaming events and results back.
// A coordinator that restarts is noticed (heartbeat answered "unknown worker") and the worker
// registers again after a jittered delay, retrying with jittered exponential backoff, keeping its
// layer store. Heartbeats (every second) carry the running tasks and the held layers; the
// coordinator answers a task the worker should not run with a cancel.
#pragma once

#include <memory>
#include <string>

#include "stagefarm/common/status.h"
#include "stagefarm/common/transport.h"
#include "stagefarm/worker/worker_options.h"

namespace prometheus {
class Registry;
}

namespace stagefarm::worker {

struct WorkerDaemonOptions {
  std::string name;  // unique in the farm
  std::string coordinator_endpoint;
  std::string cache_endpoint;
  uint32_t slots = 1;
  std::string platform = "linux/amd64";
  WorkerOptions executor;
};

class WorkerDaemon {
 public:
  // `transport` must outlive the daemon; `registry` may be null.
  WorkerDaemon(Transport& transport, WorkerDaemonOptions options, prometheus::Registry* registry);
  ~WorkerDaemon();

  // Serves until Stop(); running tasks are cancelled and joined before it returns.
  Status Run();
  void Stop();  // thread-safe

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace stagefarm::worker
