// Steps that change nothing on disk, and stages whose layers repeat, end to end on the embedded
// farm. As BuildKit v0.24 (and docker.io 20.10) records them: `WORKDIR /bin` on an existing
// directory and `RUN true` each make a layer that is the empty tar (diffID sha256:5f70bf18...,
// 1024 zero bytes) with an ordinary history entry, not "empty_layer": true; so two `RUN true`
// put one layer in the stack twice, as do the same COPY twice and a layer that comes back after
// another (A B A). The steps after them run, and other tools read and run the image.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "support/images.h"
#include "support/process.h"

namespace stagefarm::testing {
namespace {

const std::string kBin = STAGEFARM_BINARY;
constexpr const char* kEmptyTarDiffId =
    "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef";

class EmptyLayerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string out, err;
    ASSERT_TRUE(ImportBusybox(env));
    ASSERT_EQ(RunCommand({kBin, "image", "inspect", "busybox"}, &out, &err, env), 0) << err;
    base_layers = nlohmann::json::parse(out)["rootfs"]["diff_ids"].size();
    std::filesystem::create_directories(t + "/ctx");
  }

  TempDir tmp;
  const std::string t = tmp.path();
  const std::vector<std::string> env = {"STAGEFARM_HOME=" + t + "/home"};
  size_t base_layers = 0;  // of the busybox base
};

TEST_F(EmptyLayerTest, WorkdirOnAnExistingDirectoryKeepsAnEmptyLayerAsDockerDoes) {
  std::string out, err;
  std::ofstream(t + "/ctx/Dockerfile") << "FROM busybox\nWORKDIR /bin\n";
  ASSERT_EQ(
      RunCommand({kBin, "build", "--progress=plain", "-t", "wdbin", t + "/ctx"}, &out, &err, env),
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

TEST_F(EmptyLayerTest, RepeatedLayersBuildRunAndExport) {
  std::string out, err;
  std::ofstream(t + "/ctx/a.txt") << "A\n";
  std::ofstream(t + "/ctx/Dockerfile") << "FROM busybox AS build\n"
                                          "RUN true\n"
                                          "RUN true\n"
                                          "COPY a.txt /a.txt\n"
                                          "COPY a.txt /a.txt\n"
                                          "RUN rm /a.txt\n"
                                          "COPY a.txt /a.txt\n"
                                          "RUN cat /a.txt > /b.txt\n"
                                          "FROM busybox\n"
                                          "COPY --from=build /a.txt /b.txt /\n"
                                          "RUN true\n"
                                          "RUN true\n"
                                          "CMD [\"cat\", \"/a.txt\", \"/b.txt\"]\n";
  ASSERT_EQ(RunCommand({kBin, "build", "--progress=plain", "-t", "repeated", "--target", "build",
                        t + "/ctx"},
                       &out, &err, env),
            0)
      << err;
  ASSERT_EQ(RunCommand({kBin, "image", "inspect", "repeated"}, &out, &err, env), 0) << err;
  nlohmann::json config = nlohmann::json::parse(out);
  const auto& ids = config["rootfs"]["diff_ids"];
  ASSERT_EQ(ids.size(), base_layers + 7) << out;
  EXPECT_EQ(ids[base_layers], kEmptyTarDiffId) << "RUN true is the empty layer";
  EXPECT_EQ(ids[base_layers + 1], kEmptyTarDiffId);
  // The same COPY twice repeats its layer here (BuildKit's differ finds nothing changed and makes
  // the empty layer: the files are the same either way); A B A repeats A in both.
  EXPECT_EQ(ids[base_layers + 2], ids[base_layers + 5]) << "A B A";
  for (const auto& h : config["history"]) EXPECT_FALSE(h.value("empty_layer", false)) << h;

  ASSERT_EQ(RunCommand({kBin, "build", "--progress=plain", "-t", "final", "-o",
                        "type=oci,dest=" + t + "/final.tar,compression=gzip", "-o",
                        "type=docker,dest=" + t + "/docker.tar", "-o",
                        "type=local,dest=" + t + "/rootfs", t + "/ctx"},
                       &out, &err, env),
            0)
      << err;
  EXPECT_EQ(ReadFileOrEmpty(t + "/rootfs/a.txt"), "A\n");
  EXPECT_EQ(ReadFileOrEmpty(t + "/rootfs/b.txt"), "A\n");
  // The OCI archive holds the empty layer's blob once; its manifest names it twice.
  ASSERT_EQ(
      RunCommand({"skopeo", "inspect", "--raw", "oci-archive:" + t + "/final.tar"}, &out, &err), 0)
      << err;
  nlohmann::json manifest = nlohmann::json::parse(out);
  ASSERT_EQ(manifest["layers"].size(), base_layers + 3) << out;
  EXPECT_EQ(manifest["layers"][base_layers + 1]["digest"],
            manifest["layers"][base_layers + 2]["digest"])
      << out;
  ASSERT_EQ(RunCommand({"tar", "-tf", t + "/final.tar"}, &out, &err), 0) << err;
  std::map<std::string, int> names;
  std::istringstream listing(out);
  for (std::string line; std::getline(listing, line);) ++names[line];
  for (const auto& [name, count] : names) EXPECT_EQ(count, 1) << name << " written twice";
  // skopeo verifies every blob it copies; umoci applies every layer; crun runs it.
  EXPECT_EQ(RunImage("oci-archive:" + t + "/final.tar", t + "/run-oci"), "A\nA\n");
  EXPECT_EQ(RunImage("docker-archive:" + t + "/docker.tar", t + "/run-docker"), "A\nA\n");
}

}  // namespace
}  // namespace stagefarm::testing
