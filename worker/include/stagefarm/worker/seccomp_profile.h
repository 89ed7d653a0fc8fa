// The seccomp filter every RUN step gets: the behaviour of Docker's default profile (moby
// profiles/seccomp/default.json, which `docker build` applies to RUN as well), written here from a
// compact allowlist rather than copied.
//
// What it does, as Docker's does for a container with the default capability set:
// - everything not listed fails with EPERM (an unknown new syscall is refused, not killed);
// - the ordinary syscalls of a process (files, sockets, signals, memory, time, ipc) are allowed;
// - those that need a capability we never grant are refused even if a capability leaked: mount,
//   umount2, pivot_root, unshare, setns, init_module, finit_module, delete_module, kexec_*, bpf,
//   perf_event_open, keyctl and friends, reboot, swapon, syslog, settimeofday,
//   open_by_handle_at...;
// - clone may not create namespaces (CLONE_NEW* flags masked to zero) and clone3, whose flags
//   live in memory seccomp cannot read, fails with ENOSYS so libc falls back to clone;
// - personality only to the harmless values (Linux, and READ_IMPLIES_EXEC/ADDR_NO_RANDOMIZE);
// - ptrace is allowed (as Docker does on kernels >= 4.8): the pid namespace, not seccomp, is what
//   keeps a step from tracing anything but its own processes.
#pragma once

#include <nlohmann/json.hpp>

namespace stagefarm::worker {

// The OCI runtime-spec `linux.seccomp` object for this machine's architecture.
nlohmann::json DefaultSeccompProfile();

}  // namespace stagefarm::worker
