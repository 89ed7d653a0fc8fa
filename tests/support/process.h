// Child processes for integration tests: each runs in its own process group with stdout and
// stderr captured to files, and is killed (the whole group) and reaped when its owner goes away,
// so a failed assertion leaks nothing.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <regex>
#include <string>
#include <vector>

namespace stagefarm::testing {

class ChildProcess {
 public:
  // Starts argv[0] (searched in PATH) with extra environment entries "K=V".
  ChildProcess(std::vector<std::string> argv, const std::string& log_prefix,
               std::vector<std::string> extra_env = {});
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  // Waits for exit; returns the exit code (128+signal if killed), nullopt on timeout.
  std::optional<int> Wait(std::chrono::milliseconds timeout);
  void Kill(int sig);
  std::string Stdout() const;
  std::string Stderr() const;
  // Waits until stderr matches `re`; returns the first capture group (or whole match).
  std::optional<std::string> WaitForStderr(const std::regex& re, std::chrono::milliseconds timeout);

 private:
  pid_t pid_ = -1;
  std::optional<int> exit_code_;
  std::string out_path_, err_path_;
};

// Runs a command to completion; returns its exit code and fills stdout/stderr if given.
int RunCommand(const std::vector<std::string>& argv, std::string* out = nullptr,
               std::string* err = nullptr, std::vector<std::string> extra_env = {},
               std::chrono::seconds timeout = std::chrono::seconds(300));

// A fresh directory under /tmp (not on overlayfs), removed recursively on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string ReadFileOrEmpty(const std::string& path);

}  // namespace stagefarm::testing
