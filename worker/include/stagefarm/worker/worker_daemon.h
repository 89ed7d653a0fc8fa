// The worker process's network side: registers with the coordinator, heartbeats, receives stage
// tasks and runs each on its own thread with the Executor, streaming events and results back.
// A coordinator that restarts is noticed (heartbeat answered "unknown worker") and the worker
// registers again after a jittered delay, retrying with jittered exponential backoff, keeping its
// layer store. Heartbeats (every second) carry the running tasks and the held layers; the
// coordinator answers a task the worker should not run with a cancel.
//
// Shutting down (SIGTERM) drains: the coordinator is told to send nothing new, running tasks get
// up to `drain_timeout` to finish, and what still runs then is cancelled and handed back (the
// coordinator runs it elsewhere at once, without counting an attempt). The worker leaves the
// farm when nothing runs.
#pragma once

#include <map>
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
  // Sent at registration: builds that ask for labels (--worker-label) run only where all match.
  std::map<std::string, std::string> labels;
  WorkerOptions executor;
  int drain_timeout_seconds = 60;  // how long Drain() lets running tasks finish
};

class WorkerDaemon {
 public:
  // `transport` must outlive the daemon; `registry` may be null.
  WorkerDaemon(Transport& transport, WorkerDaemonOptions options, prometheus::Registry* registry);
  ~WorkerDaemon();

  // Serves until drained or stopped.
  Status Run();
  // Both thread-safe. Drain: no new tasks, running ones finish (up to drain_timeout) or are
  // handed back, then Run returns. Stop: hand back running tasks now, then Run returns.
  void Drain();
  void Stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace stagefarm::worker
