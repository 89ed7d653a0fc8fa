// Build secrets end to end on the embedded farm: `stagefarm build --secret` reaches a
// RUN --mount=type=secret and nothing else: not the image (every layer and the config scanned),
// not the build log, not the store; a new secret value does not invalidate the cache (as with
// docker build); a required secret nobody passes fails the build with exit code 1.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "stagefarm/common/digest.h"
#include "support/images.h"
#include "support/process.h"

namespace stagefarm::testing {
namespace {

const std::string kBin = STAGEFARM_BINARY;

class SecretsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(ImportBusybox(Env()));
    std::filesystem::create_directories(D() + "/ctx");
    std::ofstream(D() + "/ctx/Dockerfile")
        << "FROM busybox\n"
           "RUN --mount=type=secret,id=tok,required=true "
           "sha256sum /run/secrets/tok | cut -d' ' -f1 > /hash && cat /hash\n"
           "RUN --mount=type=secret,id=tok,env=TOK test -n \"$TOK\" && echo env-$((1+1))-ok\n";
    std::ofstream(D() + "/ctx/Dockerfile.required")
        << "FROM busybox\n"
           "RUN --mount=type=secret,id=absent,required echo never\n";
  }
  std::vector<std::string> Env() const { return {"STAGEFARM_HOME=" + D() + "/home"}; }
  std::string D() const { return dir_.path(); }

  int Build(std::vector<std::string> args, std::string* err) {
    std::vector<std::string> argv = {kBin, "build", "--progress=plain"};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(argv, nullptr, err, Env());
  }

  // Every regular file under `dir` whose bytes contain `needle`.
  static std::vector<std::string> FilesContaining(const std::string& dir,
                                                  const std::string& needle) {
    std::vector<std::string> found;
    for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
      if (!e.is_regular_file()) continue;
      std::ifstream in(e.path(), std::ios::binary);
      std::string bytes(std::istreambuf_iterator<char>(in), {});
      if (bytes.find(needle) != std::string::npos) found.push_back(e.path().string());
    }
    return found;
  }

  TempDir dir_;
};

TEST_F(SecretsTest, SecretReachesTheRunButNotTheImageLogOrStore) {
  const std::string secret = "s3cret-value-" + std::to_string(::getpid());
  std::ofstream(D() + "/tok") << secret;
  const std::string hash = Digest::Of(secret).hex;
  std::string err;
  ASSERT_EQ(Build({"--secret", "id=tok,src=" + D() + "/tok", "-o",
                   "type=oci,tar=false,dest=" + D() + "/image", D() + "/ctx"},
                  &err),
            0)
      << err;
  EXPECT_NE(err.find(hash), std::string::npos) << "the RUN saw the secret file:\n" << err;
  EXPECT_NE(err.find("env-2-ok"), std::string::npos) << "the RUN saw the secret variable:\n" << err;
  EXPECT_EQ(err.find(secret), std::string::npos) << "the secret is in the build log:\n" << err;

  // The image: its layers (uncompressed) hold the hash, and no blob (layer, config, manifest)
  // holds the secret.
  EXPECT_FALSE(FilesContaining(D() + "/image/blobs", hash).empty());
  std::vector<std::string> leaks = FilesContaining(D() + "/image", secret);
  EXPECT_TRUE(leaks.empty()) << "the secret is in " << leaks.front();
  leaks = FilesContaining(D() + "/home", secret);
  EXPECT_TRUE(leaks.empty()) << "the secret is in the store: " << leaks.front();

  // Another value: the steps are cached (the key has the mount, never the value).
  std::ofstream(D() + "/tok") << secret + "-changed";
  err.clear();
  ASSERT_EQ(Build({"--secret", "id=tok,src=" + D() + "/tok", D() + "/ctx"}, &err), 0) << err;
  EXPECT_NE(err.find("#1 CACHED"), std::string::npos) << err;
  EXPECT_NE(err.find("#2 CACHED"), std::string::npos) << err;
  EXPECT_EQ(err.find("env-2-ok"), std::string::npos) << "a step ran again:\n" << err;
}

TEST_F(SecretsTest, SecretFromTheEnvironmentByDefault) {
  // `--secret id=X` alone reads the variable X, as docker buildx does.
  std::string err;
  std::vector<std::string> argv = {kBin,       "build",  "--progress=plain", "--no-cache",
                                   "--secret", "id=tok", D() + "/ctx"};
  std::vector<std::string> env = Env();
  env.push_back("tok=from-the-environment");
  ASSERT_EQ(RunCommand(argv, nullptr, &err, env), 0) << err;
  EXPECT_NE(err.find(Digest::Of("from-the-environment").hex), std::string::npos) << err;
}

TEST_F(SecretsTest, MissingRequiredSecretFailsTheBuild) {
  std::string err;
  EXPECT_EQ(Build({"-f", D() + "/ctx/Dockerfile.required", D() + "/ctx"}, &err), 1) << err;
  EXPECT_NE(err.find("secret \"absent\" is required but was not given"), std::string::npos) << err;
  EXPECT_NE(err.find("--secret id=absent"), std::string::npos) << "says how to pass it:\n" << err;
  // A secret file that cannot be read is a usage error.
  err.clear();
  EXPECT_EQ(Build({"--secret", "id=tok,src=" + D() + "/no-such-file", D() + "/ctx"}, &err), 2)
      << err;
  EXPECT_NE(err.find("cannot read the secret file"), std::string::npos) << err;
}

TEST_F(SecretsTest, SshMountIsRefusedClearly) {
  std::ofstream(D() + "/ctx/Dockerfile.ssh") << "FROM busybox\nRUN --mount=type=ssh true\n";
  std::string err;
  EXPECT_EQ(Build({"-f", D() + "/ctx/Dockerfile.ssh", D() + "/ctx"}, &err), 1) << err;
  EXPECT_NE(err.find("RUN --mount=type=ssh is not supported"), std::string::npos) << err;
}

}  // namespace
}  // namespace stagefarm::testing
