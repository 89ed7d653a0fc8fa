#include "support/process.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

extern char** environ;

namespace stagefarm::testing {
namespace {
std::atomic<int> g_counter{0};
}

std::string ReadFileOrEmpty(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TempDir::TempDir() {
  char tmpl[] = "/tmp/stagefarm-test-XXXXXX";
  char* p = mkdtemp(tmpl);
  if (p == nullptr) std::abort();
  path_ = p;
}

TempDir::~TempDir() {
  // Anything a test left mounted below would make removal fail; detach it first.
  std::string cmd = "grep -o ' " + path_ + "[^ ]*' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l 2>/dev/null";
  if (std::system(cmd.c_str()) != 0) {
    // Nothing was mounted (xargs -r ran nothing) or umount failed; removal reports the rest.
  }
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

ChildProcess::ChildProcess(std::vector<std::string> argv, const std::string& log_prefix,
                           std::vector<std::string> extra_env) {
  int n = g_counter++;
  out_path_ = log_prefix + "." + std::to_string(n) + ".out";
  err_path_ = log_prefix + "." + std::to_string(n) + ".err";
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, out_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, err_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK);
  posix_spawnattr_setpgroup(&attr, 0);
  sigset_t empty;
  sigemptyset(&empty);
  posix_spawnattr_setsigmask(&attr, &empty);
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  std::vector<std::string> env_store;
  for (char** e = environ; *e; ++e) env_store.emplace_back(*e);
  for (auto& e : extra_env) env_store.push_back(e);
  std::vector<char*> env;
  for (auto& e : env_store) env.push_back(e.data());
  env.push_back(nullptr);
  if (posix_spawnp(&pid_, args[0], &fa, &attr, args.data(), env.data()) != 0) pid_ = -1;
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0 && !exit_code_) {
    ::kill(-pid_, SIGKILL);
    Wait(std::chrono::seconds(10));
  }
}

void ChildProcess::Kill(int sig) {
  if (pid_ > 0 && !exit_code_) ::kill(-pid_, sig);
}

std::optional<int> ChildProcess::Wait(std::chrono::milliseconds timeout) {
  if (exit_code_) return exit_code_;
  if (pid_ <= 0) return 127;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int status = 0;
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      return exit_code_;
    }
    if (std::chrono::steady_clock::now() > deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

std::string ChildProcess::Stdout() const { return ReadFileOrEmpty(out_path_); }
std::string ChildProcess::Stderr() const { return ReadFileOrEmpty(err_path_); }

std::optional<std::string> ChildProcess::WaitForStderr(const std::regex& re,
                                                       std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    std::string err = Stderr();
    std::smatch m;
    if (std::regex_search(err, m, re)) return m.size() > 1 ? m[1].str() : m[0].str();
    if (Wait(std::chrono::milliseconds(0))) return std::nullopt;  // it died
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return std::nullopt;
}

int RunCommand(const std::vector<std::string>& argv, std::string* out, std::string* err,
               std::vector<std::string> extra_env, std::chrono::seconds timeout) {
  char tmpl[] = "/tmp/stagefarm-cmd-XXXXXX";
  char* dir = mkdtemp(tmpl);
  if (dir == nullptr) return -1;
  int code;
  {
    ChildProcess p(argv, std::string(dir) + "/cmd", std::move(extra_env));
    std::optional<int> c = p.Wait(timeout);
    code = c ? *c : -1;
    if (out) *out = p.Stdout();
    if (err) *err = p.Stderr();
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return code;
}

}  // namespace stagefarm::testing
