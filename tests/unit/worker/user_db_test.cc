#include "stagefarm/worker/user_db.h"

#include <gtest/gtest.h>

namespace stagefarm::worker {
namespace {

constexpr const char* kPasswd =
    "root:x:0:0:root:/root:/bin/sh\n"
    "# a comment\n"
    "app:x:1000:1000:app:/home/app:/bin/sh\n"
    "svc:x:2000:2000::/srv:/bin/false\n";
constexpr const char* kGroup = "root:x:0:\napp:x:1000:\nstaff:x:50:app,svc\nwheel:x:10:app\n";

TEST(ResolveUser, EmptyIsRoot) {
  auto u = ResolveUserFrom("", kPasswd, kGroup);
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->uid, 0u);
  EXPECT_EQ(u->gid, 0u);
  EXPECT_EQ(u->home, "/");
}

TEST(ResolveUser, NameTakesPrimaryGroupHomeAndSupplementaryGroups) {
  auto u = ResolveUserFrom("app", kPasswd, kGroup);
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->uid, 1000u);
  EXPECT_EQ(u->gid, 1000u);
  EXPECT_EQ(u->home, "/home/app");
  EXPECT_EQ(u->additional_gids, (std::vector<gid_t>{50, 10}));
}

TEST(ResolveUser, ExplicitGroupByNameOrNumberAndNoSupplementaryGroups) {
  auto u = ResolveUserFrom("app:staff", kPasswd, kGroup);
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->gid, 50u);
  EXPECT_TRUE(u->additional_gids.empty());
  u = ResolveUserFrom("2000:7", kPasswd, kGroup);
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->uid, 2000u);
  EXPECT_EQ(u->gid, 7u);
}

TEST(ResolveUser, NumericUserNotInPasswdGetsGroupZero) {
  auto u = ResolveUserFrom("4242", kPasswd, kGroup);
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->uid, 4242u);
  EXPECT_EQ(u->gid, 0u);
}

TEST(ResolveUser, UnknownNamesAreErrorsNamingThem) {
  auto u = ResolveUserFrom("ghost", kPasswd, kGroup);
  EXPECT_EQ(u.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(u.status().message().find("unable to find user ghost"), std::string::npos);
  u = ResolveUserFrom("app:ghosts", kPasswd, kGroup);
  EXPECT_NE(u.status().message().find("unable to find group ghosts"), std::string::npos);
}

}  // namespace
}  // namespace stagefarm::worker
