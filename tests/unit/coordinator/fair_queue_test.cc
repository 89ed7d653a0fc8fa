#include "stagefarm/coordinator/fair_queue.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace stagefarm::coordinator {
namespace {

// Pops everything; returns the task ids in order.
std::vector<std::string> Drain(FairQueue& q) {
  std::vector<std::string> out;
  while (!q.empty()) {
    std::string tenant;
    QueueKey key = *q.Peek(&tenant);
    q.MarkServed(tenant);
    q.Remove(tenant, key);
    out.push_back(key.task_id);
  }
  return out;
}

TEST(FairQueue, TenantsTakeTurnsWhateverTheirBacklog) {
  FairQueue q;
  int64_t seq = 0;
  for (int i = 0; i < 5; ++i) q.Push("a", QueueKey{0, seq++, "a" + std::to_string(i)});
  q.Push("b", QueueKey{0, seq++, "b0"});
  q.Push("c", QueueKey{0, seq++, "c0"});
  EXPECT_EQ(Drain(q), (std::vector<std::string>{"a0", "b0", "c0", "a1", "a2", "a3", "a4"}));
}

TEST(FairQueue, NewTenantIsServedNextAfterTheRunningOne) {
  FairQueue q;
  int64_t seq = 0;
  for (int i = 0; i < 3; ++i) q.Push("a", QueueKey{0, seq++, "a" + std::to_string(i)});
  std::string tenant;
  QueueKey first = *q.Peek(&tenant);
  q.MarkServed(tenant);
  q.Remove(tenant, first);
  q.Push("b", QueueKey{0, seq++, "b0"});
  EXPECT_EQ(Drain(q), (std::vector<std::string>{"b0", "a1", "a2"}));
}

TEST(FairQueue, HigherPriorityFirstThenTurns) {
  FairQueue q;
  q.Push("a", QueueKey{0, 1, "a-low"});
  q.Push("a", QueueKey{-5, 2, "a-high"});
  q.Push("b", QueueKey{0, 3, "b-low"});
  q.Push("c", QueueKey{-5, 4, "c-high"});
  EXPECT_EQ(Drain(q), (std::vector<std::string>{"a-high", "c-high", "a-low", "b-low"}));
}

TEST(FairQueue, RetriesGoAheadOfNewWorkAndRemoveForgets) {
  FairQueue q;
  q.Push("a", QueueKey{0, 1, "new"});
  q.Push("a", QueueKey{0, -1, "retry"});
  q.Push("a", QueueKey{0, 2, "cancelled"});
  q.Remove("a", QueueKey{0, 2, "cancelled"});
  q.Remove("a", QueueKey{0, 9, "unknown"});
  EXPECT_EQ(q.size(), 2u);
  EXPECT_EQ(Drain(q), (std::vector<std::string>{"retry", "new"}));
}

}  // namespace
}  // namespace stagefarm::coordinator
