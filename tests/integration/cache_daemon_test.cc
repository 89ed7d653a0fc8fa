// The `stagefarm cache` daemon's threads, as the kernel sees them.
#include <gtest/gtest.h>
#include <sched.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "stagefarm/common/cache_client.h"
#include "stagefarm/common/transport.h"
#include "support/cache_server.h"
#include "support/process.h"

namespace stagefarm::testing {
namespace {

// Every thread of the server (RocksDB's and ZeroMQ's too) runs under SCHED_BATCH, set before
// any of them started (UseBatchScheduling).
TEST(CacheDaemon, EveryThreadRunsUnderSchedBatch) {
  TempDir dir;
  CacheServerProcess server = StartCacheServer(dir.path() + "/data");
  ASSERT_FALSE(server.endpoint.empty()) << server.process->Stderr();
  Transport transport;
  auto client = ConnectCache(transport, server.endpoint);
  ASSERT_TRUE(client->PutBytes(std::string(3 << 20, 'x')).ok());

  std::map<std::string, int> policies;  // thread name -> its policy (the last seen)
  const std::string tasks = "/proc/" + std::to_string(server.process->pid()) + "/task";
  for (const auto& t : std::filesystem::directory_iterator(tasks)) {
    std::ifstream comm(t.path() / "comm");
    std::string name;
    std::getline(comm, name);
    const int policy = sched_getscheduler(std::stoi(t.path().filename().string()));
    if (policy == -1 && errno == ESRCH) continue;  // the thread ended meanwhile
    policies[name] = policy;
    EXPECT_EQ(policy, SCHED_BATCH) << "thread " << name;
  }
  // The threads that move a blob's bytes were among those looked at.
  for (const char* name :
       {"stagefarm", "ZMQbg/IO/0", "sf-cache-work", "sf-cache-write", "sf-cache-sync"}) {
    EXPECT_EQ(policies.count(name), 1u) << name;
  }
}

}  // namespace
}  // namespace stagefarm::testing
