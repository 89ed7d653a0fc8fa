// A real `stagefarm cache` server for integration tests, owned by the test (killed and reaped
// with the ChildProcess).
#pragma once

#include <memory>
#include <regex>
#include <string>

#include "support/process.h"

namespace stagefarm::testing {

struct CacheServerProcess {
  std::unique_ptr<ChildProcess> process;
  std::string endpoint;  // empty if the server did not come up (see process->Stderr())
};

// Starts the server on tcp://127.0.0.1 (a free port) with its data in `data_dir`.
inline CacheServerProcess StartCacheServer(const std::string& data_dir) {
  CacheServerProcess s;
  s.process = std::make_unique<ChildProcess>(
      std::vector<std::string>{STAGEFARM_BINARY, "cache", "--listen", "tcp://127.0.0.1:0",
                               "--data", data_dir},
      "cache");
  auto ep = s.process->WaitForStderr(std::regex("cache server listening on (tcp://[0-9.:]+)"),
                                     std::chrono::seconds(30));
  if (ep) s.endpoint = *ep;
  return s;
}

}  // namespace stagefarm::testing
