// COPY and ADD flags end to end through `stagefarm build` on the embedded farm, with the results
// BuildKit v0.24 gives for the same Dockerfile (checked with scripts/buildkit-build):
// --parents, --exclude, ADD --unpack, --link, wildcards that match nothing, symlinked directories
// in a source path, tars with absolute names, FIFOs; and the cache keys that follow what is
// copied (an excluded file changes nothing, a file behind a symlinked directory does).
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>

#include "golden/image_listing.h"
#include "stagefarm/common/digest.h"
#include "support/images.h"
#include "support/process.h"

namespace stagefarm::testing {
namespace {

namespace fs = std::filesystem;
const std::string kBin = STAGEFARM_BINARY;

void Write(const std::string& path, const std::string& text) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path) << text;
}

class CopyFlagsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    env_ = {"STAGEFARM_HOME=" + tmp_.path() + "/home"};
    ASSERT_TRUE(ImportBusybox(env_));
    ctx_ = tmp_.path() + "/ctx";
    fs::create_directories(ctx_);
  }

  // Builds ctx_ into a docker archive and returns its files by path; `log` gets the progress.
  std::map<std::string, nlohmann::json> Build(std::string* log) {
    const std::string out = tmp_.path() + "/image-" + std::to_string(++builds_) + ".tar";
    std::string stdout_text;
    int rc = RunCommand({kBin, "build", "--progress=plain", "-o", "type=docker,dest=" + out, ctx_},
                        &stdout_text, log, env_);
    EXPECT_EQ(rc, 0) << *log;
    std::map<std::string, nlohmann::json> files;
    if (rc != 0) return files;
    auto listing = golden::FlattenImage(out);
    EXPECT_TRUE(listing.ok()) << listing.status().ToString();
    if (!listing.ok()) return files;
    for (const auto& f : (*listing)["files"]) files[f["path"].get<std::string>()] = f;
    return files;
  }

  // Whether the progress in `log` shows the step with this text as cached.
  static bool Cached(const std::string& log, const std::string& text) {
    std::smatch m;
    std::regex step("#(\\d+) \\[[^\\]]+\\] " +
                    std::regex_replace(text, std::regex(R"([.*\[\]])"), R"(\$&)"));
    if (!std::regex_search(log, m, step)) {
      ADD_FAILURE() << "no step " << text << " in\n" << log;
      return false;
    }
    return log.find("#" + m[1].str() + " CACHED") != std::string::npos;
  }

  TempDir tmp_;
  std::vector<std::string> env_;
  std::string ctx_;
  int builds_ = 0;
};

std::string Describe(const std::map<std::string, nlohmann::json>& files, const std::string& path) {
  auto it = files.find(path);
  if (it == files.end()) return "-";
  const nlohmann::json& f = it->second;
  std::string out = f["type"].get<std::string>() + " " + f["mode"].get<std::string>() + " " +
                    std::to_string(f["uid"].get<int>()) + ":" + std::to_string(f["gid"].get<int>());
  if (f.contains("target")) out += " ->" + f["target"].get<std::string>();
  return out;
}

TEST_F(CopyFlagsTest, FlagsGiveBuildKitsImage) {
  Write(ctx_ + "/foo1/foo2/bar", "bar\n");
  ::chmod((ctx_ + "/foo1").c_str(), 0700);
  ::chmod((ctx_ + "/foo1/foo2").c_str(), 0750);
  Write(ctx_ + "/src/a.md", "a\n");
  Write(ctx_ + "/src/b.txt", "b\n");
  Write(ctx_ + "/src/sub/c.md", "c\n");
  Write(ctx_ + "/src/skip.log", "log\n");
  Write(ctx_ + "/a.txt", "A\n");
  Write(ctx_ + "/d/f", "f1\n");
  fs::create_symlink("d", ctx_ + "/dlnk");
  ASSERT_EQ(::mkfifo((ctx_ + "/fifo").c_str(), 0640), 0);
  Write(tmp_.path() + "/tar-src/in/f", "in\n");
  ASSERT_EQ(
      std::system(("chown -R 1234:99 " + tmp_.path() + "/tar-src && tar --numeric-owner -C " +
                   tmp_.path() + "/tar-src -czf " + ctx_ + "/a.tgz in && tar -C " + tmp_.path() +
                   "/tar-src -cf " + ctx_ + "/abs.tar -P --transform " + "'s,^in,/abs,' in/f")
                      .c_str()),
      0);
  Write(
      ctx_ + "/Dockerfile",
      "FROM busybox AS st\n"
      "RUN mkdir -p /test/a/b/c && echo 1 > /test/a/b/c/f && ln -s /etc /etclink && mkfifo /pipe\n"
      "FROM busybox\n"
      "RUN mkdir -p /opt/real && ln -s /opt/real /app && mkdir -m 700 /priv && "
      "chown 1000:1000 /priv\n"
      "COPY --parents foo1/foo2/bar /p/\n"
      "COPY --exclude=*.md --exclude=*.log src /e/\n"
      "COPY a.txt nomatch* /w/\n"
      "COPY dlnk/f /s1\n"
      "COPY --from=st /etclink/group /s2\n"
      "COPY --from=st --parents /test/a/./b /q/\n"
      "ADD --unpack=false a.tgz /u1/\n"
      "ADD --chown=7:8 a.tgz /u2/\n"
      "ADD abs.tar /t/\n"
      "COPY --from=st /pipe /pipe2\n"
      "COPY fifo /pipe3\n"
      "COPY --link a.txt /app/\n"
      "COPY --link a.txt /priv/f\n");
  std::string log;
  auto files = Build(&log);
  ASSERT_FALSE(files.empty()) << log;
  const std::pair<const char*, const char*> want[] = {
      {"/p/foo1", "dir 0700 0:0"},
      {"/p/foo1/foo2", "dir 0750 0:0"},
      {"/p/foo1/foo2/bar", "file 0644 0:0"},
      {"/e/a.md", "-"},
      {"/e/b.txt", "file 0644 0:0"},
      {"/e/sub/c.md", "file 0644 0:0"},  // "*.md" is matched below src only at its top
      {"/e/skip.log", "-"},
      {"/w/a.txt", "file 0644 0:0"},
      {"/s1", "file 0644 0:0"},
      {"/s2", "file 0644 0:0"},
      {"/q/b/c/f", "file 0644 0:0"},
      {"/q/test", "-"},
      {"/u1/a.tgz", "file 0644 0:0"},
      {"/u1/in", "-"},
      {"/u2/in/f", "file 0644 7:8"},
      {"/t/abs/f", "file 0644 1234:99"},
      {"/pipe2", "fifo 0644 0:0"},
      {"/pipe3", "fifo 0640 0:0"},
      {"/app", "dir 0755 0:0"},  // --link: the layer's directory replaces the image's link
      {"/app/a.txt", "file 0644 0:0"},
      {"/opt/real/a.txt", "-"},
      {"/priv", "dir 0755 0:0"},  // and the layer's directory the image's 0700 1000:1000
  };
  for (const auto& [path, described] : want) EXPECT_EQ(Describe(files, path), described) << path;
  EXPECT_EQ(files["/s1"]["sha256"], Digest::Of("f1\n").hex);
}

TEST_F(CopyFlagsTest, KeysFollowWhatIsCopied) {
  Write(ctx_ + "/src/b.txt", "b\n");
  Write(ctx_ + "/src/skip.log", "log\n");
  Write(ctx_ + "/d/f", "f1\n");
  fs::create_symlink("d", ctx_ + "/dlnk");
  Write(ctx_ + "/Dockerfile",
        "FROM busybox\n"
        "COPY --exclude=*.log src /e/\n"
        "COPY dlnk/f /s1\n");
  std::string log;
  ASSERT_FALSE(Build(&log).empty());
  // What --exclude leaves out does not invalidate the step.
  Write(ctx_ + "/src/skip.log", "other log\n");
  ASSERT_FALSE(Build(&log).empty());
  EXPECT_TRUE(Cached(log, "COPY --exclude=*.log src /e/")) << log;
  EXPECT_TRUE(Cached(log, "COPY dlnk/f /s1")) << log;
  // A file reached through a symlinked directory does.
  Write(ctx_ + "/d/f", "f2\n");
  auto files = Build(&log);
  EXPECT_TRUE(Cached(log, "COPY --exclude=*.log src /e/")) << log;
  EXPECT_FALSE(Cached(log, "COPY dlnk/f /s1")) << log;
  EXPECT_EQ(files["/s1"]["sha256"], Digest::Of("f2\n").hex);
  Write(ctx_ + "/src/b.txt", "b2\n");
  files = Build(&log);
  EXPECT_FALSE(Cached(log, "COPY --exclude=*.log src /e/")) << log;
  EXPECT_EQ(files["/e/b.txt"]["sha256"], Digest::Of("b2\n").hex);
}

}  // namespace
}  // namespace stagefarm::testing
