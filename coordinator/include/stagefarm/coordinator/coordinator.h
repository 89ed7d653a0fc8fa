// The coordinator service: accepts builds from clients, plans them into stage tasks with the
// action cache, schedules the tasks on registered workers, streams events back, and assembles
// the final image. One thread serves the ROUTER socket; everything else is driven from it.
//
// Scheduling: a ready task goes to a worker with a free slot, the task's platform and every label
// its build asks for (BuildRequest::worker_constraints), preferring the one that holds the most of
// the task's base layers (workers report them in heartbeats), then the least loaded. A task no
// free worker can take is passed over, holding up no other; when no registered worker could ever
// take it, its builds are told once that it waits for one. Tasks queue per tenant; the next task
// is the highest priority one, and among tenants with that priority they take turns
// (round-robin), so no tenant starves another.
// Identical tasks of concurrent builds (same steps, same worker constraints) run once.
//
// Failures: a worker silent for heartbeat_timeout loses its tasks to other workers (at most
// max_attempts runs per task); a worker that reports a task the coordinator has given to another
// worker (or no longer knows) is told to cancel it, and one that reports a task still queued gets
// it back instead of a second run. A client silent for client_timeout has its build cancelled;
// tasks another build still waits for keep running.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "stagefarm/common/status.h"
#include "stagefarm/common/transport.h"

namespace prometheus {
class Registry;
}

namespace stagefarm::coordinator {

struct CoordinatorOptions {
  std::string cache_endpoint;
  // The cache endpoint clients are told to use (Ping); empty = cache_endpoint.
  std::string advertised_cache_endpoint;
  std::string platform = "linux/amd64";
  std::string cache_salt;  // changes every key: a way to invalidate the whole farm's cache
  std::chrono::milliseconds heartbeat_timeout{10000};
  // A build whose client sends nothing (keepalives come every second) for this long is cancelled.
  std::chrono::milliseconds client_timeout{5000};
  int max_attempts = 3;  // per task, when workers disappear
};

class Coordinator {
 public:
  // `transport` must outlive the coordinator; `registry` may be null (no metrics exported).
  Coordinator(Transport& transport, CoordinatorOptions options, prometheus::Registry* registry);
  ~Coordinator();

  // Binds `endpoint` and serves on the calling thread until Stop(). Calls on_ready(bound endpoint)
  // once listening.
  Status Serve(const std::string& endpoint, bool insecure,
               const std::function<void(const std::string&)>& on_ready);
  // Thread-safe; Serve returns within a few hundred milliseconds.
  void Stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace stagefarm::coordinator
