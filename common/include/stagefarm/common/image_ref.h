// Image references as docker writes them, normalized the way docker does:
// "busybox" -> "docker.io/library/busybox:latest", "reg:5000/app" -> "reg:5000/app:latest".
#pragma once

#include <string>
#include <string_view>

#include "stagefarm/common/status.h"

namespace stagefarm {

std::string NormalizeImageRef(std::string_view ref);

// The short form docker prints: "docker.io/library/busybox:latest" -> "busybox:latest".
std::string FamiliarImageRef(std::string_view normalized);

// Whether docker takes `ref` as a name to give an image (`docker build -t`, `docker tag`): the
// grammar of distribution/reference's ParseNormalizedNamed. The error is InvalidArgument with
// docker's own message: "invalid reference format", "invalid reference format: repository name
// (library/App) must be lowercase", "repository name must not be more than 255 characters",
// "invalid checksum digest format"...
Status CheckImageRef(std::string_view ref);

}  // namespace stagefarm
