// How a command reaches a farm: a remote coordinator (--farm / STAGEFARM_FARM), a remote cache
// (--cache / STAGEFARM_CACHE), or an embedded farm in this process.
#pragma once

#include <memory>
#include <string>

#include "stagefarm/cli/embedded_farm.h"
#include "stagefarm/common/cache_client.h"
#include "stagefarm/common/transport.h"

namespace stagefarm::cli {

struct FarmTarget {
  std::string farm;   // coordinator endpoint; empty: STAGEFARM_FARM, then embedded
  std::string cache;  // cache endpoint; empty: STAGEFARM_CACHE, then asked of the coordinator
  std::string home;   // embedded store; empty: DefaultHome()
  int embedded_workers = 0;  // 0: nproc
  std::string curve_keys;    // CURVE key directory; empty: STAGEFARM_CURVE_KEYS, then none
};

struct FarmConnection {
  std::unique_ptr<EmbeddedFarm> embedded;  // null for a remote farm
  std::string coordinator_endpoint;        // empty when connected to a cache only
  std::string cache_endpoint;
};

// need_coordinator=false connects to the cache only (an embedded one runs no workers).
StatusOr<FarmConnection> ConnectFarm(Transport& transport, const FarmTarget& target,
                                     bool need_coordinator);

}  // namespace stagefarm::cli
