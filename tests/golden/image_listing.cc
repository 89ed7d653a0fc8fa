#include "golden/image_listing.h"

#include <archive.h>
#include <archive_entry.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <regex>
#include <set>
#include <sstream>

#include "stagefarm/common/clean_path.h"
#include "stagefarm/common/digest.h"

namespace stagefarm::golden {
namespace {

using nlohmann::json;

struct ReadDeleter {
  void operator()(struct archive* a) const { archive_read_free(a); }
};
using ArchivePtr = std::unique_ptr<struct archive, ReadDeleter>;

ArchivePtr NewReader() {
  ArchivePtr a(archive_read_new());
  SF_CHECK(a != nullptr);
  archive_read_support_filter_all(a.get());
  archive_read_support_format_tar(a.get());
  return a;
}

std::string Message(struct archive* a) {
  const char* m = archive_error_string(a);
  return m ? m : "unreadable";
}

// "./a/b/" -> "a/b"; the root is "".
std::string Normalize(std::string_view name) {
  std::string clean = CleanSlashPath(name);
  size_t start = clean.find_first_not_of('/');
  return start == std::string::npos || clean == "." ? "" : clean.substr(start);
}

// Where an image's blobs are: members of a docker-archive tar, or files of an OCI layout.
class BlobSource {
 public:
  explicit BlobSource(std::string path)
      : path_(std::move(path)), is_dir_(std::filesystem::is_directory(path_)) {}

  // Calls `fn` with a reader positioned at the data of blob `name`.
  Status With(const std::string& name, const std::function<Status(struct archive*)>& fn) const {
    if (is_dir_) {
      ArchivePtr raw(archive_read_new());
      archive_read_support_filter_all(raw.get());
      archive_read_support_format_raw(raw.get());
      const std::string file = path_ + "/" + name;
      archive_entry* e;
      if (archive_read_open_filename(raw.get(), file.c_str(), 1 << 16) != ARCHIVE_OK ||
          archive_read_next_header(raw.get(), &e) != ARCHIVE_OK) {
        return InvalidArgumentError(file + ": " + Message(raw.get()));
      }
      return fn(raw.get());
    }
    ArchivePtr outer = NewReader();
    if (archive_read_open_filename(outer.get(), path_.c_str(), 1 << 16) != ARCHIVE_OK) {
      return InvalidArgumentError(path_ + ": " + Message(outer.get()));
    }
    const std::string wanted = Normalize(name);
    for (;;) {
      archive_entry* e;
      int r = archive_read_next_header(outer.get(), &e);
      if (r == ARCHIVE_EOF) break;
      if (r < ARCHIVE_WARN) return InvalidArgumentError(path_ + ": " + Message(outer.get()));
      if (Normalize(archive_entry_pathname(e)) == wanted) return fn(outer.get());
    }
    return InvalidArgumentError(path_ + ": no member " + name);
  }

  StatusOr<json> Json(const std::string& name) const {
    std::string text;
    SF_RETURN_IF_ERROR(With(name, [&](struct archive* a) {
      char buf[65536];
      for (;;) {
        la_ssize_t n = archive_read_data(a, buf, sizeof buf);
        if (n < 0) return InvalidArgumentError(path_ + ": " + name + ": " + Message(a));
        if (n == 0) return Status();
        text.append(buf, static_cast<size_t>(n));
      }
    }));
    json j = json::parse(text, nullptr, false);
    if (j.is_discarded()) return InvalidArgumentError(path_ + ": " + name + " is not JSON");
    return j;
  }

  const std::string& path() const { return path_; }

 private:
  std::string path_;
  bool is_dir_;
};

std::string BlobPath(const json& descriptor) {
  std::string digest = descriptor.value("digest", "");
  size_t colon = digest.find(':');
  return colon == std::string::npos ? "" : "blobs/" + digest.substr(0, colon) + "/" +
                                               digest.substr(colon + 1);
}

// The config blob's name and the layer blobs' names, bottom first. A tar is a docker archive
// (manifest.json) or an OCI archive (index.json, as `buildctl --output type=oci` writes).
StatusOr<std::pair<std::string, std::vector<std::string>>> Locate(const BlobSource& src) {
  std::vector<std::string> layers;
  const bool is_dir = std::filesystem::is_directory(src.path());
  if (!is_dir) {
    auto manifest = src.Json("manifest.json");
    if (manifest.ok()) {
      if (!manifest->is_array() || manifest->empty() || !(*manifest)[0]["Config"].is_string() ||
          !(*manifest)[0]["Layers"].is_array()) {
        return InvalidArgumentError(src.path() + ": manifest.json has no Config and Layers");
      }
      for (const auto& l : (*manifest)[0]["Layers"]) layers.push_back(l.get<std::string>());
      return std::make_pair((*manifest)[0]["Config"].get<std::string>(), layers);
    }
  }
  SF_ASSIGN_OR_RETURN(json index, src.Json("index.json"));
  json desc = index.value("manifests", json::array()).empty() ? json() : index["manifests"][0];
  SF_ASSIGN_OR_RETURN(json manifest, src.Json(BlobPath(desc)));
  while (manifest.contains("manifests")) {  // an index in the index
    SF_ASSIGN_OR_RETURN(manifest, src.Json(BlobPath(manifest["manifests"][0])));
  }
  if (!manifest["config"].is_object() || !manifest["layers"].is_array()) {
    return InvalidArgumentError(src.path() + ": manifest has no config and layers");
  }
  for (const auto& l : manifest["layers"]) layers.push_back(BlobPath(l));
  return std::make_pair(BlobPath(manifest["config"]), layers);
}

struct Node {
  json entry;     // the listing entry, without "path"
  int inode = 0;  // equal for hard links
  int layer = 0;  // the layer that last wrote it
};

class Flattener {
 public:
  Status ApplyLayer(struct archive* outer, const std::string& where) {
    ++layer_;
    ArchivePtr a = NewReader();
    auto read = [](struct archive*, void* ctx, const void** buf) -> la_ssize_t {
      auto* self = static_cast<Flattener*>(ctx);
      *buf = self->buf_;
      return archive_read_data(self->outer_, self->buf_, sizeof self->buf_);
    };
    outer_ = outer;
    if (archive_read_open(a.get(), this, nullptr, read, nullptr) != ARCHIVE_OK) {
      return InvalidArgumentError(where + ": " + Message(a.get()));
    }
    for (;;) {
      archive_entry* e;
      int r = archive_read_next_header(a.get(), &e);
      if (r == ARCHIVE_EOF) return Status();
      if (r < ARCHIVE_WARN) return InvalidArgumentError(where + ": " + Message(a.get()));
      Status s = Apply(a.get(), e);
      if (!s.ok()) return s.Annotate(where + ": " + archive_entry_pathname(e));
    }
  }

  json Listing() const {
    json files = json::array();
    std::map<int, std::vector<std::string>> groups;
    for (const auto& [path, node] : fs_) {
      json entry = {{"path", "/" + path}};
      entry.update(node.entry);
      files.push_back(std::move(entry));
      if (node.entry["type"] == "file") groups[node.inode].push_back("/" + path);
    }
    json hardlinks = json::array();
    std::set<std::vector<std::string>> sorted;  // by first path, not by tar order
    for (auto& [inode, paths] : groups) {
      if (paths.size() > 1) sorted.insert(paths);
    }
    for (const auto& paths : sorted) hardlinks.push_back(paths);
    return {{"files", files}, {"hardlinks", hardlinks}};
  }

 private:
  void RemoveTree(const std::string& path, bool keep_top, int below_layer) {
    auto it = fs_.lower_bound(path);
    while (it != fs_.end() && (it->first == path || it->first.starts_with(path + "/"))) {
      if ((keep_top && it->first == path) || it->second.layer >= below_layer) {
        ++it;
      } else {
        it = fs_.erase(it);
      }
    }
  }

  Status Apply(struct archive* a, archive_entry* e) {
    const std::string path = Normalize(archive_entry_pathname(e));
    if (path.empty()) return Status();
    size_t slash = path.rfind('/');
    const std::string parent = slash == std::string::npos ? "" : path.substr(0, slash);
    const std::string leaf = path.substr(slash == std::string::npos ? 0 : slash + 1);
    if (leaf == ".wh..wh..opq") {
      if (parent.empty()) {
        for (auto it = fs_.begin(); it != fs_.end();) {
          it = it->second.layer < layer_ ? fs_.erase(it) : std::next(it);
        }
      } else {
        RemoveTree(parent, /*keep_top=*/true, layer_);
      }
      return Status();
    }
    if (leaf.starts_with(".wh.")) {
      std::string gone = (parent.empty() ? "" : parent + "/") + leaf.substr(4);
      RemoveTree(gone, false, layer_ + 1);
      return Status();
    }
    Node node;
    node.layer = layer_;
    if (const char* hard = archive_entry_hardlink(e)) {
      auto target = fs_.find(Normalize(hard));
      if (target == fs_.end()) return InvalidArgumentError(std::string("hard link to missing ") + hard);
      node.entry = target->second.entry;
      node.inode = target->second.inode;
      RemoveTree(path, false, layer_ + 1);
      fs_[path] = std::move(node);
      return Status();
    }
    node.inode = ++inodes_;
    const mode_t type = archive_entry_filetype(e);
    static const std::map<mode_t, const char*> kTypes = {
        {AE_IFREG, "file"}, {AE_IFDIR, "dir"},    {AE_IFLNK, "symlink"},
        {AE_IFCHR, "char"}, {AE_IFBLK, "block"}, {AE_IFIFO, "fifo"}};
    auto name = kTypes.find(type);
    if (name == kTypes.end()) return InvalidArgumentError("unsupported entry type");
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(archive_entry_perm(e) & 07777));
    node.entry = {{"type", name->second},
                  {"mode", mode},
                  {"uid", archive_entry_uid(e)},
                  {"gid", archive_entry_gid(e)}};
    if (type == AE_IFREG) {
      Sha256 hash;
      char buf[65536];
      uint64_t size = 0;
      for (;;) {
        la_ssize_t n = archive_read_data(a, buf, sizeof buf);
        if (n < 0) return InvalidArgumentError(Message(a));
        if (n == 0) break;
        hash.Update(std::string_view(buf, static_cast<size_t>(n)));
        size += static_cast<uint64_t>(n);
      }
      node.entry["size"] = size;
      node.entry["sha256"] = hash.Finish().hex;
    } else if (type == AE_IFLNK) {
      const char* target = archive_entry_symlink(e);
      node.entry["target"] = target ? target : "";
    } else if (type == AE_IFCHR || type == AE_IFBLK) {
      node.entry["rdev"] = std::to_string(archive_entry_rdevmajor(e)) + ":" +
                           std::to_string(archive_entry_rdevminor(e));
    }
    auto old = fs_.find(path);
    if (type == AE_IFDIR && old != fs_.end() && old->second.entry["type"] == "dir") {
      old->second.entry = node.entry;  // a directory entry over a directory keeps its contents
      old->second.layer = layer_;
      return Status();
    }
    RemoveTree(path, false, layer_ + 1);
    fs_[path] = std::move(node);
    return Status();
  }

  std::map<std::string, Node> fs_;
  int layer_ = 0;
  int inodes_ = 0;
  struct archive* outer_ = nullptr;
  char buf_[65536];
};

// The whole container config of an image ("config" of the image config), without its null and
// empty members (one image writer says null or {} where another writes nothing); a
// healthcheck's zero durations are the defaults, and left out too.
json ConfigFields(const json& image_config) {
  json out = json::object();
  const json config = image_config.value("config", json::object());
  if (!config.is_object()) return out;
  for (auto it = config.begin(); it != config.end(); ++it) {
    const json& v = it.value();
    if (v.is_null() || ((v.is_object() || v.is_array() || v.is_string()) && v.empty())) continue;
    out[it.key()] = v;
  }
  if (out.contains("Healthcheck") && out["Healthcheck"].is_object()) {
    json& h = out["Healthcheck"];
    for (auto it = h.begin(); it != h.end();) {
      it = it.value().is_null() || it.value() == 0 ? h.erase(it) : std::next(it);
    }
  }
  return out;
}

// The image's own fields beside the container config (architecture, os, variant, author).
json ImageFields(const json& image_config) {
  json out = json::object();
  for (const char* f : {"architecture", "os", "variant", "os.version", "author"}) {
    if (image_config.contains(f) && image_config[f].is_string() &&
        !image_config[f].get<std::string>().empty()) {
      out[f] = image_config[f];
    }
  }
  return out;
}

// History entries without their times: created_by, comment, author, and empty_layer when true.
json HistoryFields(const json& image_config) {
  json out = json::array();
  for (const auto& h : image_config.value("history", json::array())) {
    json entry = json::object();
    for (const char* f : {"created_by", "comment", "author"}) {
      if (h.contains(f) && h[f].is_string() && !h[f].get<std::string>().empty()) entry[f] = h[f];
    }
    if (h.value("empty_layer", false)) entry["empty_layer"] = true;
    out.push_back(std::move(entry));
  }
  return out;
}

std::string Line(const json& j) { return j.is_null() ? "(none)" : j.dump(); }

}  // namespace

StatusOr<nlohmann::json> FlattenImage(const std::string& path) {
  BlobSource src(path);
  SF_ASSIGN_OR_RETURN(auto located, Locate(src));
  auto flattener = std::make_unique<Flattener>();
  for (const auto& layer : located.second) {
    SF_RETURN_IF_ERROR(src.With(layer, [&](struct archive* a) {
      return flattener->ApplyLayer(a, path + ": " + layer);
    }));
  }
  SF_ASSIGN_OR_RETURN(json config, src.Json(located.first));
  json listing = flattener->Listing();
  listing["config"] = ConfigFields(config);
  listing["image"] = ImageFields(config);
  listing["history"] = HistoryFields(config);
  listing["layers"] = located.second.size();
  return listing;
}

nlohmann::json DiffFromBase(const nlohmann::json& base, const nlohmann::json& image) {
  std::map<std::string, json> before;
  for (const auto& f : base["files"]) before[f["path"]] = f;
  json files = json::array();
  std::set<std::string> present;
  for (const auto& f : image["files"]) {
    present.insert(f["path"]);
    auto it = before.find(f["path"]);
    if (it == before.end() || it->second != f) files.push_back(f);
  }
  json deleted = json::array();
  for (const auto& [path, f] : before) {
    if (!present.count(path)) deleted.push_back(path);
  }
  // The history and the layers the image adds to its base (all of them if it does not start
  // with the base's: FROM scratch).
  const json base_history = base.value("history", json::array());
  json history = image.value("history", json::array());
  const size_t base_layers = base.value("layers", size_t{0});
  size_t layers = image.value("layers", size_t{0});
  if (history.size() >= base_history.size() &&
      std::equal(base_history.begin(), base_history.end(), history.begin()) &&
      layers >= base_layers) {
    history.erase(history.begin(), history.begin() + static_cast<long>(base_history.size()));
    layers -= base_layers;
  }
  return {{"files", files},
          {"deleted", deleted},
          {"hardlinks", image["hardlinks"]},
          {"config", image["config"]},
          {"image", image.value("image", json::object())},
          {"history", history},
          {"layers", layers}};
}

void ReplaceText(nlohmann::json& listing, const std::string& from, const std::string& to) {
  if (from.empty()) return;
  if (listing.is_string()) {
    std::string s = listing.get<std::string>();
    for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) {
      s.replace(at, from.size(), to);
    }
    listing = s;
  } else if (listing.is_array() || listing.is_object()) {
    for (auto& member : listing) ReplaceText(member, from, to);
  }
}

StatusOr<KnownDifferences> ReadKnownDifferences(const std::string& file) {
  KnownDifferences known;
  std::ifstream in(file);
  std::string line;
  static const std::regex kHistory(R"(history\[([0-9]+)\])");
  for (int n = 1; std::getline(in, line); ++n) {
    line = line.substr(0, line.find('#'));
    line.erase(0, line.find_first_not_of(" \t"));
    line.erase(line.find_last_not_of(" \t") + 1);
    std::smatch m;
    if (line.empty()) continue;
    if (line.starts_with("/")) {
      known.paths.insert(line);
    } else if (std::regex_match(line, m, kHistory)) {
      known.history.insert(std::stoul(m[1]));
    } else if (line == "hardlinks") {
      known.hardlinks = true;
    } else {
      return InvalidArgumentError(file + ":" + std::to_string(n) +
                                  ": neither a path, history[N] nor hardlinks: " + line);
    }
  }
  return known;
}

std::string SetAsideKnownDifferences(const KnownDifferences& known, nlohmann::json& expected,
                                     nlohmann::json& actual) {
  std::ostringstream stale;
  auto entry_at = [](const json& listing, const std::string& path) -> json {
    for (const auto& f : listing.value("files", json::array())) {
      if (f["path"] == path) return f;
    }
    return nullptr;
  };
  for (const auto& path : known.paths) {
    if (entry_at(expected, path) == entry_at(actual, path)) {
      stale << path << " now matches BuildKit: remove it from known-differences.txt\n";
    }
  }
  auto drop = [&](json& listing) {
    json kept = json::array();
    for (const auto& f : listing.value("files", json::array())) {
      if (!known.paths.count(f["path"].get<std::string>())) kept.push_back(f);
    }
    listing["files"] = kept;
    // A known history entry compares as null on both sides; the others keep their places.
    for (size_t i : known.history) {
      if (listing.contains("history") && i < listing["history"].size()) listing["history"][i] = nullptr;
    }
  };
  for (size_t i : known.history) {
    const json e = expected.value("history", json::array());
    const json a = actual.value("history", json::array());
    if (i < e.size() && i < a.size() && e[i] == a[i]) {
      stale << "history[" << i << "] now matches BuildKit: remove it from known-differences.txt\n";
    }
  }
  if (known.hardlinks) {
    if (expected.value("hardlinks", json::array()) == actual.value("hardlinks", json::array())) {
      stale << "hardlinks now match BuildKit: remove the line from known-differences.txt\n";
    }
    expected["hardlinks"] = actual["hardlinks"] = nullptr;
  }
  drop(expected);
  drop(actual);
  return stale.str();
}

std::string DescribeDifferences(const nlohmann::json& expected, const nlohmann::json& actual) {
  std::ostringstream out;
  auto by_path = [](const json& files) {
    std::map<std::string, json> m;
    for (const auto& f : files) {
      json rest = f;
      rest.erase("path");
      m[f["path"]] = rest;
    }
    return m;
  };
  auto e = by_path(expected.value("files", json::array()));
  auto a = by_path(actual.value("files", json::array()));
  std::set<std::string> paths;
  for (const auto& [p, _] : e) paths.insert(p);
  for (const auto& [p, _] : a) paths.insert(p);
  for (const auto& p : paths) {
    json ej = e.count(p) ? e[p] : json();
    json aj = a.count(p) ? a[p] : json();
    if (ej != aj) out << p << ":\n  BuildKit:  " << Line(ej) << "\n  stagefarm: " << Line(aj) << "\n";
  }
  for (const char* key : {"deleted", "hardlinks"}) {
    if (expected.value(key, json::array()) != actual.value(key, json::array())) {
      out << key << ":\n  BuildKit:  " << Line(expected.value(key, json::array()))
          << "\n  stagefarm: " << Line(actual.value(key, json::array())) << "\n";
    }
  }
  const json ec = expected.value("config", json::object());
  const json ac = actual.value("config", json::object());
  std::set<std::string> fields;
  for (auto it = ec.begin(); it != ec.end(); ++it) fields.insert(it.key());
  for (auto it = ac.begin(); it != ac.end(); ++it) fields.insert(it.key());
  for (const auto& f : fields) {
    json ev = ec.contains(f) ? ec[f] : json();
    json av = ac.contains(f) ? ac[f] : json();
    if (ev != av) {
      out << "config " << f << ":\n  BuildKit:  " << Line(ev) << "\n  stagefarm: " << Line(av)
          << "\n";
    }
  }
  const json eh = expected.value("history", json::array());
  const json ah = actual.value("history", json::array());
  for (size_t i = 0; i < std::max(eh.size(), ah.size()); ++i) {
    json ev = i < eh.size() ? eh[i] : json();
    json av = i < ah.size() ? ah[i] : json();
    if (ev != av) {
      out << "history[" << i << "]:\n  BuildKit:  " << Line(ev) << "\n  stagefarm: " << Line(av)
          << "\n";
    }
  }
  for (const char* key : {"image", "layers"}) {
    json ev = expected.contains(key) ? expected[key] : json();
    json av = actual.contains(key) ? actual[key] : json();
    if (ev != av) {
      out << key << ":\n  BuildKit:  " << Line(ev) << "\n  stagefarm: " << Line(av) << "\n";
    }
  }
  return out.str();
}

}  // namespace stagefarm::golden
