// `stagefarm build` as a drop-in for docker build, on the embedded farm: every -o output type
// read back by other tools (skopeo, umoci, crun, tar), --iidfile and --metadata-file, contexts
// and Dockerfiles from stdin, usage errors with exit code 2, failures showing the Dockerfile
// lines, and `image history`.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "support/images.h"
#include "support/process.h"

namespace stagefarm::testing {
namespace {

const std::string kBin = STAGEFARM_BINARY;
const std::string kSrc = STAGEFARM_SOURCE_DIR;

// One store with busybox imported and one image built, shared by the tests of this file.
class CliOutputsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    std::string out, err;
    const std::string d = dir_->path();
    ASSERT_EQ(RunCommand({kSrc + "/scripts/make-busybox-image", d + "/busybox-oci"}, &out, &err), 0)
        << err;
    ASSERT_EQ(RunCommand({kBin, "image", "import", d + "/busybox-oci", "busybox"}, &out, &err,
                         Env()),
              0)
        << err;
    std::filesystem::create_directories(d + "/ctx");
    // Two layers, the second deleting a file of the first: a whiteout the filesystem outputs
    // must honour.
    std::ofstream(d + "/ctx/Dockerfile") << "FROM busybox\n"
                                            "RUN mkdir /app && echo one > /app/a && echo two > /app/b\n"
                                            "RUN rm /app/b\n"
                                            "CMD [\"cat\", \"/app/a\"]\n";
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  static std::vector<std::string> Env() { return {"STAGEFARM_HOME=" + dir_->path() + "/home"}; }
  static std::string D() { return dir_->path(); }

  // Runs stagefarm build with `args` on the shared context; returns the exit code.
  static int Build(std::vector<std::string> args, std::string* err) {
    std::vector<std::string> argv = {kBin, "build", "--progress=plain"};
    argv.insert(argv.end(), args.begin(), args.end());
    std::string out;
    return RunCommand(argv, &out, err, Env());
  }

 private:
  static TempDir* dir_;
};

TempDir* CliOutputsTest::dir_ = nullptr;

std::string Manifest(const std::string& err) {
  std::smatch m;
  static const std::regex image(R"(image (sha256:[0-9a-f]{64}))");
  return std::regex_search(err, m, image) ? m[1].str() : "";
}

nlohmann::json SkopeoRaw(const std::string& ref) {
  std::string out, err;
  EXPECT_EQ(RunCommand({"skopeo", "inspect", "--raw", ref}, &out, &err), 0) << ref << ": " << err;
  return nlohmann::json::parse(out, nullptr, false);
}

TEST_F(CliOutputsTest, EveryOutputTypeIsReadableByOtherTools) {
  const std::string t = D();
  std::string err;
  ASSERT_EQ(Build({"-t", "out:v1", "-o", "type=docker,dest=" + t + "/docker.tar",
                   "-o", "type=oci,dest=" + t + "/gzip.tar,compression=gzip",
                   "-o", "type=oci,tar=false,dest=" + t + "/zstd-layout,compression=zstd",
                   "-o", "type=local,dest=" + t + "/rootfs", "-o", "type=tar,dest=" + t + "/fs.tar",
                   "--iidfile", t + "/iid", "--metadata-file", t + "/meta.json", t + "/ctx"},
                  &err),
            0)
      << err;
  const std::string manifest = Manifest(err);
  ASSERT_FALSE(manifest.empty()) << err;

  // docker load's format: manifest.json with the tag and the config; skopeo reads it as such.
  std::string out, serr;
  ASSERT_EQ(RunCommand({"tar", "-xOf", t + "/docker.tar", "manifest.json"}, &out, &serr), 0) << serr;
  nlohmann::json docker_manifest = nlohmann::json::parse(out);
  EXPECT_EQ(docker_manifest[0]["RepoTags"], nlohmann::json::array({"out:v1"})) << out;
  EXPECT_EQ(docker_manifest[0]["Layers"].size(), 3u) << out;
  EXPECT_EQ(RunImage("docker-archive:" + t + "/docker.tar", t + "/run-docker"), "one\n");

  // gzip layers: the manifest says so, and the image runs.
  nlohmann::json gz = SkopeoRaw("oci-archive:" + t + "/gzip.tar");
  ASSERT_EQ(gz["layers"].size(), 3u) << gz.dump();
  for (const auto& l : gz["layers"]) {
    EXPECT_EQ(l["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
  }
  EXPECT_EQ(RunImage("oci-archive:" + t + "/gzip.tar", t + "/run-gzip"), "one\n");

  // zstd layers in a layout directory; skopeo verifies every blob while copying it.
  nlohmann::json zst = SkopeoRaw("oci:" + t + "/zstd-layout");
  ASSERT_EQ(zst["layers"].size(), 3u) << zst.dump();
  EXPECT_EQ(zst["layers"][0]["mediaType"], "application/vnd.oci.image.layer.v1.tar+zstd");
  EXPECT_EQ(RunCommand({"skopeo", "copy", "oci:" + t + "/zstd-layout", "dir:" + t + "/zstd-copy"},
                       &out, &serr),
            0)
      << serr;

  // The final filesystem, with the second layer's deletion applied.
  EXPECT_EQ(ReadFileOrEmpty(t + "/rootfs/app/a"), "one\n");
  EXPECT_FALSE(std::filesystem::exists(t + "/rootfs/app/b"));
  EXPECT_TRUE(std::filesystem::exists(t + "/rootfs/bin/busybox"));
  ASSERT_EQ(RunCommand({"tar", "-tf", t + "/fs.tar"}, &out, &serr), 0) << serr;
  EXPECT_TRUE(std::regex_search(out, std::regex("(^|\n)(\\./)?app/a\n"))) << out;
  EXPECT_FALSE(std::regex_search(out, std::regex("(^|\n)(\\./)?app/b\n"))) << out;
  EXPECT_TRUE(std::regex_search(out, std::regex("(^|\n)(\\./)?bin/busybox\n"))) << out;

  // --iidfile holds the config digest, --metadata-file BuildKit's keys.
  std::string iid = ReadFileOrEmpty(t + "/iid");
  EXPECT_TRUE(std::regex_match(iid, std::regex("sha256:[0-9a-f]{64}"))) << iid;
  nlohmann::json meta = nlohmann::json::parse(ReadFileOrEmpty(t + "/meta.json"), nullptr, false);
  EXPECT_EQ(meta["containerimage.digest"], manifest) << meta.dump();
  EXPECT_EQ(meta["containerimage.config.digest"], iid) << meta.dump();
  EXPECT_EQ(meta["image.name"], "docker.io/library/out:v1") << meta.dump();

  // Compression is deterministic and remembered: exporting again gives the same gzip manifest.
  ASSERT_EQ(Build({"-o", "type=oci,dest=" + t + "/gzip2.tar,compression=gzip", t + "/ctx"}, &err),
            0)
      << err;
  EXPECT_EQ(SkopeoRaw("oci-archive:" + t + "/gzip2.tar"), gz);

  // The tag names the image in the store, and the internal compression refs stay hidden.
  ASSERT_EQ(RunCommand({kBin, "image", "ls"}, &out, &serr, Env()), 0) << serr;
  EXPECT_NE(out.find("out:v1"), std::string::npos) << out;
  EXPECT_EQ(out.find("stagefarm.internal"), std::string::npos) << out;

  // history: newest first, the step that made each layer and its size.
  ASSERT_EQ(RunCommand({kBin, "image", "history", "out:v1"}, &out, &serr, Env()), 0) << serr;
  size_t cmd = out.find("CMD");
  size_t rm = out.find("rm /app/b");
  size_t mkdir = out.find("mkdir /app");
  ASSERT_NE(rm, std::string::npos) << out;
  ASSERT_NE(mkdir, std::string::npos) << out;
  EXPECT_LT(rm, mkdir) << out;
  if (cmd != std::string::npos) {
    EXPECT_LT(cmd, rm) << out;
  }
}

TEST_F(CliOutputsTest, ContextAndDockerfileFromStdin) {
  const std::string t = D();
  std::filesystem::create_directories(t + "/stdin-ctx");
  std::ofstream(t + "/stdin-ctx/msg") << "from a tarball\n";
  std::ofstream(t + "/stdin-ctx/Dockerfile") << "FROM busybox\nCOPY msg /msg\n";
  std::ofstream(t + "/piped.Dockerfile") << "FROM busybox\nCOPY msg /piped\n";
  std::string out, err;
  ASSERT_EQ(RunCommand({"tar", "-cf", t + "/ctx.tar", "-C", t + "/stdin-ctx", "."}, &out, &err), 0);

  // A context tarball on stdin.
  std::string sh = kBin + " build --progress=plain -o type=local,dest=" + t + "/out1 - < " + t +
                   "/ctx.tar";
  ASSERT_EQ(RunCommand({"sh", "-c", sh}, &out, &err, Env()), 0) << err;
  EXPECT_EQ(ReadFileOrEmpty(t + "/out1/msg"), "from a tarball\n");

  // A Dockerfile on stdin with a directory context.
  sh = kBin + " build --progress=plain -f - -o type=local,dest=" + t + "/out2 " + t +
       "/stdin-ctx < " + t + "/piped.Dockerfile";
  ASSERT_EQ(RunCommand({"sh", "-c", sh}, &out, &err, Env()), 0) << err;
  EXPECT_EQ(ReadFileOrEmpty(t + "/out2/piped"), "from a tarball\n");

  // A Dockerfile as the whole stdin: an empty context.
  std::ofstream(t + "/only.Dockerfile") << "FROM busybox\nRUN echo alone > /alone\n";
  sh = kBin + " build --progress=plain -o type=local,dest=" + t + "/out3 - < " + t +
       "/only.Dockerfile";
  ASSERT_EQ(RunCommand({"sh", "-c", sh}, &out, &err, Env()), 0) << err;
  EXPECT_EQ(ReadFileOrEmpty(t + "/out3/alone"), "alone\n");
}

TEST_F(CliOutputsTest, UsageErrorsExitTwoAndSayWhatToDo) {
  const std::string t = D();
  std::string err;
  EXPECT_EQ(Build({"--platform", "linux/arm64", t + "/ctx"}, &err), 2);
  EXPECT_NE(err.find("linux/amd64"), std::string::npos) << err;
  // The same for one stage: refused at once, naming the line, rather than waiting for a worker.
  std::filesystem::create_directories(t + "/armctx");
  std::ofstream(t + "/armctx/Dockerfile") << "FROM busybox\nFROM --platform=linux/arm64 busybox\n"
                                             "RUN true\n";
  EXPECT_EQ(Build({t + "/armctx"}, &err), 1);
  EXPECT_NE(err.find("Dockerfile:2: FROM --platform=linux/arm64: platform linux/arm64 is not "
                     "supported by this farm (linux/amd64)"),
            std::string::npos)
      << err;
  EXPECT_EQ(Build({"-o", "type=bogus,dest=x", t + "/ctx"}, &err), 2);
  EXPECT_NE(err.find("type=oci"), std::string::npos) << err;
  EXPECT_EQ(Build({"-o", "type=oci,dest=x,compression=lz4", t + "/ctx"}, &err), 2);
  EXPECT_NE(err.find("gzip, zstd or uncompressed"), std::string::npos) << err;
  EXPECT_EQ(Build({"-o", "type=docker", t + "/ctx"}, &err), 2);
  EXPECT_NE(err.find("dest="), std::string::npos) << err;
  EXPECT_EQ(Build({t + "/no-such-dir"}, &err), 2);
  EXPECT_NE(err.find("-f PATH"), std::string::npos) << err;
  EXPECT_EQ(Build({"--no-such-flag", t + "/ctx"}, &err), 2);
}

// As docker build: a name docker's reference grammar refuses is refused before anything is
// built, with docker's reason, and nothing is written or stored under it.
TEST_F(CliOutputsTest, InvalidImageNamesAreRefusedBeforeTheBuild) {
  const std::string t = D();
  const std::string archive = t + "/badname.tar";
  struct Case {
    std::string name, reason;
  } cases[] = {
      {"Bad Name:??",
       "invalid reference format: repository name (library/Bad Name) must be "
       "lowercase"},
      {"", "invalid reference format"},
      {"UPPER", "invalid reference format: repository name (library/UPPER) must be lowercase"},
      {"x/UPPER", "invalid reference format: repository name (x/UPPER) must be lowercase"},
      {"app:" + std::string(129, 't'), "invalid reference format"},
      {std::string(256, 'a'), "repository name must not be more than 255 characters"},
      {"app@sha256:abc", "invalid reference format"},
  };
  std::string err;
  for (const Case& c : cases) {
    EXPECT_EQ(Build({"-t", c.name, "-o", "type=oci,dest=" + archive, t + "/ctx"}, &err), 2)
        << c.name << ": " << err;
    EXPECT_NE(err.find("invalid tag \"" + c.name + "\": " + c.reason), std::string::npos)
        << c.name << ": " << err;
    EXPECT_EQ(Build({"-o", "type=image,name=" + c.name, t + "/ctx"}, &err), 2) << c.name;
    if (!c.name.empty()) {  // an empty name= is no name: "type=image needs name=..."
      EXPECT_NE(err.find("invalid name \"" + c.name + "\": " + c.reason), std::string::npos)
          << c.name << ": " << err;
    }
    std::string out;
    EXPECT_EQ(
        RunCommand({kBin, "image", "import", D() + "/busybox-oci", c.name}, &out, &err, Env()), 2)
        << c.name;
    EXPECT_NE(err.find("invalid tag \"" + c.name + "\": " + c.reason), std::string::npos)
        << c.name << ": " << err;
  }
  EXPECT_FALSE(std::filesystem::exists(archive));
  std::string out;
  ASSERT_EQ(RunCommand({kBin, "image", "ls"}, &out, &err, Env()), 0) << err;
  EXPECT_EQ(out.find("Bad"), std::string::npos) << out;
  EXPECT_EQ(out.find("UPPER"), std::string::npos) << out;
}

TEST_F(CliOutputsTest, FailedStepShowsTheDockerfileLinesAroundIt) {
  const std::string t = D();
  std::filesystem::create_directories(t + "/failctx");
  std::ofstream(t + "/failctx/Dockerfile") << "FROM busybox\n"
                                              "RUN echo fine\n"
                                              "RUN echo failing now && exit 3\n"
                                              "RUN echo never\n";
  std::string err;
  EXPECT_EQ(Build({t + "/failctx"}, &err), 1) << err;
  EXPECT_NE(err.find("   2 |     RUN echo fine\n   3 | >>> RUN echo failing now && exit 3\n"
                     "   4 |     RUN echo never\n"),
            std::string::npos)
      << err;
  EXPECT_NE(err.find("exit code 3"), std::string::npos) << err;
}

// The context is content-addressed: a second build of an unchanged 10,000-file tree asks the
// store what is missing and uploads nothing.
TEST_F(CliOutputsTest, UnchangedLargeContextUploadsNothingTheSecondTime) {
  const std::string t = D();
  const std::string ctx = t + "/bigctx";
  for (int d = 0; d < 100; ++d) {
    std::string dir = ctx + "/d" + std::to_string(d);
    std::filesystem::create_directories(dir);
    for (int f = 0; f < 100; ++f) {
      std::ofstream(dir + "/f" + std::to_string(f)) << "file " << d << "/" << f << "\n";
    }
  }
  std::ofstream(ctx + "/Dockerfile") << "FROM busybox\nCOPY d7/f3 /f\n";
  std::string err;
  ASSERT_EQ(Build({ctx}, &err), 0) << err;
  std::smatch m;
  static const std::regex uploaded(R"(context: (\d+) files, .*; uploaded (\d+) blobs)");
  ASSERT_TRUE(std::regex_search(err, m, uploaded)) << err;
  EXPECT_EQ(std::stoi(m[1]), 10001) << err;
  EXPECT_GT(std::stoi(m[2]), 10000) << err;  // files and directory nodes
  ASSERT_EQ(Build({ctx}, &err), 0) << err;
  ASSERT_TRUE(std::regex_search(err, m, uploaded)) << err;
  EXPECT_EQ(m[2], "0") << err;
}

// A context over 16 MB uploads in parallel with a progress line, and arrives whole: the image
// holds every file with its content.
TEST_F(CliOutputsTest, LargeContextUploadShowsProgressAndArrivesWhole) {
  const std::string t = D();
  const std::string ctx = t + "/fatctx";
  std::filesystem::create_directories(ctx);
  for (int f = 0; f < 12; ++f) {
    std::string content(2 << 20, static_cast<char>('a' + f));
    content += std::to_string(f);
    std::ofstream(ctx + "/blob" + std::to_string(f)) << content;
  }
  std::ofstream(ctx + "/Dockerfile") << "FROM busybox\nCOPY . /ctx/\n";
  std::string err;
  ASSERT_EQ(Build({"-o", "type=local,dest=" + t + "/fatout", ctx}, &err), 0) << err;
  EXPECT_NE(err.find("uploading context: 25.2 MB of 25.2 MB (100%)"), std::string::npos) << err;
  for (int f = 0; f < 12; ++f) {
    EXPECT_EQ(ReadFileOrEmpty(t + "/fatout/ctx/blob" + std::to_string(f)),
              ReadFileOrEmpty(ctx + "/blob" + std::to_string(f)));
  }
}

// The live view in a real terminal (tmux): redrawn in place, so the finished screen shows the
// header once, the cached step as CACHED, the new step with its time, and no stray escapes.
TEST_F(CliOutputsTest, TerminalViewRedrawsInPlace) {
  const std::string t = D();
  std::filesystem::create_directories(t + "/ttyctx");
  std::ofstream(t + "/ttyctx/Dockerfile")
      << "FROM busybox\n"
         "RUN mkdir /app && echo one > /app/a && echo two > /app/b\n"
         "RUN for i in 1 2 3 4; do echo tick $i; sleep 0.3; done\n";
  // The first step is built beforehand, so the live view has a CACHED step and a running one.
  std::filesystem::create_directories(t + "/ttyctx-first");
  std::ofstream(t + "/ttyctx-first/Dockerfile")
      << "FROM busybox\n"
         "RUN mkdir /app && echo one > /app/a && echo two > /app/b\n";
  {
    std::string pre_out, pre_err;
    ASSERT_EQ(RunCommand({kBin, "build", "--progress=plain", t + "/ttyctx-first"}, &pre_out,
                         &pre_err, {"STAGEFARM_HOME=" + t + "/home"}),
              0)
        << pre_err;
  }
  const std::string sock = "stagefarm-cli-test-" + std::to_string(getpid());
  const std::string cmd = "env STAGEFARM_HOME=" + t + "/home " + kBin + " build " + t +
                          "/ttyctx; echo EXIT=$?; sleep 60";
  std::string out, err;
  ASSERT_EQ(RunCommand({"tmux", "-L", sock, "new-session", "-d", "-x", "160", "-y", "40", cmd},
                       &out, &err),
            0)
      << err;
  std::string screen;
  for (int i = 0; i < 120; ++i) {
    RunCommand({"tmux", "-L", sock, "capture-pane", "-p"}, &screen, &err);
    if (screen.find("EXIT=") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  RunCommand({"tmux", "-L", sock, "kill-server"}, &out, &err);
  EXPECT_NE(screen.find("EXIT=0"), std::string::npos) << screen;
  size_t header = screen.find("[+] Building");
  ASSERT_NE(header, std::string::npos) << screen;
  EXPECT_EQ(screen.find("[+] Building", header + 1), std::string::npos) << screen;
  EXPECT_NE(screen.find("FINISHED"), std::string::npos) << screen;
  EXPECT_NE(screen.find(" => CACHED [stage-0 1] RUN mkdir /app"), std::string::npos) << screen;
  EXPECT_TRUE(std::regex_search(screen, std::regex(R"( => \[stage-0 2\] RUN for i .*s\n)")))
      << screen;
  EXPECT_EQ(screen.find("\x1b"), std::string::npos) << screen;
}

}  // namespace
}  // namespace stagefarm::testing
