#include "stagefarm/common/image_export.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "archive_util.h"
#include "image_files.h"
#include "stagefarm/common/image_import.h"
#include "stagefarm/common/image_ref.h"
#include "stagefarm/common/layer_tar.h"
#include "stagefarm/common/unique_fd.h"

namespace stagefarm {
namespace {

using nlohmann::json;
using namespace archive_util;  // NOLINT: private helpers of this library
using image_files::DirLayoutSink;
using image_files::LayoutSink;
using image_files::ScopedTempDir;
using image_files::TarLayoutSink;

constexpr const char* kGzipLevel = "6";
constexpr const char* kZstdLevel = "3";

std::string_view CompressionName(LayerCompression c) {
  switch (c) {
    case LayerCompression::kGzip:
      return "gzip";
    case LayerCompression::kZstd:
      return "zstd";
    case LayerCompression::kUncompressed:
      break;
  }
  return "uncompressed";
}

// Where the compressor's output goes: a file, hashed as it is written.
struct HashingFileWriter {
  int fd = -1;
  Sha256 hash;
  uint64_t size = 0;
  int error = 0;
};

la_ssize_t HashingWrite(struct archive*, void* client, const void* buf, size_t n) {
  auto* w = static_cast<HashingFileWriter*>(client);
  const char* p = static_cast<const char*>(buf);
  size_t left = n;
  while (left > 0) {
    ssize_t k = ::write(w->fd, p, left);
    if (k < 0 && errno == EINTR) continue;
    if (k < 0) {
      w->error = errno;
      return -1;
    }
    p += k;
    left -= static_cast<size_t>(k);
  }
  w->hash.Update(std::string_view(static_cast<const char*>(buf), n));
  w->size += n;
  return static_cast<la_ssize_t>(n);
}

// Compresses the blob `diff_id` from the cache into `path`; returns the compressed digest.
StatusOr<Digest> CompressBlob(CacheClient& cache, const Digest& diff_id, LayerCompression c,
                              const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd) return ErrnoError("create " + path, errno);
  HashingFileWriter w;
  w.fd = fd.get();
  ArchiveWritePtr a(archive_write_new());
  SF_CHECK(a != nullptr);
  // The raw format writes the one entry's data alone through the filter; no blocking, so no
  // padding after the compressed stream.
  int r = archive_write_set_format_raw(a.get());
  if (r == ARCHIVE_OK) r = archive_write_set_bytes_per_block(a.get(), 0);
  if (c == LayerCompression::kGzip) {
    if (r == ARCHIVE_OK) r = archive_write_add_filter_gzip(a.get());
    // No timestamp and no name in the gzip header: the output depends on the bytes alone.
    if (r == ARCHIVE_OK) r = archive_write_set_filter_option(a.get(), "gzip", "timestamp", nullptr);
    if (r == ARCHIVE_OK) {
      r = archive_write_set_filter_option(a.get(), "gzip", "compression-level", kGzipLevel);
    }
  } else {
    if (r == ARCHIVE_OK) r = archive_write_add_filter_zstd(a.get());
    if (r == ARCHIVE_OK) {
      r = archive_write_set_filter_option(a.get(), "zstd", "compression-level", kZstdLevel);
    }
  }
  if (r == ARCHIVE_OK) r = archive_write_open2(a.get(), &w, nullptr, HashingWrite, nullptr, nullptr);
  if (r != ARCHIVE_OK) {
    return InternalError("set up " + std::string(CompressionName(c)) + " compression: " +
                         ArchiveMessage(a.get(), "failed"));
  }
  EntryPtr e(archive_entry_new());
  archive_entry_set_pathname(e.get(), "layer.tar");
  archive_entry_set_filetype(e.get(), AE_IFREG);
  archive_entry_set_size(e.get(), static_cast<la_int64_t>(diff_id.size));
  if (archive_write_header(a.get(), e.get()) != ARCHIVE_OK) {
    return InternalError("compress: " + ArchiveMessage(a.get(), "failed"));
  }
  Sha256 check;
  SF_RETURN_IF_ERROR(cache.Read(diff_id, 0, 0, [&](std::string_view bytes) -> Status {
    check.Update(bytes);
    if (archive_write_data(a.get(), bytes.data(), bytes.size()) < 0) {
      if (w.error != 0) return ErrnoError("write " + path, w.error);
      return InternalError("compress: " + ArchiveMessage(a.get(), "failed"));
    }
    return Status();
  }));
  if (archive_write_close(a.get()) != ARCHIVE_OK) {
    if (w.error != 0) return ErrnoError("write " + path, w.error);
    return InternalError("compress: " + ArchiveMessage(a.get(), "failed"));
  }
  Digest read = check.Finish();
  if (read.hex != diff_id.hex || read.size != diff_id.size) {
    return DataLossError("layer " + diff_id.str() + " read back as " + read.str());
  }
  return w.hash.Finish();
}

// Streams a blob from the cache into `out`, verifying it against its digest.
Status CopyBlob(CacheClient& cache, const Digest& blob, const ByteSink& out) {
  Sha256 hash;
  uint64_t seen = 0;
  SF_RETURN_IF_ERROR(cache.Read(blob, 0, 0, [&](std::string_view bytes) -> Status {
    hash.Update(bytes);
    // A tar header promised blob.size bytes: never write more.
    if (seen + bytes.size() > blob.size) {
      return DataLossError("blob " + blob.str() + " is longer than its descriptor says");
    }
    seen += bytes.size();
    return out(bytes);
  }));
  Digest actual = hash.Finish();
  if (actual.hex != blob.hex || actual.size != blob.size) {
    return DataLossError("blob " + blob.str() + " read back as " + actual.str());
  }
  return Status();
}

std::string BlobPath(const Digest& d) { return "blobs/sha256/" + d.hex; }

std::function<Status(const ByteSink&)> Small(std::string bytes) {
  return [bytes = std::move(bytes)](const ByteSink& out) { return out(bytes); };
}

// Writes an OCI layout for `image` into `sink`; `extra` files (name -> bytes) go first.
Status WriteLayout(CacheClient& cache, const ExportableImage& image,
                   const std::vector<std::string>& ref_names,
                   const std::vector<std::pair<std::string, std::string>>& extra,
                   LayoutSink& sink) {
  json index_entry = {{"mediaType", image.parsed.media_type},
                      {"digest", image.manifest.str()},
                      {"size", image.manifest.size}};
  if (!ref_names.empty()) {
    index_entry["annotations"] = {{std::string(kAnnotationRefName), ref_names.front()},
                                  {"io.containerd.image.name", ref_names.front()}};
  }
  json index = {{"schemaVersion", 2},
                {"mediaType", std::string(kMediaTypeOciIndex)},
                {"manifests", json::array({index_entry})}};
  const std::string layout = R"({"imageLayoutVersion":"1.0.0"})";
  const std::string index_text = index.dump();
  SF_RETURN_IF_ERROR(sink.AddFile("oci-layout", layout.size(), Small(layout)));
  SF_RETURN_IF_ERROR(sink.AddFile("index.json", index_text.size(), Small(index_text)));
  for (const auto& [name, bytes] : extra) {
    SF_RETURN_IF_ERROR(sink.AddFile(name, bytes.size(), Small(bytes)));
  }
  SF_RETURN_IF_ERROR(sink.AddDir("blobs"));
  SF_RETURN_IF_ERROR(sink.AddDir("blobs/sha256"));
  SF_RETURN_IF_ERROR(sink.AddFile(BlobPath(image.manifest), image.manifest_bytes.size(),
                                  Small(image.manifest_bytes)));
  std::set<std::string> written = {image.manifest.hex};
  std::vector<Digest> blobs = {image.parsed.config.digest};
  for (const Descriptor& d : image.parsed.layers) blobs.push_back(d.digest);
  for (const Digest& blob : blobs) {
    if (!written.insert(blob.hex).second) continue;
    Status s = sink.AddFile(BlobPath(blob), blob.size,
                            [&](const ByteSink& out) { return CopyBlob(cache, blob, out); });
    if (!s.ok()) return s.Annotate("export blob " + blob.str());
  }
  return sink.Finish();
}

// Applies one layer tar (uncompressed) to the directory `root` (a real path without symlinks).
Status ApplyLayer(const std::string& tar_path, const std::string& root) {
  ArchiveReadPtr in(archive_read_new());
  SF_CHECK(in != nullptr);
  archive_read_support_format_tar(in.get());
  archive_read_support_filter_all(in.get());
  if (archive_read_open_filename(in.get(), tar_path.c_str(), 1 << 20) != ARCHIVE_OK) {
    return InternalError("open " + tar_path + ": " + ArchiveMessage(in.get(), "failed"));
  }
  ArchiveWritePtr out(archive_write_disk_new());
  SF_CHECK(out != nullptr);
  int flags = ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_UNLINK |
              ARCHIVE_EXTRACT_SECURE_SYMLINKS | ARCHIVE_EXTRACT_SECURE_NODOTDOT |
              ARCHIVE_EXTRACT_XATTR;
  if (::geteuid() == 0) flags |= ARCHIVE_EXTRACT_OWNER;
  archive_write_disk_set_options(out.get(), flags);
  archive_write_disk_set_standard_lookup(out.get());
  std::set<std::string> this_layer;  // whiteouts only hide what lower layers made
  archive_entry* e = nullptr;
  for (;;) {
    int r = archive_read_next_header(in.get(), &e);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) {
      return InternalError("read " + tar_path + ": " + ArchiveMessage(in.get(), "failed"));
    }
    std::string rel;
    const char* name = archive_entry_pathname(e);
    if (!name || !NormalizeRelative(name, &rel)) {
      return InvalidArgumentError("layer entry " + std::string(name ? name : "") +
                                  " escapes the root");
    }
    if (rel.empty()) continue;
    size_t slash = rel.rfind('/');
    std::string dir = slash == std::string::npos ? "" : rel.substr(0, slash);
    std::string base = slash == std::string::npos ? rel : rel.substr(slash + 1);
    std::string dir_path = dir.empty() ? root : root + "/" + dir;
    if (base == ".wh..wh..opq") {
      std::error_code ec;
      for (const auto& child : std::filesystem::directory_iterator(dir_path, ec)) {
        std::string child_rel = (dir.empty() ? "" : dir + "/") + child.path().filename().string();
        if (!this_layer.count(child_rel)) std::filesystem::remove_all(child.path(), ec);
      }
      continue;
    }
    if (base.starts_with(".wh.")) {
      std::error_code ec;
      std::filesystem::remove_all(dir_path + "/" + base.substr(4), ec);
      continue;
    }
    this_layer.insert(rel);
    archive_entry_set_pathname(e, (root + "/" + rel).c_str());
    if (const char* link = archive_entry_hardlink(e)) {
      std::string link_rel;
      if (!NormalizeRelative(link, &link_rel) || link_rel.empty()) {
        return InvalidArgumentError("layer hard link " + rel + " escapes the root");
      }
      archive_entry_set_hardlink(e, (root + "/" + link_rel).c_str());
    }
    r = archive_write_header(out.get(), e);
    if (r < ARCHIVE_WARN) {
      unsigned type = archive_entry_filetype(e);
      // Device nodes need privileges an unprivileged export lacks; the rest of the tree is fine.
      if (type == AE_IFCHR || type == AE_IFBLK) continue;
      return InternalError("extract " + rel + ": " + ArchiveMessage(out.get(), "failed"));
    }
    const void* buf;
    size_t size;
    la_int64_t offset;
    for (;;) {
      r = archive_read_data_block(in.get(), &buf, &size, &offset);
      if (r == ARCHIVE_EOF) break;
      if (r < ARCHIVE_WARN) {
        return InternalError("read " + tar_path + ": " + ArchiveMessage(in.get(), "failed"));
      }
      if (archive_write_data_block(out.get(), buf, size, offset) < ARCHIVE_WARN) {
        return InternalError("write " + rel + ": " + ArchiveMessage(out.get(), "failed"));
      }
    }
    if (archive_write_finish_entry(out.get()) < ARCHIVE_WARN) {
      return InternalError("finish " + rel + ": " + ArchiveMessage(out.get(), "failed"));
    }
  }
  if (archive_write_close(out.get()) < ARCHIVE_WARN) {
    return InternalError("finish extracting into " + root + ": " +
                         ArchiveMessage(out.get(), "failed"));
  }
  return Status();
}

}  // namespace

StatusOr<LayerCompression> ParseLayerCompression(std::string_view name) {
  if (name == "gzip") return LayerCompression::kGzip;
  if (name == "zstd") return LayerCompression::kZstd;
  if (name == "uncompressed" || name == "none") return LayerCompression::kUncompressed;
  return InvalidArgumentError("unknown compression \"" + std::string(name) +
                              "\" (use gzip, zstd or uncompressed)");
}

std::string CompressedLayerRef(const Digest& diff_id, LayerCompression compression) {
  return std::string(kInternalRefPrefix) + "compressed/" + std::string(CompressionName(compression)) +
         "/" + diff_id.hex;
}

StatusOr<Descriptor> CompressedLayer(CacheClient& cache, const Digest& diff_id,
                                     LayerCompression compression) {
  Descriptor d;
  d.digest = diff_id;
  d.media_type = std::string(kMediaTypeLayerTar);
  if (compression == LayerCompression::kUncompressed) return d;
  d.media_type = std::string(compression == LayerCompression::kGzip ? kMediaTypeLayerTarGzip
                                                                     : kMediaTypeLayerTarZstd);
  const std::string ref = CompressedLayerRef(diff_id, compression);
  SF_ASSIGN_OR_RETURN(std::optional<Digest> known, cache.GetRef(ref));
  if (known) {
    // The ref outlives an evicted blob: trust it only while the blob is there.
    SF_ASSIGN_OR_RETURN(std::vector<Digest> missing, cache.FindMissing({*known}));
    if (missing.empty()) {
      d.digest = *known;
      return d;
    }
  }
  SF_ASSIGN_OR_RETURN(auto tmp, ScopedTempDir::Create("stagefarm-compress"));
  const std::string path = tmp->path() + "/layer";
  SF_ASSIGN_OR_RETURN(Digest compressed, CompressBlob(cache, diff_id, compression, path));
  SF_RETURN_IF_ERROR(cache.PutFile(path, compressed).Annotate("store compressed layer"));
  SF_RETURN_IF_ERROR(cache.PutRef(ref, compressed));
  d.digest = compressed;
  return d;
}

StatusOr<ExportableImage> PrepareExport(CacheClient& cache, const Digest& stored_manifest,
                                        LayerCompression compression) {
  ExportableImage out;
  SF_ASSIGN_OR_RETURN(out.manifest_bytes, cache.ReadBytes(stored_manifest, kMaxManifestBytes));
  auto parsed = ParseManifest(out.manifest_bytes);
  if (!parsed.ok()) return parsed.status().Annotate("manifest " + stored_manifest.str());
  out.parsed = std::move(*parsed);
  out.manifest = Digest::Of(out.manifest_bytes);
  if (compression == LayerCompression::kUncompressed) return out;
  Manifest m;
  m.media_type = std::string(kMediaTypeOciManifest);
  m.config = out.parsed.config;
  m.annotations = out.parsed.annotations;
  for (const Descriptor& layer : out.parsed.layers) {
    SF_ASSIGN_OR_RETURN(Descriptor d, CompressedLayer(cache, layer.digest, compression));
    m.layers.push_back(std::move(d));
  }
  out.parsed = std::move(m);
  out.manifest_bytes = SerializeManifest(out.parsed);
  out.manifest = Digest::Of(out.manifest_bytes);
  return out;
}

Status ExportOciImage(CacheClient& cache, const Digest& manifest, const ImageExportOptions& options,
                      const std::string& dest, bool as_tar) {
  SF_ASSIGN_OR_RETURN(ExportableImage image, PrepareExport(cache, manifest, options.compression));
  if (as_tar) {
    TarLayoutSink sink;
    SF_RETURN_IF_ERROR(sink.Open(dest));
    return WriteLayout(cache, image, options.ref_names, {}, sink).Annotate("export to " + dest);
  }
  DirLayoutSink sink(dest);
  SF_RETURN_IF_ERROR(sink.AddDir(""));
  return WriteLayout(cache, image, options.ref_names, {}, sink).Annotate("export to " + dest);
}

Status ExportDockerArchive(CacheClient& cache, const Digest& manifest,
                           const ImageExportOptions& options, const std::string& dest_tar) {
  SF_ASSIGN_OR_RETURN(ExportableImage image, PrepareExport(cache, manifest, options.compression));
  json tags = json::array();
  json repositories = json::object();
  for (const std::string& ref : options.ref_names) {
    std::string familiar = FamiliarImageRef(ref);
    if (familiar.find('@') != std::string::npos) continue;  // docker load takes tags only
    tags.push_back(familiar);
    size_t colon = familiar.rfind(':');
    if (colon != std::string::npos && familiar.find('/', colon) == std::string::npos) {
      repositories[familiar.substr(0, colon)][familiar.substr(colon + 1)] =
          image.parsed.config.digest.hex;
    }
  }
  json layers = json::array();
  for (const Descriptor& d : image.parsed.layers) layers.push_back(BlobPath(d.digest));
  json entry = {{"Config", BlobPath(image.parsed.config.digest)},
                {"RepoTags", tags.empty() ? json(nullptr) : tags},
                {"Layers", layers}};
  std::vector<std::pair<std::string, std::string>> extra = {
      {"manifest.json", json::array({entry}).dump()}};
  if (!repositories.empty()) extra.emplace_back("repositories", repositories.dump());
  TarLayoutSink sink;
  SF_RETURN_IF_ERROR(sink.Open(dest_tar));
  return WriteLayout(cache, image, options.ref_names, extra, sink)
      .Annotate("export to " + dest_tar);
}

Status ExportRootfs(CacheClient& cache, const Digest& manifest, const std::string& dest,
                    bool as_tar) {
  SF_ASSIGN_OR_RETURN(ExportableImage image,
                      PrepareExport(cache, manifest, LayerCompression::kUncompressed));
  SF_ASSIGN_OR_RETURN(auto tmp, ScopedTempDir::Create("stagefarm-rootfs"));
  std::string root = dest;
  if (as_tar) {
    root = tmp->path() + "/rootfs";
  }
  std::error_code ec;
  std::filesystem::create_directories(root, ec);
  if (ec) return InternalError("mkdir " + root + ": " + ec.message());
  std::filesystem::path real = std::filesystem::canonical(root, ec);
  if (ec) return InternalError("resolve " + root + ": " + ec.message());
  const std::string layer_path = tmp->path() + "/layer.tar";
  for (const Descriptor& layer : image.parsed.layers) {
    SF_RETURN_IF_ERROR(cache.ReadToFile(layer.digest, layer_path)
                           .Annotate("read layer " + layer.digest.str()));
    SF_RETURN_IF_ERROR(
        ApplyLayer(layer_path, real.string()).Annotate("apply layer " + layer.digest.str()));
  }
  if (!as_tar) return Status();
  auto written = WriteLayer(real.string(), dest);
  if (!written.ok()) return written.status().Annotate("write " + dest);
  return Status();
}

Status ExportOciArchive(CacheClient& cache, const Digest& manifest,
                        const std::vector<std::string>& ref_names, const std::string& dest_tar) {
  return ExportOciImage(cache, manifest, {ref_names, LayerCompression::kUncompressed}, dest_tar,
                        /*as_tar=*/true);
}

Status ExportOciLayoutDir(CacheClient& cache, const Digest& manifest,
                          const std::vector<std::string>& ref_names, const std::string& dest_dir) {
  return ExportOciImage(cache, manifest, {ref_names, LayerCompression::kUncompressed}, dest_dir,
                        /*as_tar=*/false);
}

}  // namespace stagefarm
