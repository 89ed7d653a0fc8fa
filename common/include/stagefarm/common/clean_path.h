// Lexical cleaning of slash-separated paths, as Go's path.Clean (and filepath.Clean on Linux),
// which docker build uses for WORKDIR, COPY destinations and .dockerignore patterns.
#pragma once

#include <string>
#include <string_view>

namespace stagefarm {

// No "." parts, ".." removes the part before it (kept at the start of a relative path, dropped at
// the root), no duplicate or trailing slashes; "" becomes ".". No filesystem access.
std::string CleanSlashPath(std::string_view path);

}  // namespace stagefarm
