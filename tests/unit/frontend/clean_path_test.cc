#include "stagefarm/common/clean_path.h"

#include <gtest/gtest.h>

namespace stagefarm {
namespace {

TEST(CleanSlashPath, FollowsGoPathClean) {
  // Cases from Go's path.Clean documentation and tests.
  EXPECT_EQ(CleanSlashPath(""), ".");
  EXPECT_EQ(CleanSlashPath("/"), "/");
  EXPECT_EQ(CleanSlashPath("abc/"), "abc");
  EXPECT_EQ(CleanSlashPath("abc//def"), "abc/def");
  EXPECT_EQ(CleanSlashPath("./abc"), "abc");
  EXPECT_EQ(CleanSlashPath("abc/./def/.."), "abc");
  EXPECT_EQ(CleanSlashPath("../../abc"), "../../abc");
  EXPECT_EQ(CleanSlashPath("abc/../../x"), "../x");
  EXPECT_EQ(CleanSlashPath("/../abc"), "/abc");
  EXPECT_EQ(CleanSlashPath("/app/../../src/"), "/src");
}

}  // namespace
}  // namespace stagefarm
