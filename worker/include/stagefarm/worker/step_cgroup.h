// The cgroup that holds one RUN step's memory and pids limits, owned by the worker rather than by
// the OCI runtime, so that it outlives the container: the runtime removes its own cgroup when
// the container exits, and with it the counters that say whether the kernel's OOM killer ran.
//
// Layout: P = <the worker's own memory cgroup>/stagefarm-<name>; the limits are written on P and
// the runtime is given P/ctr as cgroupsPath (it creates that child, puts the container in it and
// removes it). With cgroup v1 (also hybrid hosts) P is made in the memory and pids hierarchies;
// with v2 in the unified one, whose parent must delegate the memory and pids controllers.
// The destructor removes P (and any leftover child) from every hierarchy the runtime touched.
#pragma once

#include <cstdint>
#include <string>

#include "stagefarm/common/status.h"

namespace stagefarm::worker {

class StepCgroup {
 public:
  StepCgroup() = default;
  // `memory_limit_bytes` / `pids_limit` 0 = none. `cgroup_root` is where the hierarchies are
  // mounted; `self_cgroup` the text of /proc/self/cgroup (parameters for tests).
  static StatusOr<StepCgroup> Create(const std::string& name, uint64_t memory_limit_bytes,
                                     uint32_t pids_limit,
                                     const std::string& cgroup_root = "/sys/fs/cgroup",
                                     const std::string& self_cgroup_path = "/proc/self/cgroup");
  ~StepCgroup();
  StepCgroup(StepCgroup&& o) noexcept;
  StepCgroup& operator=(StepCgroup&& o) noexcept;
  StepCgroup(const StepCgroup&) = delete;
  StepCgroup& operator=(const StepCgroup&) = delete;

  // config.json's linux.cgroupsPath: P/ctr, relative to each hierarchy's root.
  std::string runtime_path() const { return path_ + "/ctr"; }

  // After the container exited with `exit_code`: whether the OOM killer killed something of it.
  // v2: memory.events' oom_kill of P (which counts its descendants). v1 has no hierarchical
  // count, so: killed by SIGKILL (137) while P's memory (or memory+swap) counters show the limit
  // was hit (failcnt, or peak usage at the limit).
  bool OomKilled(int exit_code) const;

 private:
  std::string root_;  // cgroup mount root
  std::string path_;  // P, relative to a hierarchy's root, starting with '/'
  bool unified_ = false;
};

}  // namespace stagefarm::worker
