// A worker with a layer store budget far below what a build needs (--max-disk 1MB, less than the
// busybox layer alone): it evicts the layers of finished stages as new ones arrive, fetches them
// back from the cache server when a later stage needs them, and the build is still right.
#include <gtest/gtest.h>

#include <filesystem>
#include <regex>

#include "coordinator_farm.h"

namespace stagefarm::testing {
namespace {

TEST(WorkerDiskBudgetTest, SmallMaxDiskStillBuildsAMultiStageDockerfile) {
  TempDir tmp;
  Farm farm(tmp.path(), FarmOptions{.workers = 1, .worker_flags = {{"w1", {"--max-disk", "1MB"}}}});
  ASSERT_TRUE(farm.ok()) << farm.Logs();
  // a and b run one after the other on the single slot; the last stage needs both again.
  std::string ctx = farm.Context("ctx",
                                 "FROM busybox AS a\n"
                                 "RUN head -c 300000 /dev/zero | tr '\\0' a > /a.txt\n"
                                 "RUN head -c 300000 /dev/zero | tr '\\0' b > /b.txt\n"
                                 "FROM busybox AS b\n"
                                 "RUN head -c 300000 /dev/zero | tr '\\0' c > /c.txt\n"
                                 "RUN rm /bin/true\n"
                                 "FROM a\n"
                                 "COPY --from=b /c.txt /from-b.txt\n"
                                 "RUN test ! -e /c.txt && test -e /bin/true && "
                                 "echo sizes $(wc -c < /a.txt) $(wc -c < /b.txt) "
                                 "$(wc -c < /from-b.txt) $(head -c 3 /a.txt)$(head -c 3 /b.txt)"
                                 "$(head -c 3 /from-b.txt)\n");
  std::string out, err;
  ASSERT_EQ(RunCommand(farm.BuildArgv(ctx, {"-t", "budget"}), &out, &err), 0)
      << err << farm.Logs();
  EXPECT_NE(err.find("sizes 300000 300000 300000 aaabbbccc"), std::string::npos) << err;
  // Layers were evicted on the way (the busybox layer alone is over the budget).
  EXPECT_TRUE(std::regex_search(farm.worker("w1").Stderr(),
                                std::regex("layer store: evicting [0-9]+ least recently used")))
      << farm.Logs();
  // No eviction leftovers, and every layer in the store has its recorded size beside it.
  const std::string layers = farm.worker_root("w1") + "/layers";
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(layers + "/.tmp", ec)) {
    ADD_FAILURE() << "left in .tmp: " << e.path();
  }
  int held = 0;
  for (const auto& e : std::filesystem::directory_iterator(layers)) {
    std::string name = e.path().filename().string();
    if (name.size() != 64) continue;
    ++held;
    EXPECT_TRUE(std::filesystem::exists(layers + "/" + name + ".use")) << name;
  }
  EXPECT_GT(held, 0);

  // A bad size is refused with the flag's name, before the worker starts.
  EXPECT_EQ(RunCommand({kBin, "worker", "--coordinator", farm.coord_ep(), "--cache",
                        farm.cache_ep(), "--max-disk", "20XB"},
                       &out, &err),
            2);
  EXPECT_NE(err.find("--max-disk"), std::string::npos) << err;
  EXPECT_NE(err.find("20XB"), std::string::npos) << err;
}

}  // namespace
}  // namespace stagefarm::testing
