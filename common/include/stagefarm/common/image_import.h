// Moving whole images between the CAS and files: importing OCI layouts, OCI archives and
// `docker save` tarballs, and exporting stored images as OCI archives or layout directories.
//
// Layers stream through temp files (under $TMPDIR); no whole layer is held in memory.
#pragma once

#include <string>
#include <vector>

#include "stagefarm/common/cache_client.h"
#include "stagefarm/common/digest.h"
#include "stagefarm/common/status.h"

namespace stagefarm {

// Imports the image at `src` into the CAS and returns its stored manifest's digest (see oci.h);
// setting a ref is the caller's business. `src` is one of:
//   - an OCI image layout directory (oci-layout, index.json, blobs/),
//   - an OCI archive (a tar of such a layout, possibly gzip/zstd compressed as a whole),
//   - a `docker save` tarball (manifest.json, config JSON, layer tars), or its extracted directory.
// An index with several images picks linux/amd64, else the first. Layers may be uncompressed,
// gzip or zstd; each is stored uncompressed (its diffID) with its TOC, and the config blob is
// stored unchanged. A layer whose uncompressed digest differs from the config's rootfs.diff_ids
// entry is refused with DataLoss naming both digests; so is an OCI blob whose content does not
// match its descriptor. Malformed input is InvalidArgument, never a crash.
StatusOr<Digest> ImportImage(CacheClient& cache, const std::string& src);

// Writes the stored image `manifest` as an OCI archive at `dest_tar` (created or replaced):
// oci-layout, index.json (one entry, annotated with the first of `ref_names` as
// org.opencontainers.image.ref.name and io.containerd.image.name, if any) and
// blobs/sha256/<hex> for the manifest, config and layers, streamed from the cache. The blobs are
// the stored bytes, so the manifest digest is unchanged and layers are uncompressed.
Status ExportOciArchive(CacheClient& cache, const Digest& manifest,
                        const std::vector<std::string>& ref_names, const std::string& dest_tar);

// The same as an OCI image layout directory at `dest_dir` (created if missing; blobs already
// there are kept).
Status ExportOciLayoutDir(CacheClient& cache, const Digest& manifest,
                          const std::vector<std::string>& ref_names, const std::string& dest_dir);

}  // namespace stagefarm
