// Steps that change nothing on disk, as the `docker build` stagefarm is compared with (docker.io
// 20.10's BuildKit, moby image store) records them. Checked against that docker on this machine:
// `FROM busybox / WORKDIR /bin / RUN true` gave, for WORKDIR /bin, a layer that is the empty tar
// (diffID sha256:5f70bf18..., 1024 zero bytes) with an ordinary history entry, not
// "empty_layer": true. (BuildKit's own containerimage exporter drops layers whose gzip blob is the
// empty one; docker 20.10's exporter keeps them, and stagefarm matches docker.)
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

#include "support/images.h"
#include "support/process.h"

namespace stagefarm::testing {
namespace {

const std::string kBin = STAGEFARM_BINARY;
constexpr const char* kEmptyTarDiffId =
    "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef";

TEST(EmptyLayerTest, WorkdirOnAnExistingDirectoryKeepsAnEmptyLayerAsDockerDoes) {
  TempDir tmp;
  const std::string t = tmp.path();
  std::vector<std::string> env = {"STAGEFARM_HOME=" + t + "/home"};
  std::string out, err;
  ASSERT_TRUE(ImportBusybox(env));
  ASSERT_EQ(RunCommand({kBin, "image", "inspect", "busybox"}, &out, &err, env), 0) << err;
  const size_t base_layers = nlohmann::json::parse(out)["rootfs"]["diff_ids"].size();
  std::filesystem::create_directories(t + "/ctx");
  std::ofstream(t + "/ctx/Dockerfile") << "FROM busybox\nWORKDIR /bin\n";
  ASSERT_EQ(RunCommand({kBin, "build", "--progress=plain", "-t", "wdbin", t + "/ctx"}, &out, &err,
                       env),
            0)
      << err;
  ASSERT_EQ(RunCommand({kBin, "image", "inspect", "wdbin"}, &out, &err, env), 0) << err;
  auto config = nlohmann::json::parse(out);
  const auto& diff_ids = config["rootfs"]["diff_ids"];
  ASSERT_EQ(diff_ids.size(), base_layers + 1) << out;
  EXPECT_EQ(diff_ids.back(), kEmptyTarDiffId) << out;
  const auto& last = config["history"].back();
  EXPECT_EQ(last["created_by"], "WORKDIR /bin") << out;
  EXPECT_FALSE(last.value("empty_layer", false)) << out;
  EXPECT_EQ(config["config"]["WorkingDir"], "/bin") << out;
}

}  // namespace
}  // namespace stagefarm::testing
