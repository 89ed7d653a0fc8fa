// Pulls and pushes against Debian's docker-registry on 127.0.0.1, anonymous and with basic auth
// (htpasswd, credentials from a DOCKER_CONFIG directory): `image push` read back by skopeo and
// run with crun, `image pull` giving the same image, a `FROM localhost:PORT/base:tag` build that
// pulls once and downloads nothing the second time, `-o type=image,push=true`, cross-repository
// mounts, chunked uploads, and the 401 error.
#include "stagefarm/common/registry.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <regex>

#include "support/images.h"
#include "support/process.h"

namespace stagefarm::testing {
namespace {

const std::string kBin = STAGEFARM_BINARY;

int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(fd);
    return 0;
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

// A docker-registry on 127.0.0.1 with its own storage, killed with its owner. With a user, it
// asks for basic auth checked against a bcrypt htpasswd file.
class Registry {
 public:
  explicit Registry(const std::string& user = "", const std::string& password = "") {
    port_ = FreePort();
    std::string auth;
    if (!user.empty()) {
      std::string out, err;
      EXPECT_EQ(RunCommand({"htpasswd", "-Bbn", user, password}, &out, &err), 0) << err;
      std::ofstream(dir_.path() + "/htpasswd") << out;
      auth =
          "auth:\n  htpasswd:\n    realm: stagefarm-test\n    path: " + dir_.path() + "/htpasswd\n";
    }
    std::ofstream(dir_.path() + "/config.yml")
        << "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: "
        << dir_.path() << "/data\nhttp:\n  addr: 127.0.0.1:" << port_ << "\n"
        << auth;
    process_ = std::make_unique<ChildProcess>(
        std::vector<std::string>{"docker-registry", "serve", dir_.path() + "/config.yml"},
        dir_.path() + "/registry");
    ready_ =
        process_->WaitForStderr(std::regex("listening on"), std::chrono::seconds(20)).has_value();
  }
  bool ready() const { return ready_; }
  std::string host() const { return "localhost:" + std::to_string(port_); }
  // The access log: one line per request.
  std::string Log() const { return process_->Stdout() + process_->Stderr(); }
  int Count(const std::string& request) const {
    std::string log = Log();
    int n = 0;
    for (size_t at = log.find(request); at != std::string::npos; at = log.find(request, at + 1)) {
      ++n;
    }
    return n;
  }
  std::string Stderr() const { return process_->Stderr(); }

 private:
  TempDir dir_;
  int port_ = 0;
  std::unique_ptr<ChildProcess> process_;
  bool ready_ = false;
};

class RegistryTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    ASSERT_TRUE(ImportBusybox(Home("src")));
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  static std::vector<std::string> Home(const std::string& name,
                                       const std::string& docker_config = "") {
    return {"STAGEFARM_HOME=" + dir_->path() + "/" + name,
            "DOCKER_CONFIG=" +
                (docker_config.empty() ? dir_->path() + "/no-docker-config" : docker_config)};
  }
  // Runs stagefarm with `args` in `env`; stdout and stderr together in *output.
  static int Run(std::vector<std::string> args, const std::vector<std::string>& env,
                 std::string* output) {
    args.insert(args.begin(), kBin);
    std::string out, err;
    int rc = RunCommand(args, &out, &err, env);
    *output = out + err;
    return rc;
  }
  // A DOCKER_CONFIG directory holding `user:password` for `host`.
  static std::string DockerConfig(const std::string& name, const std::string& host,
                                  const std::string& user_password) {
    std::string d = dir_->path() + "/" + name;
    std::filesystem::create_directories(d);
    std::string out, err;
    EXPECT_EQ(RunCommand({"sh", "-c", "printf %s \"$0\" | base64 -w0", user_password}, &out, &err),
              0);
    std::ofstream(d + "/config.json")
        << R"({"auths":{")" << host << R"(":{"auth":")" << out << R"("}}})";
    return d;
  }
  static std::string Match(const std::string& text, const std::string& re) {
    std::smatch m;
    return std::regex_search(text, m, std::regex(re)) ? m[1].str() : "";
  }
  static std::string D() { return dir_->path(); }
  static std::string StoredManifest(const std::string& home, const std::string& name) {
    std::string out;
    EXPECT_EQ(Run({"image", "inspect", name}, Home(home), &out), 0) << out;
    return Match(out, R"re("Manifest": "(sha256:[0-9a-f]{64})")re");
  }

 private:
  static TempDir* dir_;
};

TempDir* RegistryTest::dir_ = nullptr;

TEST_F(RegistryTest, PushedImageReadsBackThroughSkopeoCrunAndPull) {
  Registry registry;
  ASSERT_TRUE(registry.ready()) << registry.Stderr();
  const std::string dest = registry.host() + "/tools/busybox:1";
  std::string out;
  ASSERT_EQ(Run({"image", "push", "busybox", dest}, Home("src"), &out), 0) << out;
  const std::string pushed = Match(out, R"(pushed \S+@(sha256:[0-9a-f]{64}): 2 blobs uploaded)");
  ASSERT_FALSE(pushed.empty()) << out;

  std::string sk, err;
  ASSERT_EQ(RunCommand({"skopeo", "inspect", "--tls-verify=false", "docker://" + dest}, &sk, &err),
            0)
      << err;
  EXPECT_NE(sk.find(pushed), std::string::npos) << sk;
  ASSERT_EQ(RunCommand({"skopeo", "copy", "--src-tls-verify=false", "docker://" + dest,
                        "oci-archive:" + D() + "/pushed.tar"},
                       &sk, &err),
            0)
      << err;
  EXPECT_EQ(RunImage("oci-archive:" + D() + "/pushed.tar", D() + "/run"), "");

  // Pulled into an empty store: the registry digest is the pushed one, and the stored image is
  // the one pushed (layers stored uncompressed again, same TOCs, same manifest).
  ASSERT_EQ(Run({"image", "pull", dest}, Home("pulled"), &out), 0) << out;
  EXPECT_EQ(Match(out, "resolved \\S+ to (sha256:[0-9a-f]{64})"), pushed) << out;
  EXPECT_NE(out.find("downloaded"), std::string::npos) << out;
  EXPECT_EQ(StoredManifest("pulled", dest), StoredManifest("src", "busybox"));
  int blob_gets = registry.Count("GET /v2/tools/busybox/blobs/");
  ASSERT_EQ(Run({"image", "pull", dest}, Home("pulled"), &out), 0) << out;
  EXPECT_NE(out.find("already in the store"), std::string::npos) << out;
  EXPECT_EQ(registry.Count("GET /v2/tools/busybox/blobs/"), blob_gets);

  // Another repository of the same registry: the blobs are mounted, not uploaded.
  ASSERT_EQ(Run({"image", "push", "busybox", registry.host() + "/other:2"}, Home("src"), &out), 0)
      << out;
  EXPECT_NE(out.find("0 blobs uploaded (0 B), 0 already there, 2 mounted"), std::string::npos)
      << out;
  EXPECT_GE(registry.Count("mount=sha256"), 2) << registry.Log();
}

TEST_F(RegistryTest, BuildFromRegistryBasePullsOnceThenIsCachedAndPushes) {
  Registry registry;
  ASSERT_TRUE(registry.ready()) << registry.Stderr();
  std::string out;
  const std::string base = registry.host() + "/base:tag";
  ASSERT_EQ(Run({"image", "push", "busybox", base, "--compression", "zstd"}, Home("src"), &out), 0)
      << out;
  const std::string ctx = D() + "/build-ctx";
  std::filesystem::create_directories(ctx);
  // The base comes through a build arg: the client must expand ARGs to find it.
  std::ofstream(ctx + "/Dockerfile") << "ARG BASE=" << registry.host() << "/nothing:here\n"
                                     << "FROM ${BASE}\nRUN echo built > /built\n"
                                        "CMD [\"cat\", \"/built\"]\n";
  const std::vector<std::string> build = {"build", "--progress=plain", "--build-arg",
                                          "BASE=" + base, ctx};
  ASSERT_EQ(Run(build, Home("builder"), &out), 0) << out;
  EXPECT_NE(out.find("resolved " + base + " to sha256:"), std::string::npos) << out;
  EXPECT_NE(out.find("pulled " + base), std::string::npos) << out;
  const int blob_gets = registry.Count("GET /v2/base/blobs/");
  EXPECT_EQ(blob_gets, 2) << registry.Log();  // the config and the one layer
  ASSERT_EQ(Run(build, Home("builder"), &out), 0) << out;
  EXPECT_NE(out.find("resolved " + base + " to sha256:"), std::string::npos) << out;
  EXPECT_NE(out.find("already in the store"), std::string::npos) << out;
  EXPECT_NE(out.find("CACHED"), std::string::npos) << out;
  EXPECT_EQ(registry.Count("GET /v2/base/blobs/"), blob_gets) << "the second build downloaded";

  const std::string app = registry.host() + "/app:v1";
  std::vector<std::string> push = build;
  push.insert(push.end() - 1, {"-o", "type=image,name=" + app + ",push=true"});
  ASSERT_EQ(Run(push, Home("builder"), &out), 0) << out;
  EXPECT_NE(out.find("pushed " + app + "@sha256:"), std::string::npos) << out;
  std::string sk, err;
  ASSERT_EQ(RunCommand({"skopeo", "copy", "--src-tls-verify=false", "docker://" + app,
                        "oci-archive:" + D() + "/app.tar"},
                       &sk, &err),
            0)
      << err;
  EXPECT_EQ(RunImage("oci-archive:" + D() + "/app.tar", D() + "/run-app"), "built\n");
}

TEST_F(RegistryTest, BasicAuthFromDockerConfigAndAClear401) {
  Registry registry("alice", "s3cret");
  ASSERT_TRUE(registry.ready()) << registry.Stderr();
  const std::string good = DockerConfig("good-config", registry.host(), "alice:s3cret");
  const std::string bad = DockerConfig("bad-config", registry.host(), "alice:wrong");
  const std::string dest = registry.host() + "/private/busybox:1";
  std::string out;
  ASSERT_EQ(Run({"image", "push", "busybox", dest}, Home("src", bad), &out), 1) << out;
  EXPECT_NE(out.find("unauthorized: log in with docker login or put credentials in "
                     "~/.docker/config.json"),
            std::string::npos)
      << out;
  ASSERT_EQ(Run({"image", "pull", dest}, Home("auth-pull"), &out), 1) << out;
  EXPECT_NE(out.find("unauthorized"), std::string::npos) << out;

  ASSERT_EQ(Run({"image", "push", "busybox", dest}, Home("src", good), &out), 0) << out;
  std::string sk, err;
  EXPECT_EQ(RunCommand({"skopeo", "inspect", "--tls-verify=false", "--creds", "alice:s3cret",
                        "docker://" + dest},
                       &sk, &err),
            0)
      << err;
  ASSERT_EQ(Run({"image", "pull", dest}, Home("auth-pull", good), &out), 0) << out;

  const std::string ctx = D() + "/auth-ctx";
  std::filesystem::create_directories(ctx);
  std::ofstream(ctx + "/Dockerfile") << "FROM " << dest << "\nRUN echo auth > /a\n";
  ASSERT_EQ(Run({"build", "--progress=plain", "-o",
                 "type=image,name=" + registry.host() + "/private/app:1,push=true", ctx},
                Home("auth-build", good), &out),
            0)
      << out;
  EXPECT_NE(out.find("pushed " + registry.host() + "/private/app:1@"), std::string::npos) << out;
}

TEST_F(RegistryTest, LargeBlobsAreUploadedInChunksAndVerified) {
  Registry registry;
  ASSERT_TRUE(registry.ready()) << registry.Stderr();
  std::string blob(300 * 1024 + 7, '\0');
  std::mt19937 rng(7);
  for (char& c : blob) c = static_cast<char>(rng());
  Digest d = Digest::Of(blob);
  RegistryOptions o;
  o.chunk_size = 64 * 1024;
  RegistryClient client(o);
  RegistryRef ref = *ParseRegistryRef(registry.host() + "/chunks:1");
  auto read = [&](uint64_t offset, uint64_t length, const ByteSink& sink) {
    return sink(std::string_view(blob).substr(offset, length));
  };
  StatusOr<BlobPush> pushed = client.PushBlob(ref, d, read);
  ASSERT_TRUE(pushed.ok()) << pushed.status().ToString();
  EXPECT_EQ(*pushed, BlobPush::kUploaded);
  EXPECT_EQ(registry.Count("\"PATCH /v2/chunks/blobs/uploads/"), 5) << registry.Log();
  pushed = client.PushBlob(ref, d, read);
  ASSERT_TRUE(pushed.ok()) << pushed.status().ToString();
  EXPECT_EQ(*pushed, BlobPush::kExisted);
  TempDir out;
  ASSERT_TRUE(client.FetchBlobToFile(ref, d, out.path() + "/blob").ok());
  EXPECT_EQ(ReadFileOrEmpty(out.path() + "/blob"), blob);

  // Bytes that do not match the digest never become a blob.
  Digest wrong = Digest::Of("something else");
  wrong.size = blob.size();
  StatusOr<BlobPush> refused = client.PushBlob(ref, wrong, read);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kDataLoss) << refused.status().ToString();
}

}  // namespace
}  // namespace stagefarm::testing
