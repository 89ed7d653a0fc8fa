// A layer's table of contents: one entry per tar entry, written while the layer is written, so
// the coordinator can reason about a stage's filesystem (e.g. the digest of the subtree a
// COPY --from selects) without reading layers.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "stagefarm/common/digest.h"
#include "stagefarm/common/status.h"

namespace stagefarm {

enum class TocType : char {
  kFile = 'f',
  kDir = 'd',
  kSymlink = 'l',
  kHardlink = 'h',  // `link` holds the target path
  kChar = 'c',
  kBlock = 'b',
  kFifo = 'p',
  kWhiteout = 'w',  // OCI ".wh.<name>": `path` is the deleted path (without the .wh. prefix)
  kOpaque = 'o',    // OCI ".wh..wh..opq": `path` is the directory made opaque
};

struct TocEntry {
  std::string path;  // relative, no leading "/" or "./", e.g. "usr/bin/env"
  TocType type = TocType::kFile;
  uint32_t mode = 0;  // permission bits incl. setuid/setgid/sticky (no file type bits)
  uint32_t uid = 0, gid = 0;
  uint64_t size = 0;   // regular files
  std::string digest;  // "sha256:<hex>" of a regular file's content
  std::string link;    // symlink target or hardlink target path
  uint32_t devmajor = 0, devminor = 0;

  friend bool operator==(const TocEntry&, const TocEntry&) = default;
};

struct Toc {
  std::vector<TocEntry> entries;  // in tar order (sorted by path)

  // A canonical byte form (one JSON object per line); Parse(Serialize()) round-trips.
  std::string Serialize() const;
  static StatusOr<Toc> Parse(std::string_view bytes);
};

// The filesystem a stack of layers makes, from their TOCs alone (lowest layer applied first),
// with whiteouts and opaque directories applied.
class FsIndex {
 public:
  void Apply(const Toc& toc);
  // The entry at `path` (relative or absolute), if it exists.
  std::optional<TocEntry> Lookup(std::string_view path) const;
  // A digest of the subtree at `path`: every entry under it (paths relative to it, type, mode,
  // uid, gid, size, content digest, link target), in path order. Equal filesystems give equal
  // digests whatever layers they came from. NotFound if `path` does not exist.
  StatusOr<Digest> SubtreeDigest(std::string_view path) const;
  const std::map<std::string, TocEntry>& entries() const { return entries_; }

 private:
  std::map<std::string, TocEntry> entries_;  // by path
};

}  // namespace stagefarm
