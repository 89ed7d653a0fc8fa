// The walking skeleton end to end with real processes on 127.0.0.1: a cache server, a
// coordinator and two workers; a busybox base image imported; examples/hello built; the image
// exported, unpacked and run with crun; the rebuild fully cached. And the same on the embedded
// farm.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "support/images.h"
#include "support/process.h"

namespace stagefarm::testing {
namespace {

using namespace std::chrono_literals;

const std::string kBin = STAGEFARM_BINARY;
const std::string kSrc = STAGEFARM_SOURCE_DIR;

class FarmTest : public ::testing::Test {
 protected:
  static std::string busybox() { return BusyboxLayout(); }

  TempDir tmp_;
};

struct StepRun {
  std::string stage, worker;
  double start = 0, seconds = 0;
};

struct BuildOutput {
  std::map<int, StepRun> steps;  // by step number
  int cached = 0;
  std::string manifest;
};

BuildOutput ParseBuildOutput(const std::string& out) {
  BuildOutput b;
  static const std::regex started(R"(#(\d+) \[(\S+) \d+\] .* \(on (\S+) at \+([0-9.]+)s\))");
  static const std::regex done(R"(#(\d+) DONE ([0-9.]+)s)");
  static const std::regex cached(R"(#\d+ CACHED)");
  static const std::regex image(R"(image (sha256:[0-9a-f]{64}))");
  std::istringstream in(out);
  std::string line;
  std::smatch m;
  while (std::getline(in, line)) {
    if (std::regex_search(line, m, started)) {
      StepRun& s = b.steps[std::stoi(m[1])];
      s.stage = m[2];
      s.worker = m[3];
      s.start = std::stod(m[4]);
    } else if (std::regex_search(line, m, done)) {
      b.steps[std::stoi(m[1])].seconds = std::stod(m[2]);
    } else if (std::regex_search(line, m, cached)) {
      ++b.cached;
    } else if (std::regex_search(line, m, image)) {
      b.manifest = m[1];
    }
  }
  return b;
}

TEST_F(FarmTest, MultiStageBuildRunsIndependentStagesInParallelAndRebuildIsCached) {
  const std::string t = tmp_.path();
  ChildProcess cache({kBin, "cache", "--listen", "tcp://127.0.0.1:0", "--data", t + "/cache"},
                     t + "/cache-log");
  std::optional<std::string> cache_ep =
      cache.WaitForStderr(std::regex(R"(listening on (tcp://[0-9.]+:[0-9]+))"), 20s);
  ASSERT_TRUE(cache_ep) << cache.Stderr();

  ChildProcess coord({kBin, "coordinator", "--listen", "tcp://127.0.0.1:0", "--cache", *cache_ep},
                     t + "/coord-log");
  std::optional<std::string> coord_ep =
      coord.WaitForStderr(std::regex(R"(listening on (tcp://[0-9.]+:[0-9]+))"), 20s);
  ASSERT_TRUE(coord_ep) << coord.Stderr();

  ChildProcess w1({kBin, "worker", "--coordinator", *coord_ep, "--cache", *cache_ep, "--root",
                   t + "/w1", "--name", "w1", "--slots", "1"},
                  t + "/w1-log");
  ChildProcess w2({kBin, "worker", "--coordinator", *coord_ep, "--cache", *cache_ep, "--root",
                   t + "/w2", "--name", "w2", "--slots", "1"},
                  t + "/w2-log");
  ASSERT_TRUE(coord.WaitForStderr(std::regex("worker w1 registered"), 20s)) << w1.Stderr();
  ASSERT_TRUE(coord.WaitForStderr(std::regex("worker w2 registered"), 20s)) << w2.Stderr();

  std::string out, err;
  ASSERT_EQ(RunCommand({kBin, "image", "import", "--cache", *cache_ep, busybox(), "busybox"}, &out,
                       &err),
            0)
      << out << err;

  std::vector<std::string> build = {kBin, "build", "--farm", *coord_ep, "-t", "hello",
                                    "-o", "type=oci,dest=" + t + "/hello.tar",
                                    "--progress=plain", kSrc + "/examples/hello"};
  ASSERT_EQ(RunCommand(build, &out, &err), 0) << err;
  BuildOutput first = ParseBuildOutput(err);
  ASSERT_FALSE(first.manifest.empty()) << err;

  // Stages one and two ran on different workers, at overlapping times.
  const StepRun* one = nullptr;
  const StepRun* two = nullptr;
  for (const auto& [n, s] : first.steps) {
    if (s.stage == "one") one = &s;
    if (s.stage == "two") two = &s;
  }
  ASSERT_TRUE(one && two) << err;
  EXPECT_NE(one->worker, two->worker) << err;
  EXPECT_LT(one->start, two->start + two->seconds) << err;
  EXPECT_LT(two->start, one->start + one->seconds) << err;
  EXPECT_GE(one->seconds, 1.0);  // the RUN sleeps a second

  // The image is real: skopeo, umoci and crun accept it and it prints what the Dockerfile says.
  std::string ran = RunImage("oci-archive:" + t + "/hello.tar", t + "/run1");
  EXPECT_EQ(ran, "hello from stage one\nhello from stage two\n");

  // Building again: every step cached, nothing run on a worker, the same manifest.
  ASSERT_EQ(RunCommand(build, &out, &err), 0) << err;
  BuildOutput second = ParseBuildOutput(err);
  EXPECT_TRUE(second.steps.empty()) << err;
  EXPECT_EQ(second.cached, 4) << err;  // two RUNs and two COPYs
  EXPECT_EQ(second.manifest, first.manifest);
}

TEST_F(FarmTest, EmbeddedFarmBuildsWithoutDaemons) {
  const std::string t = tmp_.path();
  std::vector<std::string> env = {"STAGEFARM_HOME=" + t + "/home"};
  std::string out, err;
  ASSERT_EQ(RunCommand({kBin, "image", "import", busybox(), "busybox"}, &out, &err, env), 0)
      << out << err;
  std::vector<std::string> build = {kBin, "build", "-t", "hello",
                                    "-o", "type=oci,dest=" + t + "/hello.tar",
                                    "--progress=plain", kSrc + "/examples/hello"};
  ASSERT_EQ(RunCommand(build, &out, &err, env), 0) << err;
  BuildOutput first = ParseBuildOutput(err);
  EXPECT_EQ(first.steps.size(), 4u) << err;
  EXPECT_EQ(RunImage("oci-archive:" + t + "/hello.tar", t + "/run"),
            "hello from stage one\nhello from stage two\n");

  ASSERT_EQ(RunCommand(build, &out, &err, env), 0) << err;
  BuildOutput second = ParseBuildOutput(err);
  EXPECT_EQ(second.cached, 4) << err;
  EXPECT_EQ(second.manifest, first.manifest);
}

TEST_F(FarmTest, FailingRunReportsLineAndExitCode) {
  const std::string t = tmp_.path();
  std::vector<std::string> env = {"STAGEFARM_HOME=" + t + "/home"};
  std::string out, err;
  ASSERT_EQ(RunCommand({kBin, "image", "import", busybox(), "busybox"}, &out, &err, env), 0) << err;
  std::filesystem::create_directories(t + "/ctx");
  std::ofstream(t + "/ctx/Dockerfile") << "FROM busybox\n"
                                          "RUN echo about to fail\n"
                                          "RUN echo failing now && exit 7\n";
  int rc = RunCommand({kBin, "build", "--progress=plain", t + "/ctx"}, &out, &err, env);
  EXPECT_EQ(rc, 1) << err;
  EXPECT_NE(err.find("failing now"), std::string::npos) << err;
  EXPECT_NE(err.find("exit code 7"), std::string::npos) << err;
  EXPECT_NE(err.find("line 3"), std::string::npos) << err;
}

TEST_F(FarmTest, BadDockerfileNamesThePlace) {
  const std::string t = tmp_.path();
  std::vector<std::string> env = {"STAGEFARM_HOME=" + t + "/home"};
  std::string out, err;
  std::filesystem::create_directories(t + "/ctx");
  std::ofstream(t + "/ctx/Dockerfile") << "FROM scratch\nCOPY --frm=x a b\n";
  int rc = RunCommand({kBin, "build", "--progress=plain", t + "/ctx"}, &out, &err, env);
  EXPECT_EQ(rc, 1) << err;
  EXPECT_NE(err.find("Dockerfile:2"), std::string::npos) << err;
}

}  // namespace
}  // namespace stagefarm::testing
