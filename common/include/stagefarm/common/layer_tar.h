// Layer tars: writing a directory diff as a deterministic OCI layer, and extracting a layer into
// a directory for overlayfs. Both stream; nothing holds a whole layer in memory.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "stagefarm/common/digest.h"
#include "stagefarm/common/status.h"
#include "stagefarm/common/toc.h"

namespace stagefarm {

struct LayerWriteOptions {
  // With a value >= 0 every mtime later than it is clamped to it (SOURCE_DATE_EPOCH).
  int64_t source_date_epoch = -1;
  // Relative paths to leave out of the layer (e.g. "etc/hosts" made only as a mount point).
  std::vector<std::string> exclude;
};

struct WrittenLayer {
  Digest diff_id;        // sha256 and size of the tar as written
  Toc toc;               // one entry per tar entry
  std::string toc_blob;  // toc.Serialize()
  Digest toc_digest;     // Digest::Of(toc_blob)
  // What the directory takes on disk (allocated blocks, a hard-linked file once), as du counts
  // it, from the stat calls the writing made anyway.
  uint64_t disk_bytes = 0;
  // Whether some entry of the directory that is no overlay whiteout was named like an OCI one
  // (".wh.<name>", ".wh..wh..opq"). The layer holds it as the whiteout or opaque marker that
  // every reader of the tar takes it for, so the directory and the layer differ: the directory
  // cannot stand in for the extracted layer.
  bool whiteout_named = false;
};

// Writes the directory `dir` (an overlayfs upper dir, or any directory) as a deterministic tar
// at `tar_path`: entries sorted by path, numeric uid/gid without names, no atime/ctime, xattrs
// sorted, hard links as tar links. Overlay whiteouts (0/0 character devices) become ".wh.<name>"
// entries and directories with the overlay opaque xattr get a ".wh..wh..opq" entry. Any other
// entry named ".wh.*" is written as the whiteout or opaque marker it reads as (see
// WrittenLayer::whiteout_named); ".wh.", ".wh.." and ".wh..." are refused (InvalidArgument).
// The tar is a working file: it is not synced (a layer is made durable where it is kept, by
// the cache server).
StatusOr<WrittenLayer> WriteLayer(const std::string& dir, const std::string& tar_path,
                                  const LayerWriteOptions& options = {});

// Receives the tar's bytes in order as they are made; an error stops the writing.
using LayerSink = std::function<Status(std::string_view bytes)>;
// WriteLayer's tar, streamed to `out` instead of a file (to a cache upload, say).
StatusOr<WrittenLayer> WriteLayerTo(const std::string& dir, const LayerSink& out,
                                    const LayerWriteOptions& options = {});

struct ExtractOptions {
  // A layer's OCI whiteouts and opaque markers are applied; a user's tar (ADD) has none, and its
  // entries named ".wh.*" are plain files, as docker's ADD extracts them.
  bool whiteouts = true;
  // A user's tar (ADD), unpacked as BuildKit does (in a chroot at the destination): an entry
  // name or hard link target starting with "/" is taken below `dir` (otherwise it is refused),
  // and a hard link's header sets the owner and mode of the file it links to.
  bool rooted_names = false;
  // ADD --chown: every entry gets this uid:gid instead of its own (directories the tar only
  // implies stay 0:0, as BuildKit's).
  std::optional<std::pair<uint32_t, uint32_t>> owner;
};

// Extracts the layer tar at `tar_path` (uncompressed, gzip, zstd, bzip2 or xz: detected) into
// `dir`, which must exist and be empty. OCI whiteouts become overlay whiteouts (0/0 character
// devices) and opaque markers set the overlay opaque xattr, so `dir` can be an overlayfs lower
// dir. A whiteout leaves an entry of its own layer in place (a directory becomes opaque), as it
// hides only the layers below. Entries that would escape `dir` (.., absolute links followed) are
// refused with InvalidArgument; symlinks inside it are followed (ImportImage refuses layers whose
// entries go through a link of their own, so that their TOC says what extraction writes).
Status ExtractLayer(const std::string& tar_path, const std::string& dir,
                    const ExtractOptions& options = {});

}  // namespace stagefarm
