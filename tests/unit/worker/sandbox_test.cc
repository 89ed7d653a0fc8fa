// What a RUN step must not be able to do, each tried from inside a real sandbox (crun, overlayfs,
// root) on a busybox rootfs that also holds tests/support/sandbox_probe.c as /bin/probe. Where a
// denial could pass for a broken test, a control shows the same command working when allowed.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "stagefarm/common/child_process.h"
#include "stagefarm/common/layer_tar.h"
#include "stagefarm/common/unique_fd.h"
#include "stagefarm/worker/executor.h"
#include "stagefarm/worker/fs_util.h"
#include "stagefarm/worker/oci_spec.h"
#include "stagefarm/worker/overlay_mount.h"
#include "support/fake_cache_client.h"

namespace stagefarm::worker {
namespace {

namespace fs = std::filesystem;
using testing::FakeCacheClient;

class SandboxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(::geteuid(), 0u) << "the sandbox tests need root (overlayfs, crun, cgroups)";
    auto dir = TempDir::Make("/tmp", "sf-sandbox-test-");
    ASSERT_TRUE(dir.ok()) << dir.status().ToString();
    tmp_ = std::move(*dir);
    options_.root = tmp_.path() + "/root";

    std::string rootfs = tmp_.path() + "/rootfs";
    fs::create_directories(rootfs + "/bin");
    fs::create_directories(rootfs + "/tmp");
    fs::copy_file("/bin/busybox", rootfs + "/bin/busybox");
    fs::copy_file(SANDBOX_PROBE, rootfs + "/bin/probe");
    for (const char* applet : {"sh", "cat", "echo", "sleep", "nc", "mount", "insmod", "seq"}) {
      fs::create_symlink("busybox", rootfs + "/bin/" + applet);
    }
    auto layer = WriteLayer(rootfs, tmp_.path() + "/base.tar");
    ASSERT_TRUE(layer.ok()) << layer.status().ToString();
    ASSERT_TRUE(cache_.PutFile(tmp_.path() + "/base.tar", layer->diff_id).ok());
    Digest toc;
    ASSERT_TRUE(cache_.PutBytes(layer->toc_blob, &toc).ok());
    base_ = LayerRef{layer->diff_id, toc};
  }
  void TearDown() override {
    if (tmp_.path().empty()) return;
    auto mounts = MountsUnder(tmp_.path());
    ASSERT_TRUE(mounts.ok());
    EXPECT_TRUE(mounts->empty()) << "left mounted: " << mounts->front();
  }

  // Runs `cmd` as the only step of a task; fills log_.
  TaskDone RunStep(const std::string& cmd, const std::string& network = "default") {
    Executor ex(options_);
    StepSpec s;
    s.key = "key-" + std::to_string(++steps_);
    s.kind = StepKind::kRun;
    s.line = 2;
    s.text = "RUN " + cmd;
    s.argv = {"/bin/sh", "-c", cmd};
    s.env = {"PATH=/bin"};
    s.network = network;
    StageTask task;
    task.task_id = "task-" + std::to_string(steps_);
    task.base_layers = {base_};
    task.steps = {s};
    log_.clear();
    return ex.Run(task, cache_, [&](const TaskEvent& e) {
      if (e.kind == TaskEvent::Kind::kLog) log_ += e.log;
    });
  }

  TempDir tmp_;
  WorkerOptions options_;
  FakeCacheClient cache_;
  LayerRef base_;
  std::string log_;
  int steps_ = 0;
};

TEST_F(SandboxTest, CannotReadAHostFileOutsideTheRootfs) {
  const std::string secret = tmp_.path() + "/host-secret.txt";
  std::ofstream(secret) << "the host's secret\n";
  TaskDone done = RunStep("cat " + secret + " || cat /proc/1/root" + secret +
                          " || cat ../../../../../.." + secret);
  EXPECT_FALSE(done.status.ok());
  EXPECT_EQ(done.exit_code, 1) << log_;
  EXPECT_EQ(log_.find("the host's secret"), std::string::npos) << log_;
  EXPECT_NE(log_.find("No such file"), std::string::npos) << log_;
}

TEST_F(SandboxTest, CannotReachALoopbackServiceOfTheHostWithNetworkNone) {
  UniqueFd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(listener);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(listener.get(), 16), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&addr), &len), 0);
  // Accepts and closes at once, so a client that got through sees EOF and exits.
  std::atomic<bool> stop{false};
  std::thread server([&] {
    while (!stop.load()) {
      struct pollfd p = {listener.get(), POLLIN, 0};
      if (::poll(&p, 1, 100) > 0) {
        int c = ::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC);
        if (c >= 0) ::close(c);
      }
    }
  });
  struct Joiner {
    std::atomic<bool>& stop;
    std::thread& t;
    ~Joiner() {
      stop.store(true);
      t.join();
    }
  } joiner{stop, server};
  const std::string connect =
      "nc -w 2 127.0.0.1 " + std::to_string(ntohs(addr.sin_port)) + " </dev/null && echo connected";

  // Control: on the worker's network the service is there.
  TaskDone reachable = RunStep(connect, "default");
  ASSERT_TRUE(reachable.status.ok()) << reachable.status.ToString() << "\n" << log_;
  EXPECT_NE(log_.find("connected"), std::string::npos) << log_;

  TaskDone isolated = RunStep(connect, "none");
  EXPECT_FALSE(isolated.status.ok());
  EXPECT_EQ(log_.find("connected"), std::string::npos) << log_;

  // The farm's policy wins over the step's default.
  options_.network_policy = "none";
  TaskDone policy = RunStep(connect, "default");
  EXPECT_FALSE(policy.status.ok());
  EXPECT_EQ(log_.find("connected"), std::string::npos) << log_;
}

TEST_F(SandboxTest, CannotMountAFilesystem) {
  TaskDone done = RunStep("probe mount /tmp");
  EXPECT_FALSE(done.status.ok());
  EXPECT_NE(log_.find("mount: Operation not permitted"), std::string::npos) << log_;
  done = RunStep("mount -t proc proc /tmp");
  EXPECT_FALSE(done.status.ok()) << log_;
}

TEST_F(SandboxTest, CannotLoadAKernelModule) {
  TaskDone done = RunStep("probe module /bin/busybox");
  EXPECT_FALSE(done.status.ok());
  EXPECT_NE(log_.find("finit_module: Operation not permitted"), std::string::npos) << log_;
}

TEST_F(SandboxTest, CannotPtraceAHostProcess) {
  auto host = ChildProcess::Spawn({"sleep", "30"}, -1);
  ASSERT_TRUE(host.ok()) << host.status().ToString();
  const std::string pid = std::to_string(host->pid());
  TaskDone done = RunStep("probe ptrace " + pid);
  EXPECT_FALSE(done.status.ok());
  EXPECT_NE(log_.find("ptrace: No such process"), std::string::npos) << log_;
  // Still running and untraced.
  auto status = ReadFile("/proc/" + pid + "/status");
  ASSERT_TRUE(status.ok());
  EXPECT_NE(status->find("TracerPid:\t0\n"), std::string::npos);
  EXPECT_FALSE(host->TryWait().has_value());
}

// Creating a user namespace needs no capability; only the seccomp profile stops it (as
// Docker's does), so this fails only if the profile is missing or wrong.
TEST_F(SandboxTest, SeccompProfileRefusesNewNamespaces) {
  TaskDone done = RunStep("probe userns");
  EXPECT_FALSE(done.status.ok());
  EXPECT_NE(log_.find("unshare: Operation not permitted"), std::string::npos) << log_;
}

TEST_F(SandboxTest, SeccompProfileKeepsOrdinaryCommandsWorking) {
  // Threads/fork via clone, pipes, sockets on loopback, files, personality query.
  TaskDone done = RunStep(
      "echo a | cat > /tmp/f && cat /tmp/f && (sleep 0 &) && wait && seq 3 | cat && "
      "probe alloc 8");
  ASSERT_TRUE(done.status.ok()) << done.status.ToString() << "\n" << log_;
  EXPECT_EQ(log_, "a\n1\n2\n3\nalloc: ok\n");
}

TEST_F(SandboxTest, ExceedingTheMemoryLimitFailsWithOutOfMemory) {
  options_.memory_limit_bytes = 64 << 20;
  // Control: within the limit.
  TaskDone small = RunStep("probe alloc 16");
  ASSERT_TRUE(small.status.ok()) << small.status.ToString() << "\n" << log_;

  TaskDone big = RunStep("probe alloc 512");
  ASSERT_FALSE(big.status.ok());
  EXPECT_NE(big.status.message().find("out of memory"), std::string::npos) << big.status.ToString();
  EXPECT_NE(big.status.message().find("64 MiB"), std::string::npos) << big.status.ToString();
  EXPECT_EQ(log_.find("alloc: ok"), std::string::npos) << log_;

  // An ordinary failure under the same limit is not called an OOM.
  TaskDone failed = RunStep("exit 7");
  EXPECT_EQ(failed.exit_code, 7);
  EXPECT_EQ(failed.status.message().find("out of memory"), std::string::npos)
      << failed.status.ToString();
}

TEST_F(SandboxTest, ForkBombStopsAtThePidsLimit) {
  options_.pids_limit = 32;
  auto t0 = std::chrono::steady_clock::now();
  TaskDone done =
      RunStep("i=0; while [ $i -lt 200 ]; do sleep 30 & i=$((i+1)); done; echo forked all; wait");
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_FALSE(done.status.ok());
  EXPECT_EQ(log_.find("forked all"), std::string::npos) << log_;
  EXPECT_NE(log_.find("can't fork"), std::string::npos) << log_;
  EXPECT_LT(seconds, 20);  // the 31 sleeps died with the step; nothing waited for them
}

TEST_F(SandboxTest, RunningPastTheTimeoutIsKilled) {
  options_.step_timeout_seconds = 1;
  auto t0 = std::chrono::steady_clock::now();
  TaskDone done = RunStep("sleep 60");
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(done.status.code(), StatusCode::kDeadlineExceeded) << done.status.ToString();
  EXPECT_LT(seconds, 5);
}

TEST(SeccompProfile, ConfigCarriesDockersDefaultBehaviour) {
  SandboxConfig c;
  c.args = {"/bin/true"};
  c.rootfs = "/r";
  auto config = nlohmann::json::parse(MakeOciConfig(c));
  const auto& seccomp = config["linux"]["seccomp"];
  EXPECT_EQ(seccomp["defaultAction"], "SCMP_ACT_ERRNO");
  std::set<std::string> allowed;
  for (const auto& rule : seccomp["syscalls"]) {
    if (rule["action"] == "SCMP_ACT_ALLOW" && !rule.contains("args")) {
      for (const auto& n : rule["names"]) allowed.insert(n.get<std::string>());
    }
  }
  for (const char* ok : {"read", "write", "openat", "execve", "socket", "ptrace", "chroot"}) {
    EXPECT_TRUE(allowed.count(ok)) << ok;
  }
  for (const char* no : {"mount", "umount2", "unshare", "setns", "init_module", "finit_module",
                         "kexec_load", "bpf", "keyctl", "reboot", "clone", "clone3"}) {
    EXPECT_FALSE(allowed.count(no)) << no;
  }
  c.seccomp = false;
  EXPECT_FALSE(nlohmann::json::parse(MakeOciConfig(c))["linux"].contains("seccomp"));
}

}  // namespace
}  // namespace stagefarm::worker
