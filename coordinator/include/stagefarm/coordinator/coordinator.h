// The coordinator service: accepts builds from clients, plans them into stage tasks with the
// action cache, schedules the tasks on registered workers, streams events back, and assembles
// the final image. One thread serves the ROUTER socket; everything else is driven from it.
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
