#include "cache_metrics.h"

namespace stagefarm::cache {

CacheMetrics::CacheMetrics(prometheus::Registry* registry) {
  if (registry == nullptr) {
    own_registry_ = std::make_unique<prometheus::Registry>();
    registry = own_registry_.get();
  }
  registry_ = registry;
  bytes_ = &prometheus::BuildGauge()
                .Name("stagefarm_cache_bytes")
                .Help("Bytes of committed blobs in the cache")
                .Register(*registry)
                .Add({});
  blobs_ = &prometheus::BuildGauge()
                .Name("stagefarm_cache_blobs")
                .Help("Committed blobs in the cache")
                .Register(*registry)
                .Add({});
  ops_ = &prometheus::BuildCounter()
              .Name("stagefarm_cache_ops_total")
              .Help("Cache server requests by method and outcome")
              .Register(*registry);
  op_seconds_ = &prometheus::BuildHistogram()
                     .Name("stagefarm_cache_op_seconds")
                     .Help("Time to handle a cache server request, by method")
                     .Register(*registry);
  auto& transfer = prometheus::BuildCounter()
                       .Name("stagefarm_cache_transfer_bytes_total")
                       .Help("Blob bytes received (in) and sent (out)")
                       .Register(*registry);
  bytes_in_ = &transfer.Add({{"direction", "in"}});
  bytes_out_ = &transfer.Add({{"direction", "out"}});
  evictions_ = &prometheus::BuildCounter()
                    .Name("stagefarm_cache_evictions_total")
                    .Help("Blobs evicted to stay under --max-bytes")
                    .Register(*registry)
                    .Add({});
  ac_lookups_ = &prometheus::BuildCounter()
                     .Name("stagefarm_cache_ac_lookups_total")
                     .Help("Action cache lookups by result (hit, miss, incomplete)")
                     .Register(*registry);
}

void CacheMetrics::RecordOp(std::string_view op, const Status& outcome, double seconds) {
  std::string outcome_name = outcome.ok() ? "ok" : std::string(StatusCodeName(outcome.code()));
  auto key = std::make_pair(std::string(op), outcome_name);
  std::lock_guard lock(mu_);
  auto it = op_counters_.find(key);
  if (it == op_counters_.end()) {
    auto* c = &ops_->Add({{"op", key.first}, {"outcome", key.second}});
    it = op_counters_.emplace(key, c).first;
  }
  it->second->Increment();
  auto h = op_histograms_.find(op);
  if (h == op_histograms_.end()) {
    auto* hist = &op_seconds_->Add({{"op", std::string(op)}},
                                   prometheus::Histogram::BucketBoundaries{
                                       0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5});
    h = op_histograms_.emplace(std::string(op), hist).first;
  }
  h->second->Observe(seconds);
}

void CacheMetrics::RecordAcLookup(ActionLookup result) {
  const char* name = result == ActionLookup::kHit    ? "hit"
                     : result == ActionLookup::kMiss ? "miss"
                                                     : "incomplete";
  ac_lookups_->Add({{"result", name}}).Increment();
}

}  // namespace stagefarm::cache
