// What the built image's config holds where BuildKit v0.24's Dockerfile frontend fills it beside
// the container config: the history entries (ONBUILD writes none) and the author (MAINTAINER), and
// a RUN heredoc script with `#!`, which runs as its own file on a real worker.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

#include "support/images.h"
#include "support/process.h"

namespace stagefarm::testing {
namespace {

const std::string kBin = STAGEFARM_BINARY;

TEST(BuildkitHistoryTest, OnbuildWritesNoEntryMaintainerSetsAuthorShebangHeredocRuns) {
  TempDir tmp;
  const std::string t = tmp.path();
  std::vector<std::string> env = {"STAGEFARM_HOME=" + t + "/home"};
  std::string out, err;
  ASSERT_TRUE(ImportBusybox(env));
  ASSERT_EQ(RunCommand({kBin, "image", "inspect", "busybox"}, &out, &err, env), 0) << err;
  const size_t base_history = nlohmann::json::parse(out)["history"].size();
  std::filesystem::create_directories(t + "/ctx");
  std::ofstream(t + "/ctx/Dockerfile") << "FROM busybox\n"
                                          "ONBUILD RUN echo later\n"
                                          "MAINTAINER someone@example.test\n"
                                          "RUN <<EOF\n"
                                          "#!/bin/awk -f\n"
                                          "BEGIN { print \"from awk\" > \"/awk-out\" }\n"
                                          "EOF\n"
                                          "CMD [\"cat\", \"/awk-out\"]\n";
  ASSERT_EQ(RunCommand({kBin, "build", "--progress=plain", "-o", "type=oci,dest=" + t + "/img.tar",
                        "-t", "hist", t + "/ctx"},
                       &out, &err, env),
            0)
      << err;
  ASSERT_EQ(RunCommand({kBin, "image", "inspect", "hist"}, &out, &err, env), 0) << err;
  auto config = nlohmann::json::parse(out);
  EXPECT_EQ(config.value("author", ""), "someone@example.test") << out;
  EXPECT_EQ(config["config"]["OnBuild"], nlohmann::json::array({"RUN echo later"})) << out;
  const auto& history = config["history"];
  ASSERT_EQ(history.size(), base_history + 3) << out;  // MAINTAINER, RUN, CMD
  EXPECT_EQ(history[base_history]["created_by"], "MAINTAINER someone@example.test") << out;
  EXPECT_EQ(history[base_history + 1]["created_by"], "RUN /bin/sh -c /dev/pipes/EOF # buildkit")
      << out;
  EXPECT_EQ(RunImage("oci-archive:" + t + "/img.tar", t + "/run"), "from awk\n");
}

}  // namespace
}  // namespace stagefarm::testing
