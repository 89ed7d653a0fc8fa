#include "stagefarm/worker/user_db.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <future>

#include "stagefarm/worker/fs_util.h"

namespace stagefarm::worker {
namespace {

constexpr const char* kPasswd =
    "root:x:0:0:root:/root:/bin/sh\n"
    "# a comment\n"
    "app:x:1000:1000:app:/home/app:/bin/sh\n"
    "svc:x:2000:2000::/srv:/bin/false\n";
constexpr const char* kGroup = "root:x:0:\napp:x:1000:\nstaff:x:50:app,svc\nwheel:x:10:app\n";

// No USER is uid 0 as /etc/passwd has it: BuildKit's RUN sees HOME=/root in busybox, HOME=/ in
// an image without /etc/passwd (checked against v0.24).
TEST(ResolveUser, EmptyIsRoot) {
  auto u = ResolveUserFrom("", kPasswd, kGroup);
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->uid, 0u);
  EXPECT_EQ(u->gid, 0u);
  EXPECT_EQ(u->home, "/root");
  u = ResolveUserFrom("", "", "");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->uid, 0u);
  EXPECT_EQ(u->home, "/");
}

TEST(ResolveUser, NameTakesPrimaryGroupHomeAndSupplementaryGroups) {
  auto u = ResolveUserFrom("app", kPasswd, kGroup);
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->uid, 1000u);
  EXPECT_EQ(u->gid, 1000u);
  EXPECT_EQ(u->home, "/home/app");
  // The primary group first, as BuildKit's executor lists it.
  EXPECT_EQ(u->additional_gids, (std::vector<gid_t>{1000, 50, 10}));
}

TEST(ResolveUser, ExplicitGroupByNameOrNumberAndNoSupplementaryGroups) {
  auto u = ResolveUserFrom("app:staff", kPasswd, kGroup);
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->gid, 50u);
  EXPECT_EQ(u->additional_gids, std::vector<gid_t>{50});
  u = ResolveUserFrom("2000:7", kPasswd, kGroup);
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->uid, 2000u);
  EXPECT_EQ(u->gid, 7u);
}

// RUN's HOME is what runc finds for the uid in /etc/passwd (the first entry with it), whatever
// USER's form; "/" without one (checked against BuildKit v0.24 with runc 1.1).
TEST(ResolveUser, HomeIsTheFirstPasswdEntryOfTheUid) {
  const std::string passwd = std::string(kPasswd) + "toor:x:0:0::/toor:/bin/sh\n";
  for (auto [spec, home] : std::vector<std::pair<const char*, const char*>>{
           {"1000:1000", "/home/app"},
           {"1000", "/home/app"},
           {"app:staff", "/home/app"},
           {"toor", "/root"},
           {"0:0", "/root"},
           {"root:root", "/root"},
           {"4242:4242", "/"},
       }) {
    auto u = ResolveUserFrom(spec, passwd, kGroup);
    ASSERT_TRUE(u.ok()) << spec << ": " << u.status().ToString();
    EXPECT_EQ(u->home, home) << spec;
  }
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

// The rootfs is the build's own: a RUN step can leave a FIFO where /etc/group was (open(2) would
// wait for a writer for ever) or a device node (the host's device). Only regular files are read;
// symlinks are followed inside the root as before.
TEST(ResolveUser, AFifoOrADeviceAsEtcGroupIsAnErrorNotAHang) {
  auto tmp = TempDir::Make("/tmp", "sf-user-db-test-");
  ASSERT_TRUE(tmp.ok()) << tmp.status().ToString();
  const std::string root = tmp->path();
  ASSERT_TRUE(MakeDirs(root + "/etc").ok());
  ASSERT_TRUE(MakeDirs(root + "/srv").ok());
  ASSERT_TRUE(WriteFile(root + "/srv/passwd", kPasswd).ok());
  std::filesystem::create_symlink("/srv/passwd", root + "/etc/passwd");
  const std::string group = root + "/etc/group";
  ASSERT_EQ(::mkfifo(group.c_str(), 0644), 0);
  UniqueFd root_fd(::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(root_fd);

  auto resolved =
      std::async(std::launch::async, [&] { return ResolveUser(root_fd.get(), "app"); });
  const bool answered = resolved.wait_for(std::chrono::seconds(2)) == std::future_status::ready;
  if (!answered) {
    // A writer that comes and goes lets the hung open return (and its read see the end), so the
    // test fails instead of hanging.
    UniqueFd writer(::open(group.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC));
    EXPECT_TRUE(writer) << "open " << group << " for writing: " << std::strerror(errno);
  }
  StatusOr<ResolvedUser> user = resolved.get();
  ASSERT_TRUE(answered) << "ResolveUser waited on a FIFO";
  EXPECT_EQ(user.status().code(), StatusCode::kInvalidArgument) << user.status().ToString();
  EXPECT_NE(user.status().message().find("/etc/group in the rootfs is not a regular file"),
            std::string::npos)
      << user.status().ToString();

  // /dev/null's numbers: harmless to open, and empty, so only the type check can refuse it.
  ASSERT_EQ(::unlink(group.c_str()), 0);
  ASSERT_EQ(::mknod(group.c_str(), S_IFCHR | 0644, makedev(1, 3)), 0) << std::strerror(errno);
  user = ResolveUser(root_fd.get(), "app");
  EXPECT_EQ(user.status().code(), StatusCode::kInvalidArgument) << user.status().ToString();

  ASSERT_EQ(::unlink(group.c_str()), 0);
  ASSERT_TRUE(WriteFile(group, kGroup).ok());
  user = ResolveUser(root_fd.get(), "app");
  ASSERT_TRUE(user.ok()) << user.status().ToString();
  EXPECT_EQ(user->uid, 1000u);
  EXPECT_EQ(user->additional_gids, (std::vector<gid_t>{1000, 50, 10}));
}

// BuildKit's executor takes "uid:gid" (each a number or "root") without reading any file; any
// other name needs /etc/passwd, even "root" (checked against v0.24 on an image without one).
TEST(ResolveUser, UidGidPairsNeedNoFilesButNamesDo) {
  for (const char* spec : {"root:root", "0:0", "root:0"}) {
    auto u = ResolveUserFrom(spec, "", "");
    ASSERT_TRUE(u.ok()) << spec << ": " << u.status().ToString();
    EXPECT_EQ(u->uid, 0u);
    EXPECT_EQ(u->gid, 0u);
    EXPECT_EQ(u->additional_gids, std::vector<gid_t>{0});
  }
  auto u = ResolveUserFrom("1000:root", "", "");
  ASSERT_TRUE(u.ok()) << u.status().ToString();
  EXPECT_EQ(u->uid, 1000u);
  EXPECT_EQ(u->gid, 0u);
  u = ResolveUserFrom("root", "", "");
  EXPECT_NE(u.status().message().find("unable to find user root"), std::string::npos);
  u = ResolveUserFrom("root:nogroup", "", "");
  EXPECT_NE(u.status().message().find("unable to find user root"), std::string::npos);
  u = ResolveUserFrom("", "", "");
  ASSERT_TRUE(u.ok()) << u.status().ToString();
  EXPECT_EQ(u->uid, 0u);
  EXPECT_EQ(u->additional_gids, std::vector<gid_t>{0});
}

// COPY --chown and WORKDIR: BuildKit's file operations read the names in the files and take 0
// for a user name they do not find (with or without /etc/passwd) and keep the gid for a group
// name they do not find; never an error (checked against v0.24).
TEST(ResolveOwner, NamesNotFoundAreZeroNotErrors) {
  struct Case {
    const char* spec;
    const char* passwd;
    uid_t uid;
    gid_t gid;
  } cases[] = {
      {"root", "", 0, 0},
      {"root:root", "", 0, 0},
      {"nobody", "", 0, 0},
      {"1000:root", "", 1000, 0},
      {"1000", "", 1000, 1000},
      {":7", "", 0, 7},
      {"1000:nogroup", "", 1000, 1000},
      {"root", "root:x:0:5::/:/bin/sh\n", 0, 0},
      {"ghost", kPasswd, 0, 0},
      {"ghost:ghosts", kPasswd, 0, 0},
      {"app", kPasswd, 1000, 1000},
      {"app:staff", kPasswd, 1000, 50},
      {"app:ghosts", kPasswd, 1000, 1000},
      {"svc:7", kPasswd, 2000, 7},
      {"", kPasswd, 0, 0},
  };
  for (const Case& c : cases) {
    ResolvedUser owner = ResolveOwnerFrom(c.spec, c.passwd, c.passwd[0] ? kGroup : "");
    EXPECT_EQ(owner.uid, c.uid) << c.spec;
    EXPECT_EQ(owner.gid, c.gid) << c.spec;
    EXPECT_TRUE(owner.additional_gids.empty()) << c.spec;
  }
}

TEST(ResolveOwner, RootByNameInARootfsWithoutEtcPasswd) {
  auto tmp = TempDir::Make("/tmp", "sf-user-db-test-");
  ASSERT_TRUE(tmp.ok()) << tmp.status().ToString();
  UniqueFd root_fd(::open(tmp->path().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(root_fd);
  auto owner = ResolveOwner(root_fd.get(), "root");
  ASSERT_TRUE(owner.ok()) << owner.status().ToString();
  EXPECT_EQ(owner->uid, 0u);
  EXPECT_EQ(owner->gid, 0u);
  EXPECT_FALSE(ResolveUser(root_fd.get(), "root").ok()) << "RUN as root needs /etc/passwd";
}

}  // namespace
}  // namespace stagefarm::worker
