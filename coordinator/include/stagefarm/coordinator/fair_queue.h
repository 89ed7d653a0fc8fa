// The coordinator's queue of tasks waiting for a worker: one queue per tenant, so a tenant with a
// backlog cannot starve one with a single build. The next task is the best (highest priority,
// then oldest) of the highest priority any tenant has; tenants with that priority take turns in
// name order, starting after the tenant served last. Not thread-safe (the coordinator's loop owns
// it).
#pragma once

#include <algorithm>
#include <compare>
#include <cstdint>
#include <map>
#include <set>
#include <string>

namespace stagefarm::coordinator {

// A queued task's place: higher priority first, then first come (retries before new work).
struct QueueKey {
  int32_t neg_priority = 0;
  int64_t seq = 0;
  std::string task_id;
  friend auto operator<=>(const QueueKey&, const QueueKey&) = default;
};

// Tasks waiting for a worker, by tenant (see the top of this file).
class FairQueue {
 public:
  void Push(const std::string& tenant, QueueKey key) {
    queues_[tenant].insert(std::move(key));
    ++size_;
  }
  void Remove(const std::string& tenant, const QueueKey& key) {
    auto it = queues_.find(tenant);
    if (it == queues_.end() || it->second.erase(key) == 0) return;
    --size_;
    if (it->second.empty()) queues_.erase(it);
  }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  // The next task, without removing it; its tenant in *tenant.
  const QueueKey* Peek(std::string* tenant) const {
    return PeekRunnable(tenant, [](const QueueKey&) { return true; });
  }
  // The next task `can_run` accepts (a free worker can take it), without removing it; its tenant
  // in *tenant; null when it accepts none. Tasks it refuses are passed over: they hold up neither
  // their own tenant's later tasks nor other tenants'. Each tenant offers its first runnable task;
  // the best priority among those wins, ties going to the first tenant after the one served last.
  template <typename CanRun>
  const QueueKey* PeekRunnable(std::string* tenant, CanRun&& can_run) const {
    const QueueKey* best = nullptr;
    auto offer = [&](const std::pair<const std::string, std::set<QueueKey>>& entry) {
      for (const QueueKey& key : entry.second) {
        if (best != nullptr && key.neg_priority >= best->neg_priority) return;  // cannot win
        if (!can_run(key)) continue;
        best = &key;
        *tenant = entry.first;
        return;
      }
    };
    auto start = queues_.upper_bound(last_tenant_);
    for (auto it = start; it != queues_.end(); ++it) offer(*it);
    for (auto it = queues_.begin(); it != start; ++it) offer(*it);
    return best;
  }
  void MarkServed(const std::string& tenant) { last_tenant_ = tenant; }

 private:
  std::map<std::string, std::set<QueueKey>> queues_;  // no empty sets
  std::string last_tenant_;
  size_t size_ = 0;
};

}  // namespace stagefarm::coordinator
