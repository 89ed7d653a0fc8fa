#include "stagefarm/common/registry_images.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "image_files.h"
#include "stagefarm/common/image_import.h"
#include "stagefarm/common/oci.h"

namespace stagefarm {
namespace {

using nlohmann::json;

std::string Str(const json& j, const char* key) {
  return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : std::string();
}

bool IsIndex(const FetchedManifest& m) {
  if (m.media_type == kMediaTypeOciIndex || m.media_type == kMediaTypeDockerManifestList) {
    return true;
  }
  json j = json::parse(m.bytes, nullptr, false);
  return j.is_object() && j.contains("manifests");
}

// The linux/amd64 entry of an index (the first entry when none says its platform).
StatusOr<Digest> PlatformEntry(const FetchedManifest& index, const std::string& what) {
  json j = json::parse(index.bytes, nullptr, false);
  if (!j.is_object() || !j.contains("manifests") || !j["manifests"].is_array()) {
    return InvalidArgumentError(what + ": the index has no manifests list");
  }
  const json* chosen = nullptr;
  bool any_platform = false;
  for (const json& m : j["manifests"]) {
    if (!m.is_object()) continue;
    if (m.contains("platform") && m["platform"].is_object()) {
      any_platform = true;
      const json& p = m["platform"];
      if (Str(p, "os") == "linux" && Str(p, "architecture") == "amd64") {
        chosen = &m;
        break;
      }
    } else if (!chosen) {
      chosen = &m;
    }
  }
  if (chosen == nullptr) {
    return NotFoundError(what + ": no linux/amd64 image in the index" +
                         std::string(any_platform ? "" : " (it lists no manifests)"));
  }
  if (!chosen->contains("digest") || !(*chosen)["digest"].is_string()) {
    return InvalidArgumentError(what + ": an index entry has no digest");
  }
  // A descriptor's size is exact and required: 0 would be the empty blob, not "unknown".
  if (!chosen->contains("size") || !(*chosen)["size"].is_number_unsigned()) {
    return InvalidArgumentError(what + ": the index entry " +
                                (*chosen)["digest"].get<std::string>() + " has no valid size");
  }
  return Digest::Parse((*chosen)["digest"].get<std::string>(), (*chosen)["size"].get<uint64_t>());
}

Status WriteFile(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) return InternalError("write " + path);
  return Status();
}

}  // namespace

std::string PulledRef(const Digest& registry_manifest) {
  return std::string(kInternalRefPrefix) + "pulled@" + registry_manifest.str();
}

StatusOr<PullResult> PullImage(RegistryClient& registry, CacheClient& cache,
                               const RegistryRef& ref) {
  PullResult result;
  SF_ASSIGN_OR_RETURN(result.registry_digest, registry.Resolve(ref));
  SF_ASSIGN_OR_RETURN(std::optional<Digest> known, cache.GetRef(PulledRef(result.registry_digest)));
  if (known && LoadImage(cache, *known).ok()) {
    result.stored_manifest = *known;
    return result;
  }
  const std::string what = ref.str();
  SF_ASSIGN_OR_RETURN(FetchedManifest manifest,
                      registry.GetManifest(ref, result.registry_digest.str()));
  for (int depth = 0; IsIndex(manifest); ++depth) {
    if (depth == 3) return InvalidArgumentError(what + ": image index nested too deeply");
    SF_ASSIGN_OR_RETURN(Digest entry, PlatformEntry(manifest, what));
    SF_ASSIGN_OR_RETURN(manifest, registry.GetManifest(ref, entry.str()));
    if (manifest.digest != entry) {
      return DataLossError(what + ": the registry sent " + std::to_string(manifest.digest.size) +
                           " bytes for the manifest " + entry.str() + " of " +
                           std::to_string(entry.size) + " bytes");
    }
  }
  StatusOr<Manifest> parsed = ParseManifest(manifest.bytes);
  if (!parsed.ok()) return parsed.status().Annotate(what + ": manifest " + manifest.digest.str());

  // A temp OCI layout that ImportImage reads: the manifest, its config and its layers.
  SF_ASSIGN_OR_RETURN(auto tmp, image_files::ScopedTempDir::Create("stagefarm-pull"));
  const std::string blobs = tmp->path() + "/blobs/sha256/";
  std::error_code ec;
  std::filesystem::create_directories(blobs, ec);
  if (ec) return InternalError("mkdir " + blobs + ": " + ec.message());
  json index = {{"schemaVersion", 2},
                {"mediaType", std::string(kMediaTypeOciIndex)},
                {"manifests", json::array({{{"mediaType", manifest.media_type},
                                            {"digest", manifest.digest.str()},
                                            {"size", manifest.digest.size}}})}};
  SF_RETURN_IF_ERROR(WriteFile(tmp->path() + "/oci-layout", R"({"imageLayoutVersion":"1.0.0"})"));
  SF_RETURN_IF_ERROR(WriteFile(tmp->path() + "/index.json", index.dump()));
  SF_RETURN_IF_ERROR(WriteFile(blobs + manifest.digest.hex, manifest.bytes));
  std::vector<Digest> wanted = {parsed->config.digest};
  for (const Descriptor& d : parsed->layers) wanted.push_back(d.digest);
  for (const Digest& d : wanted) {
    if (d.size > kMaxConfigBytes && d == parsed->config.digest) {
      return InvalidArgumentError(what + ": the config is larger than " +
                                  std::to_string(kMaxConfigBytes) + " bytes");
    }
    if (std::filesystem::exists(blobs + d.hex)) continue;  // a layer listed twice
    SF_RETURN_IF_ERROR(registry.FetchBlobToFile(ref, d, blobs + d.hex));
    result.downloaded_bytes += d.size;
  }
  SF_ASSIGN_OR_RETURN(result.stored_manifest, ImportImage(cache, tmp->path()));
  SF_RETURN_IF_ERROR(cache.PutRef(PulledRef(result.registry_digest), result.stored_manifest));
  result.downloaded = true;
  return result;
}

StatusOr<PushResult> PushImage(RegistryClient& registry, CacheClient& cache,
                               const Digest& stored_manifest, const RegistryRef& dest,
                               LayerCompression compression,
                               const std::vector<std::string>& mount_from) {
  SF_ASSIGN_OR_RETURN(ExportableImage image, PrepareExport(cache, stored_manifest, compression));
  PushResult result;
  std::vector<Digest> blobs = {image.parsed.config.digest};
  for (const Descriptor& d : image.parsed.layers) blobs.push_back(d.digest);
  for (const Digest& blob : blobs) {
    auto read = [&](uint64_t offset, uint64_t length, const ByteSink& sink) {
      return cache.Read(blob, offset, length, sink);
    };
    SF_ASSIGN_OR_RETURN(BlobPush how, registry.PushBlob(dest, blob, read, mount_from));
    switch (how) {
      case BlobPush::kExisted:
        ++result.existed;
        break;
      case BlobPush::kMounted:
        ++result.mounted;
        break;
      case BlobPush::kUploaded:
        ++result.uploaded;
        result.uploaded_bytes += blob.size;
        break;
    }
  }
  SF_ASSIGN_OR_RETURN(result.manifest,
                      registry.PutManifest(dest, image.parsed.media_type, image.manifest_bytes));
  return result;
}

}  // namespace stagefarm
