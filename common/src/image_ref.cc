#include "stagefarm/common/image_ref.h"

#include <algorithm>
#include <optional>
#include <vector>

namespace stagefarm {
namespace {

bool IsLowerAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool IsAlnum(char c) { return IsLowerAlnum(c) || (c >= 'A' && c <= 'Z'); }
bool IsWord(char c) { return IsAlnum(c) || c == '_'; }
bool IsHex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool HasUpper(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) { return c >= 'A' && c <= 'Z'; });
}
std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
  return out;
}

std::vector<std::string_view> SplitOn(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  for (size_t start = 0;;) {
    size_t end = s.find(sep, start);
    out.push_back(s.substr(start, end == std::string_view::npos ? end : end - start));
    if (end == std::string_view::npos) return out;
    start = end + 1;
  }
}

// [a-z0-9]+ ((?:[._]|__|[-]+) [a-z0-9]+)*
bool IsPathComponent(std::string_view s) {
  size_t i = 0;
  auto alnum_run = [&] {
    size_t start = i;
    while (i < s.size() && IsLowerAlnum(s[i])) ++i;
    return i > start;
  };
  if (!alnum_run()) return false;
  while (i < s.size()) {
    if (s[i] == '-') {
      while (i < s.size() && s[i] == '-') ++i;
    } else if (s.substr(i, 2) == "__") {
      i += 2;
    } else if (s[i] == '.' || s[i] == '_') {
      ++i;
    } else {
      return false;
    }
    if (!alnum_run()) return false;
  }
  return true;
}

// A host name component: [a-zA-Z0-9] or [a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9].
bool IsDomainComponent(std::string_view s) {
  if (s.empty() || !IsAlnum(s.front()) || !IsAlnum(s.back())) return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return IsAlnum(c) || c == '-'; });
}

// host[:port], host a dotted name or [IPv6].
bool IsDomainAndPort(std::string_view s) {
  std::string_view host = s;
  if (!s.empty() && s[0] == '[') {
    size_t close = s.find(']');
    if (close == std::string_view::npos || close < 2) return false;
    std::string_view v6 = s.substr(1, close - 1);
    if (!std::all_of(v6.begin(), v6.end(), [](char c) { return IsHex(c) || c == ':'; })) {
      return false;
    }
    host = {};
    s.remove_prefix(close + 1);
  } else {
    size_t colon = s.find(':');
    host = s.substr(0, colon);
    s = colon == std::string_view::npos ? std::string_view() : s.substr(colon);
    for (std::string_view c : SplitOn(host, '.')) {
      if (!IsDomainComponent(c)) return false;
    }
  }
  if (s.empty()) return true;
  return s[0] == ':' && s.size() > 1 && std::all_of(s.begin() + 1, s.end(), IsDigit);
}

// [\w][\w.-]{0,127}
bool IsTag(std::string_view s) {
  if (s.empty() || s.size() > 128 || !IsWord(s[0])) return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return IsWord(c) || c == '.' || c == '-'; });
}

// [A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)* ":" [0-9a-fA-F]{32,}
bool IsDigestSyntax(std::string_view s) {
  size_t colon = s.find(':');
  if (colon == std::string_view::npos) return false;
  std::string_view algo = s.substr(0, colon), hex = s.substr(colon + 1);
  if (hex.size() < 32 || !std::all_of(hex.begin(), hex.end(), IsHex)) return false;
  bool start = true;
  for (char c : algo) {
    bool letter = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
    if (start) {
      if (!letter) return false;
      start = false;
    } else if (c == '-' || c == '_' || c == '+' || c == '.') {
      start = true;
    } else if (!letter && !IsDigit(c)) {
      return false;
    }
  }
  return !start;
}

// go-digest's Validate for the algorithms docker has.
Status CheckDigest(std::string_view d) {
  size_t colon = d.find(':');
  std::string_view algo = d.substr(0, colon), hex = d.substr(colon + 1);
  size_t size = algo == "sha256" ? 64 : algo == "sha384" ? 96 : algo == "sha512" ? 128 : 0;
  if (size == 0) return InvalidArgumentError("unsupported digest algorithm");
  if (hex.size() != size) return InvalidArgumentError("invalid checksum digest length");
  if (!std::all_of(hex.begin(), hex.end(),
                   [](char c) { return IsDigit(c) || (c >= 'a' && c <= 'f'); })) {
    return InvalidArgumentError("invalid checksum digest format");
  }
  return Status();
}

struct Parsed {
  std::string_view path;  // the name without its domain
  std::string_view digest;
};

// distribution/reference's ReferenceRegexp: name[:tag][@digest]; nullopt when it does not match.
std::optional<Parsed> MatchReference(std::string_view s) {
  Parsed out;
  if (size_t at = s.find('@'); at != std::string_view::npos) {
    out.digest = s.substr(at + 1);
    if (!IsDigestSyntax(out.digest)) return std::nullopt;
    s = s.substr(0, at);
  }
  size_t last_slash = s.rfind('/');
  size_t colon = s.find(':', last_slash == std::string_view::npos ? 0 : last_slash);
  if (colon != std::string_view::npos) {
    if (!IsTag(s.substr(colon + 1))) return std::nullopt;
    s = s.substr(0, colon);
  }
  std::vector<std::string_view> parts = SplitOn(s, '/');
  // The first component is a domain when it can be one (the grammar tries that first).
  size_t first_path = parts.size() > 1 && IsDomainAndPort(parts[0]) ? 1 : 0;
  for (size_t i = first_path; i < parts.size(); ++i) {
    if (!IsPathComponent(parts[i])) return std::nullopt;
  }
  out.path = first_path ? s.substr(parts[0].size() + 1) : s;
  return out;
}

// ParseNormalizedNamed's splitDockerDomain: the domain, and the rest of `name`.
std::pair<std::string, std::string> SplitDockerDomain(std::string_view name) {
  size_t slash = name.find('/');
  std::string domain, rest;
  if (slash == std::string_view::npos) {
    return {"docker.io", "library/" + std::string(name)};
  }
  std::string_view first = name.substr(0, slash);
  if (first == "localhost" || first.find_first_of(".:") != std::string_view::npos ||
      HasUpper(first)) {
    domain = first == "index.docker.io" ? "docker.io" : std::string(first);
    rest = name.substr(slash + 1);
  } else {
    domain = "docker.io";
    rest = name;
  }
  if (domain == "docker.io" && rest.find('/') == std::string::npos) rest = "library/" + rest;
  return {domain, rest};
}

}  // namespace

std::string NormalizeImageRef(std::string_view ref) {
  std::string r(ref);
  std::string digest;
  if (size_t at = r.find('@'); at != std::string::npos) {
    digest = r.substr(at);
    r.resize(at);
  }
  auto [domain, rest] = SplitDockerDomain(r);
  r = domain + "/" + rest;
  size_t last_slash = r.rfind('/');
  if (digest.empty() && r.find(':', last_slash == std::string::npos ? 0 : last_slash) ==
                            std::string::npos) {
    r += ":latest";
  }
  return r + digest;
}

std::string FamiliarImageRef(std::string_view normalized) {
  std::string r(normalized);
  for (std::string_view prefix : {"docker.io/library/", "docker.io/"}) {
    if (r.rfind(prefix, 0) == 0) return r.substr(prefix.size());
  }
  return r;
}

Status CheckImageRef(std::string_view ref) {
  if (ref.size() == 64 && std::all_of(ref.begin(), ref.end(), [](char c) {
        return IsDigit(c) || (c >= 'a' && c <= 'f');
      })) {
    return InvalidArgumentError("invalid repository name (" + std::string(ref) +
                                "), cannot specify 64-byte hexadecimal strings");
  }
  auto [domain, rest] = SplitDockerDomain(ref);
  std::string_view remote = std::string_view(rest).substr(0, rest.find(':'));
  if (HasUpper(remote)) {
    return InvalidArgumentError("invalid reference format: repository name (" +
                                std::string(remote) + ") must be lowercase");
  }
  const std::string full = domain + "/" + rest;
  std::optional<Parsed> parsed = MatchReference(full);
  if (!parsed) {
    if (MatchReference(Lower(full))) {
      return InvalidArgumentError("repository name must be lowercase");
    }
    return InvalidArgumentError("invalid reference format");
  }
  if (parsed->path.size() > 255) {
    return InvalidArgumentError("repository name must not be more than 255 characters");
  }
  if (!parsed->digest.empty()) return CheckDigest(parsed->digest);
  return Status();
}

}  // namespace stagefarm
