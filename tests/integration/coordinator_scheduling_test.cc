// The coordinator's scheduling with real processes: independent stages spread over workers,
// concurrent identical builds deduplicated, tenants served fairly, priorities honoured.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <set>
#include <thread>

#include "coordinator_farm.h"

namespace stagefarm::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

TEST(CoordinatorScheduling, FourIndependentStagesOnFourWorkersTakeTheTimeOfOne) {
  TempDir tmp;
  Farm farm(tmp.path(), FarmOptions{.workers = 4});
  ASSERT_TRUE(farm.ok()) << farm.Logs();
  std::string df;
  for (char s : std::string("abcd")) {
    df += std::string("FROM busybox AS ") + s + "\nRUN sleep 3; echo " + s + " >/" + s + "\n";
  }
  df += "FROM busybox\n";
  for (char s : std::string("abcd")) df += std::string("COPY --from=") + s + " /" + s + " /\n";
  std::string ctx = farm.Context("ctx", df);
  auto start = Clock::now();
  std::string out, err;
  ASSERT_EQ(RunCommand(farm.BuildArgv(ctx), &out, &err), 0) << err << farm.Logs();
  double wall = std::chrono::duration<double>(Clock::now() - start).count();
  std::vector<StepStart> runs;
  for (const StepStart& s : StepStarts(err)) {
    if (s.stage.size() == 1) runs.push_back(s);
  }
  ASSERT_EQ(runs.size(), 4u) << err;
  std::set<std::string> workers;
  double first = 1e9, last = 0;
  for (const StepStart& s : runs) {
    workers.insert(s.worker);
    first = std::min(first, s.at);
    last = std::max(last, s.at);
  }
  EXPECT_EQ(workers.size(), 4u) << err;
  EXPECT_LT(last - first, 1.5) << err;  // all four sleeping at once
  EXPECT_LT(wall, 3 * 2.0) << err;      // one stage's time plus overhead, not four
}

TEST(CoordinatorScheduling, TwentyConcurrentIdenticalBuildsRunEachStageOnce) {
  TempDir tmp;
  Farm farm(tmp.path(), FarmOptions{.workers = 2, .slots = 2});
  ASSERT_TRUE(farm.ok()) << farm.Logs();
  std::string ctx = farm.Context("ctx",
                                 "FROM busybox AS one\n"
                                 "RUN sleep 2; echo one >/one\n"
                                 "FROM busybox AS two\n"
                                 "RUN sleep 2; echo two >/two\n"
                                 "FROM busybox\n"
                                 "COPY --from=one /one /\n"
                                 "COPY --from=two /two /\n");
  std::vector<std::unique_ptr<ChildProcess>> clients;
  for (int i = 0; i < 20; ++i) {
    clients.push_back(std::make_unique<ChildProcess>(
        farm.BuildArgv(ctx), tmp.path() + "/client" + std::to_string(i) + "-log"));
  }
  std::set<std::string> manifests;
  for (auto& c : clients) {
    ASSERT_EQ(c->Wait(120s), 0) << c->Stderr() << farm.Logs();
    manifests.insert(ManifestOf(c->Stderr()));
  }
  EXPECT_EQ(manifests.size(), 1u);
  EXPECT_FALSE(manifests.begin()->empty());
  // Three tasks in all (stage one, stage two, the final COPYs), each run once.
  std::string logs = farm.worker("w1").Stderr() + farm.worker("w2").Stderr();
  EXPECT_EQ(CountMatches(logs, std::regex(R"(: task [0-9a-f]+ \(stage)")), 3) << logs;
}

// Starts `n` builds of distinct one-RUN Dockerfiles for a tenant; returns once the coordinator
// has planned them all (so they are queued).
std::vector<std::unique_ptr<ChildProcess>> StartBuilds(Farm& farm, const std::string& dir,
                                                       const std::string& name, int n,
                                                       std::vector<std::string> extra) {
  std::vector<std::unique_ptr<ChildProcess>> clients;
  for (int i = 0; i < n; ++i) {
    std::string id = name + std::to_string(i);
    std::string ctx = farm.Context(id, "FROM busybox\nRUN sleep 1.5; echo " + id + " >/id\n");
    clients.push_back(
        std::make_unique<ChildProcess>(farm.BuildArgv(ctx, extra), dir + "/" + id + "-log"));
  }
  for (auto& c : clients) {
    EXPECT_TRUE(c->WaitForStderr(std::regex("resolved busybox"), 60s)) << c->Stderr();
  }
  return clients;
}

// Waits for every client; returns the names in the order they finished (all must succeed).
std::vector<std::string> FinishOrder(std::vector<std::pair<std::string, ChildProcess*>> clients) {
  std::vector<std::string> order;
  auto deadline = Clock::now() + 120s;
  while (!clients.empty() && Clock::now() < deadline) {
    for (auto it = clients.begin(); it != clients.end();) {
      if (std::optional<int> rc = it->second->Wait(0ms)) {
        EXPECT_EQ(*rc, 0) << it->second->Stderr();
        order.push_back(it->first);
        it = clients.erase(it);
      } else {
        ++it;
      }
    }
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(clients.empty());
  return order;
}

TEST(CoordinatorScheduling, TenantWithOneBuildIsNotStarvedByAnotherTenantsBacklog) {
  TempDir tmp;
  Farm farm(tmp.path(), FarmOptions{.workers = 1});
  ASSERT_TRUE(farm.ok()) << farm.Logs();
  auto a = StartBuilds(farm, tmp.path(), "a", 5, {"--tenant", "A"});
  auto b = StartBuilds(farm, tmp.path(), "b", 1, {"--tenant", "B"});
  std::vector<std::pair<std::string, ChildProcess*>> all;
  for (size_t i = 0; i < a.size(); ++i) all.emplace_back("a" + std::to_string(i), a[i].get());
  all.emplace_back("b0", b[0].get());
  std::vector<std::string> order = FinishOrder(all);
  ASSERT_EQ(order.size(), 6u);
  // One slot: A's first build was running when B's arrived; B's goes next, not after A's four.
  size_t b_pos = std::find(order.begin(), order.end(), "b0") - order.begin();
  EXPECT_LE(b_pos, 1u) << ::testing::PrintToString(order);
}

TEST(CoordinatorScheduling, HigherPriorityBuildOvertakesTheQueue) {
  TempDir tmp;
  Farm farm(tmp.path(), FarmOptions{.workers = 1});
  ASSERT_TRUE(farm.ok()) << farm.Logs();
  auto low = StartBuilds(farm, tmp.path(), "low", 4, {});
  auto high = StartBuilds(farm, tmp.path(), "high", 1, {"--priority", "5"});
  std::vector<std::pair<std::string, ChildProcess*>> all;
  for (size_t i = 0; i < low.size(); ++i) all.emplace_back("low" + std::to_string(i), low[i].get());
  all.emplace_back("high0", high[0].get());
  std::vector<std::string> order = FinishOrder(all);
  ASSERT_EQ(order.size(), 5u);
  size_t pos = std::find(order.begin(), order.end(), "high0") - order.begin();
  EXPECT_LE(pos, 1u) << ::testing::PrintToString(order);
}

// Two stages that could run side by side and the stage that joins them, all named `tag`.
std::string TwoStagesAndAJoin(const std::string& tag) {
  return "FROM busybox AS one\nRUN sleep 1; echo " + tag + " >/one\n" +
         "FROM busybox AS two\nRUN sleep 1; echo " + tag + " >/two\n" +
         "FROM busybox\nCOPY --from=one /one /\nCOPY --from=two /two /\nRUN cat /one /two\n";
}

// The workers each step of a build's output ran on.
std::set<std::string> WorkersUsed(const std::string& out) {
  std::set<std::string> used;
  for (const StepStart& s : StepStarts(out)) used.insert(s.worker);
  return used;
}

TEST(CoordinatorScheduling, BuildWithWorkerLabelsRunsOnlyOnWorkersThatHaveThem) {
  TempDir tmp;
  Farm farm(tmp.path(),
            FarmOptions{.workers = 2,
                        .worker_flags = {{"w1", {"--label", "size=small"}},
                                         {"w2", {"--label", "size=large", "--label", "zone=a"}}}});
  ASSERT_TRUE(farm.ok()) << farm.Logs();
  // Both stages are ready at once and both workers are free: only w2 may take them.
  std::string out, err;
  std::string large = farm.Context("large", TwoStagesAndAJoin("large"));
  ASSERT_EQ(RunCommand(
                farm.BuildArgv(large, {"--worker-label", "size=large", "--worker-label", "zone=a"}),
                &out, &err),
            0)
      << err << farm.Logs();
  EXPECT_GE(StepStarts(err).size(), 3u) << err;
  EXPECT_EQ(WorkersUsed(err), std::set<std::string>{"w2"}) << err;

  std::string small = farm.Context("small", TwoStagesAndAJoin("small"));
  ASSERT_EQ(RunCommand(farm.BuildArgv(small, {"--worker-label", "size=small"}), &out, &err), 0)
      << err << farm.Logs();
  EXPECT_EQ(WorkersUsed(err), std::set<std::string>{"w1"}) << err;

  // A label the worker has with another value does not match.
  std::string zone = farm.Context("zone", TwoStagesAndAJoin("zone"));
  ChildProcess client(farm.BuildArgv(zone, {"--worker-label", "zone=b"}), tmp.path() + "/zone-log");
  EXPECT_TRUE(client.WaitForStderr(std::regex("waiting for a worker with zone=b"), 30s))
      << client.Stderr();
  client.Kill(SIGINT);
  EXPECT_TRUE(client.Wait(10s));
  EXPECT_TRUE(StepStarts(client.Stderr()).empty()) << client.Stderr();

  // A malformed constraint is a usage error naming the flag.
  EXPECT_EQ(RunCommand(farm.BuildArgv(large, {"--worker-label", "size"}), &out, &err), 2);
  EXPECT_NE(err.find("--worker-label size: want KEY=VALUE"), std::string::npos) << err;
}

TEST(CoordinatorScheduling, BuildNoWorkerFitsWaitsWithoutHoldingUpOthersUntilOneRegisters) {
  TempDir tmp;
  Farm farm(tmp.path(),
            FarmOptions{.workers = 1, .worker_flags = {{"w2", {"--label", "gpu=yes"}}}});
  ASSERT_TRUE(farm.ok()) << farm.Logs();
  std::string gpu_ctx = farm.Context("gpu", TwoStagesAndAJoin("gpu"));
  ChildProcess gpu(farm.BuildArgv(gpu_ctx, {"--worker-label", "gpu=yes"}), tmp.path() + "/gpu-log");
  ASSERT_TRUE(gpu.WaitForStderr(std::regex("waiting for a worker with gpu=yes"), 30s))
      << gpu.Stderr() << farm.Logs();

  // Its tasks head the queue, yet builds of the same and of another tenant run past them.
  for (std::string tenant : {"default", "other"}) {
    std::string ctx = farm.Context("plain-" + tenant, TwoStagesAndAJoin("plain-" + tenant));
    ChildProcess plain(farm.BuildArgv(ctx, {"--tenant", tenant}), tmp.path() + "/" + tenant);
    ASSERT_EQ(plain.Wait(60s), 0) << plain.Stderr() << farm.Logs();
    EXPECT_EQ(WorkersUsed(plain.Stderr()), std::set<std::string>{"w1"}) << plain.Stderr();
  }
  EXPECT_FALSE(gpu.Wait(0ms));
  EXPECT_TRUE(StepStarts(gpu.Stderr()).empty()) << gpu.Stderr();

  // A worker with the label arrives: the build runs there, and was told it waited once.
  farm.StartWorker("w2");
  ASSERT_TRUE(farm.WaitForWorker("w2")) << farm.Logs();
  ASSERT_EQ(gpu.Wait(60s), 0) << gpu.Stderr() << farm.Logs();
  EXPECT_EQ(WorkersUsed(gpu.Stderr()), std::set<std::string>{"w2"}) << gpu.Stderr();
  EXPECT_EQ(CountMatches(gpu.Stderr(), std::regex("waiting for a worker")), 1) << gpu.Stderr();
}

TEST(CoordinatorScheduling, IdenticalStagesWithDifferentWorkerLabelsAreNotShared) {
  TempDir tmp;
  Farm farm(tmp.path(), FarmOptions{.workers = 2,
                                    .worker_flags = {{"w1", {"--label", "size=small"}},
                                                     {"w2", {"--label", "size=large"}}}});
  ASSERT_TRUE(farm.ok()) << farm.Logs();
  std::string ctx = farm.Context("ctx", "FROM busybox\nRUN sleep 3; echo same >/same\n");
  ChildProcess small(farm.BuildArgv(ctx, {"--worker-label", "size=small"}),
                     tmp.path() + "/small-log");
  ChildProcess large(farm.BuildArgv(ctx, {"--worker-label", "size=large"}),
                     tmp.path() + "/large-log");
  ASSERT_EQ(small.Wait(60s), 0) << small.Stderr() << farm.Logs();
  ASSERT_EQ(large.Wait(60s), 0) << large.Stderr() << farm.Logs();
  // Each ran on its own kind of worker (neither was handed the other's run).
  EXPECT_EQ(WorkersUsed(small.Stderr()), std::set<std::string>{"w1"}) << small.Stderr();
  EXPECT_EQ(WorkersUsed(large.Stderr()), std::set<std::string>{"w2"}) << large.Stderr();
}

}  // namespace
}  // namespace stagefarm::testing
