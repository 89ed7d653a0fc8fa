// The OCI runtime-spec config.json of a RUN step's sandbox: Docker's defaults (namespaces,
// capabilities, seccomp profile (seccomp_profile.h), masked and read-only /proc paths, a minimal
// /dev) with our rootfs, process and limits.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "stagefarm/worker/user_db.h"

namespace stagefarm::worker {

// One more mount of the sandbox (RUN --mount), appended after the default ones in this order.
struct SandboxMount {
  std::string destination;  // absolute, inside the container
  std::string type;         // "bind" or "tmpfs"
  std::string source;       // host path for binds; "tmpfs" for tmpfs
  std::vector<std::string> options;
};

struct SandboxConfig {
  std::vector<std::string> args;
  std::vector<std::string> env;  // "K=V"; PATH and HOME are added when missing, as Docker does
  std::string cwd = "/";
  ResolvedUser user;
  std::string rootfs;  // absolute; the step's overlay merged dir, writable
  std::string hostname = "buildkitsandbox";
  // A network namespace of its own with loopback only; otherwise the worker's network.
  bool isolated_network = false;
  // Files generated per step outside the rootfs and bind-mounted over /etc/hosts and
  // /etc/resolv.conf: never captured. As BuildKit, /etc/hostname is the image's own.
  std::string hosts_file, resolv_conf_file;
  // linux.cgroupsPath (e.g. a StepCgroup's runtime_path()); empty = the runtime's default.
  std::string cgroups_path;
  // Limits on the container's own cgroup; 0 = none. (The executor puts memory and pids on its
  // StepCgroup instead, so that the OOM counters survive the container.)
  uint64_t memory_limit_bytes = 0;
  uint32_t pids_limit = 0;
  double cpus = 0;
  bool seccomp = true;  // Docker's default profile; false only for RUN --security=insecure
  std::vector<SandboxMount> mounts;  // RUN --mount; the runtime creates missing mount points
};

// The files (absolute paths in the rootfs) the runtime bind-mounts over, so it may create them
// in the upper dir when the image lacks them; the caller removes those stubs (MountStubs) before
// taking the diff, as BuildKit's executor does. (/proc, /sys and /dev stay: BuildKit's layers
// keep them.)
const std::vector<std::string>& SandboxMountPoints();

// config.json's text.
std::string MakeOciConfig(const SandboxConfig& config);

}  // namespace stagefarm::worker
