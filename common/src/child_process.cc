#include "stagefarm/common/child_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>

#include "stagefarm/common/unique_fd.h"

extern char** environ;

namespace stagefarm {

namespace {
int ExitCodeOf(int wstatus) {
  if (WIFEXITED(wstatus)) return WEXITSTATUS(wstatus);
  if (WIFSIGNALED(wstatus)) return 128 + WTERMSIG(wstatus);
  return 255;
}

// posix_spawn's attribute and file-action objects, destroyed on every path.
struct SpawnSetup {
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  SpawnSetup() {
    posix_spawn_file_actions_init(&actions);
    posix_spawnattr_init(&attr);
  }
  ~SpawnSetup() {
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
  }
};
}  // namespace

StatusOr<ChildProcess> ChildProcess::Spawn(const std::vector<std::string>& argv, int output_fd) {
  return Spawn(argv, output_fd, output_fd);
}

StatusOr<ChildProcess> ChildProcess::Spawn(const std::vector<std::string>& argv, int output_fd,
                                           int error_fd) {
  if (argv.empty()) return InvalidArgumentError("spawn: empty argv");
  SpawnSetup s;
  posix_spawn_file_actions_addopen(&s.actions, 0, "/dev/null", O_RDONLY, 0);
  int fd_no = 1;
  for (int fd : {output_fd, error_fd}) {
    if (fd >= 0) {
      posix_spawn_file_actions_adddup2(&s.actions, fd, fd_no);
    } else {
      posix_spawn_file_actions_addopen(&s.actions, fd_no, "/dev/null", O_WRONLY, 0);
    }
    ++fd_no;
  }
  // Other threads may have opened descriptors without O_CLOEXEC; none of them leak to the child.
  posix_spawn_file_actions_addclosefrom_np(&s.actions, 3);
  // A signal mask and dispositions inherited from a worker thread must not reach the child.
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&s.attr, &none);
  posix_spawnattr_setsigdefault(&s.attr, &all);
  posix_spawnattr_setpgroup(&s.attr, 0);
  posix_spawnattr_setflags(&s.attr,
                           POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  int rc = ::posix_spawnp(&pid, args[0], &s.actions, &s.attr, args.data(), environ);
  if (rc != 0) return ErrnoError("spawn " + argv[0], rc);
  return ChildProcess(pid);
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0) {
    KillGroup(SIGKILL);
    Wait();
  }
}

ChildProcess& ChildProcess::operator=(ChildProcess&& o) noexcept {
  if (this != &o) {
    ChildProcess old(std::move(*this));
    pid_ = std::exchange(o.pid_, -1);
  }
  return *this;
}

int ChildProcess::Wait() {
  SF_CHECK(pid_ > 0);
  int wstatus = 0;
  while (::waitpid(pid_, &wstatus, 0) < 0) {
    if (errno != EINTR) {
      pid_ = -1;
      return 255;
    }
  }
  pid_ = -1;
  return ExitCodeOf(wstatus);
}

std::optional<int> ChildProcess::TryWait() {
  SF_CHECK(pid_ > 0);
  int wstatus = 0;
  pid_t r = ::waitpid(pid_, &wstatus, WNOHANG);
  if (r == 0) return std::nullopt;
  pid_ = -1;
  if (r < 0) return 255;
  return ExitCodeOf(wstatus);
}

void ChildProcess::KillGroup(int sig) {
  // The group id is the child's pid (POSIX_SPAWN_SETPGROUP with 0). ESRCH means it is gone.
  if (pid_ > 0) ::kill(-pid_, sig);
}

StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv, int timeout_seconds,
                                   bool separate_stderr) {
  int out_fds[2], err_fds[2];
  if (::pipe2(out_fds, O_CLOEXEC) != 0) return ErrnoError("pipe", errno);
  UniqueFd out_read(out_fds[0]), out_write(out_fds[1]);
  UniqueFd err_read, err_write;
  if (separate_stderr) {
    if (::pipe2(err_fds, O_CLOEXEC) != 0) return ErrnoError("pipe", errno);
    err_read = UniqueFd(err_fds[0]);
    err_write = UniqueFd(err_fds[1]);
  }
  SF_ASSIGN_OR_RETURN(ChildProcess child,
                      ChildProcess::Spawn(argv, out_write.get(),
                                          separate_stderr ? err_write.get() : out_write.get()));
  out_write.reset();
  err_write.reset();
  CommandResult result;
  struct Stream {
    UniqueFd* fd;
    std::string* text;
  };
  std::vector<Stream> open = {{&out_read, &result.output}};
  if (separate_stderr) open.push_back({&err_read, &result.error_output});
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_seconds);
  while (!open.empty()) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      child.KillGroup(SIGKILL);
      child.Wait();
      return DeadlineExceededError(argv[0] + " did not finish in " +
                                   std::to_string(timeout_seconds) + "s");
    }
    struct pollfd p[2];
    for (size_t i = 0; i < open.size(); ++i) p[i] = {open[i].fd->get(), POLLIN, 0};
    int n = ::poll(p, open.size(), static_cast<int>(left.count()));
    if (n <= 0) continue;  // EINTR or the deadline: checked above
    for (size_t i = open.size(); i-- > 0;) {
      if (p[i].revents == 0) continue;
      char buf[4096];
      ssize_t got = ::read(open[i].fd->get(), buf, sizeof buf);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) {
        open.erase(open.begin() + static_cast<std::ptrdiff_t>(i));
        continue;
      }
      open[i].text->append(buf, static_cast<size_t>(got));
    }
  }
  result.exit_code = child.Wait();
  return result;
}

}  // namespace stagefarm
