// Fuzz target: .dockerignore parsing and matching. The input is an ignore file, then optionally a
// NUL byte and newline-separated paths to match; without a NUL every line of the file is also
// tried as a path. Checks the contract HashContextDir relies on: when a directory is excluded and
// MayReincludeUnder says no exception reaches below it, everything below it is excluded too.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "stagefarm/common/dockerignore.h"

using namespace stagefarm;

namespace {

// A path the walker could produce: relative, no empty, "." or ".." parts.
bool IsWalkerPath(std::string_view p) {
  if (p.empty() || p.front() == '/' || p.back() == '/') return false;
  size_t start = 0;
  for (;;) {
    size_t slash = p.find('/', start);
    std::string_view part = p.substr(start, slash - start);
    if (part.empty() || part == "." || part == "..") return false;
    if (slash == std::string_view::npos) return true;
    start = slash + 1;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (16 << 10)) return 0;
  std::string_view input(reinterpret_cast<const char*>(data), size);
  size_t nul = input.find('\0');
  std::string_view patterns = input.substr(0, nul);
  std::string_view paths = nul == std::string_view::npos ? input : input.substr(nul + 1);
  StatusOr<DockerIgnore> di = DockerIgnore::Parse(patterns);
  if (!di.ok()) return 0;
  size_t tried = 0;
  while (!paths.empty() && tried++ < 64) {
    size_t nl = paths.find('\n');
    std::string_view raw = paths.substr(0, nl);
    paths = nl == std::string_view::npos ? std::string_view() : paths.substr(nl + 1);
    // Try the line as written and without a leading "!" (pattern lines as paths).
    std::string path(raw.substr(0, 256));
    if (!path.empty() && path[0] == '!') path.erase(0, 1);
    bool excluded = di->Excluded(path);
    (void)di->MayReincludeUnder(path);
    if (!IsWalkerPath(path)) continue;
    for (const char* child : {"x", "keep", "a/b.go"}) {
      std::string below = path + "/" + child;
      if (excluded && !di->MayReincludeUnder(path) && !di->Excluded(below)) __builtin_trap();
    }
  }
  return 0;
}
