// Image references as docker writes them, normalized the way docker does:
// "busybox" -> "docker.io/library/busybox:latest", "reg:5000/app" -> "reg:5000/app:latest".
#pragma once

#include <string>
#include <string_view>

namespace stagefarm {

std::string NormalizeImageRef(std::string_view ref);

// The short form docker prints: "docker.io/library/busybox:latest" -> "busybox:latest".
std::string FamiliarImageRef(std::string_view normalized);

}  // namespace stagefarm
