// Whether this host can run RUN steps, checked once at worker start-up.
#pragma once

#include <string>

#include "stagefarm/common/status.h"
#include "stagefarm/worker/worker_options.h"

namespace stagefarm::worker {

// Checks that the OCI runtime is present and runs (`<runtime> --version`), that overlayfs can be
// mounted under options.root (which must not itself be on overlayfs), and that crun will accept
// the host's cgroups. On hybrid cgroups (v1 controllers plus a v2 hierarchy holding hugetlb) crun
// refuses to start every container; then this returns FailedPrecondition saying what to run,
// or, with options.allow_runtime_fallback and a working runc, chooses runc and says so on stderr.
// Returns the runtime to use (a name or path that posix_spawnp can start).
StatusOr<std::string> CheckHost(const WorkerOptions& options);

// The cgroup part of CheckHost, with the paths as parameters so tests can give a fake hierarchy:
// FailedPrecondition when crun would refuse to start ("cgroups in hybrid mode not supported").
Status CheckCgroupsForCrun(const std::string& cgroup_root = "/sys/fs/cgroup",
                           const std::string& proc_cgroups = "/proc/cgroups");

}  // namespace stagefarm::worker
