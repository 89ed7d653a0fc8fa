// The coordinator's queue of tasks waiting for a worker: one queue per tenant, so a tenant with a
// backlog cannot starve one with a single build. The next task is the best (highest priority,
// then oldest) of the highest priority any tenant has; tenants with that priority take turns in
// name order, starting after the tenant served last. Not thread-safe (the coordinator's loop owns
// it).
#pragma once

#include <algorithm>
#include <compare>
#include <cstdint>
#include <limits>
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
    if (queues_.empty()) return nullptr;
    int32_t best = std::numeric_limits<int32_t>::max();
    for (const auto& [t, q] : queues_) best = std::min(best, q.begin()->neg_priority);
    // The first tenant after the last one served that has work of that priority, wrapping.
    const std::pair<const std::string, std::set<QueueKey>>* pick = nullptr;
    for (auto it = queues_.upper_bound(last_tenant_); it != queues_.end(); ++it) {
      if (it->second.begin()->neg_priority == best) {
        pick = &*it;
        break;
      }
    }
    if (pick == nullptr) {
      for (const auto& entry : queues_) {
        if (entry.second.begin()->neg_priority == best) {
          pick = &entry;
          break;
        }
      }
    }
    *tenant = pick->first;
    return &*pick->second.begin();
  }
  void MarkServed(const std::string& tenant) { last_tenant_ = tenant; }

 private:
  std::map<std::string, std::set<QueueKey>> queues_;  // no empty sets
  std::string last_tenant_;
  size_t size_ = 0;
};

}  // namespace stagefarm::coordinator
