// The examples in examples/ build as the README says, on the embedded farm: the multi-stage C
// program is compiled in a Debian+gcc stage (scripts/make-debian-image, a debootstrap fixture),
// tested in its own stage, and shipped alone on busybox; a failing test stage fails the build.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>

#include "support/images.h"
#include "support/process.h"

namespace stagefarm::testing {
namespace {

const std::string kBin = STAGEFARM_BINARY;
const std::string kSrc = STAGEFARM_SOURCE_DIR;

class ExamplesTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    std::string out, err;
    // debootstrap takes minutes; the script keeps the layout in its fixture cache.
    ASSERT_EQ(RunCommand({kSrc + "/scripts/make-debian-image", D() + "/debian-gcc", "--name",
                          "debian-gcc:bookworm", "--include", "gcc,libc6-dev"},
                         &out, &err, {}, std::chrono::seconds(1200)),
              0)
        << err;
    ASSERT_EQ(RunCommand({kBin, "image", "import", D() + "/debian-gcc", "debian-gcc:bookworm"},
                         &out, &err, Env()),
              0)
        << err;
    ASSERT_TRUE(ImportBusybox(Env()));
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  static std::vector<std::string> Env() { return {"STAGEFARM_HOME=" + D() + "/home"}; }
  static const std::string& D() { return dir_->path(); }

  static int Build(std::vector<std::string> args, std::string* err) {
    std::vector<std::string> argv = {kBin, "build", "--progress=plain"};
    argv.insert(argv.end(), args.begin(), args.end());
    std::string out;
    return RunCommand(argv, &out, err, Env(), std::chrono::seconds(600));
  }

  // The SIZE column of `stagefarm image ls` for `name`, in bytes (0 when absent).
  static double ImageSize(const std::string& name) {
    std::string out, err;
    EXPECT_EQ(RunCommand({kBin, "image", "ls"}, &out, &err, Env()), 0) << err;
    std::smatch m;
    const std::regex row("(^|\n)" + name + R"(\s+\S+\s+([0-9.]+) (B|kB|MB|GB))");
    if (!std::regex_search(out, m, row)) {
      ADD_FAILURE() << name << " not in `image ls`:\n" << out;
      return 0;
    }
    const std::string unit = m[3].str();
    double scale = unit == "GB" ? 1e9 : unit == "MB" ? 1e6 : unit == "kB" ? 1e3 : 1;
    return std::stod(m[2].str()) * scale;
  }

 private:
  static TempDir* dir_;
};

TempDir* ExamplesTest::dir_ = nullptr;

TEST_F(ExamplesTest, MultiStageCProgramIsBuiltTestedAndShippedAlone) {
  const std::string ctx = kSrc + "/examples/multistage-c";
  std::string err;
  ASSERT_EQ(Build({"-t", "hello-c", "-o", "type=oci,dest=" + D() + "/hello-c.tar", ctx}, &err), 0)
      << err;
  // The test stage ran (its report is in the image) and the program runs on busybox.
  EXPECT_NE(err.find("[test 2] RUN ./test.sh ./hello"), std::string::npos) << err;
  EXPECT_EQ(RunImage("oci-archive:" + D() + "/hello-c.tar", D() + "/run"),
            "hello from a static C binary built by stagefarm\n");

  // The builder stage as an image of its own, for the README's size comparison: the runtime
  // image is a small fraction of it.
  ASSERT_EQ(Build({"-t", "hello-c-builder", "--target", "build", ctx}, &err), 0) << err;
  double builder = ImageSize("hello-c-builder:latest");
  double runtime = ImageSize("hello-c:latest");
  EXPECT_GT(builder, 100e6);
  EXPECT_LT(runtime, 5e6);
  EXPECT_LT(runtime * 50, builder);
  std::printf("builder image %.0f MB, runtime image %.1f MB\n", builder / 1e6, runtime / 1e6);
}

TEST_F(ExamplesTest, FailingTestStageFailsTheBuild) {
  // The same example with a test that expects another answer.
  const std::string ctx = D() + "/broken";
  std::filesystem::copy(kSrc + "/examples/multistage-c", ctx,
                        std::filesystem::copy_options::recursive);
  std::string script = ReadFileOrEmpty(ctx + "/test.sh");
  int replaced = 0;
  for (size_t at; (at = script.find("6765")) != std::string::npos; ++replaced) {
    script.replace(at, 4, "6766");
  }
  ASSERT_EQ(replaced, 2) << script;
  std::ofstream(ctx + "/test.sh") << script;
  std::string err;
  EXPECT_EQ(Build({ctx}, &err), 1) << err;
  EXPECT_NE(err.find("fib(20) = 6765, want 6766"), std::string::npos) << err;
  EXPECT_NE(err.find("Dockerfile:17"), std::string::npos) << err;
}

}  // namespace
}  // namespace stagefarm::testing
