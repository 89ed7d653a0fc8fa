#include "stagefarm/coordinator/fair_queue.h"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

namespace stagefarm::coordinator {
namespace {

// Pops what the queue offers until it offers nothing; returns the task ids in order. Tasks in
// `blocked` are ones no worker can take (PeekRunnable); with none blocked, Peek chooses.
std::vector<std::string> Drain(FairQueue& q, const std::set<std::string>& blocked = {}) {
  std::vector<std::string> out;
  std::string tenant;
  auto runnable = [&](const QueueKey& k) { return !blocked.count(k.task_id); };
  while (const QueueKey* next =
             blocked.empty() ? q.Peek(&tenant) : q.PeekRunnable(&tenant, runnable)) {
    QueueKey key = *next;
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

TEST(FairQueue, TaskNoWorkerCanTakeHoldsUpNeitherItsTenantNorOthers) {
  FairQueue q;
  q.Push("a", QueueKey{0, 1, "a-large"});  // the head of the queue, waiting for a large worker
  q.Push("a", QueueKey{0, 2, "a1"});
  q.Push("b", QueueKey{0, 3, "b0"});
  q.Push("b", QueueKey{0, 4, "b-large"});
  q.Push("c", QueueKey{0, 5, "c0"});
  EXPECT_EQ(Drain(q, {"a-large", "b-large"}), (std::vector<std::string>{"a1", "b0", "c0"}));
  // The passed-over tasks are still there, in their places, for when a worker can take them.
  EXPECT_EQ(q.size(), 2u);
  std::string tenant;
  EXPECT_EQ(q.PeekRunnable(&tenant, [](const QueueKey&) { return false; }), nullptr);
  EXPECT_EQ(Drain(q), (std::vector<std::string>{"a-large", "b-large"}));
}

TEST(FairQueue, BlockedHighPriorityTaskLetsLowerPriorityWorkRun) {
  FairQueue q;
  q.Push("a", QueueKey{-5, 1, "a-high-large"});
  q.Push("b", QueueKey{-5, 2, "b-high-large"});
  q.Push("a", QueueKey{0, 3, "a-low"});
  q.Push("b", QueueKey{0, 4, "b-low"});
  q.Push("c", QueueKey{-1, 5, "c-mid"});
  EXPECT_EQ(Drain(q, {"a-high-large", "b-high-large"}),
            (std::vector<std::string>{"c-mid", "a-low", "b-low"}));
}

TEST(FairQueue, PeekRunnableAcceptingEveryTaskKeepsTheFairOrder) {
  FairQueue q;
  int64_t seq = 0;
  for (int i = 0; i < 3; ++i) q.Push("a", QueueKey{0, seq++, "a" + std::to_string(i)});
  q.Push("b", QueueKey{-2, seq++, "b0"});
  q.Push("c", QueueKey{0, seq++, "c0"});
  EXPECT_EQ(Drain(q, {"not-queued"}), (std::vector<std::string>{"b0", "c0", "a0", "a1", "a2"}));
}

}  // namespace
}  // namespace stagefarm::coordinator
