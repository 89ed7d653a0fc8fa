// RUN --mount targets reached through a symlink of the image (/link -> /real): the runtime
// follows it and makes the mount point below /real; that stub (and the copy-up of /real) must not
// reach the layer, while what the command itself writes there does.
#include <gtest/gtest.h>

#include <filesystem>
#include <set>

#include "stagefarm/common/toc.h"
#include "stagefarm/worker/executor.h"
#include "worker_fixture.h"

namespace stagefarm::worker {
namespace {

namespace fs = std::filesystem;

class MountStubSymlinkTest : public WorkerFixture {
 protected:
  void SetUp() override {
    WorkerFixture::SetUp();
    if (HasFatalFailure()) return;
    const std::string rootfs = tmp_.path() + "/base";
    InstallBusybox(rootfs, {"sh", "true", "touch", "grep"});
    // The runtime's own mount points, as every image has them (they would stay in the layer).
    for (const char* dir : {"/proc", "/sys", "/dev"}) fs::create_directories(rootfs + dir);
    fs::create_directories(rootfs + "/real/existing");
    fs::create_symlink("/real", rootfs + "/link");        // absolute: resolved inside the rootfs
    fs::create_symlink("real", rootfs + "/rellink");      // relative
    fs::create_symlink("/nowhere/deeper", rootfs + "/dangling");  // to nothing yet
    fs::create_symlink("dangling/x", rootfs + "/chain");          // to nothing, through it
    base_ = PutLayer(rootfs, "base");
  }

  // Runs `cmd` with a tmpfs at `target`; the paths of the step's layer.
  std::set<std::string> RunWithTmpfs(const std::string& cmd, const std::string& target) {
    StepSpec s;
    s.key = "key-" + cmd + target;
    s.text = "RUN " + cmd;
    s.line = 2;
    s.argv = {"/bin/sh", "-c", cmd};
    s.env = {"PATH=/bin"};
    MountSpec m;
    m.type = MountSpec::Type::kTmpfs;
    m.target = target;
    s.mounts = {m};
    StageTask t;
    t.task_id = "task-" + target;
    t.base_layers = {base_};
    t.steps = {s};
    std::string log;
    Executor ex(options_);
    TaskDone done = ex.Run(t, cache_, [&](const TaskEvent& e) {
      if (e.kind == TaskEvent::Kind::kLog) log += e.log;
    });
    EXPECT_TRUE(done.status.ok()) << done.status.ToString() << "\n" << log;
    std::set<std::string> out;
    if (!done.status.ok()) return out;
    auto toc = Toc::Parse(*cache_.ReadBytes(done.layers[0].toc));
    EXPECT_TRUE(toc.ok());
    for (const auto& e : toc->entries) out.insert(e.path);
    return out;
  }

  LayerRef base_;
};

TEST_F(MountStubSymlinkTest, StubBelowAnAbsoluteSymlinkStaysOutOfTheLayer) {
  std::set<std::string> paths = RunWithTmpfs("true", "/link/m");
  EXPECT_TRUE(paths.empty()) << "leaked: " << *paths.begin();
}

TEST_F(MountStubSymlinkTest, StubsOfMissingDirsBelowARelativeSymlinkStayOutOfTheLayer) {
  std::set<std::string> paths = RunWithTmpfs("true", "/rellink/a/b/m");
  EXPECT_TRUE(paths.empty()) << "leaked: " << *paths.begin();
}

// runc (docker build) makes the directories a symlink leading nowhere names, and mounts there;
// crun alone would refuse. The mount is where the symlink leads; the directories made for it
// are stubs, while what the command writes beside them stays.
TEST_F(MountStubSymlinkTest, StubsBelowADanglingSymlinkStayOutOfTheLayer) {
  std::set<std::string> paths =
      RunWithTmpfs("grep -q ' /nowhere/deeper/a/m tmpfs' /proc/mounts", "/dangling/a/m");
  EXPECT_TRUE(paths.empty()) << "leaked: " << *paths.begin();
  paths = RunWithTmpfs("grep -q ' /nowhere/deeper/x/m tmpfs' /proc/mounts", "/chain/m");
  EXPECT_TRUE(paths.empty()) << "leaked: " << *paths.begin();
  paths = RunWithTmpfs("touch /nowhere/kept", "/dangling/m");
  EXPECT_EQ(paths, (std::set<std::string>{"nowhere", "nowhere/kept"}));
}

TEST_F(MountStubSymlinkTest, WhatTheCommandWritesBesideTheStubIsKept) {
  std::set<std::string> paths = RunWithTmpfs("touch /real/kept", "/link/existing/m");
  EXPECT_EQ(paths, (std::set<std::string>{"real", "real/kept"}));
}

}  // namespace
}  // namespace stagefarm::worker
