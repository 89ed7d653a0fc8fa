#include "stagefarm/common/oci.h"

#include <exception>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

namespace stagefarm {
namespace {

using nlohmann::json;

// Never throws: text that is not UTF-8 is replaced rather than refused, since a config must
// always serialize.
std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// Parses untrusted JSON; exceptions stop here.
StatusOr<json> ParseJson(std::string_view bytes, std::string_view what) {
  try {
    return json::parse(bytes);
  } catch (const std::exception& e) {
    return InvalidArgumentError(std::string(what) + " is not valid JSON: " + e.what());
  }
}

// Typed field access on untrusted objects. A missing or null field is the default value.
class Reader {
 public:
  Reader(const json& obj, std::string where) : obj_(obj), where_(std::move(where)) {}

  const json* Find(const char* key) const {
    if (!obj_.is_object()) return nullptr;
    auto it = obj_.find(key);
    if (it == obj_.end() || it->is_null()) return nullptr;
    return &*it;
  }
  Status Bad(const char* key, const char* expected) const {
    return InvalidArgumentError(where_ + "." + key + " is not " + expected);
  }
  Status String(const char* key, std::string* out) const {
    const json* v = Find(key);
    if (!v) return Status();
    if (!v->is_string()) return Bad(key, "a string");
    *out = v->get<std::string>();
    return Status();
  }
  Status Strings(const char* key, std::vector<std::string>* out) const {
    const json* v = Find(key);
    if (!v) return Status();
    if (!v->is_array()) return Bad(key, "an array of strings");
    out->clear();
    for (const json& s : *v) {
      if (!s.is_string()) return Bad(key, "an array of strings");
      out->push_back(s.get<std::string>());
    }
    return Status();
  }
  // {"key": {}, ...} as used by ExposedPorts and Volumes.
  Status KeySet(const char* key, std::set<std::string>* out) const {
    const json* v = Find(key);
    if (!v) return Status();
    if (!v->is_object()) return Bad(key, "an object");
    out->clear();
    for (auto it = v->begin(); it != v->end(); ++it) out->insert(it.key());
    return Status();
  }
  Status StringMap(const char* key, std::map<std::string, std::string>* out) const {
    const json* v = Find(key);
    if (!v) return Status();
    if (!v->is_object()) return Bad(key, "an object of strings");
    out->clear();
    for (auto it = v->begin(); it != v->end(); ++it) {
      if (!it.value().is_string()) return Bad(key, "an object of strings");
      (*out)[it.key()] = it.value().get<std::string>();
    }
    return Status();
  }
  Status Int(const char* key, int64_t* out) const {
    const json* v = Find(key);
    if (!v) return Status();
    if (!v->is_number_integer()) return Bad(key, "an integer");
    if (v->is_number_unsigned() &&
        v->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return Bad(key, "an integer in range");
    }
    *out = v->get<int64_t>();
    return Status();
  }
  Status Bool(const char* key, bool* out) const {
    const json* v = Find(key);
    if (!v) return Status();
    if (!v->is_boolean()) return Bad(key, "a boolean");
    *out = v->get<bool>();
    return Status();
  }
  Status Object(const char* key, const json** out) const {
    *out = Find(key);
    if (*out && !(*out)->is_object()) return Bad(key, "an object");
    return Status();
  }
  const std::string& where() const { return where_; }

 private:
  const json& obj_;
  std::string where_;
};

json StringArray(const std::vector<std::string>& v) {
  json a = json::array();
  for (const auto& s : v) a.push_back(s);
  return a;
}

json KeySetObject(const std::set<std::string>& keys) {
  json o = json::object();
  for (const auto& k : keys) o[k] = json::object();
  return o;
}

json ConfigObject(const ImageConfig& c) {
  json o = json::object();
  if (!c.user.empty()) o["User"] = c.user;
  if (!c.env.empty()) o["Env"] = StringArray(c.env);
  if (!c.entrypoint.empty()) o["Entrypoint"] = StringArray(c.entrypoint);
  if (!c.cmd.empty()) o["Cmd"] = StringArray(c.cmd);
  if (!c.working_dir.empty()) o["WorkingDir"] = c.working_dir;
  if (!c.labels.empty()) o["Labels"] = json(c.labels);
  if (!c.exposed_ports.empty()) o["ExposedPorts"] = KeySetObject(c.exposed_ports);
  if (!c.volumes.empty()) o["Volumes"] = KeySetObject(c.volumes);
  if (!c.stop_signal.empty()) o["StopSignal"] = c.stop_signal;
  if (!c.shell.empty()) o["Shell"] = StringArray(c.shell);
  if (!c.on_build.empty()) o["OnBuild"] = StringArray(c.on_build);
  if (c.args_escaped) o["ArgsEscaped"] = true;
  if (c.healthcheck) {
    const HealthConfig& h = *c.healthcheck;
    json hc = json::object();
    hc["Test"] = StringArray(h.test);
    if (h.interval_ns) hc["Interval"] = h.interval_ns;
    if (h.timeout_ns) hc["Timeout"] = h.timeout_ns;
    if (h.start_period_ns) hc["StartPeriod"] = h.start_period_ns;
    if (h.start_interval_ns) hc["StartInterval"] = h.start_interval_ns;
    if (h.retries) hc["Retries"] = h.retries;
    o["Healthcheck"] = std::move(hc);
  }
  return o;
}

StatusOr<ImageConfig> ConfigFromObject(const json& obj, const std::string& where) {
  ImageConfig c;
  if (obj.is_null()) return c;
  if (!obj.is_object()) return InvalidArgumentError(where + " is not an object");
  Reader r(obj, where);
  SF_RETURN_IF_ERROR(r.String("User", &c.user));
  SF_RETURN_IF_ERROR(r.Strings("Env", &c.env));
  SF_RETURN_IF_ERROR(r.Strings("Entrypoint", &c.entrypoint));
  SF_RETURN_IF_ERROR(r.Strings("Cmd", &c.cmd));
  SF_RETURN_IF_ERROR(r.String("WorkingDir", &c.working_dir));
  SF_RETURN_IF_ERROR(r.StringMap("Labels", &c.labels));
  SF_RETURN_IF_ERROR(r.KeySet("ExposedPorts", &c.exposed_ports));
  SF_RETURN_IF_ERROR(r.KeySet("Volumes", &c.volumes));
  SF_RETURN_IF_ERROR(r.String("StopSignal", &c.stop_signal));
  SF_RETURN_IF_ERROR(r.Strings("Shell", &c.shell));
  SF_RETURN_IF_ERROR(r.Strings("OnBuild", &c.on_build));
  SF_RETURN_IF_ERROR(r.Bool("ArgsEscaped", &c.args_escaped));
  const json* hc = nullptr;
  SF_RETURN_IF_ERROR(r.Object("Healthcheck", &hc));
  if (hc) {
    Reader hr(*hc, where + ".Healthcheck");
    HealthConfig h;
    SF_RETURN_IF_ERROR(hr.Strings("Test", &h.test));
    SF_RETURN_IF_ERROR(hr.Int("Interval", &h.interval_ns));
    SF_RETURN_IF_ERROR(hr.Int("Timeout", &h.timeout_ns));
    SF_RETURN_IF_ERROR(hr.Int("StartPeriod", &h.start_period_ns));
    SF_RETURN_IF_ERROR(hr.Int("StartInterval", &h.start_interval_ns));
    int64_t retries = 0;
    SF_RETURN_IF_ERROR(hr.Int("Retries", &retries));
    if (retries < 0 || retries > std::numeric_limits<int>::max()) {
      return InvalidArgumentError(where + ".Healthcheck.Retries is out of range");
    }
    h.retries = static_cast<int>(retries);
    c.healthcheck = std::move(h);
  }
  return c;
}

json DescriptorObject(const Descriptor& d) {
  json o = json::object();
  o["mediaType"] = d.media_type;
  o["digest"] = d.digest.str();
  o["size"] = d.digest.size;
  if (!d.annotations.empty()) o["annotations"] = json(d.annotations);
  return o;
}

StatusOr<Descriptor> DescriptorFromObject(const json& obj, const std::string& where) {
  if (!obj.is_object()) return InvalidArgumentError(where + " is not an object");
  Reader r(obj, where);
  Descriptor d;
  std::string digest;
  int64_t size = -1;
  SF_RETURN_IF_ERROR(r.String("mediaType", &d.media_type));
  SF_RETURN_IF_ERROR(r.String("digest", &digest));
  SF_RETURN_IF_ERROR(r.Int("size", &size));
  SF_RETURN_IF_ERROR(r.StringMap("annotations", &d.annotations));
  if (size < 0) return InvalidArgumentError(where + ".size is missing or negative");
  auto parsed = Digest::Parse(digest, static_cast<uint64_t>(size));
  if (!parsed.ok()) return parsed.status().Annotate(where + ".digest");
  d.digest = std::move(parsed).value();
  return d;
}

}  // namespace

std::string ImageConfigToJson(const ImageConfig& config) { return Dump(ConfigObject(config)); }

StatusOr<ImageConfig> ImageConfigFromJson(std::string_view bytes) {
  SF_ASSIGN_OR_RETURN(json j, ParseJson(bytes, "image config"));
  return ConfigFromObject(j, "config");
}

std::string SerializeImageConfigDocument(const ImageRecord& image) {
  json doc = json::object();
  doc["architecture"] = image.architecture;
  doc["os"] = image.os;
  if (!image.created.empty()) doc["created"] = image.created;
  if (!image.config.author.empty()) doc["author"] = image.config.author;
  doc["config"] = ConfigObject(image.config);
  json diff_ids = json::array();
  for (const LayerRef& l : image.layers) diff_ids.push_back(l.diff_id.str());
  doc["rootfs"] = {{"type", "layers"}, {"diff_ids", std::move(diff_ids)}};
  json history = json::array();
  for (const HistoryEntry& h : image.history) {
    json e = json::object();
    if (!h.created.empty()) e["created"] = h.created;
    if (!h.created_by.empty()) e["created_by"] = h.created_by;
    if (!h.comment.empty()) e["comment"] = h.comment;
    if (h.empty_layer) e["empty_layer"] = true;
    history.push_back(std::move(e));
  }
  if (!history.empty()) doc["history"] = std::move(history);
  return Dump(doc);
}

StatusOr<std::vector<Digest>> ParseImageConfigDocument(std::string_view bytes, ImageRecord* image) {
  SF_ASSIGN_OR_RETURN(json doc, ParseJson(bytes, "image config document"));
  if (!doc.is_object()) return InvalidArgumentError("image config document is not an object");
  Reader r(doc, "image config");
  SF_RETURN_IF_ERROR(r.String("architecture", &image->architecture));
  SF_RETURN_IF_ERROR(r.String("os", &image->os));
  SF_RETURN_IF_ERROR(r.String("created", &image->created));
  const json* config = nullptr;
  SF_RETURN_IF_ERROR(r.Object("config", &config));
  if (config) {
    SF_ASSIGN_OR_RETURN(image->config, ConfigFromObject(*config, "config"));
  } else {
    image->config = ImageConfig();
  }
  SF_RETURN_IF_ERROR(r.String("author", &image->config.author));
  const json* rootfs = nullptr;
  SF_RETURN_IF_ERROR(r.Object("rootfs", &rootfs));
  if (!rootfs) return InvalidArgumentError("image config has no rootfs");
  std::vector<std::string> diff_id_text;
  SF_RETURN_IF_ERROR(Reader(*rootfs, "rootfs").Strings("diff_ids", &diff_id_text));
  if (diff_id_text.size() > kMaxLayers) {
    return InvalidArgumentError("image config has more than " + std::to_string(kMaxLayers) +
                                " layers");
  }
  std::vector<Digest> diff_ids;
  for (size_t i = 0; i < diff_id_text.size(); ++i) {
    auto d = Digest::Parse(diff_id_text[i]);
    if (!d.ok()) return d.status().Annotate("rootfs.diff_ids[" + std::to_string(i) + "]");
    diff_ids.push_back(std::move(d).value());
  }
  image->history.clear();
  if (const json* history = r.Find("history")) {
    if (!history->is_array()) return InvalidArgumentError("image config history is not an array");
    for (size_t i = 0; i < history->size(); ++i) {
      const json& e = (*history)[i];
      if (!e.is_object()) return InvalidArgumentError("history entry is not an object");
      Reader hr(e, "history[" + std::to_string(i) + "]");
      HistoryEntry h;
      SF_RETURN_IF_ERROR(hr.String("created", &h.created));
      SF_RETURN_IF_ERROR(hr.String("created_by", &h.created_by));
      SF_RETURN_IF_ERROR(hr.String("comment", &h.comment));
      SF_RETURN_IF_ERROR(hr.Bool("empty_layer", &h.empty_layer));
      image->history.push_back(std::move(h));
    }
  }
  return diff_ids;
}

std::string SerializeManifest(const Manifest& manifest) {
  json doc = json::object();
  doc["schemaVersion"] = 2;
  doc["mediaType"] = manifest.media_type;
  doc["config"] = DescriptorObject(manifest.config);
  json layers = json::array();
  for (const Descriptor& d : manifest.layers) layers.push_back(DescriptorObject(d));
  doc["layers"] = std::move(layers);
  if (!manifest.annotations.empty()) doc["annotations"] = json(manifest.annotations);
  return Dump(doc);
}

StatusOr<Manifest> ParseManifest(std::string_view bytes) {
  SF_ASSIGN_OR_RETURN(json doc, ParseJson(bytes, "manifest"));
  if (!doc.is_object()) return InvalidArgumentError("manifest is not a JSON object");
  Reader r(doc, "manifest");
  int64_t schema = 0;
  SF_RETURN_IF_ERROR(r.Int("schemaVersion", &schema));
  if (schema != 2) {
    return InvalidArgumentError("manifest schemaVersion is " + std::to_string(schema) +
                                ", only 2 is supported");
  }
  Manifest m;
  m.media_type.clear();
  SF_RETURN_IF_ERROR(r.String("mediaType", &m.media_type));
  if (m.media_type == kMediaTypeOciIndex || m.media_type == kMediaTypeDockerManifestList ||
      r.Find("manifests")) {
    return InvalidArgumentError("expected an image manifest, got an index or manifest list");
  }
  if (!m.media_type.empty() && m.media_type != kMediaTypeOciManifest &&
      m.media_type != kMediaTypeDockerManifest) {
    return InvalidArgumentError("unsupported manifest media type \"" + m.media_type + "\"");
  }
  if (m.media_type.empty()) m.media_type = std::string(kMediaTypeOciManifest);
  const json* config = r.Find("config");
  if (!config) return InvalidArgumentError("manifest has no config");
  SF_ASSIGN_OR_RETURN(m.config, DescriptorFromObject(*config, "manifest.config"));
  const json* layers = r.Find("layers");
  if (layers && !layers->is_array()) return InvalidArgumentError("manifest.layers is not an array");
  if (layers) {
    if (layers->size() > kMaxLayers) {
      return InvalidArgumentError("manifest has more than " + std::to_string(kMaxLayers) +
                                  " layers");
    }
    for (size_t i = 0; i < layers->size(); ++i) {
      SF_ASSIGN_OR_RETURN(
          Descriptor d,
          DescriptorFromObject((*layers)[i], "manifest.layers[" + std::to_string(i) + "]"));
      m.layers.push_back(std::move(d));
    }
  }
  SF_RETURN_IF_ERROR(r.StringMap("annotations", &m.annotations));
  return m;
}

Manifest MakeStoredManifest(const Digest& config, const std::vector<LayerRef>& layers) {
  Manifest m;
  m.config.media_type = std::string(kMediaTypeOciConfig);
  m.config.digest = config;
  for (const LayerRef& l : layers) {
    Descriptor d;
    d.media_type = std::string(kMediaTypeLayerTar);
    d.digest = l.diff_id;
    d.annotations[std::string(kAnnotationToc)] = l.toc.str();
    d.annotations[std::string(kAnnotationTocSize)] = std::to_string(l.toc.size);
    m.layers.push_back(std::move(d));
  }
  return m;
}

StatusOr<std::vector<LayerRef>> StoredLayers(const Manifest& manifest) {
  std::vector<LayerRef> out;
  for (size_t i = 0; i < manifest.layers.size(); ++i) {
    const Descriptor& d = manifest.layers[i];
    const std::string where = "manifest.layers[" + std::to_string(i) + "]";
    if (d.media_type != kMediaTypeLayerTar) {
      return InvalidArgumentError(where + " has media type \"" + d.media_type +
                                  "\"; stored images reference uncompressed layers");
    }
    auto toc = d.annotations.find(std::string(kAnnotationToc));
    auto toc_size = d.annotations.find(std::string(kAnnotationTocSize));
    if (toc == d.annotations.end() || toc_size == d.annotations.end()) {
      return InvalidArgumentError(where + " has no " + std::string(kAnnotationToc) +
                                  " annotation (not an image stored by stagefarm)");
    }
    uint64_t size = 0;
    const std::string& s = toc_size->second;
    if (s.empty() || s.size() > 19 || s.find_first_not_of("0123456789") != std::string::npos) {
      return InvalidArgumentError(where + " has a bad TOC size \"" + s + "\"");
    }
    size = std::stoull(s);
    auto toc_digest = Digest::Parse(toc->second, size);
    if (!toc_digest.ok()) return toc_digest.status().Annotate(where + " TOC");
    out.push_back(LayerRef{d.digest, std::move(toc_digest).value()});
  }
  return out;
}

StatusOr<ImageRecord> LoadImage(CacheClient& cache, const Digest& manifest_digest) {
  const std::string what = "image " + manifest_digest.str();
  auto manifest_bytes = cache.ReadBytes(manifest_digest, kMaxManifestBytes);
  if (!manifest_bytes.ok()) return manifest_bytes.status().Annotate(what + ": manifest");
  auto manifest = ParseManifest(*manifest_bytes);
  if (!manifest.ok()) return manifest.status().Annotate(what);
  auto layers = StoredLayers(*manifest);
  if (!layers.ok()) return layers.status().Annotate(what);
  auto config_bytes = cache.ReadBytes(manifest->config.digest, kMaxConfigBytes);
  if (!config_bytes.ok()) return config_bytes.status().Annotate(what + ": config");
  ImageRecord image;
  auto diff_ids = ParseImageConfigDocument(*config_bytes, &image);
  if (!diff_ids.ok()) return diff_ids.status().Annotate(what);
  if (diff_ids->size() != layers->size()) {
    return InvalidArgumentError(what + ": manifest has " + std::to_string(layers->size()) +
                                " layers but the config has " + std::to_string(diff_ids->size()) +
                                " diff_ids");
  }
  for (size_t i = 0; i < layers->size(); ++i) {
    if ((*diff_ids)[i].hex != (*layers)[i].diff_id.hex) {
      return InvalidArgumentError(what + ": layer " + std::to_string(i) + " is " +
                                  (*layers)[i].diff_id.str() + " but the config's diff_id is " +
                                  (*diff_ids)[i].str());
    }
  }
  image.manifest = Digest{manifest_digest.hex, manifest_bytes->size()};
  image.config_digest = manifest->config.digest;
  image.layers = std::move(layers).value();
  return image;
}

StatusOr<ImageRecord> StoreImage(CacheClient& cache, ImageRecord image) {
  const std::string config = SerializeImageConfigDocument(image);
  SF_RETURN_IF_ERROR(cache.PutBytes(config, &image.config_digest).Annotate("store image config"));
  const std::string manifest =
      SerializeManifest(MakeStoredManifest(image.config_digest, image.layers));
  SF_RETURN_IF_ERROR(cache.PutBytes(manifest, &image.manifest).Annotate("store image manifest"));
  return image;
}

}  // namespace stagefarm
