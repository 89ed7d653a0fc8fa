// The cache server's Prometheus metrics (DESIGN.md "Metrics"). Private to cache-server/src.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "stagefarm/cache/blob_store.h"
#include "stagefarm/common/status.h"

namespace stagefarm::cache {

// Thread-safe: the service's workers record from many threads (the label lookups are cached under
// a mutex; prometheus-cpp's metrics are thread-safe themselves).
class CacheMetrics {
 public:
  // Registers in `registry`, or in a private registry when it is null.
  explicit CacheMetrics(prometheus::Registry* registry);

  void RecordOp(std::string_view op, const Status& outcome, double seconds);
  void RecordAcLookup(ActionLookup result);
  void AddTransfer(bool in, uint64_t bytes) { (in ? *bytes_in_ : *bytes_out_).Increment(bytes); }
  void AddEvictions(uint64_t n) { evictions_->Increment(static_cast<double>(n)); }
  void SetStoreSize(uint64_t bytes, uint64_t blobs) {
    bytes_->Set(static_cast<double>(bytes));
    blobs_->Set(static_cast<double>(blobs));
  }

 private:
  std::unique_ptr<prometheus::Registry> own_registry_;
  prometheus::Registry* registry_;
  prometheus::Gauge* bytes_;
  prometheus::Gauge* blobs_;
  prometheus::Family<prometheus::Counter>* ops_;
  prometheus::Family<prometheus::Histogram>* op_seconds_;
  prometheus::Counter* bytes_in_;
  prometheus::Counter* bytes_out_;
  prometheus::Counter* evictions_;
  prometheus::Family<prometheus::Counter>* ac_lookups_;
  std::mutex mu_;  // guards the two caches below
  std::map<std::pair<std::string, std::string>, prometheus::Counter*> op_counters_;
  std::map<std::string, prometheus::Histogram*, std::less<>> op_histograms_;
};

}  // namespace stagefarm::cache
