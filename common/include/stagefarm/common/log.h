// Daemon logging to stderr: one line per message with a UTC timestamp and level. Thread-safe.
#pragma once

#include <string_view>

namespace stagefarm {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Messages below `level` are dropped. The default is kInfo.
void SetLogLevel(LogLevel level);
// A prefix naming the process part, e.g. "coordinator"; shown in every line.
void Log(LogLevel level, std::string_view message);
inline void LogDebug(std::string_view m) { Log(LogLevel::kDebug, m); }
inline void LogInfo(std::string_view m) { Log(LogLevel::kInfo, m); }
inline void LogWarning(std::string_view m) { Log(LogLevel::kWarning, m); }
inline void LogError(std::string_view m) { Log(LogLevel::kError, m); }

}  // namespace stagefarm
