// Cache keys of sources that are symlinks, end to end on the embedded farm: a COPY --from of a
// link, a COPY of a context link and a RUN --mount=type=bind of a link are keyed on what the link
// points to, so a change there rebuilds them (keys are farm-wide: a stale hit would hand another
// build this one's old file).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>

#include "support/images.h"
#include "support/process.h"

namespace stagefarm::testing {
namespace {

const std::string kBin = STAGEFARM_BINARY;

// "cached" when the step whose text is `text` was a cache hit in `progress`, "ran" when it ran.
std::string Outcome(const std::string& progress, const std::string& text) {
  std::string quoted = std::regex_replace(text, std::regex(R"([.^$|()\[\]{}*+?\\])"), R"(\$&)");
  if (std::regex_search(progress, std::regex("\\] " + quoted + "\n#\\d+ CACHED\n"))) {
    return "cached";
  }
  if (std::regex_search(progress, std::regex("\\] " + quoted + " \\(on "))) return "ran";
  return "not shown";
}

class SymlinkKeyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(ImportBusybox(env_));
    std::filesystem::create_directories(ctx_);
  }
  void Dockerfile(const std::string& text) { std::ofstream(ctx_ + "/Dockerfile") << text; }
  // Writes the context files `files` (name -> content), builds the context into out/ and
  // returns the progress output.
  std::string Build(const std::map<std::string, std::string>& files) {
    for (const auto& [name, content] : files) std::ofstream(ctx_ + "/" + name) << content;
    std::filesystem::remove_all(out_);
    std::string out, err;
    EXPECT_EQ(RunCommand({kBin, "build", "--progress=plain", "-o", "type=local,dest=" + out_, ctx_},
                         &out, &err, env_),
              0)
        << err;
    return err;
  }
  std::string Out(const std::string& name) { return ReadFileOrEmpty(out_ + "/" + name); }

  TempDir tmp_;
  const std::string ctx_ = tmp_.path() + "/ctx", out_ = tmp_.path() + "/out";
  const std::vector<std::string> env_ = {"STAGEFARM_HOME=" + tmp_.path() + "/home"};
};

TEST_F(SymlinkKeyTest, ChangingWhatALinkPointsToRebuildsTheStepsThatReadIt) {
  Dockerfile(
      "FROM busybox AS data\n"
      "COPY data.txt /real\n"
      "RUN ln -s real /lnk\n"
      "FROM busybox AS ctx\n"
      "COPY link.txt /ctxlink\n"
      "FROM busybox\n"
      "COPY --from=data /lnk /out\n"
      "COPY --from=ctx /ctxlink /ctxlink\n"
      "RUN --mount=type=bind,from=data,source=lnk,target=/m cat /m > /mounted\n");
  std::filesystem::create_symlink("ctxdata.txt", ctx_ + "/link.txt");
  Build({{"data.txt", "v1\n"}, {"ctxdata.txt", "c1\n"}});
  EXPECT_EQ(Out("out"), "v1\n");

  std::string progress = Build({{"data.txt", "v2\n"}});
  EXPECT_EQ(Outcome(progress, "COPY --from=data /lnk /out"), "ran") << progress;
  EXPECT_EQ(Outcome(progress, "COPY link.txt /ctxlink"), "cached") << progress;
  EXPECT_EQ(Out("out"), "v2\n");
  EXPECT_EQ(Out("ctxlink"), "c1\n");
  EXPECT_EQ(Out("mounted"), "v2\n");

  // A context link whose target changes: the COPY of the link runs again.
  progress = Build({{"ctxdata.txt", "c2\n"}});
  EXPECT_EQ(Outcome(progress, "COPY --from=data /lnk /out"), "cached") << progress;
  EXPECT_EQ(Outcome(progress, "COPY link.txt /ctxlink"), "ran") << progress;
  EXPECT_EQ(Out("ctxlink"), "c2\n");

  // Only the bind mount reads the link now: the RUN that mounts it runs again.
  Dockerfile(
      "FROM busybox AS data\n"
      "COPY data.txt /real\n"
      "RUN ln -s real /lnk\n"
      "FROM busybox\n"
      "RUN --mount=type=bind,from=data,source=lnk,target=/m cat /m > /mounted\n");
  Build({{"data.txt", "v3\n"}});
  EXPECT_EQ(Out("mounted"), "v3\n");
  progress = Build({{"data.txt", "v4\n"}});
  EXPECT_EQ(
      Outcome(progress, "RUN --mount=type=bind,from=data,source=lnk,target=/m cat /m > /mounted"),
      "ran")
      << progress;
  EXPECT_EQ(Out("mounted"), "v4\n");
}

// A source under a symlinked directory, itself a link: the key is read through both, inside the
// stage's root (before, the key side did not follow the directory link and found nothing).
TEST_F(SymlinkKeyTest, ASourceUnderASymlinkedDirectoryIsKeyedOnItsTarget) {
  Dockerfile(
      "FROM busybox AS data\n"
      "COPY data.txt /real\n"
      "RUN mkdir /d && ln -s /real /d/inner && ln -s d /dl\n"
      "FROM busybox\n"
      "COPY --from=data /dl/inner /out\n");
  for (const char* data : {"v1\n", "v2\n"}) {
    std::string progress = Build({{"data.txt", data}});
    EXPECT_EQ(Outcome(progress, "COPY --from=data /dl/inner /out"), "ran") << progress;
    EXPECT_EQ(Out("out"), data);
  }
}

}  // namespace
}  // namespace stagefarm::testing
