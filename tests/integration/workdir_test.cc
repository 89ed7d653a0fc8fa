// WORKDIR as docker build (BuildKit) runs it, end to end on the embedded farm: a step of its own
// in the progress output, a layer with the directories owned by the USER of the time, a history
// entry, and a rebuild that is fully cached.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>

#include "support/images.h"
#include "support/process.h"

namespace stagefarm::testing {
namespace {

const std::string kBin = STAGEFARM_BINARY;

int Count(const std::string& text, const std::regex& re) {
  return static_cast<int>(
      std::distance(std::sregex_iterator(text.begin(), text.end(), re), std::sregex_iterator()));
}

TEST(WorkdirTest, WorkdirIsAStepWithALayerHistoryAndCache) {
  TempDir tmp;
  const std::string t = tmp.path();
  std::vector<std::string> env = {"STAGEFARM_HOME=" + t + "/home"};
  std::string out, err;
  ASSERT_TRUE(ImportBusybox(env));
  std::filesystem::create_directories(t + "/ctx");
  std::ofstream(t + "/ctx/Dockerfile") << "FROM busybox\n"
                                          "USER 1000:1000\n"
                                          "WORKDIR /app/sub\n"
                                          "WORKDIR /\n"
                                          "USER root\n"
                                          "RUN stat -c '%n %u:%g %a' /app /app/sub\n";
  std::vector<std::string> build = {kBin, "build", "--progress=plain", "-t", "wd", t + "/ctx"};
  ASSERT_EQ(RunCommand(build, &out, &err, env), 0) << err;
  // Shown as a step like RUN and COPY; WORKDIR / changes nothing on disk and is no step.
  EXPECT_TRUE(std::regex_search(err, std::regex(R"(#\d+ \[stage-0 2\] WORKDIR /app/sub \(on )")))
      << err;
  EXPECT_EQ(err.find("WORKDIR /\n"), std::string::npos) << err;
  // Made before the RUN, by the user of the time, 0755 like mkdir -p.
  EXPECT_NE(err.find("/app 1000:1000 755"), std::string::npos) << err;
  EXPECT_NE(err.find("/app/sub 1000:1000 755"), std::string::npos) << err;

  ASSERT_EQ(RunCommand({kBin, "image", "history", "wd"}, &out, &err, env), 0) << err;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(out, m, std::regex(R"((\S+) +WORKDIR /app/sub +(\S+ \S+))")))
      << out;
  EXPECT_NE(m[1], "<missing>") << "WORKDIR /app/sub made a layer:\n" << out;
  ASSERT_TRUE(std::regex_search(out, m, std::regex(R"((\S+) +WORKDIR / +0 B)"))) << out;
  EXPECT_EQ(m[1], "<missing>") << "WORKDIR / made no layer:\n" << out;

  // Again: nothing runs, the WORKDIR and the RUN are both cached.
  ASSERT_EQ(RunCommand(build, &out, &err, env), 0) << err;
  EXPECT_EQ(Count(err, std::regex(R"(#\d+ CACHED)")), 2) << err;
  EXPECT_EQ(Count(err, std::regex(R"(\(on \S+ at \+)")), 0) << err;
}

}  // namespace
}  // namespace stagefarm::testing
