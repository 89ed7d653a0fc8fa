#include "stagefarm/common/copy_sources.h"

#include <fnmatch.h>

#include <algorithm>
#include <deque>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>

#include "stagefarm/common/clean_path.h"
#include "stagefarm/common/digest.h"

namespace stagefarm {
namespace {

constexpr int kMaxLinks = 255;  // continuity's limit

// "/a/./b/../c" -> {"a", "c"}: cleaned as a rooted path, so ".." stops at the root.
std::vector<std::string> RootedComponents(std::string_view path) {
  std::string clean = CleanSlashPath("/" + std::string(path));
  std::vector<std::string> out;
  for (size_t start = 1; start < clean.size();) {
    size_t end = clean.find('/', start);
    if (end == std::string::npos) end = clean.size();
    out.push_back(clean.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

std::string JoinPath(const std::string& a, const std::string& b) {
  return a.empty() ? b : b.empty() ? a : a + "/" + b;
}

std::string JoinAll(const std::vector<std::string>& parts, size_t begin, size_t end) {
  std::string out;
  for (size_t i = begin; i < end; ++i) out = JoinPath(out, parts[i]);
  return out;
}

bool ComponentHasWildcards(std::string_view c) {
  for (size_t i = 0; i < c.size(); ++i) {
    if (c[i] == '\\') {
      ++i;
    } else if (c[i] == '*' || c[i] == '?' || c[i] == '[') {
      return true;
    }
  }
  return false;
}

std::string BaseName(const std::string& path) { return path.substr(path.rfind('/') + 1); }

// ---- views ------------------------------------------------------------------------------------

// Everything copying a context entry itself takes from it.
std::string Fingerprint(const TreeEntry& e, bool with_digest) {
  return std::string(1, TreeTypeChar(e.type)) + " " + std::to_string(e.mode) + " " +
         (with_digest ? e.digest.str() : std::string()) + " " + e.target + " " +
         std::to_string(e.dev_major) + "," + std::to_string(e.dev_minor);
}

class ContextView : public SourceTreeView {
 public:
  explicit ContextView(ContextTree& tree) : tree_(tree) {}

  StatusOr<std::optional<Node>> Lookup(const std::string& path) override {
    SF_ASSIGN_OR_RETURN(std::optional<TreeEntry> e, Entry(path));
    if (!e) return std::optional<Node>();
    Node n;
    n.kind = e->type == TreeEntry::Type::kDir       ? Node::Kind::kDir
             : e->type == TreeEntry::Type::kSymlink ? Node::Kind::kSymlink
             : e->type == TreeEntry::Type::kFile    ? Node::Kind::kFile
                                                    : Node::Kind::kOther;
    n.target = e->target;
    // A directory's own entry, not its node digest: that covers the children, which a filtered
    // copy may leave out.
    n.fingerprint = Fingerprint(*e, e->type == TreeEntry::Type::kFile);
    return std::optional<Node>(std::move(n));
  }

  StatusOr<std::vector<std::string>> Names(const std::string& dir) override {
    SF_ASSIGN_OR_RETURN(std::optional<TreeEntry> e, Entry(dir));
    if (!e || e->type != TreeEntry::Type::kDir) return NotFoundError(dir + " is no directory");
    SF_ASSIGN_OR_RETURN(TreeNode node, tree_.ReadNode(e->digest));
    std::vector<std::string> out;
    for (const TreeEntry& c : node.entries) out.push_back(c.name);
    return out;
  }

  StatusOr<std::string> SubtreeDigest(const std::string& path) override {
    SF_ASSIGN_OR_RETURN(std::optional<TreeEntry> e, Entry(path));
    if (!e) return NotFoundError(path + " does not exist");
    return Fingerprint(*e, true);
  }

 private:
  // The entry at `path` (no link followed), the root being a directory.
  StatusOr<std::optional<TreeEntry>> Entry(const std::string& path) {
    SF_ASSIGN_OR_RETURN(std::optional<TreeEntry> e, tree_.Lookup(path));
    if (e && path.empty()) e->type = TreeEntry::Type::kDir;
    return e;
  }

  ContextTree& tree_;
};

class FsIndexView : public SourceTreeView {
 public:
  explicit FsIndexView(const FsIndex& fs) : fs_(fs) {}

  StatusOr<std::optional<Node>> Lookup(const std::string& path) override {
    std::optional<TocEntry> e = fs_.Lookup(path);
    if (!e) return std::optional<Node>();
    Node n;
    switch (e->type) {
      case TocType::kDir:
        n.kind = Node::Kind::kDir;
        break;
      case TocType::kSymlink:
        n.kind = Node::Kind::kSymlink;
        break;
      case TocType::kFile:
      case TocType::kHardlink:
        n.kind = Node::Kind::kFile;
        break;
      default:
        n.kind = Node::Kind::kOther;
        break;
    }
    n.target = e->type == TocType::kSymlink ? e->link : std::string();
    n.fingerprint = std::string(1, static_cast<char>(e->type)) + " " + std::to_string(e->mode) +
                    " " + std::to_string(e->uid) + ":" + std::to_string(e->gid) + " " +
                    std::to_string(e->size) + " " + e->digest + " " + e->link + " " +
                    std::to_string(e->devmajor) + "," + std::to_string(e->devminor);
    return std::optional<Node>(std::move(n));
  }

  StatusOr<std::vector<std::string>> Names(const std::string& dir) override {
    if (!children_) {
      // One pass over the index gives every directory's children, implied directories included.
      children_.emplace();
      for (const auto& [path, entry] : fs_.entries()) {
        std::string p = path;
        for (size_t slash = p.rfind('/');; slash = p.rfind('/')) {
          std::string parent = slash == std::string::npos ? "" : p.substr(0, slash);
          (*children_)[parent].insert(p.substr(slash == std::string::npos ? 0 : slash + 1));
          if (slash == std::string::npos) break;
          p = parent;
        }
      }
    }
    const std::vector<std::string> parts = RootedComponents(dir);
    auto it = children_->find(JoinAll(parts, 0, parts.size()));
    if (it == children_->end()) return std::vector<std::string>();
    return std::vector<std::string>(it->second.begin(), it->second.end());
  }

  StatusOr<std::string> SubtreeDigest(const std::string& path) override {
    SF_ASSIGN_OR_RETURN(Digest d, fs_.SubtreeDigest(path));
    return d.str();
  }

 private:
  const FsIndex& fs_;
  std::optional<std::map<std::string, std::set<std::string>>> children_;
};

// The filtered copy of directory `root`: every selected entry below it and the directories
// above those, each as its path relative to `root` and fingerprint, in walk order.
Status WalkSelected(SourceTreeView& tree, const std::string& root, const std::string& rel,
                    const CopyFilter& filter, std::vector<std::string>* pending,
                    std::vector<std::string>* lines) {
  SF_ASSIGN_OR_RETURN(std::vector<std::string> names, tree.Names(JoinPath(root, rel)));
  for (const std::string& name : names) {
    const std::string child = JoinPath(rel, name);
    SF_ASSIGN_OR_RETURN(std::optional<SourceTreeView::Node> node,
                        tree.Lookup(JoinPath(root, child)));
    if (!node) continue;
    const bool dir = node->kind == SourceTreeView::Node::Kind::kDir;
    const std::string line = child + "\n" + node->fingerprint;
    if (filter.Selected(child)) {
      // Its parent directories are made with their own metadata, so they count too.
      for (std::string& p : *pending) lines->push_back(std::move(p));
      pending->clear();
      lines->push_back(line);
      if (dir) SF_RETURN_IF_ERROR(WalkSelected(tree, root, child, filter, pending, lines));
    } else if (dir && filter.MayHaveSelectedBelow(child)) {
      pending->push_back(line);
      const size_t depth = pending->size();
      SF_RETURN_IF_ERROR(WalkSelected(tree, root, child, filter, pending, lines));
      if (pending->size() >= depth) pending->resize(depth - 1);
    }
  }
  return Status();
}

}  // namespace

std::unique_ptr<SourceTreeView> MakeContextView(ContextTree& tree) {
  return std::make_unique<ContextView>(tree);
}

std::unique_ptr<SourceTreeView> MakeFsIndexView(const FsIndex& fs) {
  return std::make_unique<FsIndexView>(fs);
}

StatusOr<std::string> ResolveInRoot(std::string_view path, bool follow_last, SourceTreeView& tree) {
  std::vector<std::string> parts = RootedComponents(path);
  std::deque<std::string> rest(parts.begin(), parts.end());
  std::vector<std::string> cur;
  int links = 0;
  bool missing = false;  // below a missing entry nothing is a link
  while (!rest.empty()) {
    std::string part = std::move(rest.front());
    rest.pop_front();
    if (part.empty() || part == ".") continue;
    if (part == "..") {
      if (!cur.empty()) cur.pop_back();
      continue;
    }
    cur.push_back(std::move(part));
    if (missing || (rest.empty() && !follow_last)) continue;
    SF_ASSIGN_OR_RETURN(std::optional<SourceTreeView::Node> node,
                        tree.Lookup(JoinAll(cur, 0, cur.size())));
    if (!node) {
      missing = true;
      continue;
    }
    if (node->kind != SourceTreeView::Node::Kind::kSymlink) continue;
    if (++links > kMaxLinks) {
      return InvalidArgumentError(std::string(path) + ": too many levels of symbolic links");
    }
    cur.pop_back();
    if (!node->target.empty() && node->target[0] == '/') cur.clear();
    // The target's parts come next; they are applied from the link's directory.
    std::vector<std::string> target;
    for (size_t start = 0; start <= node->target.size();) {
      size_t end = node->target.find('/', start);
      if (end == std::string::npos) end = node->target.size();
      target.push_back(node->target.substr(start, end - start));
      start = end + 1;
    }
    rest.insert(rest.begin(), target.begin(), target.end());
  }
  return JoinAll(cur, 0, cur.size());
}

bool HasWildcards(std::string_view path) { return ComponentHasWildcards(path); }

StatusOr<std::vector<SourceMatch>> MatchSource(std::string_view source, SourceTreeView& tree) {
  std::vector<std::string> parts = RootedComponents(source);
  size_t first = 0;
  while (first < parts.size() && !ComponentHasWildcards(parts[first])) ++first;
  if (first == parts.size()) {
    SF_ASSIGN_OR_RETURN(std::string resolved, ResolveInRoot(source, true, tree));
    return std::vector<SourceMatch>{{JoinAll(parts, 0, parts.size()), std::move(resolved)}};
  }
  // The part before the wildcards is resolved; below it, BuildKit walks without following links.
  SF_ASSIGN_OR_RETURN(std::string base, ResolveInRoot(JoinAll(parts, 0, first), true, tree));
  std::vector<std::string> paths = {base};
  for (size_t i = first; i < parts.size(); ++i) {
    std::vector<std::string> next;
    for (const std::string& dir : paths) {
      SF_ASSIGN_OR_RETURN(std::optional<SourceTreeView::Node> node, tree.Lookup(dir));
      if (!node || node->kind != SourceTreeView::Node::Kind::kDir) continue;
      SF_ASSIGN_OR_RETURN(std::vector<std::string> names, tree.Names(dir));
      for (const std::string& name : names) {
        if (::fnmatch(parts[i].c_str(), name.c_str(), 0) == 0) next.push_back(JoinPath(dir, name));
      }
    }
    paths = std::move(next);
  }
  std::vector<SourceMatch> out;
  for (std::string& p : paths) {
    SF_ASSIGN_OR_RETURN(std::string resolved, ResolveInRoot(p, true, tree));
    out.push_back({std::move(p), std::move(resolved)});
  }
  return out;
}

ParentsSource SplitParents(std::string_view source) {
  ParentsSource out;
  std::string_view pattern = source;
  size_t pivot = source.find("/./");
  if (pivot == std::string_view::npos) {
    out.root = "/";
  } else {
    out.root = std::string(source.substr(0, pivot));
    if (out.root.empty()) out.root = "/";
    pattern = source.substr(pivot + 3);
  }
  out.pattern = CleanSlashPath("/" + std::string(pattern)).substr(1);
  return out;
}

StatusOr<CopyFilter> CopyFilter::Make(const std::optional<std::string>& include,
                                      const std::vector<std::string>& excludes) {
  CopyFilter f;
  if (include) {
    StatusOr<DockerIgnore> in = DockerIgnore::FromPatterns({*include});
    if (!in.ok()) return InvalidArgumentError("--parents: " + in.status().message());
    f.include_ = std::move(*in);
  }
  StatusOr<DockerIgnore> ex = DockerIgnore::FromPatterns(excludes);
  if (!ex.ok()) return InvalidArgumentError("--exclude: " + ex.status().message());
  f.excludes_ = std::move(*ex);
  return f;
}

bool CopyFilter::Selected(std::string_view rel) const {
  // DockerIgnore::Excluded is "matched, or a parent directory matched": for the include pattern
  // that is BuildKit's "included".
  if (include_ && !include_->Excluded(rel)) return false;
  return !excludes_.Excluded(rel);
}

bool CopyFilter::MayHaveSelectedBelow(std::string_view dir) const {
  if (include_ && !include_->Excluded(dir) && !include_->MayMatchUnder(dir)) return false;
  return !excludes_.Excluded(dir) || excludes_.MayReincludeUnder(dir);
}

StatusOr<std::string> SourceSelectionDigest(SourceTreeView& tree, std::string_view source,
                                            const CopySelection& selection) {
  std::string src(source);
  std::optional<std::string> include;
  if (selection.parents) {
    ParentsSource p = SplitParents(source);
    src = p.root;
    include = p.pattern;
  }
  SF_ASSIGN_OR_RETURN(CopyFilter filter, CopyFilter::Make(include, selection.excludes));
  SF_ASSIGN_OR_RETURN(std::vector<SourceMatch> matches, MatchSource(src, tree));
  nlohmann::json j = nlohmann::json::array();
  j.push_back(std::string(source));
  for (const SourceMatch& m : matches) {
    SF_ASSIGN_OR_RETURN(std::optional<SourceTreeView::Node> node, tree.Lookup(m.resolved));
    if (!node) return NotFoundError("\"" + std::string(source) + "\": not found");
    std::string digest;
    if (filter.empty() || node->kind != SourceTreeView::Node::Kind::kDir) {
      SF_ASSIGN_OR_RETURN(digest, tree.SubtreeDigest(m.resolved));
    } else {
      std::vector<std::string> pending, lines;
      SF_RETURN_IF_ERROR(WalkSelected(tree, m.resolved, "", filter, &pending, &lines));
      std::string all;
      for (const std::string& l : lines) all += l + "\n";
      digest = Digest::Of(all).str();
    }
    j.push_back({BaseName(m.path), digest});
  }
  if (matches.empty()) j.push_back("absent");
  return Digest::Of(j.dump()).hex;
}

}  // namespace stagefarm
