// The golden corpus (tests/golden/fs-cases, see tests/golden/README.md) built with `stagefarm
// build` and compared with what the reference BuildKit (v0.24.0) made of the same Dockerfiles
// (expected.json, written by scripts/regen-golden): every path's type, mode, owner, size, content
// digest and link target, the hard links, deletions of base-image paths, the whole image config,
// the history and the layer count. The listing code (tests/golden/image_listing.cc) is the one
// the script ran on BuildKit's images. Every case builds on the embedded farm; the cases marked
// "farm" build again on a farm of separate processes with two workers.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>

#include "coordinator_farm.h"
#include "golden/image_listing.h"
#include "support/git_server.h"
#include "support/images.h"
#include "support/process.h"

namespace stagefarm::testing {
namespace {

const std::string kCases = std::string(STAGEFARM_SOURCE_DIR) + "/tests/golden/fs-cases";

// A case directory as tests/golden/README.md describes it.
struct GoldenCase {
  std::string name, dir, context, dockerfile, target, error;
  std::vector<std::string> build_args;  // "K=V"
  bool farm = false, git = false;
  std::string problem;  // a malformed case.json
};

GoldenCase LoadCase(const std::string& name) {
  GoldenCase c;
  c.name = name;
  c.dir = kCases + "/" + name;
  c.context = std::filesystem::is_directory(c.dir + "/context") ? c.dir + "/context" : c.dir;
  c.dockerfile = c.dir + "/Dockerfile";
  const std::string text = ReadFileOrEmpty(c.dir + "/case.json");
  if (text.empty()) return c;
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_object()) {
    c.problem = "case.json is not a JSON object";
    return c;
  }
  static const std::set<std::string> kKeys = {"why",   "build_args", "target", "dockerfile",
                                              "error", "farm",       "git"};
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (!kKeys.count(it.key())) c.problem += "case.json: unknown key \"" + it.key() + "\"; ";
  }
  if (j.contains("dockerfile")) c.dockerfile = c.dir + "/" + j["dockerfile"].get<std::string>();
  c.target = j.value("target", "");
  c.error = j.value("error", "");
  c.farm = j.value("farm", false);
  c.git = j.value("git", false);
  const nlohmann::json args = j.value("build_args", nlohmann::json::object());
  for (auto it = args.begin(); it != args.end(); ++it) {
    c.build_args.push_back(it.key() + "=" + it.value().get<std::string>());
  }
  return c;
}

std::vector<std::string> CaseNames(bool farm_only) {
  std::vector<std::string> names;
  for (const auto& d : std::filesystem::directory_iterator(kCases)) {
    if (!d.is_directory()) continue;
    std::string name = d.path().filename().string();
    if (!farm_only || LoadCase(name).farm) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

// Builds `c` with `prefix` (stagefarm build and its farm flags) and compares the result with
// expected.json: the listing for a case that builds, the failure for a case that must fail.
void BuildAndCompare(const GoldenCase& c, std::vector<std::string> argv,
                     const std::vector<std::string>& env, const std::string& out_dir,
                     const nlohmann::json& base) {
  ASSERT_TRUE(c.problem.empty()) << c.dir << ": " << c.problem;
  nlohmann::json expected =
      nlohmann::json::parse(ReadFileOrEmpty(c.dir + "/expected.json"), nullptr, false);
  ASSERT_TRUE(expected.is_object())
      << c.dir << "/expected.json is missing or not JSON (scripts/regen-golden " << c.name << ")";
  // A git case gets a server of its own: its URLs are the build args GIT_HTTP and GIT_DAEMON,
  // and ${GIT_HTTP} / ${GIT_DAEMON} in expected.json (scripts/regen-golden writes them so).
  std::unique_ptr<GitServer> git;
  std::vector<std::string> build_args = c.build_args;
  if (c.git) {
    git = std::make_unique<GitServer>();
    ASSERT_TRUE(git->ok());
    for (const auto& a : git->BuildArgs()) build_args.push_back(a);
  }
  auto placeholders = [&](nlohmann::json& j) {
    if (!git) return;
    golden::ReplaceText(j, git->http_url(), "${GIT_HTTP}");
    golden::ReplaceText(j, git->git_url(), "${GIT_DAEMON}");
  };

  const std::string image = out_dir + "/" + c.name + ".tar";
  argv.insert(argv.end(), {"-f", c.dockerfile, "-o", "type=docker,dest=" + image});
  if (!c.target.empty()) argv.insert(argv.end(), {"--target", c.target});
  for (const auto& a : build_args) argv.insert(argv.end(), {"--build-arg", a});
  argv.push_back(c.context);
  std::string out, err;
  const int rc = RunCommand(argv, &out, &err, env);

  if (!c.error.empty()) {
    ASSERT_TRUE(expected.contains("error")) << c.dir << ": an error case's expected.json holds "
                                            << "BuildKit's error (scripts/regen-golden)";
    ASSERT_NE(rc, 0) << c.name << ": stagefarm built what BuildKit refuses:\n"
                     << expected["error"].get<std::string>();
    EXPECT_TRUE(std::regex_search(out + err, std::regex(c.error, std::regex::extended)))
        << c.name << ": stagefarm failed, but not with /" << c.error << "/:\n"
        << err << "\nBuildKit said:\n"
        << expected["error"].get<std::string>();
    return;
  }
  ASSERT_FALSE(expected.contains("error")) << c.dir << ": expected.json holds an error, but "
                                           << "case.json has no \"error\"";
  ASSERT_EQ(rc, 0) << c.name << ": stagefarm failed:\n" << out << err;
  auto listing = golden::FlattenImage(image);
  ASSERT_TRUE(listing.ok()) << listing.status().ToString();
  nlohmann::json actual = golden::DiffFromBase(base, *listing);
  placeholders(actual);
  auto known = golden::ReadKnownDifferences(c.dir + "/known-differences.txt");
  ASSERT_TRUE(known.ok()) << known.status().ToString();
  const std::string stale = golden::SetAsideKnownDifferences(*known, expected, actual);
  EXPECT_TRUE(stale.empty()) << c.name << ": " << stale;
  std::string differences = golden::DescribeDifferences(expected, actual);
  EXPECT_TRUE(differences.empty()) << c.name << ": stagefarm's image differs from BuildKit's:\n"
                                   << differences;
}

std::string TestName(const ::testing::TestParamInfo<std::string>& info) {
  std::string n = info.param;
  std::replace_if(n.begin(), n.end(), [](char ch) { return !std::isalnum(ch); }, '_');
  return n;
}

// busybox's own listing, which every case is the difference from.
nlohmann::json* BaseListing() {
  static nlohmann::json* base = [] {
    auto listing = golden::FlattenImage(BusyboxLayout());
    EXPECT_TRUE(listing.ok()) << listing.status().ToString();
    return listing.ok() ? new nlohmann::json(std::move(*listing)) : nullptr;
  }();
  return base;
}

class GoldenFsTest : public ::testing::TestWithParam<std::string> {
 protected:
  // One store with busybox imported, shared by the cases a process runs.
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    ASSERT_TRUE(ImportBusybox(Env()));
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  static std::vector<std::string> Env() { return {"STAGEFARM_HOME=" + dir_->path() + "/home"}; }

  static TempDir* dir_;
};

TempDir* GoldenFsTest::dir_ = nullptr;

TEST_P(GoldenFsTest, SameImageAsBuildKitOnTheEmbeddedFarm) {
  ASSERT_NE(BaseListing(), nullptr);
  BuildAndCompare(LoadCase(GetParam()), {kBin, "build", "--progress=plain"}, Env(), dir_->path(),
                  *BaseListing());
}

INSTANTIATE_TEST_SUITE_P(FsCases, GoldenFsTest, ::testing::ValuesIn(CaseNames(false)), TestName);

// The cases that cross stages, on a cache server, a coordinator and two workers, each its own
// process: what one worker built reaches the other through the cache server.
class GoldenFarmTest : public ::testing::TestWithParam<std::string> {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    farm_ = new Farm(dir_->path(), FarmOptions{});
  }
  static void TearDownTestSuite() {
    delete farm_;
    delete dir_;
    farm_ = nullptr;
    dir_ = nullptr;
  }

  static TempDir* dir_;
  static Farm* farm_;
};

TempDir* GoldenFarmTest::dir_ = nullptr;
Farm* GoldenFarmTest::farm_ = nullptr;

TEST_P(GoldenFarmTest, SameImageAsBuildKitOnTwoWorkers) {
  ASSERT_NE(BaseListing(), nullptr);
  ASSERT_TRUE(farm_->ok()) << farm_->Logs();
  BuildAndCompare(LoadCase(GetParam()),
                  {kBin, "build", "--farm", farm_->coord_ep(), "--progress=plain"}, {},
                  dir_->path(), *BaseListing());
  if (HasFailure()) std::cerr << farm_->Logs();
}

INSTANTIATE_TEST_SUITE_P(FarmCases, GoldenFarmTest, ::testing::ValuesIn(CaseNames(true)),
                         TestName);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(GoldenFarmTest);

}  // namespace
}  // namespace stagefarm::testing
