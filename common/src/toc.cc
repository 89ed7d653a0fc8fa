#include "stagefarm/common/toc.h"

#include <exception>
#include <limits>
#include <nlohmann/json.hpp>

namespace stagefarm {
namespace {

using nlohmann::json;

bool IsValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t n;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 1;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n >= s.size()) return false;
    for (size_t k = 1; k <= n; ++k) {
      auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    // Overlong forms, surrogates and values past U+10FFFF are not valid UTF-8.
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
        (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) {
      return false;
    }
    i += n + 1;
  }
  return true;
}

// JSON strings must be UTF-8 but file names are bytes: a name that is not UTF-8 is stored hex
// encoded under "<key>_hex" so the TOC round-trips any name.
void PutString(json& obj, const char* key, const std::string& value) {
  if (value.empty()) return;
  if (IsValidUtf8(value)) {
    obj[key] = value;
  } else {
    obj[std::string(key) + "_hex"] = HexEncode(value);
  }
}

StatusOr<std::string> HexDecode(std::string_view hex) {
  if (hex.size() % 2 != 0) return InvalidArgumentError("odd-length hex string");
  std::string out;
  out.reserve(hex.size() / 2);
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  for (size_t i = 0; i < hex.size(); i += 2) {
    int hi = nibble(hex[i]), lo = nibble(hex[i + 1]);
    if (hi < 0 || lo < 0) return InvalidArgumentError("bad hex string");
    out.push_back(static_cast<char>(hi << 4 | lo));
  }
  return out;
}

StatusOr<std::string> GetString(const json& obj, const std::string& key) {
  if (auto it = obj.find(key); it != obj.end()) {
    if (!it->is_string()) return InvalidArgumentError("\"" + key + "\" is not a string");
    return it->get<std::string>();
  }
  if (auto it = obj.find(key + "_hex"); it != obj.end()) {
    if (!it->is_string()) return InvalidArgumentError("\"" + key + "_hex\" is not a string");
    return HexDecode(it->get_ref<const std::string&>());
  }
  return std::string();
}

template <typename T>
StatusOr<T> GetUnsigned(const json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end()) return T{0};
  if (!it->is_number_unsigned()) {
    return InvalidArgumentError(std::string("\"") + key + "\" is not an unsigned integer");
  }
  uint64_t v = it->get<uint64_t>();
  if (v > std::numeric_limits<T>::max()) {
    return InvalidArgumentError(std::string("\"") + key + "\" is out of range");
  }
  return static_cast<T>(v);
}

bool IsTocType(char c) {
  switch (static_cast<TocType>(c)) {
    case TocType::kFile:
    case TocType::kDir:
    case TocType::kSymlink:
    case TocType::kHardlink:
    case TocType::kChar:
    case TocType::kBlock:
    case TocType::kFifo:
    case TocType::kWhiteout:
    case TocType::kOpaque:
      return true;
  }
  return false;
}

StatusOr<TocEntry> ParseLine(std::string_view line) {
  json obj = json::parse(line);  // throws on malformed input; caught by the caller
  if (!obj.is_object()) return InvalidArgumentError("not a JSON object");
  TocEntry e;
  SF_ASSIGN_OR_RETURN(e.path, GetString(obj, "path"));
  SF_ASSIGN_OR_RETURN(std::string type, GetString(obj, "type"));
  if (type.size() != 1 || !IsTocType(type[0])) {
    return InvalidArgumentError("unknown entry type \"" + type + "\"");
  }
  e.type = static_cast<TocType>(type[0]);
  SF_ASSIGN_OR_RETURN(e.mode, GetUnsigned<uint32_t>(obj, "mode"));
  SF_ASSIGN_OR_RETURN(e.uid, GetUnsigned<uint32_t>(obj, "uid"));
  SF_ASSIGN_OR_RETURN(e.gid, GetUnsigned<uint32_t>(obj, "gid"));
  SF_ASSIGN_OR_RETURN(e.size, GetUnsigned<uint64_t>(obj, "size"));
  SF_ASSIGN_OR_RETURN(e.digest, GetString(obj, "digest"));
  SF_ASSIGN_OR_RETURN(e.link, GetString(obj, "link"));
  SF_ASSIGN_OR_RETURN(e.devmajor, GetUnsigned<uint32_t>(obj, "devmajor"));
  SF_ASSIGN_OR_RETURN(e.devminor, GetUnsigned<uint32_t>(obj, "devminor"));
  if (e.path.empty()) return InvalidArgumentError("entry without a path");
  if (e.mode > 07777) return InvalidArgumentError("mode has more than permission bits");
  return e;
}

// "/a//b/./c/" -> "a/b/c"; "" and "/" -> "" (the root).
std::string NormalizePath(std::string_view path) {
  std::string out;
  size_t i = 0;
  while (i <= path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    std::string_view comp = path.substr(i, j - i);
    if (!comp.empty() && comp != ".") {
      if (!out.empty()) out.push_back('/');
      out.append(comp);
    }
    i = j + 1;
  }
  return out;
}

bool IsUnder(const std::string& path, const std::string& dir) {
  if (dir.empty()) return !path.empty();
  return path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 &&
         path[dir.size()] == '/';
}

// Removes `dir`'s descendants (not `dir` itself) from `entries`.
void EraseChildren(std::map<std::string, TocEntry>& entries, const std::string& dir) {
  auto it = entries.lower_bound(dir.empty() ? std::string() : dir + "/");
  while (it != entries.end() && IsUnder(it->first, dir)) it = entries.erase(it);
}

// Length-prefixed fields, so no choice of bytes in a name can make two encodings collide.
void AppendField(std::string& out, std::string_view field) {
  out.append(std::to_string(field.size()));
  out.push_back(':');
  out.append(field);
}

}  // namespace

std::string Toc::Serialize() const {
  std::string out;
  for (const TocEntry& e : entries) {
    // nlohmann::json objects are std::map backed: keys come out sorted, so the form is canonical.
    json obj = json::object();
    PutString(obj, "path", e.path);
    obj["type"] = std::string(1, static_cast<char>(e.type));
    obj["mode"] = e.mode;
    obj["uid"] = e.uid;
    obj["gid"] = e.gid;
    if (e.size != 0) obj["size"] = e.size;
    PutString(obj, "digest", e.digest);
    PutString(obj, "link", e.link);
    if (e.devmajor != 0) obj["devmajor"] = e.devmajor;
    if (e.devminor != 0) obj["devminor"] = e.devminor;
    out.append(obj.dump());
    out.push_back('\n');
  }
  return out;
}

StatusOr<Toc> Toc::Parse(std::string_view bytes) {
  Toc toc;
  size_t line_no = 0;
  while (!bytes.empty()) {
    ++line_no;
    size_t nl = bytes.find('\n');
    std::string_view line = bytes.substr(0, nl);
    bytes.remove_prefix(nl == std::string_view::npos ? bytes.size() : nl + 1);
    if (line.empty()) continue;
    StatusOr<TocEntry> entry = InvalidArgumentError("unparsed");
    try {
      entry = ParseLine(line);
    } catch (const std::exception& e) {
      entry = InvalidArgumentError(e.what());
    }
    if (!entry.ok()) return entry.status().Annotate("TOC line " + std::to_string(line_no));
    toc.entries.push_back(std::move(entry).value());
  }
  return toc;
}

void FsIndex::Apply(const Toc& toc) {
  // A layer's whiteouts and opaque markers hide what the layers below hold, never what the same
  // layer adds (their position in the tar does not matter), so they are applied first.
  for (const TocEntry& e : toc.entries) {
    std::string path = NormalizePath(e.path);
    if (e.type == TocType::kWhiteout) {
      if (path.empty()) continue;
      entries_.erase(path);
      EraseChildren(entries_, path);
    } else if (e.type == TocType::kOpaque) {
      EraseChildren(entries_, path);
    }
  }
  for (const TocEntry& e : toc.entries) {
    if (e.type == TocType::kWhiteout || e.type == TocType::kOpaque) continue;
    std::string path = NormalizePath(e.path);
    if (path.empty()) continue;  // the root itself ("./")
    TocEntry entry = e;
    if (e.type == TocType::kHardlink) {
      // A hard link is the same file as its target: the index records the target's content so
      // that a tree holding a hard link and one holding a copy have the same digest.
      auto target = entries_.find(NormalizePath(e.link));
      if (target != entries_.end() && target->second.type != TocType::kDir) {
        entry = target->second;
      }
    }
    entry.path = path;
    auto it = entries_.find(path);
    // Anything but a directory over a directory replaces the whole lower subtree.
    if (it != entries_.end() && it->second.type == TocType::kDir && entry.type != TocType::kDir) {
      EraseChildren(entries_, path);
    }
    entries_[path] = std::move(entry);
  }
}

std::optional<TocEntry> FsIndex::Lookup(std::string_view path) const {
  std::string p = NormalizePath(path);
  if (p.empty()) {
    TocEntry root;
    root.type = TocType::kDir;
    root.mode = 0755;
    return root;
  }
  auto it = entries_.find(p);
  if (it != entries_.end()) return it->second;
  // A directory no layer named explicitly but that holds entries exists too.
  auto child = entries_.lower_bound(p + "/");
  if (child != entries_.end() && IsUnder(child->first, p)) {
    TocEntry dir;
    dir.path = p;
    dir.type = TocType::kDir;
    dir.mode = 0755;
    return dir;
  }
  return std::nullopt;
}

StatusOr<Digest> FsIndex::SubtreeDigest(std::string_view path) const {
  std::string p = NormalizePath(path);
  std::optional<TocEntry> top = Lookup(p);
  if (!top) return NotFoundError("no such path in the image: /" + p);
  Sha256 h;
  std::string buf = "stagefarm-subtree-v1\n";
  auto add = [&](std::string_view rel, const TocEntry& e) {
    AppendField(buf, rel);
    AppendField(buf, std::string_view(reinterpret_cast<const char*>(&e.type), 1));
    AppendField(buf, std::to_string(e.mode));
    AppendField(buf, std::to_string(e.uid));
    AppendField(buf, std::to_string(e.gid));
    AppendField(buf, std::to_string(e.type == TocType::kFile ? e.size : 0));
    AppendField(buf, e.type == TocType::kFile ? e.digest : std::string());
    AppendField(buf, e.link);
    AppendField(buf, std::to_string(e.devmajor) + "," + std::to_string(e.devminor));
    buf.push_back('\n');
    if (buf.size() >= (1 << 16)) {
      h.Update(buf);
      buf.clear();
    }
  };
  add("", *top);
  auto it = entries_.lower_bound(p.empty() ? std::string() : p + "/");
  for (; it != entries_.end() && IsUnder(it->first, p); ++it) {
    std::string_view rel = it->first;
    rel.remove_prefix(p.empty() ? 0 : p.size() + 1);
    add(rel, it->second);
  }
  h.Update(buf);
  return h.Finish();
}

}  // namespace stagefarm
