// Exporting stored images (see oci.h) out of the CAS: OCI layouts (directory or tar),
// `docker load`-able tarballs, and the image's final filesystem (directory or plain tar).
//
// Layers are stored uncompressed. A compressed form (gzip or zstd) is made once per diffID and
// compression, stored in the CAS beside it, and remembered under an internal ref
// (CompressedLayerRef), so exporting or pushing the same layer again does not recompress it.
// Compression is deterministic: gzip without a name or timestamp at a fixed level, zstd at a fixed
// level; the same layer always compresses to the same digest.
//
// Layers stream through temp files under $TMPDIR; no whole layer is held in memory.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "stagefarm/common/cache_client.h"
#include "stagefarm/common/digest.h"
#include "stagefarm/common/oci.h"
#include "stagefarm/common/status.h"

namespace stagefarm {

enum class LayerCompression { kUncompressed, kGzip, kZstd };

// "gzip", "zstd", "uncompressed" (also "none"); InvalidArgument otherwise.
StatusOr<LayerCompression> ParseLayerCompression(std::string_view name);

// Refs under this prefix are the farm's bookkeeping, not images (`image ls` hides them).
inline constexpr std::string_view kInternalRefPrefix = "stagefarm.internal/";
// The ref that maps a layer's diffID to its compressed blob.
std::string CompressedLayerRef(const Digest& diff_id, LayerCompression compression);

// The descriptor of layer `diff_id` under `compression`: for kUncompressed the stored blob
// itself; otherwise its compressed form, made and stored on first use and looked up afterwards.
StatusOr<Descriptor> CompressedLayer(CacheClient& cache, const Digest& diff_id,
                                     LayerCompression compression);

// An image ready to leave the farm: a manifest whose layers are in the chosen compression (for
// kUncompressed the stored manifest, unchanged), and the blobs it names.
struct ExportableImage {
  std::string manifest_bytes;
  Digest manifest;  // of manifest_bytes
  Manifest parsed;  // config and layers as exported
};
StatusOr<ExportableImage> PrepareExport(CacheClient& cache, const Digest& stored_manifest,
                                        LayerCompression compression);

struct ImageExportOptions {
  std::vector<std::string> ref_names;  // normalized refs ("docker.io/library/app:latest")
  LayerCompression compression = LayerCompression::kUncompressed;
};

// An OCI image layout, as a tar (`as_tar`) or a directory. index.json has one entry, annotated
// with the first ref name, if any.
Status ExportOciImage(CacheClient& cache, const Digest& manifest, const ImageExportOptions& options,
                      const std::string& dest, bool as_tar);

// A tarball `docker load` accepts: manifest.json (Config, RepoTags in familiar form, Layers) and
// a `repositories` file, over the same blobs/sha256 tree as an OCI layout (as `docker save` of
// Docker 25 writes), so it is also an OCI archive.
Status ExportDockerArchive(CacheClient& cache, const Digest& manifest,
                           const ImageExportOptions& options, const std::string& dest_tar);

// The image's final filesystem: its layers applied in order (whiteouts and opaque directories
// honoured) into the directory `dest` (created if missing), or written as a deterministic plain
// tar at `dest` when `as_tar`. Ownership is kept when running as root.
Status ExportRootfs(CacheClient& cache, const Digest& manifest, const std::string& dest,
                    bool as_tar);

}  // namespace stagefarm
