#include "archive_util.h"
#include "image_files.h"
#include "stagefarm/common/image_import.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "stagefarm/common/fd_io.h"
#include "stagefarm/common/layer_tar.h"
#include "stagefarm/common/oci.h"
#include "stagefarm/common/toc.h"
#include "stagefarm/common/unique_fd.h"

namespace stagefarm {
namespace {

using nlohmann::json;
using namespace archive_util;  // NOLINT: private helpers of this library

constexpr size_t kIoChunk = 1 << 20;
constexpr uint64_t kMaxIndexBytes = 4 << 20;



// Opens `rel` beneath the directory `rootfd`: symlinks are followed only while they stay inside,
// so an archive cannot make the importer read (and upload) a file from elsewhere.
StatusOr<UniqueFd> OpenBeneath(int rootfd, const std::string& rel, int flags) {
  open_how how{};
  how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
  long fd = ::syscall(SYS_openat2, rootfd, rel.c_str(), &how, sizeof how);
  if (fd < 0 && errno == ENOSYS) {
    fd = ::openat(rootfd, rel.c_str(), flags | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 && errno == ELOOP) errno = EXDEV;
  }
  if (fd < 0) {
    if (errno == EXDEV) {
      return InvalidArgumentError("\"" + rel + "\" leads outside the image directory");
    }
    return ErrnoError("open " + rel, errno);
  }
  return UniqueFd(static_cast<int>(fd));
}

// Opens a regular file beneath `rootfd`. Anything else is refused: an archive could hold a
// device node (say the host's disk) or a FIFO (a hang) under a blob's name.
StatusOr<UniqueFd> OpenRegularBeneath(int rootfd, const std::string& rel) {
  SF_ASSIGN_OR_RETURN(UniqueFd path, OpenBeneath(rootfd, rel, O_PATH));
  return OpenRegularForReading(path.get(), "\"" + rel + "\"");
}

bool Exists(int rootfd, const std::string& rel) {
  struct stat st;
  return ::fstatat(rootfd, rel.c_str(), &st, 0) == 0;
}

// Reads a small file beneath `rootfd`, refusing it above `max_bytes`.
StatusOr<std::string> ReadSmallFile(int rootfd, const std::string& rel, uint64_t max_bytes) {
  SF_ASSIGN_OR_RETURN(UniqueFd fd, OpenRegularBeneath(rootfd, rel));
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError("read " + rel, errno);
    if (n == 0) break;
    if (out.size() + static_cast<size_t>(n) > max_bytes) {
      return InvalidArgumentError(rel + " is larger than " + std::to_string(max_bytes) + " bytes");
    }
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

StatusOr<json> ParseJsonFile(std::string_view bytes, const std::string& what) {
  try {
    return json::parse(bytes);
  } catch (const std::exception& e) {
    return InvalidArgumentError(what + " is not valid JSON: " + e.what());
  }
}


// ---------------------------------------------------------------------------------------------
// One layer: decompress into a temp file while hashing it and reading its tar headers, in a
// single pass. The outer archive undoes the compression ("raw" format); the inner one reads tar
// entries from a callback that also tees every decompressed byte to the file and the hasher.

struct CompressedSource {
  explicit CompressedSource(int f) : fd(f) {}
  int fd;
  Sha256 hash;  // of the bytes as stored (the blob digest)
  std::string buf = std::string(kIoChunk, '\0');
  Status error;
};

la_ssize_t CompressedRead(struct archive*, void* client, const void** out) {
  auto* src = static_cast<CompressedSource*>(client);
  for (;;) {
    ssize_t n = ::read(src->fd, src->buf.data(), src->buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      src->error = ErrnoError("read layer", errno);
      return -1;
    }
    src->hash.Update(std::string_view(src->buf.data(), static_cast<size_t>(n)));
    *out = src->buf.data();
    return n;
  }
}

struct Tee {
  Tee(struct archive* r, int out) : raw(r), out_fd(out) {}
  struct archive* raw;
  int out_fd;
  Sha256 hash;  // of the uncompressed tar (the diffID)
  std::string buf = std::string(kIoChunk, '\0');
  Status error;

  // Reads the next decompressed bytes into buf, writing them to the file and the hasher.
  la_ssize_t Pull() {
    la_ssize_t n = archive_read_data(raw, buf.data(), buf.size());
    if (n < 0) {
      error = InvalidArgumentError("decompress layer: " + ArchiveMessage(raw, "bad data"));
      return -1;
    }
    std::string_view chunk(buf.data(), static_cast<size_t>(n));
    hash.Update(chunk);
    while (!chunk.empty()) {
      ssize_t w = ::write(out_fd, chunk.data(), chunk.size());
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) {
        error = ErrnoError("write layer temp file", errno);
        return -1;
      }
      chunk.remove_prefix(static_cast<size_t>(w));
    }
    return n;
  }
};

la_ssize_t TeeRead(struct archive*, void* client, const void** out) {
  auto* tee = static_cast<Tee*>(client);
  la_ssize_t n = tee->Pull();
  *out = tee->buf.data();
  return n;
}

// The TOC entry for a tar entry, hashing a regular file's data. Returns false in *keep for
// entries the TOC leaves out (the root).
StatusOr<TocEntry> TocEntryFromTar(struct archive* a, archive_entry* e, bool* keep) {
  *keep = true;
  TocEntry t;
  const char* raw_name = archive_entry_pathname(e);
  if (raw_name == nullptr) return InvalidArgumentError("layer entry without a name");
  std::string path;
  if (raw_name[0] == '/' || !NormalizeRelative(raw_name, &path)) {
    return InvalidArgumentError("layer entry \"" + std::string(raw_name) + "\" escapes the root");
  }
  if (path.empty()) {
    *keep = false;
    return t;
  }
  size_t slash = path.rfind('/');
  std::string parent = slash == std::string::npos ? std::string() : path.substr(0, slash);
  std::string leaf = slash == std::string::npos ? path : path.substr(slash + 1);
  if (leaf == ".wh..wh..opq") {
    t.path = parent;
    t.type = TocType::kOpaque;
    return t;
  }
  if (leaf.starts_with(".wh.")) {
    t.path = (parent.empty() ? "" : parent + "/") + leaf.substr(4);
    t.type = TocType::kWhiteout;
    return t;
  }
  t.path = path;
  t.mode = archive_entry_perm(e) & 07777;
  t.uid = static_cast<uint32_t>(archive_entry_uid(e));
  t.gid = static_cast<uint32_t>(archive_entry_gid(e));
  if (const char* hardlink = archive_entry_hardlink(e)) {
    if (hardlink[0] == '/' || !NormalizeRelative(hardlink, &t.link)) {
      return InvalidArgumentError("hard link " + path + " escapes the root");
    }
    t.type = TocType::kHardlink;
    return t;
  }
  switch (archive_entry_filetype(e)) {
    case AE_IFDIR:
      t.type = TocType::kDir;
      return t;
    case AE_IFLNK:
      t.type = TocType::kSymlink;
      t.link = archive_entry_symlink(e) ? archive_entry_symlink(e) : "";
      return t;
    case AE_IFCHR:
    case AE_IFBLK:
      t.type = archive_entry_filetype(e) == AE_IFCHR ? TocType::kChar : TocType::kBlock;
      t.devmajor = static_cast<uint32_t>(archive_entry_rdevmajor(e));
      t.devminor = static_cast<uint32_t>(archive_entry_rdevminor(e));
      return t;
    case AE_IFIFO:
      t.type = TocType::kFifo;
      return t;
    case AE_IFREG:
      break;
    default:
      return InvalidArgumentError("layer entry " + path + " has an unsupported type");
  }
  t.type = TocType::kFile;
  t.size = static_cast<uint64_t>(archive_entry_size(e));
  Sha256 content;
  uint64_t pos = 0;
  static const std::string kZeros(65536, '\0');
  auto zeros = [&](uint64_t upto) {
    while (pos < upto) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(kZeros.size(), upto - pos));
      content.Update(std::string_view(kZeros.data(), n));
      pos += n;
    }
  };
  for (;;) {
    const void* buf;
    size_t size;
    la_int64_t offset;
    int r = archive_read_data_block(a, &buf, &size, &offset);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) {
      return InvalidArgumentError("layer entry " + path + ": " + ArchiveMessage(a, "bad data"));
    }
    if (offset < 0 || static_cast<uint64_t>(offset) < pos) {
      return InvalidArgumentError("layer entry " + path + " has overlapping sparse data");
    }
    zeros(static_cast<uint64_t>(offset));  // a hole of a sparse file reads as zeros
    content.Update(std::string_view(static_cast<const char*>(buf), size));
    pos += size;
  }
  zeros(t.size);
  t.digest = content.Finish().str();
  return t;
}

// The symbolic links a layer has made so far, as its extraction leaves them. ExtractLayer resolves
// an entry's parent directories on disk, following a link the same layer made, while the TOC
// records the entry's path as written: "z -> out" then "z/app" writes out/app, which the TOC
// would say is unchanged. A layer where the two differ is refused.
class LayerSymlinks {
 public:
  // Refuses `entry` (a TOC entry of the layer, read in order) if its parent directories, or a
  // hard link's target's, go through a link made earlier in the layer; `what` names the layer.
  Status Check(const TocEntry& entry, const std::string& what) const {
    if (links_.empty()) return Status();
    // An opaque marker is applied to the directory it names, which is resolved like a parent.
    SF_RETURN_IF_ERROR(
        CheckParents(entry.path, entry.type == TocType::kOpaque, "entry \"", what));
    if (entry.type == TocType::kHardlink) {
      SF_RETURN_IF_ERROR(CheckParents(entry.link, false, "hard link target \"", what));
    }
    return Status();
  }

  // Records what `entry` leaves at its path once extracted.
  void Update(const TocEntry& entry) {
    switch (entry.type) {
      case TocType::kSymlink:
        links_.insert(entry.path);
        return;
      case TocType::kWhiteout:  // an entry the layer made stays; nothing else is a link
      case TocType::kOpaque:
        return;
      case TocType::kHardlink:
        // A hard link to a symbolic link is one more.
        if (links_.count(entry.link)) {
          links_.insert(entry.path);
          return;
        }
        break;
      default:
        break;
    }
    // Anything else replaces what was at its path.
    links_.erase(entry.path);
  }

 private:
  Status CheckParents(const std::string& path, bool self, const char* kind,
                      const std::string& what) const {
    size_t end = 0;
    for (;;) {
      end = path.find('/', end);
      if (end == std::string::npos && !self) return Status();
      const std::string dir = path.substr(0, end);
      if (links_.count(dir)) {
        return InvalidArgumentError(what + ": " + kind + path + "\" goes through \"" + dir +
                                    "\", a symbolic link made earlier in the same layer");
      }
      if (end == std::string::npos) return Status();
      ++end;
    }
  }

  std::set<std::string> links_;
};

struct ImportedLayer {
  Digest blob;     // of the bytes as found (compressed or not)
  Digest diff_id;  // of the uncompressed tar
  Toc toc;
};

// Decompresses the layer at `layer_fd` into `tmp_path`, hashing it and building its TOC.
StatusOr<ImportedLayer> ReadLayer(int layer_fd, const std::string& tmp_path,
                                  const std::string& what) {
  UniqueFd out(::open(tmp_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!out) return ErrnoError("create " + tmp_path, errno);
  CompressedSource src(layer_fd);
  ArchiveReadPtr raw(archive_read_new());
  SF_CHECK(raw != nullptr);
  archive_read_support_filter_gzip(raw.get());
  archive_read_support_filter_zstd(raw.get());
  archive_read_support_filter_none(raw.get());
  archive_read_support_format_raw(raw.get());
  if (archive_read_open(raw.get(), &src, nullptr, CompressedRead, nullptr) != ARCHIVE_OK) {
    if (!src.error.ok()) return src.error;
    return InvalidArgumentError(what + ": " + ArchiveMessage(raw.get(), "unreadable"));
  }
  archive_entry* raw_entry = nullptr;
  if (archive_read_next_header(raw.get(), &raw_entry) != ARCHIVE_OK) {
    if (!src.error.ok()) return src.error;
    return InvalidArgumentError(what + ": " + ArchiveMessage(raw.get(), "empty"));
  }

  Tee tee(raw.get(), out.get());
  ArchiveReadPtr tar(archive_read_new());
  SF_CHECK(tar != nullptr);
  archive_read_support_filter_none(tar.get());
  archive_read_support_format_tar(tar.get());
  auto fail = [&](const std::string& msg) -> Status {
    if (!src.error.ok()) return src.error;
    if (!tee.error.ok()) return tee.error.Annotate(what);
    return InvalidArgumentError(what + ": " + msg);
  };
  if (archive_read_open(tar.get(), &tee, nullptr, TeeRead, nullptr) != ARCHIVE_OK) {
    return fail("not a tar: " + ArchiveMessage(tar.get(), "unreadable"));
  }
  ImportedLayer layer;
  LayerSymlinks links;
  for (;;) {
    archive_entry* e = nullptr;
    int r = archive_read_next_header(tar.get(), &e);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) return fail(ArchiveMessage(tar.get(), "bad tar header"));
    bool keep = false;
    auto entry = TocEntryFromTar(tar.get(), e, &keep);
    if (!entry.ok()) {
      if (!tee.error.ok() || !src.error.ok()) return fail("");
      return entry.status().Annotate(what);
    }
    if (!keep) continue;
    SF_RETURN_IF_ERROR(links.Check(*entry, what));
    links.Update(*entry);
    layer.toc.entries.push_back(std::move(entry).value());
  }
  // The tar reader stops at the end-of-archive marker; the bytes after it (padding) belong to
  // the layer's diffID too.
  for (;;) {
    la_ssize_t n = tee.Pull();
    if (n < 0) return fail("");
    if (n == 0) break;
  }
  // Drain any compressed trailer so the blob digest covers the whole file.
  for (;;) {
    const void* ignored;
    la_ssize_t n = CompressedRead(nullptr, &src, &ignored);
    if (n < 0) return src.error;
    if (n == 0) break;
  }
  if (::fsync(out.get()) != 0) return ErrnoError("fsync " + tmp_path, errno);
  layer.blob = src.hash.Finish();
  layer.diff_id = tee.hash.Finish();
  return layer;
}

// ---------------------------------------------------------------------------------------------
// Finding the image inside the source.

struct FoundImage {
  std::string config_bytes;
  struct Layer {
    std::string rel_path;        // beneath the source root
    std::optional<Digest> blob;  // the descriptor's digest, when the format names one
  };
  std::vector<Layer> layers;
};

std::string BlobPath(const Digest& d) { return "blobs/sha256/" + d.hex; }

StatusOr<std::string> ReadVerifiedBlob(int rootfd, const Digest& d, uint64_t max_bytes,
                                       const std::string& what) {
  SF_ASSIGN_OR_RETURN(std::string bytes, ReadSmallFile(rootfd, BlobPath(d), max_bytes));
  Digest actual = Digest::Of(bytes);
  if (actual.hex != d.hex || (d.size != 0 && actual.size != d.size)) {
    return DataLossError(what + " blob " + d.str() + " has content " + actual.str());
  }
  return bytes;
}

// Chooses a manifest in an OCI index: linux/amd64 if platforms are given, else the first.
StatusOr<Digest> ChooseManifest(const json& index, const std::string& what) {
  if (!index.is_object() || !index.contains("manifests") || !index["manifests"].is_array() ||
      index["manifests"].empty()) {
    return InvalidArgumentError(what + " lists no manifests");
  }
  const json* chosen = nullptr;
  for (const json& m : index["manifests"]) {
    if (!m.is_object()) return InvalidArgumentError(what + " has a manifest that is not an object");
    if (!chosen) chosen = &m;
    if (m.contains("platform") && m["platform"].is_object()) {
      const json& p = m["platform"];
      if (p.value("os", "") == "linux" && p.value("architecture", "") == "amd64") {
        chosen = &m;
        break;
      }
    }
  }
  const json& m = *chosen;
  if (!m.contains("digest") || !m["digest"].is_string() || !m.contains("size") ||
      !m["size"].is_number_unsigned()) {
    return InvalidArgumentError(what + " has a manifest without digest or size");
  }
  return Digest::Parse(m["digest"].get<std::string>(), m["size"].get<uint64_t>());
}

StatusOr<FoundImage> FindOciImage(int rootfd) {
  SF_ASSIGN_OR_RETURN(std::string index_bytes, ReadSmallFile(rootfd, "index.json", kMaxIndexBytes));
  SF_ASSIGN_OR_RETURN(json index, ParseJsonFile(index_bytes, "index.json"));
  auto digest = ChooseManifest(index, "index.json");
  if (!digest.ok()) return digest.status();
  std::string manifest_bytes;
  // Nested indexes (multi-platform images) are followed a few levels down.
  for (int depth = 0;; ++depth) {
    SF_ASSIGN_OR_RETURN(manifest_bytes,
                        ReadVerifiedBlob(rootfd, *digest, kMaxManifestBytes, "manifest"));
    SF_ASSIGN_OR_RETURN(json doc, ParseJsonFile(manifest_bytes, "manifest " + digest->str()));
    if (!(doc.is_object() && doc.contains("manifests"))) break;
    if (depth == 3) return InvalidArgumentError("image index nested too deeply");
    digest = ChooseManifest(doc, "image index " + digest->str());
    if (!digest.ok()) return digest.status();
  }
  auto manifest = ParseManifest(manifest_bytes);
  if (!manifest.ok()) return manifest.status().Annotate("manifest " + digest->str());
  FoundImage found;
  SF_ASSIGN_OR_RETURN(found.config_bytes,
                      ReadVerifiedBlob(rootfd, manifest->config.digest, kMaxConfigBytes, "config"));
  for (const Descriptor& d : manifest->layers) {
    found.layers.push_back({BlobPath(d.digest), d.digest});
  }
  return found;
}

StatusOr<FoundImage> FindDockerSaveImage(int rootfd) {
  SF_ASSIGN_OR_RETURN(std::string bytes, ReadSmallFile(rootfd, "manifest.json", kMaxIndexBytes));
  SF_ASSIGN_OR_RETURN(json doc, ParseJsonFile(bytes, "manifest.json"));
  if (!doc.is_array() || doc.empty() || !doc[0].is_object()) {
    return InvalidArgumentError("manifest.json is not a non-empty array of images");
  }
  const json& image = doc[0];
  if (!image.contains("Config") || !image["Config"].is_string()) {
    return InvalidArgumentError("manifest.json: image has no Config");
  }
  if (!image.contains("Layers") || !image["Layers"].is_array()) {
    return InvalidArgumentError("manifest.json: image has no Layers");
  }
  FoundImage found;
  SF_ASSIGN_OR_RETURN(found.config_bytes,
                      ReadSmallFile(rootfd, image["Config"].get<std::string>(), kMaxConfigBytes));
  if (image["Layers"].size() > kMaxLayers) return InvalidArgumentError("too many layers");
  for (const json& l : image["Layers"]) {
    if (!l.is_string()) return InvalidArgumentError("manifest.json: a layer is not a path");
    found.layers.push_back({l.get<std::string>(), std::nullopt});
  }
  return found;
}

StatusOr<Digest> ImportFromDir(CacheClient& cache, int rootfd, const std::string& tmp_dir) {
  StatusOr<FoundImage> found = InvalidArgumentError("not an OCI layout or docker save output");
  if (Exists(rootfd, "index.json")) {
    found = FindOciImage(rootfd);
  } else if (Exists(rootfd, "manifest.json")) {
    found = FindDockerSaveImage(rootfd);
  }
  if (!found.ok()) return found.status();

  ImageRecord record;
  SF_ASSIGN_OR_RETURN(std::vector<Digest> diff_ids,
                      ParseImageConfigDocument(found->config_bytes, &record));
  if (diff_ids.size() != found->layers.size()) {
    return InvalidArgumentError("the manifest lists " + std::to_string(found->layers.size()) +
                                " layers but the config has " + std::to_string(diff_ids.size()) +
                                " diff_ids");
  }
  std::vector<LayerRef> layers;
  for (size_t i = 0; i < found->layers.size(); ++i) {
    const auto& src = found->layers[i];
    const std::string what = "layer " + std::to_string(i) + " (" + src.rel_path + ")";
    SF_ASSIGN_OR_RETURN(UniqueFd fd, OpenRegularBeneath(rootfd, src.rel_path));
    const std::string tmp = tmp_dir + "/layer.tar";
    SF_ASSIGN_OR_RETURN(ImportedLayer layer, ReadLayer(fd.get(), tmp, what));
    if (src.blob && (src.blob->hex != layer.blob.hex || src.blob->size != layer.blob.size)) {
      return DataLossError(what + ": blob content is " + layer.blob.str() + ", not " +
                           src.blob->str() + " as the manifest says");
    }
    if (layer.diff_id.hex != diff_ids[i].hex) {
      return DataLossError(what + ": uncompressed digest " + layer.diff_id.str() +
                           " does not match the config's rootfs.diff_ids[" + std::to_string(i) +
                           "] " + diff_ids[i].str());
    }
    SF_RETURN_IF_ERROR(cache.PutFile(tmp, layer.diff_id).Annotate("upload " + what));
    LayerRef ref;
    ref.diff_id = layer.diff_id;
    SF_RETURN_IF_ERROR(
        cache.PutBytes(layer.toc.Serialize(), &ref.toc).Annotate("upload TOC of " + what));
    layers.push_back(std::move(ref));
    ::unlink(tmp.c_str());  // best effort: the temp dir goes away anyway
  }
  Digest config;
  SF_RETURN_IF_ERROR(cache.PutBytes(found->config_bytes, &config).Annotate("upload config"));
  Digest manifest;
  SF_RETURN_IF_ERROR(
      cache.PutBytes(SerializeManifest(MakeStoredManifest(config, layers)), &manifest)
          .Annotate("upload manifest"));
  return manifest;
}

}  // namespace

StatusOr<Digest> ImportImage(CacheClient& cache, const std::string& src) {
  struct stat st;
  if (::stat(src.c_str(), &st) != 0) return ErrnoError("import " + src, errno);
  SF_ASSIGN_OR_RETURN(auto tmp, image_files::ScopedTempDir::Create("stagefarm-import"));
  std::string root = src;
  if (!S_ISDIR(st.st_mode)) {
    // An archive (OCI or docker save): unpacked with the same guards as a layer.
    root = tmp->path() + "/image";
    if (::mkdir(root.c_str(), 0700) != 0) return ErrnoError("mkdir " + root, errno);
    Status s = ExtractLayer(src, root);
    if (!s.ok()) return s.Annotate("unpack " + src);
  }
  UniqueFd rootfd(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!rootfd) return ErrnoError("open " + root, errno);
  auto manifest = ImportFromDir(cache, rootfd.get(), tmp->path());
  if (!manifest.ok()) return manifest.status().Annotate("import " + src);
  return manifest;
}

}  // namespace stagefarm
