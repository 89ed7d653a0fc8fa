#include "stagefarm/common/image_ref.h"

#include <gtest/gtest.h>

#include <vector>

namespace stagefarm {
namespace {

TEST(ImageRef, NormalizesLikeDocker) {
  EXPECT_EQ(NormalizeImageRef("busybox"), "docker.io/library/busybox:latest");
  EXPECT_EQ(NormalizeImageRef("busybox:1.36"), "docker.io/library/busybox:1.36");
  EXPECT_EQ(NormalizeImageRef("me/app"), "docker.io/me/app:latest");
  EXPECT_EQ(NormalizeImageRef("localhost:5000/app"), "localhost:5000/app:latest");
  EXPECT_EQ(NormalizeImageRef("reg.example/a/b:v1"), "reg.example/a/b:v1");
  std::string d = "@sha256:" + std::string(64, 'a');
  EXPECT_EQ(NormalizeImageRef("busybox" + d), "docker.io/library/busybox" + d);
  // docker takes an upper-case first component for a registry host (it cannot be a namespace).
  EXPECT_EQ(NormalizeImageRef("UPPER/x"), "UPPER/x:latest");
  EXPECT_EQ(NormalizeImageRef("index.docker.io/me/app"), "docker.io/me/app:latest");
  EXPECT_EQ(FamiliarImageRef("docker.io/library/busybox:latest"), "busybox:latest");
  EXPECT_EQ(FamiliarImageRef("docker.io/me/app:v"), "me/app:v");
}

// docker's reference grammar (distribution/reference v0.6.0's ParseNormalizedNamed, as BuildKit
// v0.24 vendors it): the expected messages are what that Go code printed for each input.
TEST(ImageRef, CheckAcceptsWhatDockerAcceptsAndRefusesWithItsMessage) {
  const std::string hex64(64, 'a');
  const std::vector<std::string> accepted = {"busybox",
                                             "busybox:latest",
                                             "me/app:v1",
                                             "localhost:5000/app:1",
                                             "localhost/app",
                                             "reg.example.com/team/app:1",
                                             "UPPER/x",
                                             "UPPER/x:TAG",
                                             "Reg.Example.COM/app",
                                             "a--b",
                                             "a__b",
                                             "app:_ok",
                                             "app:Tag.1-x",
                                             "[::1]:5000/app",
                                             "index.docker.io/app",
                                             "host:5000",
                                             "a.b_c/x",
                                             "app:" + std::string(128, 't'),
                                             "x/" + std::string(253, 'a'),
                                             std::string(247, 'a'),
                                             "app@sha256:" + hex64,
                                             "app:1@sha256:" + hex64,
                                             "app@sha512:" + std::string(128, 'a')};
  for (const std::string& ok : accepted) {
    EXPECT_TRUE(CheckImageRef(ok).ok()) << ok << ": " << CheckImageRef(ok).ToString();
  }
  const std::string lower = "invalid reference format: repository name (";
  const std::pair<std::string, std::string> refused[] = {
      {"Bad Name:??", lower + "library/Bad Name) must be lowercase"},
      {"", "invalid reference format"},
      {"UPPER", lower + "library/UPPER) must be lowercase"},
      {"UPPER:tag", lower + "library/UPPER) must be lowercase"},
      {"x/UPPER", lower + "x/UPPER) must be lowercase"},
      {"UPPER/UP", lower + "UP) must be lowercase"},
      {"Busybox", lower + "library/Busybox) must be lowercase"},
      {std::string(248, 'a'), "repository name must not be more than 255 characters"},
      {"x/" + std::string(254, 'a'), "repository name must not be more than 255 characters"},
      {"app:" + std::string(129, 't'), "invalid reference format"},
      {"app:-bad", "invalid reference format"},
      {".app", "invalid reference format"},
      {"app-", "invalid reference format"},
      {"-app", "invalid reference format"},
      {"a___b", "invalid reference format"},
      {"a..b", "invalid reference format"},
      {"app name", "invalid reference format"},
      {"app/", "invalid reference format"},
      {"/app", "invalid reference format"},
      {"app//x", "invalid reference format"},
      {"app:tag:tag", "invalid reference format"},
      {"reg:notaport/app", "invalid reference format"},
      {"app@sha256:abc", "invalid reference format"},
      {"app@sha256:" + std::string(63, 'a') + "g", "invalid reference format"},
      {"app@sha256:" + std::string(64, 'A'), "invalid checksum digest format"},
      {"app@sha256:" + std::string(65, 'a'), "invalid checksum digest length"},
      {"app@sha256:" + std::string(32, 'a'), "invalid checksum digest length"},
      {"app@md5:" + std::string(32, 'a'), "unsupported digest algorithm"},
      {hex64,
       "invalid repository name (" + hex64 + "), cannot specify 64-byte hexadecimal strings"},
  };
  for (const auto& [ref, message] : refused) {
    Status s = CheckImageRef(ref);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << ref;
    EXPECT_EQ(s.message(), message) << ref;
  }
}

}  // namespace
}  // namespace stagefarm
