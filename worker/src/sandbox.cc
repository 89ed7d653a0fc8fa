#include "stagefarm/worker/sandbox.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <optional>

#include "stagefarm/common/child_process.h"
#include "stagefarm/common/unique_fd.h"

namespace stagefarm::worker {

namespace {
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

std::vector<std::string> RuntimeArgs(const SandboxRequest& r, std::vector<std::string> tail) {
  std::vector<std::string> args = {r.runtime, "--root", r.state_root};
  args.insert(args.end(), tail.begin(), tail.end());
  return args;
}
}  // namespace

StatusOr<int> RunSandbox(const SandboxRequest& r) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return ErrnoError("pipe", errno);
  UniqueFd read_end(fds[0]), write_end(fds[1]);
  SF_ASSIGN_OR_RETURN(
      ChildProcess child,
      ChildProcess::Spawn(RuntimeArgs(r, {"run", "--bundle", r.bundle_dir, r.container_id}),
                          write_end.get()));
  write_end.reset();

  const auto deadline = Clock::now() + std::chrono::seconds(r.timeout_seconds);
  Status stop;  // why we are stopping the container, once we are
  Clock::time_point stop_since, last_kill;
  std::optional<int> exit_code;
  Clock::time_point exited_at;
  char buf[16384];
  for (;;) {
    struct pollfd p = {read_end.get(), POLLIN, 0};
    int n = ::poll(&p, 1, 100);
    if (n < 0 && errno != EINTR) return ErrnoError("poll", errno);
    if (n > 0) {
      ssize_t got = ::read(read_end.get(), buf, sizeof buf);
      if (got < 0 && errno != EINTR && errno != EAGAIN) return ErrnoError("read", errno);
      if (got == 0) break;  // every writer is gone: the container has exited
      if (got > 0 && r.on_output) r.on_output(std::string_view(buf, static_cast<size_t>(got)));
    }
    auto now = Clock::now();
    if (!exit_code) {
      exit_code = child.TryWait();
      if (exit_code) exited_at = now;
    } else if (now - exited_at > milliseconds(1000)) {
      break;  // something outside the container kept the pipe open; stop reading
    }
    if (stop.ok() && !exit_code) {
      if (r.cancelled && r.cancelled->load()) {
        stop = CancelledError("cancelled");
      } else if (now >= deadline) {
        stop = DeadlineExceededError("the step did not finish in " +
                                     std::to_string(r.timeout_seconds) + "s");
      }
      if (!stop.ok()) stop_since = now - milliseconds(1000);
    }
    if (!stop.ok() && !exit_code && now - last_kill >= milliseconds(200)) {
      last_kill = now;
      // Killing pid 1 of the container's pid namespace takes every process in it down. Fails
      // harmlessly while the runtime has not created the container yet; retried until it exits.
      RunCommand(RuntimeArgs(r, {"kill", r.container_id, "KILL"}), 5).status().IgnoreError();
      if (now - stop_since > milliseconds(3000)) child.KillGroup(SIGKILL);
    }
  }
  if (!exit_code) exit_code = child.Wait();
  if (!stop.ok()) {
    // `run` removes a container that exits by itself; one we killed may be left half torn down.
    RunCommand(RuntimeArgs(r, {"delete", "-f", r.container_id}), 10).status().IgnoreError();
    return stop;
  }
  return *exit_code;
}

}  // namespace stagefarm::worker
