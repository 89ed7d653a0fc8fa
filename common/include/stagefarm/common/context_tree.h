// The build context as a Merkle tree in the CAS: each file is a blob, each directory a canonical
// node blob listing its entries sorted by name (name, type, mode, size, digest or link target).
// Modification times never enter a digest.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "stagefarm/common/cache_client.h"
#include "stagefarm/common/digest.h"
#include "stagefarm/common/status.h"

namespace stagefarm {

// A FIFO or device node is an entry of its own kind, with no content (BuildKit's context keeps
// them, and COPY makes them); a socket is an empty file, as BuildKit's context transfer has it.
struct TreeEntry {
  enum class Type { kFile, kDir, kSymlink, kFifo, kCharDevice, kBlockDevice };
  std::string name;
  Type type = Type::kFile;
  uint32_t mode = 0;   // permission bits
  Digest digest;       // file content, or the directory's node blob; empty for the other types
  std::string target;  // symlink target
  uint32_t dev_major = 0, dev_minor = 0;  // device nodes

  friend bool operator==(const TreeEntry&, const TreeEntry&) = default;
};

// The type's letter in a node's canonical form ("f", "d", "l", "p", "c", "b").
char TreeTypeChar(TreeEntry::Type t);

struct TreeNode {
  std::vector<TreeEntry> entries;  // sorted by name

  std::string Serialize() const;  // canonical bytes; the node's digest is Digest::Of() of them
  static StatusOr<TreeNode> Parse(std::string_view bytes);
};

// Hashes the directory `root` into a tree, skipping paths that `ignore` (relative path, true =
// leave out) rejects. For every blob of the tree (files and nodes) calls `on_blob` with its digest
// and either the file's path (for files) or the node bytes (for nodes).
struct ContextBlob {
  Digest digest;
  std::string path;   // a file on disk, or empty
  std::string bytes;  // a node's bytes when path is empty
};
// `descend_excluded` (optional) is asked about a directory that `ignore` rejects: if it says true
// the walk looks inside anyway and keeps the directory with what `ignore` accepts below it (a
// .dockerignore exception such as "!dir/keep" under an excluded "dir"), or drops it if nothing.
StatusOr<Digest> HashContextDir(
    const std::string& root, const std::function<bool(const std::string&)>& ignore,
    const std::function<void(ContextBlob)>& on_blob,
    const std::function<bool(const std::string&)>& descend_excluded = {});

// Reads a context tree from the CAS, keeping the last nodes it read (path lookups read the same
// directories again and again). Not thread-safe (it borrows a CacheClient).
class ContextTree {
 public:
  ContextTree(CacheClient& cache, Digest root) : cache_(cache), root_(std::move(root)) {}
  const Digest& root() const { return root_; }
  // The entry at `path` ("" or "." or "/" is the root directory itself), cleaned lexically with
  // ".." stopping at the root ("../a" and "b/../../a" are "a"). Symlinks inside the context are
  // not followed. std::nullopt if absent.
  StatusOr<std::optional<TreeEntry>> Lookup(std::string_view path);
  StatusOr<TreeNode> ReadNode(const Digest& node);

 private:
  static constexpr size_t kCachedNodes = 1024;
  CacheClient& cache_;
  Digest root_;
  std::map<std::string, TreeNode> nodes_;  // by digest hex
};

}  // namespace stagefarm
