// How a worker runs steps: where it keeps its files, which OCI runtime it uses and the limits every
// sandbox gets.
#pragma once

#include <cstdint>
#include <string>

namespace stagefarm::worker {

struct WorkerOptions {
  // The worker's directory: <root>/layers/<diffID hex> (extracted layers, shared by all steps),
  // <root>/steps/... (one temp dir per running step), <root>/cache-mounts, <root>/runtime (the OCI
  // runtime's state). Upper and work dirs live here, so it must not be on overlayfs itself.
  std::string root;
  // "crun", "runc" or an absolute path to either.
  std::string runtime = "crun";
  // Per step; a task's own timeout_seconds wins when non-zero.
  uint32_t step_timeout_seconds = 3600;
  // Per RUN step, on a cgroup the worker makes below its own (StepCgroup), so that a step killed
  // for memory fails with "out of memory". 0 = no limit.
  uint64_t memory_limit_bytes = 0;
  uint32_t pids_limit = 0;
  double cpus = 0;  // 0 = no limit; 1.5 = one and a half CPUs
  // "default": RUN steps share the worker's network unless the step says --network=none;
  // "none": every RUN step gets a network namespace with loopback only.
  std::string network_policy = "default";
  // Disk budget of the layer store (--max-disk): past it, the least recently used layers no
  // running task needs are removed, down to 90% of it. 0 = unbounded. See LayerStore.
  uint64_t max_disk_bytes = 0;
  // CheckHost: when crun cannot run on this host and runc can, use runc instead of failing.
  bool allow_runtime_fallback = false;
};

}  // namespace stagefarm::worker
