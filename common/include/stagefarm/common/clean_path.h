// Lexical cleaning of slash-separated paths, as Go's path.Clean (and filepath.Clean on Linux),
// which docker build uses for WORKDIR, COPY destinations and .dockerignore patterns.
#pragma once

#include <string>
#include <string_view>

namespace stagefarm {

// No "." parts, ".." removes the part before it (kept at the start of a relative path, dropped at
// the root), no duplicate or trailing slashes; "" becomes ".". No filesystem access.
std::string CleanSlashPath(std::string_view path);

// Whether `name` can name one entry of a directory: not empty, "." or "..", and without '/' or
// NUL. A name from a peer (a context tree node, a tar) must pass before any system call sees it:
// the kernel reads a name up to its first NUL, so "..\0" would be "..".
bool IsEntryName(std::string_view name);

// `name` in double quotes for an error message, with '"', '\\' and control bytes escaped (a NUL
// shows as \x00), so a hostile name cannot cut or forge the message.
std::string QuoteName(std::string_view name);

}  // namespace stagefarm
