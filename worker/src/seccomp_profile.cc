#include "stagefarm/worker/seccomp_profile.h"

#include <cerrno>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

namespace stagefarm::worker {

using nlohmann::json;

namespace {

// Allowed unconditionally. Space-separated to keep the list readable; names the runtime's
// libseccomp does not know on this architecture (the *32 and *_time64 variants on x86_64) are
// skipped by the runtime, as with Docker's profile.
constexpr const char* kAllowed =
    // files and directories
    "access faccessat faccessat2 chdir fchdir getcwd chmod fchmod fchmodat fchmodat2 chown chown32 "
    "fchown fchown32 fchownat lchown lchown32 creat open openat openat2 close close_range dup dup2 "
    "dup3 pipe pipe2 fcntl fcntl64 flock fsync fdatasync sync syncfs sync_file_range truncate "
    "truncate64 "
    "ftruncate ftruncate64 fallocate fadvise64 fadvise64_64 readahead lseek _llseek read readv "
    "pread64 preadv preadv2 write writev pwrite64 pwritev pwritev2 sendfile sendfile64 splice tee "
    "vmsplice copy_file_range stat stat64 lstat lstat64 fstat fstat64 fstatat64 newfstatat statx "
    "statfs statfs64 fstatfs fstatfs64 getdents getdents64 link linkat symlink symlinkat readlink "
    "readlinkat unlink unlinkat rename renameat renameat2 mkdir mkdirat rmdir mknod mknodat "
    "umask utime utimes utimensat utimensat_time64 futimesat getxattr lgetxattr fgetxattr "
    "setxattr lsetxattr fsetxattr listxattr llistxattr flistxattr removexattr lremovexattr "
    "fremovexattr inotify_init inotify_init1 inotify_add_watch inotify_rm_watch fanotify_mark "
    "name_to_handle_at chroot ioctl "
    // processes, credentials, scheduling
    "execve execveat exit exit_group fork vfork wait4 waitid waitpid kill tkill tgkill getpid "
    "getppid gettid getpgid setpgid getpgrp getsid setsid getuid getuid32 geteuid geteuid32 getgid "
    "getgid32 getegid getegid32 getresuid getresuid32 getresgid getresgid32 getgroups getgroups32 "
    "setuid setuid32 setgid setgid32 setreuid setreuid32 setregid setregid32 setresuid "
    "setresuid32 setresgid setresgid32 setgroups setgroups32 setfsuid setfsuid32 setfsgid "
    "setfsgid32 capget capset prctl getpriority setpriority getrlimit setrlimit ugetrlimit "
    "prlimit64 getrusage times sched_yield sched_getaffinity sched_setaffinity sched_getattr "
    "sched_setattr sched_getparam sched_setparam sched_getscheduler sched_setscheduler "
    "sched_get_priority_max sched_get_priority_min sched_rr_get_interval "
    "sched_rr_get_interval_time64 ioprio_get ioprio_set getcpu set_tid_address set_robust_list "
    "get_robust_list rseq restart_syscall seccomp pidfd_open pidfd_send_signal process_mrelease "
    "ptrace process_vm_readv process_vm_writev landlock_create_ruleset landlock_add_rule "
    "landlock_restrict_self "
    // memory
    "brk mmap mmap2 munmap mremap mprotect madvise mincore msync mlock mlock2 mlockall munlock "
    "munlockall membarrier memfd_create memfd_secret remap_file_pages pkey_alloc pkey_free "
    "pkey_mprotect map_shadow_stack "
    // signals and time
    "rt_sigaction rt_sigprocmask rt_sigpending rt_sigqueueinfo rt_tgsigqueueinfo rt_sigreturn "
    "rt_sigsuspend rt_sigtimedwait rt_sigtimedwait_time64 sigaltstack sigreturn sigprocmask "
    "signalfd signalfd4 pause alarm nanosleep clock_nanosleep clock_nanosleep_time64 "
    "clock_gettime clock_gettime64 clock_getres clock_getres_time64 gettimeofday time getitimer "
    "setitimer timer_create timer_delete timer_getoverrun timer_gettime timer_gettime64 "
    "timer_settime timer_settime64 timerfd_create timerfd_gettime timerfd_gettime64 "
    "timerfd_settime timerfd_settime64 "
    // waiting and events
    "poll ppoll ppoll_time64 select _newselect pselect6 pselect6_time64 epoll_create "
    "epoll_create1 epoll_ctl epoll_ctl_old epoll_wait epoll_wait_old epoll_pwait epoll_pwait2 "
    "eventfd eventfd2 futex futex_time64 futex_waitv futex_wake futex_wait futex_requeue "
    "io_setup io_destroy io_submit io_cancel io_getevents io_pgetevents io_pgetevents_time64 "
    // sockets
    "socket socketpair socketcall bind listen accept accept4 connect getsockname getpeername "
    "getsockopt setsockopt shutdown send sendto sendmsg sendmmsg recv recvfrom recvmsg recvmmsg "
    "recvmmsg_time64 "
    // System V and POSIX ipc (in the step's own ipc namespace)
    "ipc msgget msgctl msgsnd msgrcv semget semctl semop semtimedop semtimedop_time64 shmget "
    "shmctl shmat shmdt mq_open mq_unlink mq_timedsend mq_timedsend_time64 mq_timedreceive "
    "mq_timedreceive_time64 mq_notify mq_getsetattr "
    // information
    "uname sysinfo getrandom get_thread_area set_thread_area cachestat";

// Architecture-specific additions (Docker allows these on x86).
constexpr const char* kAllowedX86 = "arch_prctl modify_ldt";

std::vector<std::string> Words(const char* text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

json Allow(std::vector<std::string> names) {
  return json{{"names", std::move(names)}, {"action", "SCMP_ACT_ALLOW"}};
}

json ArgEq(unsigned index, uint64_t value) {
  return json{{"index", index}, {"value", value}, {"op", "SCMP_CMP_EQ"}};
}

}  // namespace

json DefaultSeccompProfile() {
  json syscalls = json::array();
  syscalls.push_back(Allow(Words(kAllowed)));

  // personality(2): PER_LINUX, PER_LINUX32, UNAME26 variants and the query value only.
  for (uint64_t persona : {0x0ULL, 0x8ULL, 0x20000ULL, 0x20008ULL, 0xffffffffULL}) {
    json rule = Allow({"personality"});
    rule["args"] = json::array({ArgEq(0, persona)});
    syscalls.push_back(std::move(rule));
  }

  // clone(2) without any CLONE_NEW* flag (NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET,
  // 0x7E020000). On x86_64 and arm64 the flags are the first argument.
  constexpr uint64_t kNamespaceFlags = 0x7E020000ULL;
  json clone = Allow({"clone"});
  clone["args"] = json::array(
      {{{"index", 0}, {"value", kNamespaceFlags}, {"valueTwo", 0}, {"op", "SCMP_CMP_MASKED_EQ"}}});
  syscalls.push_back(std::move(clone));
  // clone3 passes its flags in a struct seccomp cannot inspect: ENOSYS makes glibc use clone.
  syscalls.push_back(
      json{{"names", {"clone3"}}, {"action", "SCMP_ACT_ERRNO"}, {"errnoRet", ENOSYS}});

  std::vector<std::string> arches;
#if defined(__x86_64__) || defined(__i386__)
  syscalls.push_back(Allow(Words(kAllowedX86)));
  arches = {"SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"};
#elif defined(__aarch64__)
  arches = {"SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"};
#endif

  return json{{"defaultAction", "SCMP_ACT_ERRNO"},
              {"defaultErrnoRet", EPERM},
              {"architectures", arches},
              {"syscalls", std::move(syscalls)}};
}

}  // namespace stagefarm::worker
