// Running one container with an OCI runtime (crun or runc) from a prepared bundle, streaming its
// output, enforcing a timeout and honouring cancellation.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "stagefarm/common/status.h"

namespace stagefarm::worker {

struct SandboxRequest {
  std::string runtime;       // "crun", "runc" or a path
  std::string state_root;    // the runtime's --root (its container state)
  std::string bundle_dir;    // holds config.json
  std::string container_id;  // unique among running containers
  uint32_t timeout_seconds = 3600;
  // Set from another thread to stop the container; checked every 100 ms.
  const std::atomic<bool>* cancelled = nullptr;
  // Receives the command's stdout and stderr (one stream) as it is written, on the calling thread.
  std::function<void(std::string_view)> on_output;
};

// Runs `runtime run --bundle <dir> <id>` (posix_spawn; stdin /dev/null) and returns the command's
// exit code (128+N when killed by signal N). Cancelled when `cancelled` was set, DeadlineExceeded
// after the timeout: in both cases the container is killed (`kill <id> KILL`, then `delete -f`)
// before this returns, within about a second. Other errors: the runtime could not be started.
StatusOr<int> RunSandbox(const SandboxRequest& request);

}  // namespace stagefarm::worker
