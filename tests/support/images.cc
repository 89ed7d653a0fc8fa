#include "support/images.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "support/process.h"

namespace stagefarm::testing {

const std::string& BusyboxLayout() {
  static TempDir dir;
  static const std::string path = [] {
    std::string p = dir.path() + "/busybox-oci";
    std::string err;
    int rc = RunCommand({std::string(STAGEFARM_SOURCE_DIR) + "/scripts/make-busybox-image", p},
                        nullptr, &err);
    EXPECT_EQ(rc, 0) << err;
    return p;
  }();
  return path;
}

bool ImportBusybox(const std::vector<std::string>& env) {
  std::string err;
  if (RunCommand({STAGEFARM_BINARY, "image", "import", BusyboxLayout(), "busybox"}, nullptr, &err,
                 env) == 0) {
    return true;
  }
  ADD_FAILURE() << "stagefarm image import of busybox failed:\n" << err;
  return false;
}

std::string RunImage(const std::string& src_ref, const std::string& dir) {
  static std::atomic<int> counter{0};
  std::string out, err;
  std::filesystem::create_directories(dir);
  EXPECT_EQ(RunCommand({"skopeo", "copy", src_ref, "oci:" + dir + "/layout:run"}, &out, &err), 0)
      << src_ref << ": " << err;
  EXPECT_EQ(RunCommand({"umoci", "unpack", "--image", dir + "/layout:run", dir + "/bundle"}, &out,
                       &err),
            0)
      << err;
  // umoci writes a bundle for an interactive terminal; the test reads a pipe.
  std::string config_path = dir + "/bundle/config.json";
  nlohmann::json config = nlohmann::json::parse(ReadFileOrEmpty(config_path), nullptr, false);
  if (config.is_discarded()) {
    ADD_FAILURE() << "umoci wrote no readable " << config_path;
    return "";
  }
  config["process"]["terminal"] = false;
  std::ofstream(config_path) << config.dump();
  std::string id = "stagefarm-test-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
  EXPECT_EQ(RunCommand({"crun", "run", "--bundle", dir + "/bundle", id}, &out, &err), 0) << err;
  return out;
}

}  // namespace stagefarm::testing
