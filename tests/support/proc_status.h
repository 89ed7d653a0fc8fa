// A process's memory as /proc/<pid>/status reports it, for tests that bound it.
#pragma once

#include <cstdint>
#include <fstream>
#include <string>

namespace stagefarm::testing {

// A field of /proc/<pid>/status in bytes ("VmRSS", "VmHWM"); pid may be "self". 0 if unreadable.
inline uint64_t ProcStatusBytes(const std::string& pid, const std::string& field) {
  std::ifstream in("/proc/" + pid + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stoull(line.substr(field.size() + 1)) * 1024;
  }
  return 0;
}

}  // namespace stagefarm::testing
