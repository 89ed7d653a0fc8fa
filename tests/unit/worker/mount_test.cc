// RUN --mount on a real worker (crun, overlayfs; needs root): cache, tmpfs, bind and secret
// mounts reach the command and none of them, nor their mount points, reach the layer.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include "stagefarm/common/context_tree.h"
#include "stagefarm/common/layer_tar.h"
#include "stagefarm/common/toc.h"
#include "stagefarm/worker/executor.h"
#include "stagefarm/worker/fs_util.h"
#include "stagefarm/worker/overlay_mount.h"
#include "stagefarm/worker/run_mounts.h"
#include "worker_fixture.h"

namespace stagefarm::worker {
namespace {

namespace fs = std::filesystem;

constexpr const char* kSecret = "hunter2-very-secret-value";

class MountTest : public WorkerFixture {
 protected:
  void SetUp() override {
    WorkerFixture::SetUp();
    if (HasFatalFailure()) return;
    // busybox and a few applets; /run, /proc, /sys and /dev exist (as in most images), /cache
    // and /src do not.
    const std::string rootfs = tmp_.path() + "/base";
    for (const char* dir : {"/bin", "/run", "/proc", "/sys", "/dev"}) {
      fs::create_directories(rootfs + dir);
    }
    fs::copy_file("/bin/busybox", rootfs + "/bin/busybox");
    for (const char* applet :
         {"sh", "cat", "echo", "stat", "wc", "touch", "sleep", "mkdir", "ls"}) {
      fs::create_symlink("busybox", rootfs + "/bin/" + applet);
    }
    base_ = PutLayer(rootfs, "base");
  }

  static StepSpec Run(const std::string& cmd, std::vector<MountSpec> mounts) {
    StepSpec s;
    s.key = "key-" + cmd;
    s.text = "RUN " + cmd;
    s.line = 2;
    s.argv = {"/bin/sh", "-c", cmd};
    s.env = {"PATH=/bin"};
    s.mounts = std::move(mounts);
    return s;
  }

  TaskDone Execute(Executor& ex, std::vector<StepSpec> steps, std::string* log,
                   std::map<std::string, std::string> secrets = {}) {
    StageTask t;
    t.task_id = "task-" + std::to_string(++tasks_);
    t.base_layers = {base_};
    t.steps = std::move(steps);
    t.secrets = std::move(secrets);
    return ex.Run(t, cache_, [log](const TaskEvent& e) {
      if (e.kind == TaskEvent::Kind::kLog) *log += e.log;
    });
  }

  // The paths in a layer, from its TOC.
  std::set<std::string> PathsOf(const LayerRef& layer) {
    auto toc = Toc::Parse(*cache_.ReadBytes(layer.toc));
    EXPECT_TRUE(toc.ok());
    std::set<std::string> out;
    for (const auto& e : toc->entries) out.insert(e.path);
    return out;
  }

  LayerRef base_;
  int tasks_ = 0;
};

MountSpec Cache(const std::string& target, const std::string& id, const std::string& sharing) {
  MountSpec m;
  m.type = MountSpec::Type::kCache;
  m.target = target;
  m.id = id;
  m.sharing = sharing;
  return m;
}

MountSpec Tmpfs(const std::string& target) {
  MountSpec m;
  m.type = MountSpec::Type::kTmpfs;
  m.target = target;
  return m;
}

MountSpec Secret(const std::string& id, bool required = false) {
  MountSpec m;
  m.type = MountSpec::Type::kSecret;
  m.id = id;
  m.target = "/run/secrets/" + id;
  m.required = required;
  return m;
}

TEST_F(MountTest, CacheMountPersistsBetweenStepsAndStaysOutOfTheLayer) {
  Executor ex(options_);
  std::string log;
  MountSpec cache = Cache("/var/cache/app", "app-cache", "shared");
  cache.mode = 0700;
  cache.uid = 1000;
  TaskDone first = Execute(
      ex,
      {Run("echo one > /var/cache/app/a; stat -c '%a %u' /var/cache/app; echo x > /kept", {cache})},
      &log);
  ASSERT_TRUE(first.status.ok()) << first.status.ToString() << "\n" << log;
  EXPECT_EQ(log, "700 1000\n") << "a new cache dir gets mode= and uid=";
  std::set<std::string> paths = PathsOf(first.layers[0]);
  EXPECT_TRUE(paths.count("kept"));
  for (const char* p : {"var", "var/cache", "var/cache/app", "var/cache/app/a"}) {
    EXPECT_FALSE(paths.count(p)) << p << " leaked into the layer";
  }
  // Another task, later, with the same id sees what the first wrote.
  log.clear();
  TaskDone second = Execute(ex, {Run("cat /var/cache/app/a", {cache})}, &log);
  ASSERT_TRUE(second.status.ok()) << second.status.ToString() << "\n" << log;
  EXPECT_EQ(log, "one\n");
  // A different id is a different directory.
  log.clear();
  TaskDone other = Execute(
      ex,
      {Run("cat /var/cache/app/a 2>/dev/null || echo empty", {Cache("/var/cache/app", "b", "")})},
      &log);
  ASSERT_TRUE(other.status.ok()) << other.status.ToString();
  EXPECT_EQ(log, "empty\n");
}

TEST_F(MountTest, LockedCacheRunsOneStepAtATime) {
  Executor ex(options_);
  const std::string cmd = "echo start >> /c/log; sleep 1; echo end >> /c/log";
  std::string log1, log2;
  TaskDone d1, d2;
  std::thread t1(
      [&] { d1 = Execute(ex, {Run(cmd, {Cache("/c", "locked-id", "locked")})}, &log1); });
  std::thread t2(
      [&] { d2 = Execute(ex, {Run(cmd, {Cache("/c", "locked-id", "locked")})}, &log2); });
  t1.join();
  t2.join();
  ASSERT_TRUE(d1.status.ok()) << d1.status.ToString() << log1;
  ASSERT_TRUE(d2.status.ok()) << d2.status.ToString() << log2;
  std::string log;
  TaskDone check = Execute(ex, {Run("cat /c/log", {Cache("/c", "locked-id", "locked")})}, &log);
  ASSERT_TRUE(check.status.ok()) << check.status.ToString();
  EXPECT_EQ(log, "start\nend\nstart\nend\n") << "the two steps overlapped";
}

TEST_F(MountTest, TmpfsIsATmpfsAndStaysOutOfTheLayer) {
  Executor ex(options_);
  std::string log;
  MountSpec tmpfs = Tmpfs("/scratch/t");
  tmpfs.size_limit = 1 << 20;
  TaskDone done = Execute(
      ex, {Run("stat -f -c %T /scratch/t; echo data > /scratch/t/f; echo x > /kept", {tmpfs})},
      &log);
  ASSERT_TRUE(done.status.ok()) << done.status.ToString() << "\n" << log;
  EXPECT_EQ(log, "tmpfs\n");
  std::set<std::string> paths = PathsOf(done.layers[0]);
  EXPECT_TRUE(paths.count("kept"));
  EXPECT_FALSE(paths.count("scratch")) << "the mount point's parent leaked into the layer";
  EXPECT_FALSE(paths.count("scratch/t"));
  EXPECT_FALSE(paths.count("scratch/t/f"));
}

TEST_F(MountTest, BindFromContextIsReadOnlyUnlessRwAndRwChangesAreDiscarded) {
  const std::string ctx = tmp_.path() + "/ctx";
  fs::create_directories(ctx + "/src/sub");
  std::ofstream(ctx + "/src/b.txt") << "B\n";
  std::ofstream(ctx + "/src/sub/c.txt") << "C\n";
  std::ofstream(ctx + "/top.txt") << "T\n";
  const Digest root = PutContextDir(ctx, cache_);
  MountSpec ro;
  ro.target = "/src";
  ro.source = "src";
  ro.readonly = true;
  ro.context_root = root;
  MountSpec rw = ro;
  rw.target = "/rw";
  rw.readonly = false;
  MountSpec file = ro;
  file.source = "top.txt";
  file.target = "mnt/top";  // relative to the workdir
  Executor ex(options_);
  std::string log;
  StepSpec step =
      Run("cat /src/b.txt /src/sub/c.txt /w/mnt/top; touch /src/new 2>/dev/null && echo writable; "
          "echo changed > /rw/b.txt && cat /rw/b.txt",
          {ro, rw, file});
  step.workdir = "/w";
  StepSpec after = Run("cat /rw/b.txt", {rw});
  TaskDone done = Execute(ex, {step, after}, &log);
  ASSERT_TRUE(done.status.ok()) << done.status.ToString() << "\n" << log;
  EXPECT_EQ(log, "B\nC\nT\nchanged\nB\n") << "read-only by default; rw changes are discarded";
  std::set<std::string> paths = PathsOf(done.layers[0]);
  EXPECT_TRUE(paths.count("w")) << "WORKDIR is created as usual";
  for (const char* p : {"src", "src/b.txt", "rw", "w/mnt", "w/mnt/top"}) {
    EXPECT_FALSE(paths.count(p)) << p << " leaked into the layer";
  }
  // A source missing from the context is an error naming it.
  MountSpec missing = ro;
  missing.source = "nope";
  TaskDone bad = Execute(ex, {Run("true", {missing})}, &log);
  EXPECT_EQ(bad.status.code(), StatusCode::kNotFound);
  EXPECT_NE(bad.status.message().find("--mount=type=bind,source=nope"), std::string::npos)
      << bad.status.ToString();
}

// BuildKit (runc) makes the missing directories above a mount target 0755: one the command
// writes into stays in the layer with that mode, the empty ones go.
TEST_F(MountTest, DirectoryMadeAboveAMountTargetIsKeptWith0755WhenWrittenInto) {
  Executor ex(options_);
  std::string log;
  TaskDone done = Execute(ex, {Run("touch /a/marker", {Tmpfs("/a/b/c")})}, &log);
  ASSERT_TRUE(done.status.ok()) << done.status.ToString() << "\n" << log;
  auto toc = Toc::Parse(*cache_.ReadBytes(done.layers[0].toc));
  ASSERT_TRUE(toc.ok());
  std::map<std::string, TocEntry> entries;
  for (const auto& e : toc->entries) entries[e.path] = e;
  EXPECT_EQ(entries.size(), 2u) << "only /a and /a/marker";
  ASSERT_TRUE(entries.count("a") && entries.count("a/marker"));
  EXPECT_EQ(entries["a"].mode, 0755u);
  EXPECT_EQ(entries["a"].uid, 0u);
}

TEST_F(MountTest, BindFromAnotherStagesLayers) {
  Executor ex(options_);
  std::string log;
  TaskDone builder = Execute(ex, {Run("mkdir /out; echo built > /out/f", {})}, &log);
  ASSERT_TRUE(builder.status.ok()) << builder.status.ToString() << "\n" << log;
  MountSpec from;
  from.target = "/from";
  from.source = "out";
  from.readonly = true;
  from.from_layers = {base_, builder.layers[0]};
  TaskDone done = Execute(ex, {Run("cat /from/f; ls /from", {from})}, &log);
  ASSERT_TRUE(done.status.ok()) << done.status.ToString() << "\n" << log;
  EXPECT_EQ(log, "built\nf\n");
  EXPECT_TRUE(PathsOf(done.layers[0]).empty()) << "nothing but the mount happened";
}

TEST_F(MountTest, SecretFileIsReadOnlyToRootAndNeverInTheLayer) {
  Executor ex(options_);
  std::string log;
  TaskDone done = Execute(ex,
                          {Run("stat -c '%a %u %g' /run/secrets/tok; cat /run/secrets/tok | wc -c; "
                               "cat /run/secrets/tok > /dev/null && echo read > /kept",
                               {Secret("tok", true)})},
                          &log, {{"tok", kSecret}});
  ASSERT_TRUE(done.status.ok()) << done.status.ToString() << "\n" << log;
  EXPECT_EQ(log, "400 0 0\n" + std::to_string(std::strlen(kSecret)) + "\n");
  std::set<std::string> paths = PathsOf(done.layers[0]);
  EXPECT_FALSE(paths.count("run")) << "/run was copied up for the mount point only";
  EXPECT_FALSE(paths.count("run/secrets"));
  EXPECT_FALSE(paths.count("run/secrets/tok"));
  EXPECT_TRUE(paths.count("kept"));
  auto tar = cache_.ReadBytes(done.layers[0].diff_id, 64 << 20);
  ASSERT_TRUE(tar.ok());
  EXPECT_EQ(tar->find(kSecret), std::string::npos);
}

TEST_F(MountTest, SecretFileHonoursModeOwnerAndTarget) {
  Executor ex(options_);
  std::string log;
  MountSpec s = Secret("tok");
  s.target = "/etc/app/token";
  s.mode = 0440;
  s.uid = 1000;
  s.gid = 50;
  TaskDone done =
      Execute(ex, {Run("stat -c '%a %u %g' /etc/app/token", {s})}, &log, {{"tok", kSecret}});
  ASSERT_TRUE(done.status.ok()) << done.status.ToString() << "\n" << log;
  EXPECT_EQ(log, "440 1000 50\n");
  EXPECT_TRUE(PathsOf(done.layers[0]).empty());
}

TEST_F(MountTest, SecretAsEnvironmentVariable) {
  Executor ex(options_);
  std::string log;
  MountSpec s = Secret("tok");
  s.target.clear();
  s.env = "API_TOKEN";
  TaskDone done = Execute(
      ex, {Run("test \"$API_TOKEN\" = \"" + std::string(kSecret) + "\" && echo match", {s})}, &log,
      {{"tok", kSecret}});
  ASSERT_TRUE(done.status.ok()) << done.status.ToString() << "\n" << log;
  EXPECT_EQ(log, "match\n");
  auto tar = cache_.ReadBytes(done.layers[0].diff_id, 64 << 20);
  ASSERT_TRUE(tar.ok());
  EXPECT_EQ(tar->find(kSecret), std::string::npos);
}

TEST_F(MountTest, MissingSecretFailsWhenRequiredAndIsAbsentOtherwise) {
  Executor ex(options_);
  std::string log;
  TaskDone optional =
      Execute(ex, {Run("test -e /run/secrets/tok || echo absent", {Secret("tok")})}, &log);
  ASSERT_TRUE(optional.status.ok()) << optional.status.ToString() << "\n" << log;
  EXPECT_EQ(log, "absent\n");
  TaskDone required = Execute(ex, {Run("true", {Secret("tok", true)})}, &log);
  EXPECT_EQ(required.status.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(required.status.message().find("Dockerfile:2: RUN true: --mount=type=secret,id=tok"),
            std::string::npos)
      << required.status.ToString();
  EXPECT_NE(required.status.message().find("secret \"tok\" is required but was not given"),
            std::string::npos)
      << required.status.ToString();
}

TEST_F(MountTest, CleanupNeverFollowsSymlinksTheStepPlanted) {
  // Host files a malicious step points its mount points' parents at: empty, as stubs are.
  const std::string host = tmp_.path() + "/host";
  fs::create_directories(host);
  std::ofstream(host + "/passwd.lock").close();
  std::ofstream(host + "/hosts").close();
  MountSpec tmpfs;
  tmpfs.type = MountSpec::Type::kTmpfs;
  tmpfs.target = "/newdir/passwd.lock";
  Executor ex(options_);
  std::string log;
  // The base has no /etc: the runtime makes /etc/hosts etc. as mount points.
  TaskDone done = Execute(
      ex,
      {Run("busybox mv /newdir /x && busybox ln -s " + host +
               " /newdir && busybox mv /etc /y && busybox ln -s " + host + " /etc && echo planted",
           {tmpfs})},
      &log);
  ASSERT_TRUE(done.status.ok()) << done.status.ToString() << "\n" << log;
  EXPECT_EQ(log, "planted\n");
  EXPECT_TRUE(fs::exists(host + "/passwd.lock")) << "MountStubs::Remove followed /newdir";
  EXPECT_TRUE(fs::exists(host + "/hosts")) << "mount point cleanup followed /etc";
  std::set<std::string> paths = PathsOf(done.layers[0]);
  EXPECT_TRUE(paths.count("newdir")) << "the step's symlink is its own content";
}

// Whether a regular file under `dir` on its filesystem (not below other mounts: tmpfs, overlays)
// contains `needle` (each one is a test failure); `seen` gets the names looked at.
bool DiskFilesContain(const std::string& dir, const std::string& needle,
                      std::set<std::string>* seen) {
  struct stat top;
  if (::stat(dir.c_str(), &top) != 0) return false;
  std::error_code ec;
  bool found = false;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    struct stat st;
    if (::lstat(it->path().c_str(), &st) != 0) continue;
    if (st.st_dev != top.st_dev) {
      it.disable_recursion_pending();
      continue;
    }
    seen->insert(it->path().filename());
    if (!S_ISREG(st.st_mode)) continue;
    std::ifstream in(it->path(), std::ios::binary);
    std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (content.find(needle) != std::string::npos) {
      ADD_FAILURE() << "the secret is on disk in " << it->path();
      found = true;
    }
  }
  return found;
}

TEST_F(MountTest, SecretAsEnvironmentVariableNeverTouchesTheDisk) {
  Executor ex(options_);
  std::string log;
  MountSpec s = Secret("tok");
  s.target.clear();
  s.env = "API_TOKEN";
  TaskDone done;
  std::atomic<bool> finished{false};
  std::thread step([&] {
    done = Execute(ex, {Run("touch /running; sleep 1", {s})}, &log, {{"tok", kSecret}});
    finished = true;
  });
  int scans_while_running = 0;
  bool leaked = false;
  while (!finished && !leaked) {
    std::set<std::string> seen;
    leaked = DiskFilesContain(options_.root, kSecret, &seen);
    if (seen.count("running")) ++scans_while_running;  // the step's upper dir, on disk
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  step.join();
  ASSERT_TRUE(done.status.ok()) << done.status.ToString() << "\n" << log;
  EXPECT_GT(scans_while_running, 0) << "no scan ran during the step";
  std::set<std::string> seen;
  EXPECT_FALSE(DiskFilesContain(options_.root, kSecret, &seen));
}

TEST_F(MountTest, SameCacheIdTwiceInOneStepIsAnError) {
  Executor ex(options_);
  std::string log;
  TaskDone done = Execute(
      ex, {Run("true", {Cache("/a", "dup", "locked"), Cache("/b", "dup", "locked")})}, &log);
  EXPECT_EQ(done.status.code(), StatusCode::kInvalidArgument) << done.status.ToString();
  EXPECT_NE(done.status.message().find("cache id \"dup\" is mounted twice"), std::string::npos)
      << done.status.ToString();
  EXPECT_NE(done.status.message().find("Dockerfile:2: RUN true: --mount=type=cache,id=dup"),
            std::string::npos)
      << done.status.ToString();
}

TEST_F(MountTest, LockedCachesTakenInOppositeOrdersDoNotDeadlock) {
  Executor ex(options_);
  for (int round = 0; round < 3; ++round) {
    std::string log1, log2;
    TaskDone d1, d2;
    std::thread t1([&] {
      d1 = Execute(ex, {Run("true", {Cache("/a", "ca", "locked"), Cache("/b", "cb", "locked")})},
                   &log1);
    });
    std::thread t2([&] {
      d2 = Execute(ex, {Run("true", {Cache("/b", "cb", "locked"), Cache("/a", "ca", "locked")})},
                   &log2);
    });
    t1.join();
    t2.join();
    ASSERT_TRUE(d1.status.ok()) << d1.status.ToString() << log1;
    ASSERT_TRUE(d2.status.ok()) << d2.status.ToString() << log2;
  }
}

TEST_F(MountTest, WaitingForALockedCacheEndsAtTheDeadline) {
  CacheMounts caches(tmp_.path() + "/caches");
  std::atomic<bool> cancelled{false};
  auto held = caches.Acquire("x", "locked", -1, -1, -1, cancelled);
  ASSERT_TRUE(held.ok()) << held.status().ToString();
  auto t0 = std::chrono::steady_clock::now();
  auto waited =
      caches.Acquire("x", "locked", -1, -1, -1, cancelled, t0 + std::chrono::milliseconds(300));
  EXPECT_EQ(waited.status().code(), StatusCode::kDeadlineExceeded) << waited.status().ToString();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(3));
  *held = CacheMounts::Lease();  // released: the next one gets it at once
  auto again = caches.Acquire("x", "locked", -1, -1, -1, cancelled,
                              std::chrono::steady_clock::now() + std::chrono::milliseconds(300));
  EXPECT_TRUE(again.ok()) << again.status().ToString();
}

}  // namespace
}  // namespace stagefarm::worker
