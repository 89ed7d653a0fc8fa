// What a COPY or ADD source selects, with BuildKit's rules, over any source tree (the build
// context in the CAS, a stage's filesystem from its TOCs, a directory on disk). The worker copies
// what this selects, and the coordinator keys the step on the same selection, so a key covers
// exactly what the step reads: symlinks followed inside the source root, wildcards, --parents
// and --exclude.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "stagefarm/common/context_tree.h"
#include "stagefarm/common/dockerignore.h"
#include "stagefarm/common/status.h"
#include "stagefarm/common/toc.h"

namespace stagefarm {

// The view of a source tree that selection needs. Paths are clean and relative to the source root
// ("" is the root), and every directory on the way to them is a real directory (never a link):
// implementations look an entry up by name, without following anything.
class SourceTreeView {
 public:
  struct Node {
    enum class Kind { kFile, kDir, kSymlink, kOther };
    Kind kind = Kind::kFile;
    std::string target;  // kSymlink
    // What copying the entry itself takes from it (type, mode, owner, content digest, link
    // target; not a directory's children), for keys.
    std::string fingerprint;
  };
  virtual ~SourceTreeView() = default;
  virtual StatusOr<std::optional<Node>> Lookup(const std::string& path) = 0;
  // The names in directory `dir`, sorted.
  virtual StatusOr<std::vector<std::string>> Names(const std::string& dir) = 0;
  // A digest of the whole subtree at `path` (which exists): the entry and everything below it.
  virtual StatusOr<std::string> SubtreeDigest(const std::string& path) = 0;
};

// The build context tree / the filesystem of a stack of layers, as a SourceTreeView (borrowed).
std::unique_ptr<SourceTreeView> MakeContextView(ContextTree& tree);
std::unique_ptr<SourceTreeView> MakeFsIndexView(const FsIndex& fs);

// Resolves `path` (absolute or relative, with "." and ".." parts) inside the root as BuildKit
// does (continuity's fs.RootPath): ".." is applied lexically and never climbs above the root,
// every symlink on the way is followed with the root as "/", and the last component too when
// `follow_last`. A link's target, joined to the link's directory unless absolute, is cleaned as
// a path before it is walked ("dl/../f" is "f" whatever dl is; "/missing/../f" is "/f"). The
// result is clean and relative ("" for the root); it need not exist. InvalidArgument after 255
// links. The worker copies (and mounts bind sources) by it and the keys digest by it, so a key
// covers exactly what is read.
StatusOr<std::string> ResolveInRoot(std::string_view path, bool follow_last, SourceTreeView& tree);

// Whether a path has wildcards ("*", "?", "[") that are not escaped with "\".
bool HasWildcards(std::string_view path);

// One path a source names.
struct SourceMatch {
  std::string path;      // as matched; its last component is the name a file gets in a dir dest
  std::string resolved;  // with every symlink followed: what is copied (may not exist)
};

// The paths `source` names (BuildKit's ResolveWildcards with FollowSymlinks): without wildcards,
// the source itself, resolved; with them, the part before the first wildcard component is
// resolved, and the rest matches entry names component by component (Go's filepath.Match),
// never going through a symlinked directory; each match is then resolved. In path order. A
// wildcard that matches nothing gives no matches, which is no error (BuildKit copies the rest).
StatusOr<std::vector<SourceMatch>> MatchSource(std::string_view source, SourceTreeView& tree);

// COPY --parents: a source "a/./b/c" copies directory "a" keeping "b/c" under it; without the
// "/./" pivot, the root keeping the whole path.
struct ParentsSource {
  std::string root;     // as written before the pivot (wildcards allowed), or "/"
  std::string pattern;  // the include pattern below `root`, cleaned, without a leading "/"
};
ParentsSource SplitParents(std::string_view source);

// Which entries below a copied directory are copied (BuildKit's include and exclude patterns,
// matched against paths relative to the copied directory; the directory itself is never
// matched). Immutable after Make.
class CopyFilter {
 public:
  CopyFilter() = default;
  // `include` is --parents's pattern (nullopt: everything; "" includes nothing, as in BuildKit);
  // `excludes` are the --exclude patterns. A malformed pattern is InvalidArgument.
  static StatusOr<CopyFilter> Make(const std::optional<std::string>& include,
                                   const std::vector<std::string>& excludes);
  bool empty() const { return !include_ && excludes_.empty(); }
  // Whether the entry at `rel` is copied (its parent directories are then made too).
  bool Selected(std::string_view rel) const;
  // For a directory: whether something below it may be Selected (a walk can skip it if not).
  // Never false when something would be.
  bool MayHaveSelectedBelow(std::string_view dir) const;

 private:
  std::optional<DockerIgnore> include_;  // nullopt: everything
  DockerIgnore excludes_;
};

// What decides a COPY/ADD's selection beyond its sources.
struct CopySelection {
  bool parents = false;               // COPY --parents
  std::vector<std::string> excludes;  // --exclude, as written
};

// A digest of what copying `source` with `selection` reads from `tree`: for each match, its name,
// and the subtree at its resolved path (filtered by --exclude and --parents). NotFound (naming
// the source) if a source without wildcards does not exist; a wildcard matching nothing is
// recorded as such.
StatusOr<std::string> SourceSelectionDigest(SourceTreeView& tree, std::string_view source,
                                            const CopySelection& selection);

}  // namespace stagefarm
