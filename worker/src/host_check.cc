#include "stagefarm/worker/host_check.h"

#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <sstream>

#include "stagefarm/common/child_process.h"
#include "stagefarm/worker/fs_util.h"
#include "stagefarm/worker/overlay_mount.h"

namespace stagefarm::worker {

namespace {

constexpr long kOverlayfsMagic = 0x794c7630;

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

bool IsCrun(const std::string& runtime) {
  std::string base = runtime.substr(runtime.rfind('/') + 1);
  return base.find("crun") != std::string::npos;
}

Status CheckRuntime(const std::string& runtime) {
  auto ran = RunCommand({runtime, "--version"}, 10);
  if (!ran.ok()) {
    return FailedPreconditionError("OCI runtime \"" + runtime +
                                   "\" cannot be started: " + ran.status().message() +
                                   " (install crun or runc, or pass the "
                                   "runtime's path)");
  }
  if (ran->exit_code != 0) {
    return FailedPreconditionError("OCI runtime \"" + runtime + "\" --version exited with " +
                                   std::to_string(ran->exit_code) + ": " + ran->output);
  }
  return Status();
}

Status CheckOverlay(const std::string& root) {
  struct statfs fs;
  if (::statfs(root.c_str(), &fs) != 0) return ErrnoError("statfs " + root, errno);
  if (static_cast<long>(fs.f_type) == kOverlayfsMagic) {
    return FailedPreconditionError("worker root " + root +
                                   " is on overlayfs, which cannot hold overlay upper dirs; use a "
                                   "directory on ext4, xfs or tmpfs (in a container: a volume)");
  }
  SF_ASSIGN_OR_RETURN(TempDir probe, TempDir::Make(root + "/steps", "probe-"));
  for (const char* d : {"/lower", "/upper", "/work", "/merged"}) {
    SF_RETURN_IF_ERROR(MakeDirs(probe.path() + d));
  }
  auto mounted =
      MountOverlay({{probe.path() + "/lower"}, "", probe.path() + "/upper", probe.path() + "/work"},
                   probe.path() + "/merged");
  if (!mounted.ok()) {
    return FailedPreconditionError("overlayfs is not usable under " + root + ": " +
                                   mounted.status().message() +
                                   " (run as root; `modprobe overlay`, or scripts/prepare-host)");
  }
  return mounted->Unmount();
}

}  // namespace

Status CheckCgroupsForCrun(const std::string& cgroup_root, const std::string& proc_cgroups) {
  bool v2_present = Exists(cgroup_root + "/unified/cgroup.procs");
  bool v1_present = Exists(cgroup_root + "/memory/tasks") || Exists(cgroup_root + "/cpu/tasks") ||
                    Exists(cgroup_root + "/pids/tasks");
  if (!v2_present || !v1_present) return Status();  // pure v1 or pure v2: crun is fine
  if (Exists(cgroup_root + "/hugetlb/tasks")) return Status();
  auto text = ReadFile(proc_cgroups);
  if (!text.ok()) return Status();  // cannot tell; let the first run say more
  std::istringstream in(*text);
  std::string name;
  int hierarchy = 0, count = 0, enabled = 0;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    if (!(fields >> name >> hierarchy >> count >> enabled)) continue;
    if (name == "hugetlb" && enabled == 1 && hierarchy == 0) {
      return FailedPreconditionError(
          "crun cannot run containers on this host: cgroups are hybrid (v1 controllers plus a "
          "v2 hierarchy at " +
          cgroup_root +
          "/unified) and the hugetlb controller is not mounted "
          "on v1, so crun fails with \"cgroups in hybrid mode not supported\". Fix: run "
          "`mkdir -p " +
          cgroup_root + "/hugetlb && mount -t cgroup -o hugetlb cgroup " + cgroup_root +
          "/hugetlb` as root (scripts/prepare-host does this), or use "
          "--runtime runc");
    }
  }
  return Status();
}

StatusOr<std::string> CheckHost(const WorkerOptions& options) {
  if (options.root.empty()) return InvalidArgumentError("the worker needs a root directory");
  if (::geteuid() != 0) {
    return FailedPreconditionError(
        "the worker must run as root (it mounts overlayfs and starts "
        "containers); rootless mode is not supported yet");
  }
  SF_RETURN_IF_ERROR(MakeDirs(options.root, 0700));
  SF_RETURN_IF_ERROR(CheckOverlay(options.root));
  std::string runtime = options.runtime.empty() ? "crun" : options.runtime;
  SF_RETURN_IF_ERROR(CheckRuntime(runtime));
  if (IsCrun(runtime)) {
    Status cgroups = CheckCgroupsForCrun();
    if (!cgroups.ok()) {
      if (!options.allow_runtime_fallback) return cgroups;
      Status runc = CheckRuntime("runc");
      if (!runc.ok()) return cgroups.Annotate("and runc is not usable either");
      std::fprintf(stderr, "stagefarm worker: %s\nstagefarm worker: using runc instead of crun\n",
                   cgroups.message().c_str());
      return std::string("runc");
    }
  }
  return runtime;
}

}  // namespace stagefarm::worker
