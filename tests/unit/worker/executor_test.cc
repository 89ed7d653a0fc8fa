// The execution engine against real crun and overlayfs (needs root): a busybox base layer made in
// the test, steps run through Executor::Run, layers checked through their TOCs.
#include "stagefarm/worker/executor.h"

#include <gtest/gtest.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include "stagefarm/common/context_tree.h"
#include "stagefarm/common/layer_tar.h"
#include "stagefarm/common/toc.h"
#include "stagefarm/worker/fs_util.h"
#include "stagefarm/worker/host_check.h"
#include "stagefarm/worker/overlay_mount.h"
#include "support/fake_cache_client.h"
#include "worker_fixture.h"

namespace stagefarm::worker {
namespace {

namespace fs = std::filesystem;
using testing::FakeCacheClient;

void WriteText(const std::string& path, const std::string& text) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path) << text;
}

class ExecutorTest : public WorkerFixture {
 protected:
  void SetUp() override {
    WorkerFixture::SetUp();
    if (HasFatalFailure()) return;
    base_ = MakeBusyboxLayer();
  }

  // A rootfs with busybox and its applets, /etc/passwd, /etc/group and /etc/motd; no /proc,
  // /sys, /dev or /etc/hosts, so the runtime has to create those mount points.
  LayerRef MakeBusyboxLayer() {
    std::string rootfs = tmp_.path() + "/busybox";
    fs::create_directories(rootfs + "/bin");
    fs::copy_file("/bin/busybox", rootfs + "/bin/busybox");
    for (const char* applet : {"sh", "id", "pwd", "env", "cat", "ls", "echo", "rm", "sleep",
                               "touch", "mkdir", "stat", "grep", "wc"}) {
      fs::create_symlink("busybox", rootfs + "/bin/" + applet);
    }
    WriteText(rootfs + "/etc/passwd",
              "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n");
    WriteText(rootfs + "/etc/group", "root:x:0:\napp:x:1000:\nstaff:x:50:app\n");
    WriteText(rootfs + "/etc/motd", "welcome\n");
    return PutLayer(rootfs, "busybox");
  }

  // A step on line 2 of the Dockerfile.
  static StepSpec Step(StepKind kind, const std::string& text, const std::string& key) {
    StepSpec s;
    s.key = key;
    s.kind = kind;
    s.line = 2;
    s.text = text;
    return s;
  }

  static StepSpec Workdir(const std::string& path, const std::string& user,
                          const std::string& key) {
    StepSpec s = Step(StepKind::kWorkdir, "WORKDIR " + path, key);
    s.created_by = s.text;
    s.user = user;
    s.workdir = path;
    return s;
  }

  static StepSpec Run(const std::string& cmd, const std::string& key) {
    StepSpec s = Step(StepKind::kRun, "RUN " + cmd, key);
    s.created_by = "RUN /bin/sh -c " + cmd;
    s.argv = {"/bin/sh", "-c", cmd};
    s.env = {"PATH=/bin"};
    return s;
  }

  StageTask Task(std::vector<StepSpec> steps) {
    StageTask t;
    t.task_id = "task-" + std::to_string(++tasks_);
    t.base_layers = {base_};
    t.steps = std::move(steps);
    return t;
  }

  TaskDone Execute(Executor& ex, const StageTask& task) {
    log_.clear();
    events_.clear();
    return ex.Run(task, cache_, [&](const TaskEvent& e) {
      events_.push_back(e);
      if (e.kind == TaskEvent::Kind::kLog) log_ += e.log;
    });
  }

  std::map<std::string, TocEntry> TocOf(const LayerRef& layer) {
    auto bytes = cache_.ReadBytes(layer.toc);
    EXPECT_TRUE(bytes.ok());
    auto toc = Toc::Parse(*bytes);
    EXPECT_TRUE(toc.ok());
    std::map<std::string, TocEntry> out;
    for (const auto& e : toc->entries) out[e.path] = e;
    return out;
  }

  LayerRef base_;
  std::string log_;
  std::vector<TaskEvent> events_;
  int tasks_ = 0;
};

// As BuildKit's: the files bind-mounted over /etc are stubs that never reach the layer, while
// the mount points /proc, /sys and /dev the image lacked stay in it as runc makes them.
TEST_F(ExecutorTest, RunWritesFileIntoLayerWithoutRuntimeMountPoints) {
  Executor ex(options_);
  TaskDone done = Execute(ex, Task({Run("echo hi > /hello; echo done", "k1")}));
  ASSERT_TRUE(done.status.ok()) << done.status.ToString() << "\n" << log_;
  ASSERT_EQ(done.layers.size(), 1u);
  EXPECT_EQ(log_, "done\n");
  auto toc = TocOf(done.layers[0]);
  EXPECT_TRUE(toc.count("hello"));
  for (const char* p : {"etc/hosts", "etc/resolv.conf", "etc/hostname"}) {
    EXPECT_FALSE(toc.count(p)) << p << " leaked into the layer";
  }
  for (const char* p : {"proc", "sys", "dev"}) {
    ASSERT_TRUE(toc.count(p)) << p << " is missing from the layer";
    EXPECT_EQ(toc[p].type, TocType::kDir) << p;
    EXPECT_EQ(toc[p].mode, 0755u) << p;
    EXPECT_EQ(toc[p].uid, 0u) << p;
  }
  std::string paths;
  for (const auto& [path, e] : toc) paths += " " + path;
  EXPECT_EQ(toc.size(), 4u) << "hello, proc, sys and dev only:" << paths;
  auto action = cache_.GetAction("k1");
  ASSERT_TRUE(action.ok() && action->has_value());
  EXPECT_EQ((*action)->layer, done.layers[0]);
  ASSERT_EQ(events_.front().kind, TaskEvent::Kind::kStepStarted);
  EXPECT_EQ(events_.back().kind, TaskEvent::Kind::kStepDone);
  EXPECT_EQ(events_.back().layer, done.layers[0]);
}

// BuildKit binds /etc/hosts and /etc/resolv.conf over the image's, never /etc/hostname: the
// command sees the image's own (here none).
TEST_F(ExecutorTest, RunSeesHostsAndResolvConfButNoHostnameFile) {
  Executor ex(options_);
  TaskDone done = Execute(
      ex, Task({Run("for f in hosts resolv.conf hostname; do test -e /etc/$f && echo $f; done; "
                    "grep -c localhost /etc/hosts",
                    "k1")}));
  ASSERT_TRUE(done.status.ok()) << done.status.ToString() << "\n" << log_;
  EXPECT_EQ(log_, "hosts\nresolv.conf\n2\n");
}

// A step's layer streams to the cache as it is written; when the stream cannot start (the
// server unreachable for a moment), the layer is written to a file and uploaded from there, and
// both ways store the same bytes.
TEST_F(ExecutorTest, LayersStreamToTheCacheOrFallBackToAFile) {
  Executor ex(options_);
  const int puts_before = cache_.puts;
  TaskDone streamed = Execute(ex, Task({Run("echo hi > /hello", "k1")}));
  ASSERT_TRUE(streamed.status.ok()) << streamed.status.ToString() << "\n" << log_;
  ASSERT_EQ(streamed.layers.size(), 1u);
  EXPECT_EQ(cache_.streamed_puts, 1);
  EXPECT_EQ(cache_.puts, puts_before + 1);  // the TOC only

  cache_.streamed_failure = UnavailableError("cache server restarting");
  TaskDone from_file = Execute(ex, Task({Run("echo hi > /hello", "k2")}));
  ASSERT_TRUE(from_file.status.ok()) << from_file.status.ToString() << "\n" << log_;
  ASSERT_EQ(from_file.layers.size(), 1u);
  EXPECT_EQ(cache_.streamed_puts, 1);
  EXPECT_EQ(cache_.puts, puts_before + 3);  // the layer and its TOC
  // mtimes are whole seconds in the tar: the two steps may differ by one. Files and sizes agree.
  auto a = TocOf(streamed.layers[0]), b = TocOf(from_file.layers[0]);
  ASSERT_TRUE(a.count("hello") && b.count("hello"));
  EXPECT_EQ(a["hello"].digest, b["hello"].digest);
  auto bytes = cache_.ReadBytes(from_file.layers[0].diff_id);
  ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
  EXPECT_EQ(Digest::Of(*bytes), from_file.layers[0].diff_id);
}

TEST_F(ExecutorTest, FailingRunReportsExitCodeAndLogTail) {
  Executor ex(options_);
  TaskDone done = Execute(ex, Task({Run("true", "a"), Run("echo one; echo two >&2; exit 3", "b")}));
  EXPECT_FALSE(done.status.ok());
  EXPECT_EQ(done.failed_step, 1);
  EXPECT_EQ(done.exit_code, 3);
  EXPECT_EQ(done.log_tail, "one\ntwo\n");
  EXPECT_NE(done.status.message().find("exit code: 3"), std::string::npos)
      << done.status.ToString();
  EXPECT_EQ(done.layers.size(), 1u);
  auto action = cache_.GetAction("b");
  EXPECT_TRUE(action.ok() && !action->has_value()) << "failed steps are not cached";
}

TEST_F(ExecutorTest, RunSeesUserEnvAndWorkdir) {
  Executor ex(options_);
  StepSpec s = Run("id; pwd; env", "k");
  s.user = "app";
  s.env.push_back("FOO=bar");
  s.workdir = "/work/dir";
  TaskDone done = Execute(ex, Task({s}));
  ASSERT_TRUE(done.status.ok()) << done.status.ToString() << "\n" << log_;
  EXPECT_NE(log_.find("uid=1000(app) gid=1000(app) groups=50(staff)"), std::string::npos) << log_;
  EXPECT_NE(log_.find("\n/work/dir\n"), std::string::npos) << log_;
  EXPECT_NE(log_.find("FOO=bar"), std::string::npos) << log_;
  EXPECT_NE(log_.find("HOME=/home/app"), std::string::npos) << log_;
  auto toc = TocOf(done.layers[0]);
  ASSERT_TRUE(toc.count("work/dir")) << "WORKDIR is created";
  EXPECT_EQ(toc["work/dir"].uid, 1000u);
}

TEST_F(ExecutorTest, WorkdirMakesItsDirectoriesOwnedByTheUser) {
  // BuildKit's mkdir -p: every directory it creates is 0755 and the USER's (a bare uid is also
  // the gid, as for --chown); an existing directory (here /etc) is left as it is.
  Executor ex(options_);
  TaskDone done = Execute(ex, Task({Workdir("/a/b", "1000", "w1"), Workdir("/etc", "app", "w2"),
                                    Workdir("/etc/sub", "app", "w3")}));
  ASSERT_TRUE(done.status.ok()) << done.status.ToString();
  ASSERT_EQ(done.layers.size(), 3u);
  auto toc = TocOf(done.layers[0]);
  ASSERT_EQ(toc.size(), 2u);
  for (const char* p : {"a", "a/b"}) {
    ASSERT_TRUE(toc.count(p)) << p;
    EXPECT_EQ(toc[p].type, TocType::kDir) << p;
    EXPECT_EQ(toc[p].mode, 0755u) << p;
    EXPECT_EQ(toc[p].uid, 1000u) << p;
    EXPECT_EQ(toc[p].gid, 1000u) << p;
  }
  EXPECT_TRUE(TocOf(done.layers[1]).empty()) << "an existing directory is untouched";
  toc = TocOf(done.layers[2]);
  ASSERT_TRUE(toc.count("etc/sub"));
  EXPECT_EQ(toc["etc/sub"].uid, 1000u);
  ASSERT_TRUE(toc.count("etc"));  // only as the parent overlay copied up: root's as before
  EXPECT_EQ(toc["etc"].uid, 0u);
  EXPECT_EQ(toc["etc"].mode, 0755u);
  auto action = cache_.GetAction("w2");
  ASSERT_TRUE(action.ok() && action->has_value());
  EXPECT_EQ((*action)->created_by, "WORKDIR /etc");
  EXPECT_EQ(events_.back().kind, TaskEvent::Kind::kStepDone);
}

TEST_F(ExecutorTest, WorkdirThroughAFileFailsNamingTheLine) {
  Executor ex(options_);
  TaskDone done = Execute(ex, Task({Workdir("/etc/motd/x", "", "w")}));
  EXPECT_FALSE(done.status.ok());
  EXPECT_EQ(done.failed_step, 0);
  EXPECT_NE(done.status.message().find("Dockerfile:2: WORKDIR /etc/motd/x"), std::string::npos)
      << done.status.ToString();
  EXPECT_NE(done.status.message().find("/etc/motd exists and is not a directory"),
            std::string::npos)
      << done.status.ToString();
  auto action = cache_.GetAction("w");
  EXPECT_TRUE(action.ok() && !action->has_value()) << "failed steps are not cached";
}

// BuildKit makes WORKDIR's directories as USER with its file operations, which take a name that
// is in no /etc/passwd as 0 (and a rootfs without one builds `USER root` + WORKDIR).
TEST_F(ExecutorTest, WorkdirAsAUserNotInEtcPasswdIsRoot) {
  Executor ex(options_);
  TaskDone done = Execute(ex, Task({Workdir("/x", "nobody-here", "w")}));
  ASSERT_TRUE(done.status.ok()) << done.status.ToString();
  auto toc = TocOf(done.layers[0]);
  ASSERT_TRUE(toc.count("x"));
  EXPECT_EQ(toc["x"].uid, 0u);
  EXPECT_EQ(toc["x"].gid, 0u);
}

TEST_F(ExecutorTest, UnknownUserIsAnErrorNamingIt) {
  Executor ex(options_);
  StepSpec s = Run("true", "k");
  s.user = "nobody-here";
  TaskDone done = Execute(ex, Task({s}));
  EXPECT_FALSE(done.status.ok());
  EXPECT_NE(done.status.message().find("unable to find user nobody-here"), std::string::npos)
      << done.status.ToString();
}

TEST_F(ExecutorTest, DeletingALowerFileMakesAWhiteout) {
  Executor ex(options_);
  TaskDone done = Execute(ex, Task({Run("rm /etc/motd", "k")}));
  ASSERT_TRUE(done.status.ok()) << done.status.ToString() << "\n" << log_;
  auto toc = TocOf(done.layers[0]);
  ASSERT_TRUE(toc.count("etc/motd"));
  EXPECT_EQ(toc["etc/motd"].type, TocType::kWhiteout);
}

// A file a step names like a whiteout is a whiteout in its layer, as every worker (and docker)
// reads the tar: the worker that ran the step sees the same as the others in the next step.
TEST_F(ExecutorTest, AFileNamedLikeAWhiteoutIsOneForTheNextStepToo) {
  Executor ex(options_);
  TaskDone done = Execute(ex, Task({Run("echo x > /etc/.wh.motd", "k1"),
                                    Run("ls -a /etc; cat /etc/motd || echo gone", "k2")}));
  ASSERT_TRUE(done.status.ok()) << done.status.ToString() << "\n" << log_;
  auto toc = TocOf(done.layers[0]);
  EXPECT_TRUE(toc.count("etc/motd") && toc["etc/motd"].type == TocType::kWhiteout);
  EXPECT_FALSE(toc.count("etc/.wh.motd"));
  EXPECT_EQ(log_.find(".wh.motd"), std::string::npos) << log_;
  EXPECT_EQ(log_.find("welcome"), std::string::npos) << log_;
  EXPECT_NE(log_.find("gone"), std::string::npos) << log_;
}

TEST_F(ExecutorTest, SecondStepSeesTheFirstStepsFiles) {
  Executor ex(options_);
  TaskDone done =
      Execute(ex, Task({Run("echo first > /a", "k1"), Run("cat /a > /b; cat /b", "k2")}));
  ASSERT_TRUE(done.status.ok()) << done.status.ToString() << "\n" << log_;
  ASSERT_EQ(done.layers.size(), 2u);
  EXPECT_EQ(log_, "first\n");
  auto toc = TocOf(done.layers[1]);
  EXPECT_TRUE(toc.count("b"));
  EXPECT_FALSE(toc.count("a"));
}

TEST_F(ExecutorTest, NetworkNoneHasOnlyLoopback) {
  Executor ex(options_);
  StepSpec s = Run("cat /proc/net/dev", "k");
  s.network = "none";
  TaskDone done = Execute(ex, Task({s}));
  ASSERT_TRUE(done.status.ok()) << done.status.ToString() << "\n" << log_;
  std::istringstream in(log_);
  std::string line;
  std::vector<std::string> interfaces;
  for (int i = 0; std::getline(in, line); ++i) {
    if (i < 2) continue;  // headers
    interfaces.push_back(line.substr(0, line.find(':')));
  }
  ASSERT_EQ(interfaces.size(), 1u) << log_;
  EXPECT_NE(interfaces[0].find("lo"), std::string::npos);
}

TEST_F(ExecutorTest, CancelKillsTheSandboxWithinASecond) {
  Executor ex(options_);
  StageTask task = Task({Run("sleep 60", "k")});
  std::thread canceller([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    ex.Cancel(task.task_id);
  });
  auto t0 = std::chrono::steady_clock::now();
  TaskDone done = Execute(ex, task);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  canceller.join();
  EXPECT_EQ(done.status.code(), StatusCode::kCancelled) << done.status.ToString();
  EXPECT_EQ(done.failed_step, 0);
  EXPECT_LT(seconds, 1.5);
  // TearDown checks that nothing under the test dir is still mounted.
}

TEST_F(ExecutorTest, StepTimeoutKillsTheSandbox) {
  options_.step_timeout_seconds = 1;
  Executor ex(options_);
  TaskDone done = Execute(ex, Task({Run("sleep 60", "k")}));
  EXPECT_EQ(done.status.code(), StatusCode::kDeadlineExceeded) << done.status.ToString();
}

// A context with a file, a directory tree and an unrelated file, uploaded like the CLI does.
Digest UploadContext(const std::string& dir, FakeCacheClient& cache) {
  WriteText(dir + "/a.txt", "A\n");
  WriteText(dir + "/src/b.txt", "B\n");
  WriteText(dir + "/src/sub/c.txt", "C\n");
  WriteText(dir + "/other.md", "x\n");
  return PutContextDir(dir, cache);
}

StepSpec Copy(std::vector<std::string> sources, const std::string& dest, const Digest& context) {
  StepSpec s;
  s.key = "copy-" + dest;
  s.kind = StepKind::kCopy;
  s.line = 3;
  s.text = "COPY";
  s.sources = std::move(sources);
  s.dest = dest;
  s.context_root = context;
  return s;
}

// COPY --from of a stage whose filesystem is the layers `from`.
StepSpec CopyFrom(std::vector<std::string> sources, const std::string& dest,
                  std::vector<LayerRef> from) {
  StepSpec s = Copy(std::move(sources), dest, Digest{});
  s.key = "copy-from-" + dest;
  s.text = "COPY --from=build";
  s.from_layers = std::move(from);
  return s;
}

// A RUN that changes nothing makes the empty layer (1024 zero bytes), as BuildKit's does, though
// the runtime made /etc/hosts, /etc/resolv.conf and /etc/hostname in /etc to mount them: the
// copy of /etc they left in the upper dir goes with them, unless the step changed /etc itself.
TEST_F(ExecutorTest, ARunThatChangesNothingMakesTheEmptyLayer) {
  Executor ex(options_);
  // The first RUN makes the mount points /proc, /sys and /dev the test's rootfs lacks (they stay,
  // as in BuildKit's layers); the steps after it see an image that has them, as real ones do.
  TaskDone done = Execute(ex, Task({Run("true", "mount-points"), Run("true", "t"),
                                    Run("chmod 700 /etc", "chmod"),
                                    Run("touch /etc/x && rm /etc/x", "touched")}));
  ASSERT_TRUE(done.status.ok()) << done.status.ToString() << "\n" << log_;
  EXPECT_EQ(done.layers[1].diff_id, Digest::Of(std::string(1024, '\0')));
  EXPECT_TRUE(TocOf(done.layers[1]).empty());
  auto chmod = TocOf(done.layers[2]);
  ASSERT_TRUE(chmod.count("etc"));
  EXPECT_EQ(chmod["etc"].mode, 0700u);
  // Only /etc's mtime changed: BuildKit's differ leaves such a directory out too.
  EXPECT_TRUE(TocOf(done.layers[3]).empty());
}

// Steps that make identical layers put one layer in the stack several times: two RUN steps that
// change nothing (the empty layer twice), the same COPY twice, and a layer that comes back after
// another (A B A). The steps after them still get a rootfs, and the topmost copy counts: the file
// that B deleted is back.
TEST_F(ExecutorTest, ALayerRepeatedInTheStackStillMountsAndItsTopmostCopyCounts) {
  Digest context = UploadContext(tmp_.path() + "/ctx", cache_);
  Executor ex(options_);
  StepSpec copy = Copy({"a.txt"}, "/f", context);
  // The first RUN makes the mount points the test's rootfs lacks (see above).
  TaskDone done = Execute(ex, Task({Run("true", "mount-points"), Run("true", "t1"),
                                    Run("true", "t2"), copy, copy, Run("rm /f", "rm"), copy,
                                    Run("cat /f", "cat")}));
  ASSERT_TRUE(done.status.ok()) << done.status.ToString() << "\n" << log_;
  ASSERT_EQ(done.layers.size(), 8u);
  EXPECT_EQ(done.layers[1].diff_id, done.layers[2].diff_id) << "RUN true twice: one layer";
  EXPECT_EQ(done.layers[3].diff_id, done.layers[4].diff_id) << "the same COPY twice";
  EXPECT_EQ(done.layers[3].diff_id, done.layers[6].diff_id) << "A B A";
  EXPECT_EQ(log_, "A\n");
  // A stage whose layers repeat is a COPY --from source too.
  std::vector<LayerRef> stage = {base_};
  stage.insert(stage.end(), done.layers.begin(), done.layers.end());
  TaskDone copied = Execute(ex, Task({CopyFrom({"/f"}, "/got", stage), Run("cat /got", "k")}));
  ASSERT_TRUE(copied.status.ok()) << copied.status.ToString() << "\n" << log_;
  EXPECT_EQ(log_, "A\n");
}

TEST_F(ExecutorTest, CopyFromContextFollowsDockerRules) {
  Digest context = UploadContext(tmp_.path() + "/ctx", cache_);
  Executor ex(options_);
  StepSpec file = Copy({"a.txt"}, "/dst/", context);
  StepSpec dir = Copy({"src"}, "/d2", context);
  dir.chown = "app";
  StepSpec wild = Copy({"*.txt", "src/*/c.txt"}, "/w/", context);
  StepSpec renamed = Copy({"a.txt"}, "renamed", context);
  renamed.workdir = "/app";
  renamed.chmod = "0600";
  TaskDone done = Execute(
      ex, Task({file, dir, wild, renamed, Run("cat /d2/sub/c.txt; stat -c %Y /dst/a.txt", "r")}));
  ASSERT_TRUE(done.status.ok()) << done.status.ToString();
  EXPECT_EQ(log_, "C\n0\n") << "context files get mtime 0 without SOURCE_DATE_EPOCH";
  auto t0 = TocOf(done.layers[0]);
  ASSERT_TRUE(t0.count("dst/a.txt"));
  EXPECT_EQ(t0["dst/a.txt"].digest, Digest::Of("A\n").str());
  auto t1 = TocOf(done.layers[1]);
  EXPECT_TRUE(t1.count("d2/b.txt"));
  EXPECT_TRUE(t1.count("d2/sub/c.txt"));
  EXPECT_FALSE(t1.count("d2/src")) << "a directory source copies its contents";
  EXPECT_EQ(t1["d2/b.txt"].uid, 1000u);
  EXPECT_EQ(t1["d2/b.txt"].gid, 1000u);
  auto t2 = TocOf(done.layers[2]);
  EXPECT_TRUE(t2.count("w/a.txt"));
  EXPECT_TRUE(t2.count("w/c.txt"));
  EXPECT_FALSE(t2.count("w/other.md"));
  auto t3 = TocOf(done.layers[3]);
  ASSERT_TRUE(t3.count("app/renamed"));
  EXPECT_EQ(t3["app/renamed"].mode, 0600u);
}

// COPY <<EOF: each heredoc is a file of 0644 named after it, copied after the sources as one
// source of its own (so several into a file dest leave the last), --chmod and --chown applied,
// never unpacked by ADD (as BuildKit v0.24's testCopyHeredoc and a build checked against it).
TEST_F(ExecutorTest, CopyWritesHeredocsAsFilesAfterTheSources) {
  Digest context = UploadContext(tmp_.path() + "/ctx", cache_);
  Executor ex(options_);
  StepSpec two = Copy({}, "double/", context);
  two.workdir = "/dest";
  two.heredocs = {{"EOF", "first\n"}, {"EOF2", "second\n"}};
  StepSpec single = Copy({}, "single", context);
  single.workdir = "/dest";
  single.heredocs = {{"EOF", "single file\n"}};
  StepSpec owned = Copy({}, "/perm/owned", context);
  owned.chmod = "755";
  owned.chown = "app";
  owned.heredocs = {{"EOF", "x\n"}};
  StepSpec mixed = Copy({"a.txt"}, "/mix/", context);
  mixed.heredocs = {{"a.txt", "from the heredoc\n"}, {"h", "h\n"}};
  StepSpec last = Copy({}, "/multi", context);
  last.heredocs = {{"A", "aaa\n"}, {"B", "bbb\n"}};
  StepSpec add = Copy({}, "/added/", context);
  add.kind = StepKind::kAdd;
  // A tar's worth of zeros stays a file; a name is a path in an empty root, as BuildKit has it.
  add.heredocs = {{"EOF", std::string(1024, '\0')}, {"../up", "u\n"}};
  TaskDone done = Execute(
      ex, Task({two, single, owned, mixed, last, add, Run("stat -c %Y /dest/single", "r")}));
  ASSERT_TRUE(done.status.ok()) << done.status.ToString();
  EXPECT_EQ(log_, "0\n") << "heredoc files get the mtime of context files";
  auto t = TocOf(done.layers[0]);
  ASSERT_TRUE(t.count("dest/double/EOF") && t.count("dest/double/EOF2"));
  EXPECT_EQ(t["dest/double/EOF"].digest, Digest::Of("first\n").str());
  EXPECT_EQ(t["dest/double/EOF"].mode, 0644u);
  EXPECT_EQ(t["dest/double/EOF2"].digest, Digest::Of("second\n").str());
  t = TocOf(done.layers[1]);
  ASSERT_TRUE(t.count("dest/single"));
  EXPECT_EQ(t["dest/single"].type, TocType::kFile);
  EXPECT_EQ(t["dest/single"].digest, Digest::Of("single file\n").str());
  t = TocOf(done.layers[2]);
  ASSERT_TRUE(t.count("perm/owned"));
  EXPECT_EQ(t["perm/owned"].mode, 0755u);
  EXPECT_EQ(t["perm/owned"].uid, 1000u);
  EXPECT_EQ(t["perm/owned"].gid, 1000u);
  t = TocOf(done.layers[3]);
  ASSERT_TRUE(t.count("mix/a.txt") && t.count("mix/h"));
  EXPECT_EQ(t["mix/a.txt"].digest, Digest::Of("from the heredoc\n").str()) << "heredocs go last";
  t = TocOf(done.layers[4]);
  ASSERT_TRUE(t.count("multi"));
  EXPECT_EQ(t["multi"].digest, Digest::Of("bbb\n").str());
  t = TocOf(done.layers[5]);
  ASSERT_TRUE(t.count("added/EOF"));
  EXPECT_EQ(t["added/EOF"].size, 1024u);
  EXPECT_TRUE(t.count("added/up"));
  StepSpec nested = Copy({}, "/n/", context);
  nested.heredocs = {{"a/b", "x\n"}};
  done = Execute(ex, Task({nested}));
  EXPECT_EQ(done.status.code(), StatusCode::kNotFound) << done.status.ToString();
  EXPECT_NE(done.status.message().find("heredoc <<a/b: open /a/b: no such file or directory"),
            std::string::npos)
      << done.status.ToString();
}

// ADD unpacks tars from the context whatever their compression (by content, not name), keeping
// their owners, and copies other files, compressed or not, as they are.
TEST_F(ExecutorTest, AddUnpacksLocalTarsInEveryCompression) {
  const std::string ctx = tmp_.path() + "/ctx-tar", src = tmp_.path() + "/tar-src";
  WriteText(src + "/inner/file.txt", "inside\n");
  fs::create_directories(ctx);
  ASSERT_EQ(std::system(("chown -R 1234:99 " + src).c_str()), 0);
  const std::string tar = "tar --numeric-owner -C " + src + " -c inner";
  ASSERT_EQ(std::system((tar + " -f " + ctx + "/plain.tar").c_str()), 0);
  ASSERT_EQ(std::system((tar + " -z -f " + ctx + "/a.tgz").c_str()), 0);
  ASSERT_EQ(std::system((tar + " -j -f " + ctx + "/b.tar.bz2").c_str()), 0);
  ASSERT_EQ(std::system((tar + " -J -f " + ctx + "/c.tar.xz").c_str()), 0);
  ASSERT_EQ(std::system((tar + " --zstd -f " + ctx + "/renamed.bin").c_str()), 0);
  WriteText(ctx + "/notes.txt", "plain\n");
  ASSERT_EQ(std::system(("gzip -k " + ctx + "/notes.txt").c_str()), 0);
  const Digest root = PutContextDir(ctx, cache_);
  ASSERT_FALSE(root.hex.empty());
  Executor ex(options_);
  std::vector<StepSpec> steps;
  for (const char* name : {"plain.tar", "a.tgz", "b.tar.bz2", "c.tar.xz", "renamed.bin",
                           "notes.txt", "notes.txt.gz"}) {
    StepSpec add = Copy({name}, std::string("/out-") + name, root);
    add.kind = StepKind::kAdd;
    add.key = std::string("add-") + name;
    steps.push_back(add);
  }
  TaskDone done = Execute(ex, Task(steps));
  ASSERT_TRUE(done.status.ok()) << done.status.ToString();
  for (int i = 0; i < 5; ++i) {
    auto toc = TocOf(done.layers[i]);
    std::string path = "out-" + steps[i].sources[0] + "/inner/file.txt";
    ASSERT_TRUE(toc.count(path)) << path;
    EXPECT_EQ(toc[path].digest, Digest::Of("inside\n").str());
    EXPECT_EQ(toc[path].uid, 1234u);
    EXPECT_EQ(toc[path].gid, 99u);
  }
  auto text = TocOf(done.layers[5]);
  ASSERT_TRUE(text.count("out-notes.txt"));
  EXPECT_EQ(text["out-notes.txt"].type, TocType::kFile);
  auto gz = TocOf(done.layers[6]);
  ASSERT_TRUE(gz.count("out-notes.txt.gz")) << "a compressed non-tar is copied as is";
  EXPECT_EQ(gz["out-notes.txt.gz"].type, TocType::kFile);
}

// BuildKit follows a symlink named as a source; symlinks inside a copied directory stay links.
TEST_F(ExecutorTest, CopyFollowsSymlinkSourcesButKeepsLinksInsideDirs) {
  const std::string ctx = tmp_.path() + "/ctx-links";
  WriteText(ctx + "/real/file.txt", "real\n");
  fs::create_symlink("real/file.txt", ctx + "/file-link");
  fs::create_symlink("real", ctx + "/dir-link");
  fs::create_symlink("file.txt", ctx + "/real/inner-link");
  const Digest root = PutContextDir(ctx, cache_);
  ASSERT_FALSE(root.hex.empty());
  Executor ex(options_);
  TaskDone done = Execute(
      ex, Task({Copy({"file-link", "dir-link"}, "/x/", root), Copy({"*-link"}, "/w/", root)}));
  ASSERT_TRUE(done.status.ok()) << done.status.ToString();
  for (int i = 0; i < 2; ++i) {
    auto toc = TocOf(done.layers[i]);
    std::string dir = i == 0 ? "x/" : "w/";
    ASSERT_TRUE(toc.count(dir + "file-link")) << dir;
    EXPECT_EQ(toc[dir + "file-link"].type, TocType::kFile);
    EXPECT_EQ(toc[dir + "file-link"].digest, Digest::Of("real\n").str());
    // dir-link's target is a directory: its contents land in the destination.
    EXPECT_TRUE(toc.count(dir + "file.txt")) << dir;
    ASSERT_TRUE(toc.count(dir + "inner-link")) << dir;
    EXPECT_EQ(toc[dir + "inner-link"].type, TocType::kSymlink);
    EXPECT_EQ(toc[dir + "inner-link"].link, "file.txt");
  }
}

TEST_F(ExecutorTest, CopyMissingSourceNamesIt) {
  Digest context = UploadContext(tmp_.path() + "/ctx", cache_);
  Executor ex(options_);
  TaskDone done = Execute(ex, Task({Copy({"nope"}, "/x", context)}));
  EXPECT_EQ(done.status.code(), StatusCode::kNotFound);
  EXPECT_NE(done.status.message().find("COPY failed: file not found in build context: nope"),
            std::string::npos)
      << done.status.ToString();
  // BuildKit copies one source after the other, so with a file dest the last one is left.
  done = Execute(ex, Task({Copy({"a.txt", "other.md"}, "/x", context)}));
  ASSERT_TRUE(done.status.ok()) << done.status.ToString();
  EXPECT_EQ(TocOf(done.layers[0])["x"].digest, Digest::Of("x\n").str());
}

// A context tree comes from a peer: a directory named "..\u0000" (JSON for "..\0") would be ".."
// to every system call, and each nested one would climb a level out of the rootfs. Four of them
// below /app reach the worker root inside the test dir (merged, step-*, steps, root).
TEST_F(ExecutorTest, CopyRefusesContextEntriesNamedDotDotNul) {
  Digest content;
  ASSERT_TRUE(cache_.PutBytes("evil\n", &content).ok());
  TreeEntry file;
  file.name = "pwned";
  file.mode = 0644;
  file.digest = content;
  TreeNode node;
  node.entries = {file};
  for (int level = 0; level < 5; ++level) {
    Digest child;
    ASSERT_TRUE(cache_.PutBytes(node.Serialize(), &child).ok());
    TreeEntry dir;
    dir.name = level < 4 ? std::string("..\0", 3) : "src";
    dir.type = TreeEntry::Type::kDir;
    dir.mode = 0755;
    dir.digest = child;
    node.entries = {dir};
    if (level == 0) {
      ASSERT_NE(node.Serialize().find(R"("..\u0000")"), std::string::npos) << node.Serialize();
    }
  }
  Digest root;
  ASSERT_TRUE(cache_.PutBytes(node.Serialize(), &root).ok());

  Executor ex(options_);
  TaskDone done = Execute(ex, Task({Copy({"src"}, "/app", root)}));
  EXPECT_FALSE(done.status.ok()) << "the copy escaped the rootfs";
  EXPECT_NE(done.status.message().find("Dockerfile:3: COPY"), std::string::npos)
      << done.status.ToString();
  EXPECT_NE(done.status.message().find(R"("..\x00")"), std::string::npos)
      << "the name is shown with its NUL: " << done.status.ToString();
  for (const auto& e : fs::recursive_directory_iterator(tmp_.path())) {
    EXPECT_NE(e.path().filename(), "pwned") << e.path();
  }
}

TEST_F(ExecutorTest, CopyFromAStageKeepsOwnersAndMtimes) {
  Executor ex(options_);
  TaskDone first = Execute(ex, Task({Run("mkdir /out; echo x > /out/f; touch -d @1000 /out/f; "
                                         "chown 1000:50 /out/f",
                                         "k")}));
  ASSERT_TRUE(first.status.ok()) << first.status.ToString() << "\n" << log_;
  StepSpec s = CopyFrom({"/out/f", "/etc/passwd"}, "/got/", {base_, first.layers[0]});
  TaskDone done = Execute(ex, Task({s, Run("stat -c %Y /got/f", "k2")}));
  ASSERT_TRUE(done.status.ok()) << done.status.ToString();
  EXPECT_EQ(log_, "1000\n");
  auto toc = TocOf(done.layers[0]);
  ASSERT_TRUE(toc.count("got/f"));
  EXPECT_EQ(toc["got/f"].uid, 1000u);
  EXPECT_EQ(toc["got/f"].gid, 50u);
  EXPECT_TRUE(toc.count("got/passwd"));
}

TEST_F(ExecutorTest, CopyFromAStageKeepsHardLinks) {
  Executor ex(options_);
  TaskDone first = Execute(
      ex, Task({Run("mkdir -p /out/sub; echo x > /out/a; ln /out/a /out/sub/b; echo y > /out/c",
                    "k")}));
  ASSERT_TRUE(first.status.ok()) << first.status.ToString() << "\n" << log_;
  StepSpec s = CopyFrom({"/out"}, "/got/", {base_, first.layers[0]});
  TaskDone done = Execute(ex, Task({s, Run("stat -c %h:%i /got/a /got/sub/b /got/c", "k2")}));
  ASSERT_TRUE(done.status.ok()) << done.status.ToString();
  std::istringstream in(log_);
  std::string a, b, c;
  in >> a >> b >> c;
  EXPECT_EQ(a.substr(0, 2), "2:") << log_;
  EXPECT_EQ(a, b) << "one inode, two names";
  EXPECT_EQ(c.substr(0, 2), "1:") << log_;
  auto toc = TocOf(done.layers[0]);
  ASSERT_TRUE(toc.count("got/sub/b"));
  EXPECT_EQ(toc["got/sub/b"].type, TocType::kHardlink);
  EXPECT_EQ(toc["got/sub/b"].link, "got/a");
}

TEST_F(ExecutorTest, MetricsCountStepsByKindAndOutcomeAndLayerBytes) {
  prometheus::Registry registry;
  Executor ex(options_, &registry);
  TaskDone ok = Execute(ex, Task({Run("echo hi > /f", "m1"), Run("echo again > /g", "m2")}));
  ASSERT_TRUE(ok.status.ok()) << ok.status.ToString();
  TaskDone failed = Execute(ex, Task({Run("exit 3", "m3")}));
  ASSERT_FALSE(failed.status.ok());
  std::string text = prometheus::TextSerializer().Serialize(registry.Collect());
  EXPECT_NE(text.find("stagefarm_worker_steps_total{kind=\"run\",outcome=\"success\"} 2"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("stagefarm_worker_steps_total{kind=\"run\",outcome=\"failure\"} 1"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("stagefarm_worker_step_duration_seconds_count{kind=\"run\"} 3"),
            std::string::npos)
      << text;
  uint64_t produced = ok.layers[0].diff_id.size + ok.layers[1].diff_id.size;
  ASSERT_GT(produced, 0u);
  EXPECT_NE(text.find("stagefarm_worker_layer_bytes_total " + std::to_string(produced)),
            std::string::npos)
      << text;
  // The base layer and both new layers were extracted in the store.
  EXPECT_NE(text.find("stagefarm_worker_layer_store_bytes "), std::string::npos) << text;
  EXPECT_EQ(text.find("stagefarm_worker_layer_store_bytes 0\n"), std::string::npos) << text;
}

TEST_F(ExecutorTest, RuncWorksToo) {
  options_.runtime = "runc";
  Executor ex(options_);
  TaskDone done = Execute(ex, Task({Run("echo via runc > /r; cat /r", "k")}));
  ASSERT_TRUE(done.status.ok()) << done.status.ToString() << "\n" << log_;
  EXPECT_EQ(log_, "via runc\n");
  EXPECT_FALSE(TocOf(done.layers[0]).count("etc/hosts"));
}

TEST_F(ExecutorTest, ConcurrentTasksShareTheBaseLayer) {
  Executor ex(options_);
  FakeCacheClient* cache = &cache_;
  std::vector<TaskDone> results(3);
  std::vector<std::thread> threads;
  for (int i = 0; i < 3; ++i) {
    threads.emplace_back([&, i] {
      StageTask t = Task({Run("echo " + std::to_string(i) + " > /f", "c" + std::to_string(i))});
      t.task_id = "concurrent-" + std::to_string(i);
      results[i] = ex.Run(t, *cache, [](const TaskEvent&) {});
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& r : results) EXPECT_TRUE(r.status.ok()) << r.status.ToString();
  EXPECT_NE(results[0].layers[0], results[1].layers[0]);
  EXPECT_TRUE(fs::is_directory(options_.root + "/layers/" + base_.diff_id.hex));
}

TEST(HostCheck, ThisHostCanRunCrun) {
  ASSERT_EQ(::geteuid(), 0u) << "the host check needs root";
  auto dir = TempDir::Make("/tmp", "sf-hostcheck-");
  ASSERT_TRUE(dir.ok());
  WorkerOptions options;
  options.root = dir->path();
  auto runtime = CheckHost(options);
  ASSERT_TRUE(runtime.ok()) << runtime.status().ToString();
  EXPECT_EQ(*runtime, "crun");
  options.runtime = "/nonexistent/crun";
  runtime = CheckHost(options);
  EXPECT_EQ(runtime.status().code(), StatusCode::kFailedPrecondition);
}

TEST(HostCheck, HybridCgroupsWithoutHugetlbOnV1SayWhatToRun) {
  auto dir = TempDir::Make("/tmp", "sf-cgroups-");
  ASSERT_TRUE(dir.ok());
  std::string root = dir->path();
  WriteText(root + "/unified/cgroup.procs", "");
  WriteText(root + "/memory/tasks", "");
  WriteText(root + "/proc-cgroups",
            "#subsys_name\thierarchy\tnum_cgroups\tenabled\nmemory\t4\t1\t1\nhugetlb\t0\t1\t1\n");
  Status s = CheckCgroupsForCrun(root, root + "/proc-cgroups");
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("mount -t cgroup -o hugetlb cgroup " + root + "/hugetlb"),
            std::string::npos)
      << s.message();
  EXPECT_NE(s.message().find("scripts/prepare-host"), std::string::npos);
  WriteText(root + "/hugetlb/tasks", "");
  EXPECT_TRUE(CheckCgroupsForCrun(root, root + "/proc-cgroups").ok());
}

}  // namespace
}  // namespace stagefarm::worker
