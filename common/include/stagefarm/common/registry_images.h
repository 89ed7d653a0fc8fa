// Images between a registry and the farm's store: a pull fetches an image into a temp OCI layout
// and imports it (ImportImage), so the result is the same kind of record as `image import`; a
// push exports a stored image with compressed layers (PrepareExport) and uploads it.
//
// A pull records the registry's manifest digest -> stored manifest as the internal ref
// PulledRef(digest), so pulling the same digest again downloads nothing.
#pragma once

#include <string>
#include <vector>

#include "stagefarm/common/cache_client.h"
#include "stagefarm/common/digest.h"
#include "stagefarm/common/image_export.h"
#include "stagefarm/common/registry.h"
#include "stagefarm/common/status.h"

namespace stagefarm {

// The internal ref that maps a registry manifest digest to the stored manifest made from it.
std::string PulledRef(const Digest& registry_manifest);

struct PullResult {
  Digest registry_digest;   // what the reference resolved to in the registry
  Digest stored_manifest;   // the image in the store
  bool downloaded = false;  // false: the store already held it
  uint64_t downloaded_bytes = 0;
};

// Resolves `ref` and, unless the store already holds that digest, fetches the image (the
// linux/amd64 entry of an index) and imports it. The ref's own name is not set: the caller
// names it.
StatusOr<PullResult> PullImage(RegistryClient& registry, CacheClient& cache,
                               const RegistryRef& ref);

struct PushResult {
  Digest manifest;  // as pushed (compressed layers)
  int uploaded = 0, existed = 0, mounted = 0;
  uint64_t uploaded_bytes = 0;
};

// Pushes the stored image `stored_manifest` to `dest` with its layers in `compression`.
// `mount_from`: repositories of the same registry that may hold its blobs (cross-repo mount).
StatusOr<PushResult> PushImage(RegistryClient& registry, CacheClient& cache,
                               const Digest& stored_manifest, const RegistryRef& dest,
                               LayerCompression compression,
                               const std::vector<std::string>& mount_from = {});

}  // namespace stagefarm
