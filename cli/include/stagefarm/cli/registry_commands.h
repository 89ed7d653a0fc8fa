// Registry pulls and pushes as the commands use them: `image pull`, `image push`, and
// `stagefarm build` resolving its registry base images and pushing with -o type=image,push=true.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "stagefarm/common/cache_client.h"
#include "stagefarm/common/digest.h"
#include "stagefarm/common/image_export.h"
#include "stagefarm/common/status.h"

namespace stagefarm::cli {

// Receives a line for the person watching ("resolved ... to sha256:...").
using NoteFn = std::function<void(const std::string&)>;

// Before a build: every image the Dockerfile names (after ARG expansion) whose reference names a
// registry host is resolved to a digest once and printed, pulled into the store unless it is
// there, and stored under its normalized name, where the coordinator looks for it. Other images
// are left to the coordinator, and so are errors in the Dockerfile itself.
Status PullRegistryBaseImages(CacheClient& cache, std::string_view dockerfile,
                              const std::string& dockerfile_name,
                              const std::map<std::string, std::string>& build_args,
                              const std::string& target,
                              const std::vector<std::string>& insecure_registries,
                              const NoteFn& note);

// Pushes the stored image `manifest` to the registry reference `dest`.
Status PushStoredImage(CacheClient& cache, const Digest& manifest, const std::string& dest,
                       LayerCompression compression,
                       const std::vector<std::string>& insecure_registries, const NoteFn& note);

}  // namespace stagefarm::cli
