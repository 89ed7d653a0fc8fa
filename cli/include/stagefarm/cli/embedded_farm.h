// A whole farm in this process: cache server, coordinator and workers on their own threads,
// the same code as the distributed farm. Used by `stagefarm build` without --farm (inproc://
// endpoints) and by `stagefarm up` (tcp:// on loopback).
#pragma once

#include <memory>
#include <string>

#include "stagefarm/common/status.h"
#include "stagefarm/common/transport.h"

namespace prometheus {
class Registry;
}

namespace stagefarm::cli {

struct EmbeddedFarmOptions {
  std::string home;  // <home>/cache (RocksDB), <home>/workers/<n>
  // Without a coordinator (and so without workers) only the cache server runs: for commands
  // that only read or write the store (image import, ls, ...).
  bool with_coordinator = true;
  int workers = 1;
  uint32_t slots_per_worker = 1;
  // Endpoints; "inproc://..." for an in-process farm, "tcp://127.0.0.1:0" to pick ports.
  std::string cache_endpoint = "inproc://stagefarm-cache";
  std::string coordinator_endpoint = "inproc://stagefarm-coordinator";
  uint64_t cache_max_bytes = 0;
  std::string runtime = "crun";
};

class EmbeddedFarm {
 public:
  // Starts everything and waits until the workers have registered. `transport` must outlive it.
  static StatusOr<std::unique_ptr<EmbeddedFarm>> Start(Transport& transport,
                                                       EmbeddedFarmOptions options,
                                                       prometheus::Registry* registry);
  ~EmbeddedFarm();  // stops and joins everything

  const std::string& coordinator_endpoint() const;
  const std::string& cache_endpoint() const;

 private:
  EmbeddedFarm();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The default store: $STAGEFARM_HOME, else ~/.local/share/stagefarm.
std::string DefaultHome();

}  // namespace stagefarm::cli
