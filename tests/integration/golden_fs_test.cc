// The filesystem cases of tests/golden/fs-cases built with `stagefarm build` on the embedded farm
// and compared with what `docker build` made of the same Dockerfiles (expected.json, written by
// scripts/regen-docker-golden): every path's type, mode, owner, size, content digest and link
// target, the hard links, deletions of base-image paths, and the image config. The listing code
// (tests/golden/image_listing.cc) is the one the script ran on docker's images.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "golden/image_listing.h"
#include "support/images.h"
#include "support/process.h"

namespace stagefarm::testing {
namespace {

const std::string kBin = STAGEFARM_BINARY;
const std::string kCases = std::string(STAGEFARM_SOURCE_DIR) + "/tests/golden/fs-cases";

std::vector<std::string> CaseNames() {
  std::vector<std::string> names;
  for (const auto& d : std::filesystem::directory_iterator(kCases)) {
    if (d.is_directory()) names.push_back(d.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

// <case>/known-differences.txt: paths where stagefarm is known to differ from docker, one per
// line ("# reason" comments). They are compared apart: each must still differ, so a fix shows
// up as a failure asking to remove the line, and every other path must match.
std::set<std::string> KnownDifferences(const std::string& case_dir) {
  std::set<std::string> paths;
  std::istringstream in(ReadFileOrEmpty(case_dir + "/known-differences.txt"));
  std::string line;
  while (std::getline(in, line)) {
    line = line.substr(0, line.find('#'));
    line.erase(line.find_last_not_of(" \t") + 1);
    if (!line.empty()) paths.insert(line);
  }
  return paths;
}

// The entry of `listing` (a DiffFromBase result) at `path`, or null.
nlohmann::json EntryAt(const nlohmann::json& listing, const std::string& path) {
  for (const auto& f : listing["files"]) {
    if (f["path"] == path) return f;
  }
  return nullptr;
}

void DropPaths(nlohmann::json& listing, const std::set<std::string>& paths) {
  nlohmann::json kept = nlohmann::json::array();
  for (const auto& f : listing["files"]) {
    if (!paths.count(f["path"].get<std::string>())) kept.push_back(f);
  }
  listing["files"] = kept;
}

class GoldenFsTest : public ::testing::TestWithParam<std::string> {
 protected:
  // One store with busybox imported, and busybox's own listing, shared by the cases.
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    ASSERT_TRUE(ImportBusybox(Env()));
    auto base = golden::FlattenImage(BusyboxLayout());
    ASSERT_TRUE(base.ok()) << base.status().ToString();
    base_ = new nlohmann::json(std::move(*base));
  }
  static void TearDownTestSuite() {
    delete base_;
    delete dir_;
    base_ = nullptr;
    dir_ = nullptr;
  }
  static std::vector<std::string> Env() { return {"STAGEFARM_HOME=" + dir_->path() + "/home"}; }

  static TempDir* dir_;
  static nlohmann::json* base_;
};

TempDir* GoldenFsTest::dir_ = nullptr;
nlohmann::json* GoldenFsTest::base_ = nullptr;

TEST_P(GoldenFsTest, SameFilesystemAndConfigAsDockerBuild) {
  ASSERT_NE(base_, nullptr);
  const std::string name = GetParam();
  const std::string case_dir = kCases + "/" + name;
  nlohmann::json expected =
      nlohmann::json::parse(ReadFileOrEmpty(case_dir + "/expected.json"), nullptr, false);
  ASSERT_TRUE(expected.is_object())
      << case_dir << "/expected.json is missing or not JSON (scripts/regen-docker-golden " << name
      << ")";

  const std::string image = dir_->path() + "/" + name + ".tar";
  std::string out, err;
  ASSERT_EQ(RunCommand({kBin, "build", "--progress=plain", "-o", "type=docker,dest=" + image,
                        case_dir},
                       &out, &err, Env()),
            0)
      << err;
  auto listing = golden::FlattenImage(image);
  ASSERT_TRUE(listing.ok()) << listing.status().ToString();
  nlohmann::json actual = golden::DiffFromBase(*base_, *listing);
  const std::set<std::string> known = KnownDifferences(case_dir);
  for (const auto& path : known) {
    EXPECT_NE(EntryAt(expected, path), EntryAt(actual, path))
        << name << ": " << path << " now matches docker: remove it from known-differences.txt";
  }
  DropPaths(expected, known);
  DropPaths(actual, known);
  std::string differences = golden::DescribeDifferences(expected, actual);
  EXPECT_TRUE(differences.empty()) << name << ": stagefarm's image differs from docker's:\n"
                                   << differences;
}

INSTANTIATE_TEST_SUITE_P(FsCases, GoldenFsTest, ::testing::ValuesIn(CaseNames()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string n = info.param;
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

}  // namespace
}  // namespace stagefarm::testing
