// Child processes started with posix_spawn (no code of ours runs between fork and exec: the worker
// and the client are multithreaded). A ChildProcess owns its process group: the destructor kills
// the group and reaps the child if nobody waited for it.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "stagefarm/common/status.h"

namespace stagefarm {

class ChildProcess {
 public:
  // Starts argv[0] (looked up in PATH when it has no '/') in a new process group with stdin from
  // /dev/null and stdout and stderr both on `output_fd` (-1: /dev/null). Every other descriptor is
  // closed in the child.
  static StatusOr<ChildProcess> Spawn(const std::vector<std::string>& argv, int output_fd);
  // The same with stdout on `output_fd` and stderr on `error_fd` (-1: /dev/null, each).
  static StatusOr<ChildProcess> Spawn(const std::vector<std::string>& argv, int output_fd,
                                      int error_fd);

  ChildProcess() = default;
  ~ChildProcess();
  ChildProcess(ChildProcess&& o) noexcept : pid_(std::exchange(o.pid_, -1)) {}
  ChildProcess& operator=(ChildProcess&& o) noexcept;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0; }
  // Blocks until the child exits. Returns its exit code, or 128 + the signal that killed it.
  int Wait();
  // The exit code (as Wait) if the child has exited, without blocking.
  std::optional<int> TryWait();
  // Sends `sig` to the child's process group.
  void KillGroup(int sig);

 private:
  explicit ChildProcess(pid_t pid) : pid_(pid) {}
  pid_t pid_ = -1;
};

struct CommandResult {
  int exit_code = 0;
  std::string output;        // stdout and stderr, interleaved (stdout alone: see RunCommand)
  std::string error_output;  // stderr, when RunCommand was asked to keep it apart
};
// Runs argv to completion and captures its output (for helper commands: `crun kill`,
// `crun --version`, `git fetch`). With `separate_stderr` stderr goes to error_output and output
// holds stdout alone. Killed after `timeout_seconds`, reported as DeadlineExceeded.
StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv, int timeout_seconds = 30,
                                   bool separate_stderr = false);

}  // namespace stagefarm
