#include "stagefarm/common/image_ref.h"

#include <gtest/gtest.h>

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
  EXPECT_EQ(FamiliarImageRef("docker.io/library/busybox:latest"), "busybox:latest");
  EXPECT_EQ(FamiliarImageRef("docker.io/me/app:v"), "me/app:v");
}

}  // namespace
}  // namespace stagefarm
