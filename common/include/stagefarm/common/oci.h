// OCI image formats: media types, the image config document, manifests, and images as the farm
// stores them in the CAS.
//
// A stored manifest references the UNCOMPRESSED layers (media type kMediaTypeLayerTar, digest =
// diffID) and carries each layer's TOC in descriptor annotations kAnnotationToc (digest) and
// kAnnotationTocSize (decimal bytes). Compressed forms are made on export or push.
//
// All parsers take untrusted bytes: malformed JSON or a wrong shape is InvalidArgument with a
// message naming the field, never a crash. Serializers are deterministic (sorted keys, no
// whitespace): equal inputs give equal bytes and so equal digests.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "stagefarm/common/cache_client.h"
#include "stagefarm/common/digest.h"
#include "stagefarm/common/image_config.h"
#include "stagefarm/common/layer_ref.h"
#include "stagefarm/common/status.h"

namespace stagefarm {

inline constexpr std::string_view kMediaTypeOciIndex = "application/vnd.oci.image.index.v1+json";
inline constexpr std::string_view kMediaTypeOciManifest =
    "application/vnd.oci.image.manifest.v1+json";
inline constexpr std::string_view kMediaTypeOciConfig = "application/vnd.oci.image.config.v1+json";
inline constexpr std::string_view kMediaTypeLayerTar = "application/vnd.oci.image.layer.v1.tar";
inline constexpr std::string_view kMediaTypeLayerTarGzip =
    "application/vnd.oci.image.layer.v1.tar+gzip";
inline constexpr std::string_view kMediaTypeLayerTarZstd =
    "application/vnd.oci.image.layer.v1.tar+zstd";
inline constexpr std::string_view kMediaTypeDockerManifest =
    "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr std::string_view kMediaTypeDockerManifestList =
    "application/vnd.docker.distribution.manifest.list.v2+json";
inline constexpr std::string_view kMediaTypeDockerConfig =
    "application/vnd.docker.container.image.v1+json";
inline constexpr std::string_view kMediaTypeDockerLayerGzip =
    "application/vnd.docker.image.rootfs.diff.tar.gzip";

inline constexpr std::string_view kAnnotationToc = "dev.stagefarm.toc";
inline constexpr std::string_view kAnnotationTocSize = "dev.stagefarm.toc.size";
inline constexpr std::string_view kAnnotationRefName = "org.opencontainers.image.ref.name";

// Bounds on documents read into memory.
inline constexpr uint64_t kMaxManifestBytes = 4 << 20;
inline constexpr uint64_t kMaxConfigBytes = 16 << 20;
inline constexpr size_t kMaxLayers = 4096;

// An OCI content descriptor.
struct Descriptor {
  std::string media_type;
  Digest digest;  // digest.size is the descriptor's "size"
  std::map<std::string, std::string> annotations;
  friend bool operator==(const Descriptor&, const Descriptor&) = default;
};

// An image manifest (OCI, or Docker schema 2 when parsed).
struct Manifest {
  std::string media_type = std::string(kMediaTypeOciManifest);
  Descriptor config;
  std::vector<Descriptor> layers;
  std::map<std::string, std::string> annotations;
  friend bool operator==(const Manifest&, const Manifest&) = default;
};

// An image as the farm stores it.
struct ImageRecord {
  Digest manifest;       // filled by StoreImage / LoadImage
  Digest config_digest;  // filled by StoreImage / LoadImage
  ImageConfig config;
  std::vector<HistoryEntry> history;
  std::vector<LayerRef> layers;  // lowest first
  std::string architecture = "amd64", os = "linux";
  std::string created;  // RFC 3339; empty to leave out (deterministic builds)
};

// The "config" object of an image config document, as JSON text.
std::string ImageConfigToJson(const ImageConfig& config);
StatusOr<ImageConfig> ImageConfigFromJson(std::string_view json);

// The whole image config document (architecture, os, created, config, rootfs.diff_ids, history)
// for `image`; the layers' diff_ids come from image.layers.
std::string SerializeImageConfigDocument(const ImageRecord& image);
// Parses an image config document: fills architecture, os, created, config and history of
// `image` and returns the rootfs.diff_ids (sizes unknown: 0).
StatusOr<std::vector<Digest>> ParseImageConfigDocument(std::string_view bytes, ImageRecord* image);

std::string SerializeManifest(const Manifest& manifest);
// Accepts OCI image manifests and Docker schema 2 manifests; refuses indexes and manifest lists.
StatusOr<Manifest> ParseManifest(std::string_view bytes);
// The manifest the farm stores for a config blob and uncompressed layers with their TOCs.
Manifest MakeStoredManifest(const Digest& config, const std::vector<LayerRef>& layers);
// The layers of a stored manifest: each descriptor's digest is the diffID, the TOC comes from
// the annotations. InvalidArgument if a layer has no TOC annotation.
StatusOr<std::vector<LayerRef>> StoredLayers(const Manifest& manifest);

// Reads the manifest and config from the CAS and validates them (bounded sizes, one diff_id per
// layer, each layer's descriptor digest equal to its diff_id).
StatusOr<ImageRecord> LoadImage(CacheClient& cache, const Digest& manifest);
// Writes the config and manifest blobs for `image` and returns it with config_digest and manifest
// filled. The layer and TOC blobs must already be in the CAS. Deterministic: equal inputs give
// an equal manifest digest.
StatusOr<ImageRecord> StoreImage(CacheClient& cache, ImageRecord image);

}  // namespace stagefarm
