// Helpers shared by the long-running subcommands (cache, coordinator, worker, up).
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "stagefarm/common/status.h"

namespace prometheus {
class Exposer;
class Registry;
}  // namespace prometheus

namespace stagefarm::cli {

// Blocks SIGINT and SIGTERM in the calling thread. Call it first thing, before any thread starts
// (ZeroMQ, RocksDB and the metrics server start their own), so every thread inherits the mask.
void BlockShutdownSignals();
// Starts a thread that calls `on_signal` each time SIGINT or SIGTERM arrives (the first asks for a
// graceful stop; a daemon may take a second one as "now").
void OnShutdownSignal(std::function<void()> on_signal);

// Serves `registry` in Prometheus text format on http://HOST:PORT/metrics. Empty = no exposer.
StatusOr<std::unique_ptr<prometheus::Exposer>> ServeMetrics(
    const std::string& listen, const std::shared_ptr<prometheus::Registry>& registry);

// "200G", "512M", "1024" -> bytes.
StatusOr<uint64_t> ParseBytes(const std::string& text);

}  // namespace stagefarm::cli
