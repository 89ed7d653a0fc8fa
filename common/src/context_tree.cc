#include "stagefarm/common/context_tree.h"

#include <dirent.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <nlohmann/json.hpp>

#include "stagefarm/common/clean_path.h"

namespace stagefarm {
namespace {

bool IsNode(TreeEntry::Type t) {
  return t == TreeEntry::Type::kFifo || t == TreeEntry::Type::kCharDevice ||
         t == TreeEntry::Type::kBlockDevice;
}

StatusOr<std::string> ReadLink(const std::string& path) {
  std::string buf(256, '\0');
  for (;;) {
    ssize_t n = ::readlink(path.c_str(), buf.data(), buf.size());
    if (n < 0) return ErrnoError("readlink " + path, errno);
    if (static_cast<size_t>(n) < buf.size()) {
      buf.resize(static_cast<size_t>(n));
      return buf;
    }
    buf.resize(buf.size() * 2);
  }
}

StatusOr<std::vector<std::string>> ListDir(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return ErrnoError("opendir " + dir, errno);
  std::vector<std::string> names;
  while (struct dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(std::move(name));
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

// Hashes one directory; `rel` is its path relative to the context root ("" for the root).
StatusOr<Digest> HashDir(const std::string& abs, const std::string& rel,
                         const std::function<bool(const std::string&)>& ignore,
                         const std::function<void(ContextBlob)>& on_blob,
                         const std::function<bool(const std::string&)>& descend_excluded) {
  SF_ASSIGN_OR_RETURN(std::vector<std::string> names, ListDir(abs));
  TreeNode node;
  for (const std::string& name : names) {
    std::string child_rel = rel.empty() ? name : rel + "/" + name;
    std::string child_abs = abs + "/" + name;
    const bool excluded = ignore && ignore(child_rel);
    if (excluded && !descend_excluded) continue;
    struct stat st;
    if (::lstat(child_abs.c_str(), &st) != 0) return ErrnoError("lstat " + child_abs, errno);
    if (excluded && !(S_ISDIR(st.st_mode) && descend_excluded(child_rel))) continue;
    TreeEntry e;
    e.name = name;
    e.mode = st.st_mode & 07777;
    if (S_ISREG(st.st_mode)) {
      e.type = TreeEntry::Type::kFile;
      SF_ASSIGN_OR_RETURN(e.digest, Digest::OfFile(child_abs));
      on_blob(ContextBlob{e.digest, child_abs, {}});
    } else if (S_ISDIR(st.st_mode)) {
      e.type = TreeEntry::Type::kDir;
      SF_ASSIGN_OR_RETURN(e.digest,
                          HashDir(child_abs, child_rel, ignore, on_blob, descend_excluded));
      // An excluded directory looked into for exceptions is kept only if one matched inside.
      if (excluded && e.digest == Digest::Of(TreeNode().Serialize())) continue;
    } else if (S_ISLNK(st.st_mode)) {
      e.type = TreeEntry::Type::kSymlink;
      SF_ASSIGN_OR_RETURN(e.target, ReadLink(child_abs));
    } else if (S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
      // Only lstat'ed, never opened: a FIFO would block, a device is the host's.
      e.type = S_ISFIFO(st.st_mode)  ? TreeEntry::Type::kFifo
               : S_ISCHR(st.st_mode) ? TreeEntry::Type::kCharDevice
                                     : TreeEntry::Type::kBlockDevice;
      if (!S_ISFIFO(st.st_mode)) {
        e.dev_major = major(st.st_rdev);
        e.dev_minor = minor(st.st_rdev);
      }
    } else if (S_ISSOCK(st.st_mode)) {
      e.type = TreeEntry::Type::kFile;  // an empty file, as BuildKit's context transfer sends it
      e.digest = Digest::Of("");
      on_blob(ContextBlob{e.digest, {}, ""});
    } else {
      continue;
    }
    node.entries.push_back(std::move(e));
  }
  std::string bytes = node.Serialize();
  Digest d = Digest::Of(bytes);
  on_blob(ContextBlob{d, {}, std::move(bytes)});
  return d;
}

}  // namespace

char TreeTypeChar(TreeEntry::Type t) {
  switch (t) {
    case TreeEntry::Type::kFile: return 'f';
    case TreeEntry::Type::kDir: return 'd';
    case TreeEntry::Type::kSymlink: return 'l';
    case TreeEntry::Type::kFifo: return 'p';
    case TreeEntry::Type::kCharDevice: return 'c';
    case TreeEntry::Type::kBlockDevice: return 'b';
  }
  return 'f';
}

std::string TreeNode::Serialize() const {
  nlohmann::json arr = nlohmann::json::array();
  for (const TreeEntry& e : entries) {
    nlohmann::json j;
    j["n"] = e.name;
    j["t"] = std::string(1, TreeTypeChar(e.type));
    j["m"] = e.mode;
    if (e.type == TreeEntry::Type::kSymlink) {
      j["l"] = e.target;
    } else if (IsNode(e.type)) {
      if (e.type != TreeEntry::Type::kFifo) j["r"] = {e.dev_major, e.dev_minor};
    } else {
      j["d"] = e.digest.str();
      j["s"] = e.digest.size;
    }
    arr.push_back(std::move(j));
  }
  return arr.dump();
}

StatusOr<TreeNode> TreeNode::Parse(std::string_view bytes) {
  nlohmann::json arr = nlohmann::json::parse(bytes, nullptr, /*allow_exceptions=*/false);
  if (!arr.is_array()) return InvalidArgumentError("context tree node is not a JSON array");
  TreeNode node;
  try {
    for (const auto& j : arr) {
      TreeEntry e;
      e.name = j.at("n").get<std::string>();
      // JSON's "\u0000" decodes to a NUL byte, which IsEntryName refuses.
      if (!IsEntryName(e.name)) {
        return InvalidArgumentError("context tree node has a bad name " + QuoteName(e.name));
      }
      std::string t = j.at("t").get<std::string>();
      e.mode = j.at("m").get<uint32_t>() & 07777;
      if (t == "l") {
        e.type = TreeEntry::Type::kSymlink;
        e.target = j.at("l").get<std::string>();
      } else if (t == "f" || t == "d") {
        e.type = t == "f" ? TreeEntry::Type::kFile : TreeEntry::Type::kDir;
        SF_ASSIGN_OR_RETURN(e.digest,
                            Digest::Parse(j.at("d").get<std::string>(), j.at("s").get<uint64_t>()));
      } else if (t == "p" || t == "c" || t == "b") {
        e.type = t == "p"   ? TreeEntry::Type::kFifo
                 : t == "c" ? TreeEntry::Type::kCharDevice
                            : TreeEntry::Type::kBlockDevice;
        if (t != "p") {
          e.dev_major = j.at("r").at(0).get<uint32_t>();
          e.dev_minor = j.at("r").at(1).get<uint32_t>();
        }
      } else {
        return InvalidArgumentError("context tree node has unknown type \"" + t + "\"");
      }
      if (!node.entries.empty() && node.entries.back().name >= e.name) {
        return InvalidArgumentError("context tree node entries are not sorted");
      }
      node.entries.push_back(std::move(e));
    }
  } catch (const nlohmann::json::exception& ex) {
    return InvalidArgumentError(std::string("context tree node: ") + ex.what());
  }
  return node;
}

StatusOr<Digest> HashContextDir(const std::string& root,
                                const std::function<bool(const std::string&)>& ignore,
                                const std::function<void(ContextBlob)>& on_blob,
                                const std::function<bool(const std::string&)>& descend_excluded) {
  struct stat st;
  if (::stat(root.c_str(), &st) != 0) return ErrnoError("context " + root, errno);
  if (!S_ISDIR(st.st_mode)) return InvalidArgumentError("context " + root + " is not a directory");
  return HashDir(root, "", ignore, on_blob, descend_excluded);
}

StatusOr<TreeNode> ContextTree::ReadNode(const Digest& node) {
  auto it = nodes_.find(node.hex);
  if (it != nodes_.end()) return it->second;
  SF_ASSIGN_OR_RETURN(std::string bytes, cache_.ReadBytes(node, 64 << 20));
  SF_ASSIGN_OR_RETURN(TreeNode parsed, TreeNode::Parse(bytes));
  if (nodes_.size() >= kCachedNodes) nodes_.clear();
  nodes_.emplace(node.hex, parsed);
  return parsed;
}

StatusOr<std::optional<TreeEntry>> ContextTree::Lookup(std::string_view raw_path) {
  // Lexically, ".." stopping at the root: the path names the same entry as BuildKit's cleaned
  // source path does, and never one outside the tree.
  const std::string clean = CleanSlashPath("/" + std::string(raw_path));
  std::string_view path = clean;
  TreeEntry current;
  current.type = TreeEntry::Type::kDir;
  current.mode = 0755;
  current.digest = root_;
  size_t pos = 0;
  while (pos <= path.size()) {
    size_t slash = path.find('/', pos);
    std::string_view part =
        path.substr(pos, slash == std::string_view::npos ? std::string_view::npos : slash - pos);
    pos = slash == std::string_view::npos ? path.size() + 1 : slash + 1;
    if (part.empty() || part == ".") continue;
    if (current.type != TreeEntry::Type::kDir) return std::optional<TreeEntry>();
    SF_ASSIGN_OR_RETURN(TreeNode node, ReadNode(current.digest));
    auto it = std::lower_bound(node.entries.begin(), node.entries.end(), part,
                               [](const TreeEntry& e, std::string_view n) { return e.name < n; });
    if (it == node.entries.end() || it->name != part) return std::optional<TreeEntry>();
    current = *it;
  }
  return std::optional<TreeEntry>(current);
}

}  // namespace stagefarm
