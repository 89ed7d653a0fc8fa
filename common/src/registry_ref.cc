// The pure parts of the registry client: references, WWW-Authenticate challenges and the docker
// config's credentials.
#include <openssl/evp.h>

#include <cctype>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <regex>

#include "stagefarm/common/registry.h"

namespace stagefarm {
namespace {

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool IsDockerHub(std::string_view host) {
  return host == "docker.io" || host == "index.docker.io" || host == "registry-1.docker.io";
}

// Standard base64 (padding optional); nullopt if malformed.
std::optional<std::string> Base64Decode(std::string_view in) {
  std::string padded(in);
  while (padded.size() % 4 != 0) padded += '=';
  if (padded.empty()) return std::string();
  std::string out(padded.size() / 4 * 3, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(padded.data()),
                          static_cast<int>(padded.size()));
  if (n < 0) return std::nullopt;
  size_t pad = 0;
  for (size_t i = padded.size(); i > 0 && padded[i - 1] == '='; --i) ++pad;
  if (pad > 2) return std::nullopt;
  out.resize(static_cast<size_t>(n) - pad);
  return out;
}

}  // namespace

bool NamesRegistryHost(std::string_view ref) {
  size_t slash = ref.find('/');
  if (slash == std::string_view::npos) return false;
  std::string_view first = ref.substr(0, slash);
  return first.find('.') != std::string_view::npos || first.find(':') != std::string_view::npos ||
         first == "localhost";
}

std::string RegistryRef::str() const {
  std::string s = registry + "/" + repository;
  if (!tag.empty()) s += ":" + tag;
  if (!digest.empty()) s += "@" + digest;
  return s;
}

StatusOr<RegistryRef> ParseRegistryRef(std::string_view text) {
  auto bad = [&](const std::string& why) {
    return InvalidArgumentError("image reference \"" + std::string(text) + "\": " + why);
  };
  if (text.empty()) return bad("empty");
  RegistryRef ref;
  std::string rest(text);
  if (size_t at = rest.find('@'); at != std::string::npos) {
    ref.digest = rest.substr(at + 1);
    rest.resize(at);
    static const std::regex kDigest("sha256:[0-9a-f]{64}");
    if (!std::regex_match(ref.digest, kDigest)) {
      return bad("the digest must be sha256: and 64 lowercase hex digits");
    }
  }
  if (NamesRegistryHost(rest)) {
    size_t slash = rest.find('/');
    ref.registry = rest.substr(0, slash);
    rest = rest.substr(slash + 1);
    static const std::regex kHost(R"(\[?[A-Za-z0-9.:\-]+\]?(:[0-9]+)?)");
    if (!std::regex_match(ref.registry, kHost)) return bad("bad registry host " + ref.registry);
  } else {
    ref.registry = "docker.io";
  }
  size_t last_slash = rest.rfind('/');
  size_t colon = rest.find(':', last_slash == std::string::npos ? 0 : last_slash);
  if (colon != std::string::npos) {
    ref.tag = rest.substr(colon + 1);
    rest.resize(colon);
    static const std::regex kTag(R"([A-Za-z0-9_][A-Za-z0-9_.\-]{0,127})");
    if (!std::regex_match(ref.tag, kTag)) return bad("bad tag \"" + ref.tag + "\"");
  }
  if (rest.empty()) return bad("no repository name");
  static const std::regex kComponent(R"([a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)");
  size_t start = 0;
  for (;;) {
    size_t end = rest.find('/', start);
    std::string comp = rest.substr(start, end == std::string::npos ? end : end - start);
    if (!std::regex_match(comp, kComponent)) {
      return bad("bad repository name component \"" + comp +
                 "\" (lowercase letters, digits and separators . _ -)");
    }
    if (end == std::string::npos) break;
    start = end + 1;
  }
  if (ref.registry == "docker.io" && rest.find('/') == std::string::npos) rest = "library/" + rest;
  ref.repository = rest;
  if (ref.tag.empty() && ref.digest.empty()) ref.tag = "latest";
  return ref;
}

StatusOr<AuthChallenge> ParseWwwAuthenticate(std::string_view header) {
  auto bad = [&](const std::string& why) {
    return InvalidArgumentError("WWW-Authenticate \"" + std::string(header.substr(0, 200)) +
                                "\": " + why);
  };
  AuthChallenge c;
  size_t i = 0;
  auto skip_space = [&] {
    while (i < header.size() && (header[i] == ' ' || header[i] == '\t')) ++i;
  };
  auto token = [&] {
    size_t start = i;
    while (i < header.size() && header[i] != ' ' && header[i] != '\t' && header[i] != '=' &&
           header[i] != ',' && header[i] != '"') {
      ++i;
    }
    return std::string(header.substr(start, i - start));
  };
  skip_space();
  c.scheme = Lower(token());
  if (c.scheme.empty()) return bad("no scheme");
  for (;;) {
    skip_space();
    while (i < header.size() && header[i] == ',') {
      ++i;
      skip_space();
    }
    if (i >= header.size()) break;
    std::string key = Lower(token());
    if (key.empty()) return bad("expected a parameter name at offset " + std::to_string(i));
    skip_space();
    if (i >= header.size() || header[i] != '=') return bad("parameter " + key + " has no value");
    ++i;
    skip_space();
    std::string value;
    if (i < header.size() && header[i] == '"') {
      ++i;
      bool closed = false;
      while (i < header.size()) {
        char ch = header[i++];
        if (ch == '\\' && i < header.size()) {
          value += header[i++];
        } else if (ch == '"') {
          closed = true;
          break;
        } else {
          value += ch;
        }
      }
      if (!closed) return bad("unterminated quoted value of " + key);
    } else {
      value = token();
    }
    c.params[key] = value;
  }
  return c;
}

StatusOr<std::optional<RegistryCredentials>> CredentialsFromDockerConfig(std::string_view text,
                                                                         std::string_view host,
                                                                         std::string_view what) {
  nlohmann::json doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  const std::string file(what);
  if (doc.is_discarded() || !doc.is_object()) {
    return InvalidArgumentError(file + ": not a JSON object");
  }
  if (!doc.contains("auths")) return std::optional<RegistryCredentials>();
  if (!doc["auths"].is_object()) return InvalidArgumentError(file + ": auths is not an object");
  for (const auto& [key, entry] : doc["auths"].items()) {
    std::string k = key;
    for (std::string_view scheme : {"https://", "http://"}) {
      if (k.starts_with(scheme)) k = k.substr(scheme.size());
    }
    k = k.substr(0, k.find('/'));
    if (!(k == host || (IsDockerHub(k) && IsDockerHub(host)))) continue;
    const std::string place = file + ": auths." + key;
    if (!entry.is_object()) return InvalidArgumentError(place + " is not an object");
    RegistryCredentials creds;
    if (entry.contains("auth") && entry["auth"].is_string() &&
        !entry["auth"].get<std::string>().empty()) {
      std::optional<std::string> decoded = Base64Decode(entry["auth"].get<std::string>());
      size_t colon = decoded ? decoded->find(':') : std::string::npos;
      if (colon == std::string::npos) {
        return InvalidArgumentError(place + ".auth is not base64 of \"user:password\"");
      }
      creds.username = decoded->substr(0, colon);
      creds.password = decoded->substr(colon + 1);
    } else if (entry.contains("username") && entry["username"].is_string()) {
      creds.username = entry["username"].get<std::string>();
      if (entry.contains("password") && entry["password"].is_string()) {
        creds.password = entry["password"].get<std::string>();
      }
    } else {
      continue;  // an entry that only names a credential helper: not ours to read
    }
    return std::optional<RegistryCredentials>(std::move(creds));
  }
  return std::optional<RegistryCredentials>();
}

std::string DefaultDockerConfigDir() {
  // Nothing in the farm calls setenv after start-up, so reading the environment is safe.
  const char* dir = std::getenv("DOCKER_CONFIG");  // NOLINT(concurrency-mt-unsafe)
  if (dir && *dir) return dir;
  const char* home = std::getenv("HOME");  // NOLINT(concurrency-mt-unsafe)
  return std::string(home && *home ? home : "/root") + "/.docker";
}

}  // namespace stagefarm
