// RUN --mount through the whole farm (embedded): bind mounts from the context and from another
// stage, and a cache mount seen by the next step, as `stagefarm build` runs them; the bind
// sources enter the step's cache key (a changed file reruns the step), the mount points do not
// enter the image.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "support/images.h"
#include "support/process.h"

namespace stagefarm::testing {
namespace {

const std::string kBin = STAGEFARM_BINARY;

TEST(RunMounts, BindFromContextAndStageAndCacheMountEndToEnd) {
  TempDir dir;
  const std::string d = dir.path();
  const std::vector<std::string> env = {"STAGEFARM_HOME=" + d + "/home"};
  std::string err;
  ASSERT_TRUE(ImportBusybox(env));
  std::filesystem::create_directories(d + "/ctx/data");
  std::ofstream(d + "/ctx/data/x") << "context-v1\n";
  std::ofstream(d + "/ctx/Dockerfile")
      << "FROM busybox AS builder\n"
         "RUN mkdir /out && echo from-builder > /out/f\n"
         "FROM busybox\n"
         "RUN --mount=type=bind,from=builder,source=/out,target=/in cat /in/f > /copied\n"
         "RUN --mount=type=cache,target=/var/cache/t echo run >> /var/cache/t/count && "
         "wc -l < /var/cache/t/count > /runs\n"
         "RUN --mount=type=cache,target=/var/cache/t cat /var/cache/t/count > /count\n"
         "RUN --mount=type=bind,source=data,target=/data cat /data/x > /seen\n"
         "CMD [\"cat\", \"/copied\", \"/seen\"]\n";
  auto build = [&](std::string* log) {
    return RunCommand(
        {kBin, "build", "--progress=plain", "-o", "type=local,dest=" + d + "/out", d + "/ctx"},
        nullptr, log, env);
  };
  ASSERT_EQ(build(&err), 0) << err;
  EXPECT_EQ(ReadFileOrEmpty(d + "/out/copied"), "from-builder\n");
  EXPECT_EQ(ReadFileOrEmpty(d + "/out/seen"), "context-v1\n");
  EXPECT_EQ(ReadFileOrEmpty(d + "/out/runs"), "1\n");
  EXPECT_EQ(ReadFileOrEmpty(d + "/out/count"), "run\n") << "the next step saw the cache";
  for (const char* p : {"in", "data", "var/cache/t"}) {
    EXPECT_FALSE(std::filesystem::exists(d + "/out/" + p)) << p << " leaked into the image";
  }

  // The bound context file changed: that step runs again, the others stay cached.
  std::ofstream(d + "/ctx/data/x") << "context-v2\n";
  std::filesystem::remove_all(d + "/out");
  err.clear();
  ASSERT_EQ(build(&err), 0) << err;
  EXPECT_EQ(ReadFileOrEmpty(d + "/out/seen"), "context-v2\n") << err;
  EXPECT_EQ(ReadFileOrEmpty(d + "/out/runs"), "1\n") << "the cache-mount step was cached";
}

}  // namespace
}  // namespace stagefarm::testing
