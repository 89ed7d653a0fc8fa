#include "stagefarm/coordinator/step_keys.h"

#include <fnmatch.h>

#include <algorithm>
#include <deque>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string_view>

namespace stagefarm::coordinator {
namespace {

bool HasWildcard(const std::string& s) { return s.find_first_of("*?[") != std::string::npos; }

std::string HashJson(const nlohmann::json& j) { return Digest::Of(j.dump()).hex; }

std::string Join(const std::string& dir, const std::string& name) {
  return dir.empty() ? name : dir + "/" + name;
}

// "/a//b/./c" -> {"a", "b", "c"}; ".." removes the component before it and never climbs above
// the root, as COPY cleans its source paths before it looks at the filesystem.
std::vector<std::string> CleanComponents(std::string_view path) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i <= path.size()) {
    size_t j = std::min(path.find('/', i), path.size());
    std::string_view part = path.substr(i, j - i);
    if (part == "..") {
      if (!out.empty()) out.pop_back();
    } else if (!part.empty() && part != ".") {
      out.emplace_back(part);
    }
    i = j + 1;
  }
  return out;
}

// What a key needs of the filesystem a COPY reads (a stage's, from its TOCs, or the build
// context's tree). Paths are relative to its root and hold no symlink before their last name.
class SourceFs {
 public:
  struct Node {
    bool dir = false;
    bool link = false;
    std::string target;  // of a link
  };
  virtual ~SourceFs() = default;
  // The entry at `path`, a final symlink not followed; nullopt if there is none.
  virtual StatusOr<std::optional<Node>> Lstat(const std::string& path) = 0;
  // The names in directory `dir`, sorted.
  virtual StatusOr<std::vector<std::string>> Names(const std::string& dir) = 0;
  // A digest of everything a copy of the entry at `path` (not a symlink) reads: its type, mode
  // and content, and for a directory every entry under it (symlinks there as links).
  virtual StatusOr<std::string> Content(const std::string& path) = 0;
};

// At most as many symlinks as the kernel follows in one path (the worker resolves with it).
constexpr int kMaxLinks = 40;

// Resolves the cleaned source path `parts` inside the root of `fs` as BuildKit's COPY reads it
// (continuity's RootPath): each component in turn; a symlink met on the way, and the last one, is
// replaced by its target, joined to the directory holding the link unless it is absolute, and
// cleaned as a path (so ".." in a target takes away the name before it, whatever that name is,
// and never climbs above the root). So no link leads out of the root, and links to links, links
// to directories and symlinked parent directories all end where the copy ends. The path reached
// (without symlinks), or nullopt when it does not exist: a dangling link, a missing name, or a
// name under something that is not a directory.
StatusOr<std::optional<std::string>> Resolve(SourceFs& fs, const std::vector<std::string>& parts,
                                             const std::string& where) {
  std::string done;  // resolved so far: a directory without symlinks
  std::deque<std::string> todo(parts.begin(), parts.end());
  int links = 0;
  while (!todo.empty()) {
    std::string part = std::move(todo.front());
    todo.pop_front();
    const std::string path = Join(done, part);
    SF_ASSIGN_OR_RETURN(std::optional<SourceFs::Node> node, fs.Lstat(path));
    if (!node) return std::optional<std::string>();
    if (node->link) {
      if (++links > kMaxLinks) {
        return InvalidArgumentError(where + ": too many levels of symbolic links");
      }
      std::vector<std::string> target =
          CleanComponents(node->target.starts_with("/") ? node->target : done + "/" + node->target);
      todo.insert(todo.begin(), target.begin(), target.end());
      done.clear();
      continue;
    }
    if (!todo.empty() && !node->dir) return std::optional<std::string>();
    done = path;
  }
  return std::optional<std::string>(std::move(done));
}

// The entries a source with wildcards names, as BuildKit's COPY expands it: the components before
// the first wildcard are resolved as Resolve does; below that directory each component is matched
// (fnmatch, '*' never matching '/') against the names there, going down through directories
// only, not symlinks (BuildKit walks the tree without following them). Paths of the matches,
// sorted; each is then read through Resolve like any source.
StatusOr<std::vector<std::string>> Expand(SourceFs& fs, const std::vector<std::string>& parts,
                                          const std::string& where) {
  size_t first = 0;
  while (first < parts.size() && !HasWildcard(parts[first])) ++first;
  std::vector<std::string> prefix(parts.begin(), parts.begin() + static_cast<long>(first));
  SF_ASSIGN_OR_RETURN(std::optional<std::string> base, Resolve(fs, prefix, where));
  if (!base) return std::vector<std::string>();
  std::vector<std::string> paths = {*base};
  for (size_t k = first; k < parts.size(); ++k) {
    std::vector<std::string> next;
    for (const std::string& dir : paths) {
      SF_ASSIGN_OR_RETURN(std::optional<SourceFs::Node> node, fs.Lstat(dir));
      if (!node || !node->dir) continue;
      SF_ASSIGN_OR_RETURN(std::vector<std::string> names, fs.Names(dir));
      for (const std::string& name : names) {
        if (::fnmatch(parts[k].c_str(), name.c_str(), 0) == 0) next.push_back(Join(dir, name));
      }
    }
    paths = std::move(next);
  }
  return paths;
}

// Length-prefixed, so that no bytes in a name (which need not be UTF-8) can make two lists
// encode alike.
void AppendField(std::string& out, std::string_view field) {
  out += std::to_string(field.size());
  out += ':';
  out += field;
}

// The key part of one source: what the copy reads for it, through every symlink it follows.
// `where` names the source in errors; `not_found` is what a missing one is.
StatusOr<nlohmann::json> SourceDigest(SourceFs& fs, const std::string& source,
                                      const std::string& where, const std::string& not_found) {
  std::vector<std::string> parts = CleanComponents(source);
  if (!HasWildcard(source)) {
    SF_ASSIGN_OR_RETURN(std::optional<std::string> path, Resolve(fs, parts, where));
    if (!path) return NotFoundError(where + ": " + not_found);
    SF_ASSIGN_OR_RETURN(std::string content, fs.Content(*path));
    return nlohmann::json::array({source, content});
  }
  SF_ASSIGN_OR_RETURN(std::vector<std::string> matches, Expand(fs, parts, where));
  if (matches.empty()) return nlohmann::json::array({source, "absent"});
  std::string list;  // each match's name (it names the copy) and what it reads
  for (const std::string& match : matches) {
    SF_ASSIGN_OR_RETURN(std::optional<std::string> path,
                        Resolve(fs, CleanComponents(match), where));
    if (!path) return NotFoundError(where + ": /" + match + ": symbolic link to a missing file");
    SF_ASSIGN_OR_RETURN(std::string content, fs.Content(*path));
    AppendField(list, match.substr(match.rfind('/') + 1));
    AppendField(list, content);
  }
  return nlohmann::json::array({source, Digest::Of(list).str()});
}

// A stage's filesystem, from the TOCs of its layers.
class TocFs : public SourceFs {
 public:
  explicit TocFs(const FsIndex& index) : index_(index) {}
  StatusOr<std::optional<Node>> Lstat(const std::string& path) override {
    std::optional<TocEntry> e = index_.Lookup(path);
    if (!e) return std::optional<Node>();
    return std::optional<Node>(
        Node{e->type == TocType::kDir, e->type == TocType::kSymlink, e->link});
  }
  StatusOr<std::vector<std::string>> Names(const std::string& dir) override {
    std::set<std::string> names;  // an entry's first component below `dir`
    const std::string prefix = dir.empty() ? "" : dir + "/";
    const auto& entries = index_.entries();
    for (auto it = entries.lower_bound(prefix);
         it != entries.end() && it->first.compare(0, prefix.size(), prefix) == 0; ++it) {
      std::string_view rest = std::string_view(it->first).substr(prefix.size());
      if (!rest.empty()) names.emplace(rest.substr(0, rest.find('/')));
    }
    return std::vector<std::string>(names.begin(), names.end());
  }
  StatusOr<std::string> Content(const std::string& path) override {
    SF_ASSIGN_OR_RETURN(Digest d, index_.SubtreeDigest(path));
    return d.str();
  }

 private:
  const FsIndex& index_;
};

// The build context, from its tree in the CAS. Remembers what it looked up (a node blob is read
// once per key).
class ContextFs : public SourceFs {
 public:
  explicit ContextFs(ContextTree& tree) : tree_(tree) {}
  StatusOr<std::optional<Node>> Lstat(const std::string& path) override {
    SF_ASSIGN_OR_RETURN(std::optional<TreeEntry> e, Entry(path));
    if (!e) return std::optional<Node>();
    return std::optional<Node>(
        Node{e->type == TreeEntry::Type::kDir, e->type == TreeEntry::Type::kSymlink, e->target});
  }
  StatusOr<std::vector<std::string>> Names(const std::string& dir) override {
    SF_ASSIGN_OR_RETURN(std::optional<TreeEntry> e, Entry(dir));
    if (!e || e->type != TreeEntry::Type::kDir) return std::vector<std::string>();
    SF_ASSIGN_OR_RETURN(TreeNode node, tree_.ReadNode(e->digest));
    std::vector<std::string> names;
    for (const TreeEntry& child : node.entries) names.push_back(child.name);
    return names;
  }
  StatusOr<std::string> Content(const std::string& path) override {
    SF_ASSIGN_OR_RETURN(std::optional<TreeEntry> e, Entry(path));
    if (!e) return NotFoundError("/" + path);
    // A directory's digest is its node's, which covers everything below it.
    return nlohmann::json::array({e->digest.str(), e->mode, static_cast<int>(e->type)}).dump();
  }

 private:
  StatusOr<std::optional<TreeEntry>> Entry(const std::string& path) {
    auto it = seen_.find(path);
    if (it != seen_.end()) return it->second;
    SF_ASSIGN_OR_RETURN(std::optional<TreeEntry> e, tree_.Lookup(path));
    seen_.emplace(path, e);
    return e;
  }
  ContextTree& tree_;
  std::map<std::string, std::optional<TreeEntry>> seen_;
};

}  // namespace

std::string BaseKey(const Digest& manifest, const std::string& platform, const std::string& salt) {
  nlohmann::json j;
  j["base"] = manifest.empty() ? "scratch" : manifest.str();
  j["platform"] = platform;
  j["salt"] = salt;
  return HashJson(j);
}

std::string StepKey(const std::string& parent, const frontend::ResolvedStep& step,
                    const std::string& sources_digest) {
  nlohmann::json j;
  j["parent"] = parent;
  j["instruction"] = step.canonical;
  if (step.kind == frontend::StepKind::kRun) {
    // What the command sees beyond its text.
    j["argv"] = step.argv;
    j["env"] = step.env;
    j["user"] = step.config().user;
    j["workdir"] = step.config().working_dir;
    j["network"] = step.network;
    // The content RUN --mount=type=bind mounts (the mount specs are in the instruction; secret
    // values never are).
    if (!sources_digest.empty()) j["mount_sources"] = sources_digest;
  }
  if (step.kind == frontend::StepKind::kCopy || step.kind == frontend::StepKind::kAdd) {
    j["sources"] = sources_digest;
    j["workdir"] = step.config().working_dir;  // relative destinations depend on it
  }
  if (step.kind == frontend::StepKind::kWorkdir) {
    // The directories it creates are owned by the USER of the time.
    j["workdir"] = step.config().working_dir;
    j["user"] = step.config().user;
  }
  return HashJson(j);
}

StatusOr<std::string> ContextSourcesDigest(ContextTree& tree,
                                           const std::vector<std::string>& sources,
                                           const std::string& instruction) {
  ContextFs fs(tree);
  nlohmann::json j = nlohmann::json::array();
  for (const std::string& source : sources) {
    SF_ASSIGN_OR_RETURN(nlohmann::json d,
                        SourceDigest(fs, source, instruction + ": \"" + source + "\"",
                                     "not found in the build context"));
    j.push_back(std::move(d));
  }
  return HashJson(j);
}

Status SplitCopySources(const frontend::ResolvedStep& step, const std::string& where,
                        std::vector<std::string>* local, std::vector<std::string>* urls) {
  for (const std::string& source : step.sources) {
    (IsRemoteUrl(source) ? urls : local)->push_back(source);
  }
  if (!urls->empty() && step.kind != frontend::StepKind::kAdd) {
    return InvalidArgumentError(where + ": source can't be a URL for COPY (use ADD)");
  }
  if (step.checksum.empty()) return Status();
  if (step.sources.size() != 1) {
    return InvalidArgumentError(where + ": --checksum can't be specified for multiple sources");
  }
  if (urls->empty()) {
    return InvalidArgumentError(where + ": --checksum can't be specified for non-HTTP(S) sources");
  }
  StatusOr<AddChecksum> expected = ParseAddChecksum(step.checksum);
  if (!expected.ok()) return InvalidArgumentError(where + ": " + expected.status().message());
  return Status();
}

StatusOr<std::string> RemoteSourcesDigest(const std::vector<std::string>& urls,
                                          const std::vector<RemoteFile>& fetched,
                                          const std::string& checksum, const std::string& where) {
  nlohmann::json j = nlohmann::json::array();
  for (const std::string& url : urls) {
    const RemoteFile* file = FindRemoteFile(fetched, url);
    if (!file) {
      return FailedPreconditionError(where + ": " + url +
                                     " was not fetched by the client (stagefarm build fetches "
                                     "ADD URLs before it submits the build)");
    }
    SF_RETURN_IF_ERROR(CheckAddChecksum(checksum, *file).Annotate(where));
    j.push_back({url, file->digest.str(), file->digest.size, file->mtime});
  }
  return HashJson(j);
}

StatusOr<std::string> FsSourcesDigest(const FsIndex& fs, const std::vector<std::string>& sources,
                                      const std::string& instruction) {
  TocFs toc_fs(fs);
  nlohmann::json j = nlohmann::json::array();
  for (const std::string& source : sources) {
    SF_ASSIGN_OR_RETURN(
        nlohmann::json d,
        SourceDigest(toc_fs, source, instruction + ": \"" + source + "\"", "not found"));
    j.push_back(std::move(d));
  }
  return HashJson(j);
}

}  // namespace stagefarm::coordinator
