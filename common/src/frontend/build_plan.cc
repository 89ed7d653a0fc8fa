#include "stagefarm/common/build_plan.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>

#include "frontend/unicode_util.h"
#include "stagefarm/common/clean_path.h"
#include "stagefarm/common/dockerfile_parser.h"
#include "stagefarm/common/file_mode.h"
#include "stagefarm/common/shell_words.h"

namespace stagefarm::frontend {
namespace {

using internal::GoQuote;
using internal::ToLower;
using internal::ToUpper;
using Json = nlohmann::json;

constexpr char kDefaultPath[] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// Build args docker build accepts without an ARG: never reported as unused; the proxy ones
// reach RUN's environment (and are kept out of its history, as docker does).
bool IsProxyArg(const std::string& key) {
  static const std::set<std::string> kProxy = {
      "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY",
      "ftp_proxy",  "NO_PROXY",   "no_proxy",    "ALL_PROXY",   "all_proxy"};
  return kProxy.count(key) > 0;
}
bool IsBuiltinArg(const std::string& key) {
  return IsProxyArg(key) || key.rfind("BUILDKIT_", 0) == 0 || key == "SOURCE_DATE_EPOCH";
}

// "[a b]": Go's %v of a []string.
std::string GoList(const std::vector<std::string>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? " " : "") + v[i];
  return out + "]";
}
// An image reference's repository (what is left without registry, tag and digest) is lowercase,
// as docker's reference grammar has it; "FROM Alpine" is refused before anything looks it up.
Status CheckRepositoryCase(const std::string& ref) {
  std::string_view r = ref;
  r = r.substr(0, r.find('@'));
  if (size_t slash = r.find('/'); slash != std::string_view::npos) {
    std::string_view first = r.substr(0, slash);
    if (first.find_first_of(".:") != std::string_view::npos || first == "localhost") {
      r.remove_prefix(slash + 1);
    }
  }
  if (size_t colon = r.rfind(':'); colon != std::string_view::npos &&
                                    r.find('/', colon) == std::string_view::npos) {
    r = r.substr(0, colon);
  }
  if (std::any_of(r.begin(), r.end(), [](char c) { return c >= 'A' && c <= 'Z'; })) {
    return InvalidArgumentError("invalid reference format: repository name (" + std::string(r) +
                                ") must be lowercase");
  }
  return Status();
}

// `["a" "b"]`: Go's %q of a []string.
std::string GoQuotedList(const std::vector<std::string>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? " " : "") + GoQuote(v[i]);
  return out + "]";
}

// time.Duration.String().
std::string GoDuration(int64_t ns) {
  if (ns == 0) return "0s";
  std::string sign = ns < 0 ? "-" : "";
  uint64_t u = ns < 0 ? static_cast<uint64_t>(-ns) : static_cast<uint64_t>(ns);
  auto frac = [](uint64_t v, int digits) {
    std::string s = std::to_string(v);
    s.insert(0, static_cast<size_t>(digits) - std::min<size_t>(s.size(), digits), '0');
    while (!s.empty() && s.back() == '0') s.pop_back();
    return s.empty() ? std::string() : "." + s;
  };
  if (u < 1000000000ULL) {
    if (u < 1000) return sign + std::to_string(u) + "ns";
    if (u < 1000000) return sign + std::to_string(u / 1000) + frac(u % 1000, 3) + "µs";
    return sign + std::to_string(u / 1000000) + frac(u % 1000000, 6) + "ms";
  }
  uint64_t secs = u / 1000000000ULL;
  std::string s = std::to_string(secs % 60) + frac(u % 1000000000ULL, 9) + "s";
  uint64_t mins = secs / 60;
  if (mins == 0) return sign + s;
  s = std::to_string(mins % 60) + "m" + s;
  uint64_t hours = mins / 60;
  if (hours == 0) return sign + s;
  return sign + std::to_string(hours) + "h" + s;
}

// time.ParseDuration for the units HEALTHCHECK takes.
std::optional<int64_t> ParseGoDuration(std::string_view s) {
  if (s == "0") return 0;
  if (s.empty()) return std::nullopt;
  bool neg = false;
  if (s[0] == '-' || s[0] == '+') {
    neg = s[0] == '-';
    s.remove_prefix(1);
  }
  double total = 0;
  if (s.empty()) return std::nullopt;
  while (!s.empty()) {
    size_t i = 0;
    while (i < s.size() && ((s[i] >= '0' && s[i] <= '9') || s[i] == '.')) ++i;
    if (i == 0) return std::nullopt;
    double v = std::strtod(std::string(s.substr(0, i)).c_str(), nullptr);
    s.remove_prefix(i);
    size_t j = 0;
    while (j < s.size() && !((s[j] >= '0' && s[j] <= '9') || s[j] == '.')) ++j;
    std::string_view unit = s.substr(0, j);
    s.remove_prefix(j);
    double mult;
    if (unit == "ns")
      mult = 1;
    else if (unit == "us" || unit == "µs" || unit == "μs")
      mult = 1e3;
    else if (unit == "ms")
      mult = 1e6;
    else if (unit == "s")
      mult = 1e9;
    else if (unit == "m")
      mult = 60e9;
    else if (unit == "h")
      mult = 3600e9;
    else
      return std::nullopt;
    total += v * mult;
  }
  return static_cast<int64_t>(neg ? -total : total);
}

struct Platform {
  std::string os, arch, variant;
  std::string str() const { return os + "/" + arch + (variant.empty() ? "" : "/" + variant); }
};

Platform ParsePlatform(const std::string& s) {
  Platform p;
  std::vector<std::string> parts;
  size_t start = 0;
  for (;;) {
    size_t slash = s.find('/', start);
    parts.push_back(s.substr(start, slash - start));
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  p.os = parts.size() > 0 ? ToLower(parts[0]) : "linux";
  p.arch = parts.size() > 1 ? ToLower(parts[1]) : "amd64";
  p.variant = parts.size() > 2 ? ToLower(parts[2]) : "";
  if (parts.size() == 1 && p.os != "linux" && p.os != "windows" && p.os != "darwin") {
    p.arch = p.os;  // "arm64" alone names an architecture
    p.os = "linux";
  }
  return p;
}

// Splits a --mount value as encoding/csv reads one record.
StatusOr<std::vector<std::string>> CsvFields(std::string_view s) {
  std::vector<std::string> out;
  std::string field;
  bool quoted = false, was_quoted = false;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (quoted) {
      if (c == '"') {
        if (i + 1 < s.size() && s[i + 1] == '"') {
          field += '"';
          ++i;
        } else {
          quoted = false;
        }
      } else {
        field += c;
      }
    } else if (c == '"' && field.empty() && !was_quoted) {
      quoted = was_quoted = true;
    } else if (c == ',') {
      out.push_back(std::move(field));
      field.clear();
      was_quoted = false;
    } else {
      field += c;
    }
  }
  if (quoted) return InvalidArgumentError("failed to parse csv mounts: extraneous or missing \"");
  out.push_back(std::move(field));
  return out;
}

// The flags one instruction accepts (BuildKit's BFlags).
class Flags {
 public:
  using Kinds = std::map<std::string, FlagKind>;
  // `kinds` must outlive this object.
  explicit Flags(const Kinds& kinds) : kinds_(kinds) {}

  Status Parse(const std::vector<std::string>& flags) {
    for (const std::string& arg : flags) {
      if (arg.rfind("--", 0) != 0) return InvalidArgumentError("arg should start with -- : " + arg);
      std::string body = arg.substr(2);
      size_t eq = body.find('=');
      std::string name = body.substr(0, eq);
      bool has_value = eq != std::string::npos;
      std::string value = has_value ? body.substr(eq + 1) : "";
      auto it = kinds_.find(name);
      if (it == kinds_.end()) return InvalidArgumentError("unknown flag --" + name);
      if (it->second != FlagKind::kStrings && values_.count(name)) {
        return InvalidArgumentError("duplicate flag specified: --" + name);
      }
      switch (it->second) {
        case FlagKind::kBool: {
          std::string v = ToLower(value);
          if (!has_value) v = "true";
          if (v != "true" && v != "false") {
            return InvalidArgumentError("expecting boolean value for flag --" + name +
                                        ", not: " + value);
          }
          values_[name] = {v};
          break;
        }
        case FlagKind::kString:
          if (!has_value) return InvalidArgumentError("missing a value on flag: --" + name);
          values_[name] = {value};
          break;
        case FlagKind::kStrings:
          if (!has_value) return InvalidArgumentError("missing a value on flag: --" + name);
          values_[name].push_back(value);
          break;
      }
    }
    return Status::Ok();
  }
  bool Used(const std::string& name) const { return values_.count(name) > 0; }
  std::string String(const std::string& name) const {
    auto it = values_.find(name);
    return it == values_.end() ? "" : it->second.back();
  }
  bool Bool(const std::string& name) const { return String(name) == "true"; }
  std::vector<std::string> Strings(const std::string& name) const {
    auto it = values_.find(name);
    return it == values_.end() ? std::vector<std::string>{} : it->second;
  }

 private:
  const Kinds& kinds_;
  std::map<std::string, std::vector<std::string>> values_;
};

const std::set<std::string, std::less<>>& KnownInstructions();

// A parser for the flags of `cmd` (lower case).
Flags FlagsFor(std::string_view cmd) {
  static const Flags::Kinds kNone;
  const auto& tables = InstructionFlags();
  auto it = tables.find(cmd);
  return Flags(it == tables.end() ? kNone : it->second);
}

const std::set<std::string, std::less<>>& KnownInstructions() {
  static const std::set<std::string, std::less<>> k = {
      "add",    "arg",   "cmd",         "copy",  "entrypoint", "env",
      "expose", "from",  "healthcheck", "label", "maintainer", "onbuild",
      "run",    "shell", "stopsignal",  "user",  "volume",     "workdir"};
  return k;
}

bool ValidStageName(const std::string& n) {
  if (n.empty() || !(n[0] >= 'a' && n[0] <= 'z')) return false;
  for (char c : n) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
    if (!ok) return false;
  }
  return true;
}

bool ValidSignal(const std::string& s) {
  if (s.empty()) return false;
  if (std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::stol(s.substr(0, 9)) > 0;
  }
  static const std::set<std::string> kNames = {
      "ABRT", "ALRM",   "BUS",  "CHLD",   "CLD",   "CONT", "FPE",  "HUP",  "ILL",
      "INT",  "IO",     "IOT",  "KILL",   "PIPE",  "POLL", "PROF", "PWR",  "QUIT",
      "SEGV", "STKFLT", "STOP", "SYS",    "TERM",  "TRAP", "TSTP", "TTIN", "TTOU",
      "URG",  "USR1",   "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ"};
  std::string n = ToUpper(s);
  if (n.rfind("SIG", 0) == 0) n = n.substr(3);
  if (kNames.count(n)) return true;
  if (n.rfind("RTMIN", 0) == 0 || n.rfind("RTMAX", 0) == 0) return true;
  return false;
}

// Optimal string alignment distance (Levenshtein plus adjacent transpositions), for "did you
// mean" suggestions.
// Levenshtein distance; with `transpositions`, swapping two neighbours is one edit too.
size_t EditDistance(std::string_view a, std::string_view b, bool transpositions = true) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (transpositions && i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.size()][b.size()];
}

// The candidate `word` is most likely a typo of, if any (case-insensitive).
std::optional<std::string> NearestName(std::string_view word,
                                       const std::vector<std::string>& candidates) {
  if (word.size() > 64) return std::nullopt;  // nothing that long is a typo of a short name
  std::string w = ToLower(word);
  std::optional<std::string> best;
  size_t best_d = 0;
  for (const std::string& c : candidates) {
    if (c.empty() || c.size() > 64) continue;
    size_t d = EditDistance(w, ToLower(c));
    // A typo: one edit in a short word, up to a third of a longer one, never the whole word.
    size_t limit = std::max<size_t>(1, std::min(w.size(), c.size()) / 3);
    if (d == 0 || d > limit || d >= c.size()) continue;
    if (!best || d < best_d) best = c, best_d = d;
  }
  return best;
}

// Whether one of the 8 bytes in `v` is not copied as is into a JSON string: a control character,
// '"', '\\' or a byte of a multi-byte UTF-8 sequence (the "has less than" and "has zero byte"
// tests of Bit Twiddling Hacks; they may flag a clean word, never miss a byte).
bool JsonWordNeedsCare(uint64_t v) {
  constexpr uint64_t kOnes = 0x0101010101010101ULL, kHigh = 0x8080808080808080ULL;
  uint64_t quote = v ^ (kOnes * '"');
  uint64_t backslash = v ^ (kOnes * '\\');
  uint64_t found = ((v - kOnes * 0x20) & ~v) | ((quote - kOnes) & ~quote) |
                   ((backslash - kOnes) & ~backslash) | v;
  return (found & kHigh) != 0;
}

// Appends `s` as a JSON string, byte for byte as nlohmann::json::dump() writes it. Returns false
// when `s` is not valid UTF-8 (dump() would throw).
bool AppendJsonString(std::string* out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out->push_back('"');
  size_t i = 0;
  while (i < s.size()) {
    size_t run = i;
    for (uint64_t word; run + 8 <= s.size(); run += 8) {  // most text needs no escaping
      std::memcpy(&word, s.data() + run, 8);
      if (JsonWordNeedsCare(word)) break;
    }
    while (run < s.size()) {
      unsigned char c = static_cast<unsigned char>(s[run]);
      if (c < 0x20 || c >= 0x80 || c == '"' || c == '\\') break;
      ++run;
    }
    out->append(s.data() + i, run - i);
    i = run;
    if (i == s.size()) break;
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      size_t width = 0;
      if (internal::DecodeRune(s, i, &width) == 0xFFFD && width == 1) return false;
      out->append(s.data() + i, width);
      i += width;
      continue;
    }
    out->push_back('\\');
    switch (c) {
      case '"': out->push_back('"'); break;
      case '\\': out->push_back('\\'); break;
      case '\b': out->push_back('b'); break;
      case '\f': out->push_back('f'); break;
      case '\n': out->push_back('n'); break;
      case '\r': out->push_back('r'); break;
      case '\t': out->push_back('t'); break;
      default:
        out->append("u00");
        out->push_back(kHex[c >> 4]);
        out->push_back(kHex[c & 0xF]);
    }
    ++i;
  }
  out->push_back('"');
  return true;
}

// Appends JSON values to a string exactly as nlohmann::json::dump() writes them, without a JSON
// tree. Invalid UTF-8 (which dump() refuses) is remembered: see valid().
class JsonWriter {
 public:
  // `out` must outlive the writer.
  explicit JsonWriter(std::string* out) : out_(out) {}
  JsonWriter& String(std::string_view s) {
    valid_ = AppendJsonString(out_, s) && valid_;
    return *this;
  }
  JsonWriter& Strings(const std::vector<std::string>& values) {
    out_->push_back('[');
    for (size_t i = 0; i < values.size(); ++i) {
      if (i > 0) out_->push_back(',');
      String(values[i]);
    }
    out_->push_back(']');
    return *this;
  }
  JsonWriter& Bool(bool b) {
    out_->append(b ? "true" : "false");
    return *this;
  }
  JsonWriter& Int(int64_t v) {
    out_->append(std::to_string(v));
    return *this;
  }
  JsonWriter& Null() {
    out_->append("null");
    return *this;
  }
  // The brackets and commas of an array the caller writes element by element.
  JsonWriter& Punct(char c) {
    out_->push_back(c);
    return *this;
  }
  JsonWriter& Raw(std::string_view json) {
    out_->append(json);
    return *this;
  }
  void Invalidate() { valid_ = false; }
  bool valid() const { return valid_; }

 private:
  std::string* out_;
  bool valid_ = true;
};

// A JSON object whose fields may be written in any order and come out with their keys sorted,
// as nlohmann::json (std::map backed) dumps them; a key written twice keeps its last value, as
// json[key] = value does. Keys are kept as views: they must be string literals.
class CanonicalJson {
 public:
  CanonicalJson() : writer_(&buf_) {
    buf_.reserve(512);  // most steps' fit
    fields_.reserve(16);
  }
  CanonicalJson(const CanonicalJson&) = delete;
  CanonicalJson& operator=(const CanonicalJson&) = delete;

  // Starts the field `key`; its value is what the caller writes through the writer next.
  JsonWriter& Field(std::string_view key) {
    fields_.push_back({key, buf_.size(), 0});
    return writer_;
  }
  // Writes the sorted object; no field may be written after.
  void AppendTo(JsonWriter* out) {
    if (!writer_.valid()) out->Invalidate();
    std::vector<FieldSpan>& sorted = fields_;
    for (size_t i = 0; i < sorted.size(); ++i) {
      sorted[i].end = i + 1 < sorted.size() ? sorted[i + 1].begin : buf_.size();
    }
    // A stable insertion sort: there are a few fields, written nearly in order.
    for (size_t i = 1; i < sorted.size(); ++i) {
      for (size_t j = i; j > 0 && sorted[j].key < sorted[j - 1].key; --j) {
        std::swap(sorted[j], sorted[j - 1]);
      }
    }
    out->Punct('{');
    bool first = true;
    for (size_t i = 0; i < sorted.size(); ++i) {
      if (i + 1 < sorted.size() && sorted[i + 1].key == sorted[i].key) continue;  // overwritten
      if (!first) out->Punct(',');
      first = false;
      out->String(sorted[i].key).Punct(':');
      out->Raw(std::string_view(buf_).substr(sorted[i].begin, sorted[i].end - sorted[i].begin));
    }
    out->Punct('}');
  }
  // nullopt when a string is not valid UTF-8. No field may be written after.
  std::optional<std::string> Dump() {
    std::string out;
    out.reserve(buf_.size() + 16 * fields_.size() + 2);
    JsonWriter w(&out);
    AppendTo(&w);
    if (!w.valid()) return std::nullopt;
    return out;
  }

 private:
  struct FieldSpan {
    std::string_view key;
    size_t begin, end;  // the value's text in buf_; `end` is set when sorting
  };
  std::string buf_;  // the values' JSON text, in the order written
  std::vector<FieldSpan> fields_;
  JsonWriter writer_;
};

// The instruction as an error quotes it (see QuoteInstruction).
std::string QuoteNode(const Node& node) {
  std::string_view line = internal::TrimSpace(node.original);
  if (ToLower(line.substr(0, node.keyword.size())) != node.command()) line = node.keyword;
  return QuoteInstruction(line);
}

// One FROM and the instructions under it.
struct StageSource {
  int index = 0;
  const Node* from = nullptr;
  std::vector<const Node*> commands;
  std::string name;
};

// The Dockerfile checks we run, with BuildKit's names, descriptions and links
// (frontend/dockerfile/linter/ruleset.go).
struct CheckRule {
  std::string_view name, description, url;
};
constexpr CheckRule kCheckRules[] = {
    {"StageNameCasing", "Stage names should be lowercase",
     "https://docs.docker.com/go/dockerfile/rule/stage-name-casing/"},
    {"FromAsCasing", "The 'as' keyword should match the case of the 'from' keyword",
     "https://docs.docker.com/go/dockerfile/rule/from-as-casing/"},
    {"NoEmptyContinuation", "Empty continuation lines will become errors in a future release",
     "https://docs.docker.com/go/dockerfile/rule/no-empty-continuation/"},
    {"ConsistentInstructionCasing",
     "All commands within the Dockerfile should use the same casing (either upper or lower)",
     "https://docs.docker.com/go/dockerfile/rule/consistent-instruction-casing/"},
    {"JSONArgsRecommended",
     "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS "
     "signals",
     "https://docs.docker.com/go/dockerfile/rule/json-args-recommended/"},
    {"MaintainerDeprecated",
     "The MAINTAINER instruction is deprecated, use a label instead to define an image author",
     "https://docs.docker.com/go/dockerfile/rule/maintainer-deprecated/"},
    {"WorkdirRelativePath",
     "Relative workdir without an absolute workdir declared within the build can have unexpected "
     "results if the base image changes",
     "https://docs.docker.com/go/dockerfile/rule/workdir-relative-path/"},
    {"UndefinedVar", "Variables should be defined before their use",
     "https://docs.docker.com/go/dockerfile/rule/undefined-var/"},
    {"MultipleInstructionsDisallowed",
     "Multiple instructions of the same type should not be used in the same stage",
     "https://docs.docker.com/go/dockerfile/rule/multiple-instructions-disallowed/"},
    {"LegacyKeyValueFormat", "Legacy key/value format with whitespace separator should not be used",
     "https://docs.docker.com/go/dockerfile/rule/legacy-key-value-format/"},
    {"DuplicateStageName", "Stage names should be unique",
     "https://docs.docker.com/go/dockerfile/rule/duplicate-stage-name/"},
    {"SecretsUsedInArgOrEnv", "Sensitive data should not be used in the ARG or ENV commands",
     "https://docs.docker.com/go/dockerfile/rule/secrets-used-in-arg-or-env/"},
};

// A check config as BuildKit's linter.ParseLintOptions reads it: "skip=A,B;error=true", at most
// three ";" parts, keys and rule names case-sensitive, "skip=all" skips every rule.
struct CheckConfig {
  bool skip_all = false, error = false;
  std::vector<std::string> skip;
  bool Skips(std::string_view rule) const {
    return skip_all || std::find(skip.begin(), skip.end(), rule) != skip.end();
  }
};

// Go's strconv.ParseBool.
std::optional<bool> ParseGoBool(std::string_view v) {
  for (std::string_view t : {"1", "t", "T", "TRUE", "true", "True"}) {
    if (v == t) return true;
  }
  for (std::string_view f : {"0", "f", "F", "FALSE", "false", "False"}) {
    if (v == f) return false;
  }
  return std::nullopt;
}

StatusOr<CheckConfig> ParseCheckConfig(std::string_view value) {
  CheckConfig config;
  value = internal::TrimSpace(value);
  if (value.empty()) return config;
  for (int part_no = 0; part_no < 3 && value.data() != nullptr; ++part_no) {
    size_t semi = part_no < 2 ? value.find(';') : std::string_view::npos;
    std::string_view part = value.substr(0, semi);
    value = semi == std::string_view::npos ? std::string_view() : value.substr(semi + 1);
    size_t eq = part.find('=');
    if (eq == std::string_view::npos) {
      return InvalidArgumentError("invalid check option " + GoQuote(std::string(part)));
    }
    std::string key(internal::TrimSpace(part.substr(0, eq)));
    std::string_view val = internal::TrimSpace(part.substr(eq + 1));
    if (key == "skip" || key == "experimental") {  // no experimental rule is implemented
      if (key == "skip" && val == "all") config.skip_all = true;
      if (key == "skip" && val != "all") {
        config.skip.clear();
        for (size_t s = 0; s <= val.size();) {
          size_t e = std::min(val.find(',', s), val.size());
          config.skip.emplace_back(internal::TrimSpace(val.substr(s, e - s)));
          s = e + 1;
        }
      }
    } else if (key == "error") {
      std::optional<bool> b = ParseGoBool(val);
      if (!b) {
        return InvalidArgumentError("invalid check option " + GoQuote(std::string(part)) +
                                    ": error must be true or false, not " +
                                    GoQuote(std::string(val)));
      }
      config.error = *b;
    } else {
      return InvalidArgumentError("invalid check option " + GoQuote(key) +
                                  " (skip=..., error=..., experimental=...)");
    }
  }
  return config;
}

// The config of the first `check=...` comment among those right above an instruction, as
// BuildKit's Linter.WithMergedConfigFromComments; nullopt when none, or when it does not parse.
std::optional<CheckConfig> CommentCheckConfig(const Node& node) {
  for (const std::string& comment : node.comments) {
    std::string_view c = internal::TrimSpace(comment);
    auto alpha = [](char ch) { return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z'); };
    size_t n = 0;
    while (n < c.size() && (alpha(c[n]) || (n > 0 && c[n] >= '0' && c[n] <= '9'))) ++n;
    if (n == 0) continue;
    std::string_view rest = internal::TrimSpace(c.substr(n));
    if (ToLower(c.substr(0, n)) != "check" || rest.size() < 2 || rest[0] != '=') continue;
    std::string_view value = internal::TrimSpace(rest.substr(1));
    StatusOr<CheckConfig> config = ParseCheckConfig(value.substr(0, value.find(' ')));
    if (!config.ok()) return std::nullopt;
    return *config;
  }
  return std::nullopt;
}

// BuildKit's SecretsUsedInArgOrEnv: a name with a word (split on "_", any case) that names a
// secret, and none that says it is not one ("PUBLIC_KEY", "TOKEN_FILE", "AUTH_VERSION").
bool LooksSecret(const std::string& name) {
  static const std::set<std::string> kWords = {"apikey", "auth",     "credential", "credentials",
                                               "key",    "password", "pword",      "passwd",
                                               "secret", "token"};
  static const std::set<std::string> kAllowed = {"public", "file", "version"};
  std::string lower = ToLower(name);
  bool secret = false;
  size_t start = 0;
  while (start <= lower.size()) {
    size_t end = std::min(lower.find('_', start), lower.size());
    std::string word = lower.substr(start, end - start);
    if (kAllowed.count(word)) return false;
    secret = secret || kWords.count(word);
    start = end + 1;
  }
  return secret;
}

// The build args BuildKit never puts into the environment (its nonEnvArgs).
bool IsNonEnvArg(const std::string& key) {
  return key == "BUILDKIT_SBOM_SCAN_CONTEXT" || key == "BUILDKIT_SBOM_SCAN_STAGE";
}

// BuildKit runs a build whose `# syntax=` (or build arg BUILDKIT_SYNTAX) names a frontend image
// with that image. stagefarm has one frontend built in, BuildKit v0.24.0's, which is Dockerfile
// 1.18.0: it stands for docker/dockerfile (docker.io/ written or not) tagged 1, 1.N or 1.N.M up to
// 1.18, latest or none, each also -labs (features labs adds are refused by name as elsewhere), or
// pinned by a digest. Any other image, newer versions included, cannot be run.
bool IsBuiltinFrontend(std::string_view ref) {
  ref = ref.substr(0, ref.find(' '));  // what follows is the frontend's command line
  if (size_t at = ref.find('@'); at != std::string_view::npos) {
    std::string_view digest = ref.substr(at + 1);
    if (digest.size() != 71 || digest.substr(0, 7) != "sha256:" ||
        digest.find_first_not_of("0123456789abcdef", 7) != std::string_view::npos) {
      return false;
    }
    ref = ref.substr(0, at);
  }
  if (ref.substr(0, 10) == "docker.io/") ref.remove_prefix(10);
  constexpr std::string_view kName = "docker/dockerfile";
  if (ref.substr(0, kName.size()) != kName) return false;
  ref.remove_prefix(kName.size());
  if (ref.empty()) return true;
  if (ref[0] != ':') return false;
  std::string_view tag = ref.substr(1);
  if (tag.size() >= 5 && tag.substr(tag.size() - 5) == "-labs") tag.remove_suffix(5);
  if (tag == "latest" || tag == "labs") return true;
  std::vector<int> version;  // 1, 1.N or 1.N.M
  for (size_t start = 0;;) {
    size_t end = std::min(tag.find('.', start), tag.size());
    std::string_view part = tag.substr(start, end - start);
    if (part.empty() || part.size() > 4 ||
        part.find_first_not_of("0123456789") != std::string_view::npos) {
      return false;
    }
    version.push_back(std::stoi(std::string(part)));
    if (end == tag.size()) break;
    start = end + 1;
  }
  return version.size() <= 3 && version[0] == 1 && (version.size() < 2 || version[1] <= 18);
}

// What a stage hands to the stages built FROM it (BuildKit's dispatchState.init): its variables
// and its ARGs, and for the checks whether a WORKDIR ran and the ARG names declared.
struct InheritedState {
  std::vector<std::pair<std::string, std::string>> vars;
  std::vector<std::pair<std::string, std::optional<std::string>>> args;
  bool workdir_set = false;
  std::set<std::string> declared_args;
};

struct StageState;

class Resolver {
 public:
  Resolver(const BuildOptions& options, const ImageResolver& images)
      : options_(options), images_(images) {}

  StatusOr<BuildPlan> Run(std::string_view text);

 private:
  // "Dockerfile:12: COPY --from=x a b: <msg>": the file, the line and the instruction quoted.
  std::string Place(const Node& node) const {
    return options_.filename + ":" + std::to_string(node.start_line) + ": ";
  }
  Status Error(const Node& node, const std::string& msg) const {
    return InvalidArgumentError(Place(node) + Quote(node) + ": " + msg);
  }
  Status Wrap(const Node& node, const Status& s) const {
    return Status(s.code(), Place(node) + Quote(node) + ": " + s.message());
  }
  // The instruction an error quotes; a base image's trigger is quoted with the FROM running it.
  std::string Quote(const Node& node) const {
    auto it = trigger_quotes_.find(&node);
    return it != trigger_quotes_.end() ? it->second : QuoteNode(node);
  }
  // A trigger ParseDockerfile refused: "ONBUILD:1: ENV A: <msg>" becomes
  // "Dockerfile:3: FROM base (ONBUILD ENV A): <msg>".
  static constexpr char kTriggerFile[] = "ONBUILD";
  Status TriggerParseError(const Node& from, const std::string& quote, const Status& s) const {
    std::string msg = s.message();
    size_t place_end = msg.find(": ");
    if (msg.rfind(kTriggerFile, 0) == 0 && place_end != std::string::npos) {
      msg = msg.substr(place_end + 2);
      size_t quote_end = msg.find(": ");
      if (quote_end != std::string::npos) msg = msg.substr(quote_end + 2);
    }
    return Status(s.code(), Place(from) + quote + ": " + msg);
  }
  // An image reference that is no stage was not found: suggests the nearest stage name that
  // `current` could use (those before it). `quote` is what the error quotes ("COPY --from=x").
  Status NoStageOrImage(const Node& node, const std::string& quote, const std::string& ref,
                        int current, const Status& not_found) const {
    std::vector<std::string> names;
    for (const auto& [name, idx] : by_name_) {
      if (idx < current) names.push_back(name);
    }
    std::string msg = Place(node) + (trigger_quotes_.count(&node) ? Quote(node) : quote) +
                      ": no stage or image named " + GoQuote(ref);
    if (std::optional<std::string> near = NearestName(ref, names)) {
      msg += " (did you mean " + GoQuote(*near) + "?)";
    } else {
      msg += ": " + not_found.message();
    }
    return NotFoundError(std::move(msg));
  }
  // Resolves an image's config once per build; a NotFound names the reference.
  StatusOr<ImageConfig> ImageConfigOf(const Node& node, const std::string& ref) {
    auto cached = image_cache_.find(ref);
    if (cached != image_cache_.end()) return cached->second;
    SF_RETURN_IF_ERROR(CheckRepositoryCase(ref));
    if (!images_) return Error(node, "no image resolver for " + GoQuote(ref));
    StatusOr<ImageConfig> cfg = images_(ref);
    if (!cfg.ok()) return cfg.status();
    return image_cache_.emplace(ref, *cfg).first->second;
  }

  // Build checks as docker build runs them (BuildKit's linter): `# check=skip=A,B;error=true`, or
  // the build arg BUILDKIT_DOCKERFILE_CHECK, which replaces the directive. Each finding is a
  // warning; with error=true the build fails. A `# check=skip=...` comment right above an
  // instruction skips more rules for the findings of that instruction.
  bool CheckEnabled(std::string_view rule, const Node* instruction) const;
  // Reports `rule` at the line of `at`, unless skipped by the config or the comments above
  // `instruction` (nullptr: the config alone).
  void Warn(const Node& at, std::string_view rule, std::string msg, const Node* instruction);
  void Warn(const Node& node, std::string_view rule, std::string msg) {
    Warn(node, rule, std::move(msg), &node);
  }
  void WarnUndefinedVars(const Node& node, const WordMatches& matches, const StageState& st);
  void CheckStatically();
  std::string CheckLine(const CheckWarning& w) const {
    return options_.filename + ":" + std::to_string(w.line) + ": " + w.rule + ": " + w.message;
  }

  Status UnknownInstruction(const Node& node) const {
    std::vector<std::string> known;
    for (const std::string& k : KnownInstructions()) known.push_back(ToUpper(k));
    std::string msg = "unknown instruction: " + node.keyword;
    if (std::optional<std::string> near = NearestName(node.keyword, known)) {
      msg += " (did you mean " + *near + "?)";
    }
    return Error(node, msg);
  }
  Status CheckStructure(const Node& node, bool in_onbuild);
  Status ResolveMetaArgs(const std::vector<const Node*>& args);
  Status ResolveStage(int index);
  Status Dispatch(int stage_index, const Node& node, struct StageState* st);
  StatusOr<int> FindStageRef(const Node& node, const std::string& ref, int current, bool* is_stage);
  void AddExternal(const std::string& ref) {
    if (std::find(external_.begin(), external_.end(), ref) == external_.end()) {
      external_.push_back(ref);
    }
  }

  const BuildOptions& options_;
  const ImageResolver& images_;
  ShellLex lex_;
  ParsedDockerfile parsed_;
  std::vector<StageSource> sources_;
  std::map<std::string, int> by_name_;
  std::map<std::string, std::string> auto_args_;  // TARGETPLATFORM...
  // Global scope (ARG before the first FROM): name -> value (nullopt: declared, no value).
  std::vector<std::pair<std::string, std::optional<std::string>>> meta_args_;
  std::set<std::string> consumed_;  // build args some ARG declared
  std::map<int, ResolvedStage> resolved_;
  std::vector<int> order_;  // original indices, deps first
  std::set<int> in_progress_;
  std::vector<std::string> external_;
  std::map<std::string, ImageConfig> image_cache_;
  std::map<const Node*, std::string> trigger_quotes_;  // see Quote()
  CheckConfig checks_;
  std::vector<CheckWarning> check_warnings_;  // in order, each once
  // What a stage built FROM another stage inherits, by original stage index.
  std::map<int, InheritedState> inherited_;

  friend struct StageState;
};

struct StageState {
  ImageConfig config;
  // `config` as the last step that changed it left it, shared by the steps after it.
  std::shared_ptr<const ImageConfig> snapshot;
  // The variables instructions expand and RUN sees, as BuildKit's LLB state env: the image's env,
  // then every ENV and every ARG with a value, each set moving its name to the end (so the later
  // of an ENV and an ARG of the same name wins). A stage built FROM another starts with that
  // one's, then sets its image env again (an ENV wins over an ARG of the stage before).
  std::vector<std::pair<std::string, std::string>> vars;
  // ARGs in scope, in order: the parent stage's, then those declared here: name -> value.
  std::vector<std::pair<std::string, std::optional<std::string>>> args;
  bool cmd_set = false;
  std::set<int> deps;
  // For the checks, as BuildKit's dispatchState: whether a WORKDIR of this Dockerfile ran here or
  // in the stage this one is built FROM, the ARG names declared there, and the last CMD,
  // ENTRYPOINT and HEALTHCHECK of this stage.
  bool workdir_set = false;
  std::set<std::string> declared_args;
  std::map<std::string, const Node*> last_of_kind;

  std::optional<std::string> Lookup(const std::string& name) const {
    for (const auto& [key, value] : vars) {
      if (key == name) return value;
    }
    return std::nullopt;
  }
  void SetVar(const std::string& name, const std::string& value) {
    auto same = [&](const auto& kv) { return kv.first == name; };
    vars.erase(std::remove_if(vars.begin(), vars.end(), same), vars.end());
    vars.emplace_back(name, value);
  }
  void SetVarsFromEnv(const std::vector<std::string>& env) {
    for (const std::string& kv : env) {
      size_t eq = kv.find('=');
      SetVar(kv.substr(0, eq), eq == std::string::npos ? "" : kv.substr(eq + 1));
    }
  }
  EnvLookup Env() const {
    return [this](const std::string& name) { return Lookup(name); };
  }
};

StatusOr<int> Resolver::FindStageRef(const Node& node, const std::string& ref, int current,
                                     bool* is_stage) {
  *is_stage = false;
  auto it = by_name_.find(ToLower(ref));
  int idx = -1;
  if (it != by_name_.end()) {
    idx = it->second;
  } else if (!ref.empty() &&
             std::all_of(ref.begin(), ref.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    idx = ref.size() > 9 ? -1 : std::stoi(ref);
    if (idx < 0 || idx >= static_cast<int>(sources_.size())) {
      return Error(node, "invalid stage index " + ref);
    }
  } else {
    return -1;
  }
  if (idx >= current) {
    return Error(node, "stage " + GoQuote(ref) +
                           (idx == current ? " refers to itself" : " is defined later") +
                           ": a stage can only use stages defined before it");
  }
  *is_stage = true;
  return idx;
}

Status Resolver::CheckStructure(const Node& node, bool in_onbuild) {
  const std::string command = node.command();
  const std::string_view cmd = command;  // compared with literals below
  if (!KnownInstructions().count(cmd)) return UnknownInstruction(node);
  Flags flags = FlagsFor(cmd);
  if (!(cmd == "healthcheck" && !node.args.empty() && ToUpper(node.args[0]) == "NONE")) {
    if (Status s = flags.Parse(node.flags); !s.ok()) return Wrap(node, s);
  }
  size_t n = node.args.size();
  // The messages are made only on failure: most instructions pass every check.
  auto need = [&](bool ok, std::string_view msg) {
    return ok ? Status::Ok() : Error(node, std::string(msg));
  };
  auto need_cmd = [&](bool ok, std::string_view msg) {  // "<CMD><msg>"
    return ok ? Status::Ok() : Error(node, ToUpper(cmd) + std::string(msg));
  };
  if (in_onbuild && (cmd == "onbuild" || cmd == "from" || cmd == "maintainer")) {
    return Error(node, ToUpper(cmd) + " isn't allowed as an ONBUILD trigger");
  }
  if (cmd == "onbuild") {
    if (node.children.empty()) return Error(node, "ONBUILD requires at least one argument");
    std::string trigger = node.children[0].command();
    if (trigger == "onbuild") {
      return Error(node, "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed");
    }
    if (trigger == "from" || trigger == "maintainer") {
      return Error(node, ToUpper(trigger) + " isn't allowed as an ONBUILD trigger");
    }
    return CheckStructure(node.children[0], true);
  }
  if (cmd == "env" || cmd == "label" || cmd == "expose" || cmd == "volume" || cmd == "arg" ||
      cmd == "healthcheck") {
    SF_RETURN_IF_ERROR(need_cmd(n > 0, " requires at least one argument"));
  }
  if (cmd == "env" || cmd == "label") {
    for (size_t i = 0; i < n; i += 3) {
      SF_RETURN_IF_ERROR(need_cmd(!node.args[i].empty(), " names can not be blank"));
    }
  }
  if (cmd == "copy" || cmd == "add") {
    SF_RETURN_IF_ERROR(need_cmd(n >= 2,
                                " requires at least two arguments, but only one was "
                                "provided. Destination could not be determined"));
  }
  if (cmd == "user" || cmd == "workdir" || cmd == "stopsignal" || cmd == "maintainer") {
    SF_RETURN_IF_ERROR(need_cmd(n == 1, " requires exactly one argument"));
  }
  if (cmd == "shell") {
    SF_RETURN_IF_ERROR(need(n > 0, "SHELL requires at least one argument"));
    SF_RETURN_IF_ERROR(need(node.json, "SHELL requires the arguments to be in JSON form"));
  }
  if (cmd == "from") {
    bool ok = n == 1 || (n == 3 && ToLower(node.args[1]) == "as");
    SF_RETURN_IF_ERROR(need(ok, "FROM requires either one or three arguments"));
    if (n == 3 && !ValidStageName(ToLower(node.args[2]))) {
      return Error(node, "invalid name for build stage: " + GoQuote(node.args[2]) +
                             ", name can't start with a number or contain symbols");
    }
  }
  if (cmd == "arg") {
    for (const std::string& a : node.args) {
      SF_RETURN_IF_ERROR(need(!a.empty() && a[0] != '=', "ARG names can not be blank"));
    }
  }
  if (cmd == "healthcheck") {
    std::string type = ToUpper(node.args[0]);
    if (type == "NONE") {
      SF_RETURN_IF_ERROR(need(n == 1, "HEALTHCHECK NONE takes no arguments"));
    } else if (type == "CMD") {
      SF_RETURN_IF_ERROR(need(n > 1, "Missing command after HEALTHCHECK CMD"));
    } else {
      return Error(node, "Unknown type " + GoQuote(type) + " in HEALTHCHECK (try CMD)");
    }
  }
  // Stage references are not expanded (BuildKit resolves them before any ARG has a value):
  // COPY --from must read the same with no variables set, quotes and escapes included; a mount's
  // from= must hold no `$` but at its end.
  if (cmd == "copy" && flags.Used("from")) {
    const std::string from = flags.String("from");
    StatusOr<std::string> bare = lex_.ProcessWord(from, [](const std::string&) {
      return std::optional<std::string>();
    });
    if (!bare.ok()) return Wrap(node, bare.status());
    if (*bare != from) {
      return Error(node,
                   "variable expansion is not supported for --from, define a new stage with "
                   "FROM using ARG from global scope as a workaround");
    }
  }
  if (cmd == "run") {
    for (const std::string& spec : flags.Strings("mount")) {
      StatusOr<std::vector<std::string>> fields = CsvFields(spec);
      if (!fields.ok()) continue;  // reported with its place when the step is resolved
      for (const std::string& field : *fields) {
        size_t eq = field.find('=');
        if (eq == std::string::npos || ToLower(field.substr(0, eq)) != "from") continue;
        size_t dollar = field.find('$', eq + 1);
        if (dollar != std::string::npos && dollar + 1 != field.size()) {
          return Error(node,
                       "'from' doesn't support variable expansion, define alias stage instead");
        }
      }
    }
  }
  if (cmd == "run" || cmd == "copy" || cmd == "add") {
    // A heredoc as the destination is refused as docker does.
    if ((cmd != "run") && n > 0) {
      StatusOr<std::optional<Heredoc>> h = ParseHeredocWord(node.args.back());
      if (h.ok() && h->has_value() && !node.json) {
        return Error(node, ToUpper(cmd) + " cannot accept a heredoc as a destination");
      }
    }
  }
  return Status::Ok();
}

Status Resolver::ResolveMetaArgs(const std::vector<const Node*>& args) {
  for (const Node* node : args) {
    for (const std::string& word : node->args) {
      size_t eq = word.find('=');
      std::string key = word.substr(0, eq);
      std::optional<std::string> value;
      consumed_.insert(key);
      // A default beats the automatic platform value (BuildKit's buildMetaArgs).
      if (auto it = options_.build_args.find(key); it != options_.build_args.end()) {
        value = it->second;
      } else if (eq == std::string::npos) {
        if (auto a = auto_args_.find(key); a != auto_args_.end()) value = a->second;
      } else {
        EnvLookup env = [this](const std::string& name) -> std::optional<std::string> {
          for (auto it = meta_args_.rbegin(); it != meta_args_.rend(); ++it) {
            if (it->first == name) return it->second;
          }
          if (auto a = auto_args_.find(name); a != auto_args_.end()) return a->second;
          return std::nullopt;
        };
        StatusOr<std::string> v = lex_.ProcessWord(word.substr(eq + 1), env);
        if (!v.ok()) return Wrap(*node, v.status());
        value = *v;
      }
      meta_args_.emplace_back(key, value);
    }
  }
  return Status::Ok();
}

std::vector<std::string> WithShell(const ImageConfig& config, const std::string& cmd) {
  std::vector<std::string> argv =
      config.shell.empty() ? std::vector<std::string>{"/bin/sh", "-c"} : config.shell;
  argv.push_back(cmd);
  return argv;
}

StatusOr<std::vector<std::string>> ParsePorts(const std::vector<std::string>& raw) {
  std::vector<std::string> out;
  for (const std::string& spec : raw) {
    std::string port = spec, proto = "tcp";
    if (size_t slash = spec.find('/'); slash != std::string::npos) {
      port = spec.substr(0, slash);
      proto = ToLower(spec.substr(slash + 1));
    }
    if (size_t colon = port.rfind(':'); colon != std::string::npos) port = port.substr(colon + 1);
    auto number = [](const std::string& s) -> std::optional<int> {
      if (s.empty() || s.size() > 5 ||
          !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        return std::nullopt;
      }
      int v = std::stoi(s);
      if (v > 65535) return std::nullopt;
      return v;
    };
    std::optional<int> lo, hi;
    if (size_t dash = port.find('-'); dash != std::string::npos) {
      lo = number(port.substr(0, dash));
      hi = number(port.substr(dash + 1));
    } else {
      lo = hi = number(port);
    }
    if (!lo || !hi || *hi < *lo) return InvalidArgumentError("invalid containerPort: " + spec);
    if (proto != "tcp" && proto != "udp" && proto != "sctp") {
      return InvalidArgumentError("invalid proto: " + proto);
    }
    for (int p = *lo; p <= *hi; ++p) out.push_back(std::to_string(p) + "/" + proto);
  }
  return out;
}

Status Resolver::Dispatch(int stage_index, const Node& node, StageState* st) {
  const std::string command = node.command();
  const std::string_view cmd = command;  // compared with literals below
  ResolvedStage& stage = resolved_[stage_index];
  ResolvedStep step;
  step.line = node.start_line;
  step.text = std::string(internal::TrimSpace(node.original));
  CanonicalJson canon;
  canon.Field("kind").String(ToUpper(cmd));
  Flags flags = FlagsFor(cmd);
  if (Status s = flags.Parse(node.flags); !s.ok()) return Wrap(node, s);  // checked before
  const EnvLookup env = st->Env();
  auto expand = [&](const std::string& word) -> StatusOr<std::string> {
    WordMatches matches;
    StatusOr<std::string> v = lex_.ProcessWord(word, env, &matches);
    if (!v.ok()) return Wrap(node, v.status());
    WarnUndefinedVars(node, matches, *st);
    return v;
  };
  ImageConfig& config = st->config;
  // MultipleInstructionsDisallowed: the earlier CMD, ENTRYPOINT or HEALTHCHECK of the stage is the
  // one reported, with the name and the `# check=` comments of the later one.
  if (cmd == "cmd" || cmd == "entrypoint" || cmd == "healthcheck") {
    const Node*& last = st->last_of_kind[command];
    if (last) {
      Warn(*last, "MultipleInstructionsDisallowed",
           "Multiple " + node.keyword +
               " instructions should not be used in the same stage because only the last one "
               "will be used",
           &node);
    }
    last = &node;
  }

  if (cmd == "run") {
    step.kind = StepKind::kRun;
    if (node.json) {
      step.argv = node.args;
    } else {
      std::string command = node.args.empty() ? "" : node.args[0];
      if (!node.heredocs.empty()) {
        StatusOr<std::optional<Heredoc>> only = ParseHeredocWord(command);
        if (only.ok() && only->has_value() && node.heredocs.size() == 1) {
          // A lone heredoc: BuildKit runs a script starting with `#!` as a file of its own at
          // /dev/pipes/<name> (never expanded), any other in the shell as the command.
          const Heredoc& h = node.heredocs[0];
          std::string body = h.chomp ? ChompHeredocContent(h.content) : h.content;
          if (h.content.rfind("#!", 0) == 0) {
            if (h.name.find('/') != std::string::npos) {
              return Error(node, "heredoc name " + GoQuote(h.name) + " cannot name a file");
            }
            step.heredocs.push_back(
                InlineFile{h.name, std::move(body), false, h.chomp, h.file_descriptor});
            command = "/dev/pipes/" + h.name;
          } else {
            command = std::move(body);
          }
        } else {
          for (const Heredoc& h : node.heredocs) command += "\n" + h.content + h.name;
        }
      }
      step.argv = WithShell(config, command);
    }
    // Environment: the stage's variables (ENV and ARGs with values, as BuildKit's state env).
    step.env.reserve(st->vars.size());
    for (const auto& [key, value] : st->vars) step.env.push_back(key + "=" + value);
    // A proxy build arg, its name in any case, reaches every RUN as both HTTP_PROXY and
    // http_proxy (BuildKit's ProxyEnv, added by its executor), unless the stage sets that name.
    for (const char* name : {"http_proxy", "https_proxy", "ftp_proxy", "no_proxy", "all_proxy"}) {
      std::string value;
      for (const auto& [key, v] : options_.build_args) {
        if (ToLower(key) == name) value = v;
      }
      if (value.empty()) continue;
      for (const std::string& key : {ToUpper(name), std::string(name)}) {
        if (!st->Lookup(key)) step.env.push_back(key + "=" + value);
      }
    }
    if (flags.Used("network")) {
      step.network = ToLower(flags.String("network"));
      if (step.network != "default" && step.network != "none" && step.network != "host") {
        return Error(node, "unsupported network mode " + GoQuote(flags.String("network")));
      }
    }
    if (flags.Used("device")) {
      return Error(node,
                   "--device is not supported: BuildKit has it only in its labs frontend "
                   "(1.14.0-labs and later)");
    }
    // The mounts are the only field written while they are read.
    JsonWriter& mounts = canon.Field("mounts").Punct('[');
    for (const std::string& spec : flags.Strings("mount")) {
      StatusOr<std::vector<std::string>> csv = CsvFields(spec);
      if (!csv.ok()) return Wrap(node, csv.status());
      std::vector<std::string> fields = std::move(*csv);
      RunMount m;
      bool ro_auto = true;
      for (const std::string& field : fields) {
        size_t eq = field.find('=');
        std::string key = ToLower(field.substr(0, eq));
        if (eq == std::string::npos) {
          if (key == "readonly" || key == "ro") {
            m.readonly = true, ro_auto = false;
          } else if (key == "readwrite" || key == "rw") {
            m.readonly = false, ro_auto = false;
          } else if (key == "required" && (m.type == "secret" || m.type == "ssh")) {
            m.required = true;
          } else {
            return Error(node, "invalid field '" + field + "' must be a key=value pair");
          }
          continue;
        }
        SF_ASSIGN_OR_RETURN(std::string value, expand(field.substr(eq + 1)));
        auto parse_uint = [&](int base) -> StatusOr<uint32_t> {
          char* end = nullptr;
          unsigned long v = std::strtoul(value.c_str(), &end, base);
          if (value.empty() || *end != '\0' || v > 0xFFFFFFFFul) {
            return Error(node, "invalid value " + value + " for " + key);
          }
          return static_cast<uint32_t>(v);
        };
        auto parse_bool = [&](bool* out) -> Status {
          std::string v = ToLower(value);
          if (v == "true" || v == "1" || v == "t")
            *out = true;
          else if (v == "false" || v == "0" || v == "f")
            *out = false;
          else
            return Error(node, "invalid value for " + key + ": " + value);
          return Status::Ok();
        };
        if (key == "type") {
          m.type = ToLower(value);
          if (m.type != "bind" && m.type != "cache" && m.type != "tmpfs" && m.type != "secret" &&
              m.type != "ssh") {
            return Error(node, "unsupported mount type " + GoQuote(value));
          }
        } else if (key == "from") {
          m.from = value;
        } else if (key == "source" || key == "src") {
          m.source = value;
        } else if (key == "target" || key == "dst" || key == "destination") {
          m.target = value;
        } else if (key == "readonly" || key == "ro") {
          SF_RETURN_IF_ERROR(parse_bool(&m.readonly));
          ro_auto = false;
        } else if (key == "readwrite" || key == "rw") {
          bool rw = false;
          SF_RETURN_IF_ERROR(parse_bool(&rw));
          m.readonly = !rw;
          ro_auto = false;
        } else if (key == "required") {
          if (m.type != "secret" && m.type != "ssh") {
            return Error(node, "unexpected key 'required' for mount type '" + m.type + "'");
          }
          SF_RETURN_IF_ERROR(parse_bool(&m.required));
        } else if (key == "size") {
          if (m.type != "tmpfs") {
            return Error(node, "unexpected key 'size' for mount type '" + m.type + "'");
          }
          char* end = nullptr;
          double v = std::strtod(value.c_str(), &end);
          std::string unit = ToLower(end);
          double mult = 1;
          if (unit == "k" || unit == "kb")
            mult = 1024;
          else if (unit == "m" || unit == "mb")
            mult = 1024.0 * 1024;
          else if (unit == "g" || unit == "gb")
            mult = 1024.0 * 1024 * 1024;
          else if (!unit.empty() && unit != "b")
            return Error(node, "invalid value for size: " + value);
          m.size_limit = static_cast<int64_t>(v * mult);
        } else if (key == "id") {
          m.id = value;
        } else if (key == "sharing") {
          m.sharing = ToLower(value);
          if (m.sharing != "shared" && m.sharing != "private" && m.sharing != "locked") {
            return Error(node, "unsupported sharing value " + GoQuote(value));
          }
        } else if (key == "mode") {
          SF_ASSIGN_OR_RETURN(m.mode, parse_uint(8));
        } else if (key == "uid") {
          SF_ASSIGN_OR_RETURN(m.uid, parse_uint(10));
        } else if (key == "gid") {
          SF_ASSIGN_OR_RETURN(m.gid, parse_uint(10));
        } else if (key == "env") {
          m.env = value;
        } else {
          return Error(node, "unexpected key '" + key + "' in '" + field + "'");
        }
      }
      bool file_info = m.type == "secret" || m.type == "ssh" || m.type == "cache";
      if (!file_info && (m.mode || m.uid || m.gid)) {
        return Error(node, "mode, uid and gid are not allowed for \"" + m.type + "\" mounts");
      }
      if (ro_auto) m.readonly = !(m.type == "cache" || m.type == "tmpfs");
      if (m.type == "secret") {
        if (!m.from.empty()) return Error(node, "secret mount should not have a from");
        if (m.source.empty() && m.target.empty() && m.id.empty()) {
          return Error(node, "invalid secret mount. one of source, target required");
        }
        if (m.id.empty())
          m.id = !m.source.empty() ? m.source : m.target.substr(m.target.rfind('/') + 1);
        if (m.target.empty() && !m.env) m.target = "/run/secrets/" + m.id;
      }
      if (m.type == "ssh" && m.id.empty()) m.id = "default";
      if (m.type == "cache" && m.sharing.empty()) m.sharing = "shared";
      if (!m.sharing.empty() && m.type != "cache") {
        return Error(node, "invalid cache sharing set for " + m.type + " mount");
      }
      if (m.target.empty() && m.type != "secret" && m.type != "ssh") {
        return Error(node, "mount target is required");
      }
      if (m.type == "cache" && m.id.empty()) m.id = m.target;
      if (!m.from.empty()) {
        bool is_stage = false;
        SF_ASSIGN_OR_RETURN(int idx, FindStageRef(node, m.from, stage_index, &is_stage));
        if (is_stage) {
          m.from_stage = idx;
          st->deps.insert(idx);
        } else {
          StatusOr<ImageConfig> image = ImageConfigOf(node, m.from);
          if (!image.ok() && image.status().code() == StatusCode::kNotFound) {
            return NoStageOrImage(node, "RUN --mount=from=" + m.from, m.from, stage_index,
                                  image.status());
          }
          if (!image.ok()) return Wrap(node, image.status());
          AddExternal(m.from);
        }
      }
      CanonicalJson mj;
      mj.Field("type").String(m.type);
      mj.Field("target").String(m.target);
      mj.Field("source").String(m.source);
      mj.Field("from").String(m.from);
      mj.Field("id").String(m.id);
      mj.Field("sharing").String(m.sharing);
      mj.Field("readonly").Bool(m.readonly);
      mj.Field("required").Bool(m.required);
      mj.Field("size").Int(m.size_limit);
      if (m.mode) mj.Field("mode").Int(*m.mode);
      if (m.uid) mj.Field("uid").Int(*m.uid);
      if (m.gid) mj.Field("gid").Int(*m.gid);
      if (m.env) mj.Field("env").String(*m.env);
      if (!step.mounts.empty()) mounts.Punct(',');
      mj.AppendTo(&mounts);
      step.mounts.push_back(std::move(m));
    }
    mounts.Punct(']');
    // History: "RUN |2 A=1 B=2 /bin/sh -c make # buildkit", args in scope first.
    std::vector<std::string> parts;
    std::vector<std::string> arg_entries;
    std::map<std::string, size_t> arg_pos;
    for (const auto& [key, value] : st->args) {
      std::string entry = key + "=" + st->Lookup(key).value_or(value.value_or(""));
      if (auto it = arg_pos.find(key); it != arg_pos.end()) {
        arg_entries[it->second] = entry;
      } else {
        arg_pos[key] = arg_entries.size();
        arg_entries.push_back(entry);
      }
    }
    if (!arg_entries.empty()) parts.push_back("|" + std::to_string(arg_entries.size()));
    parts.insert(parts.end(), arg_entries.begin(), arg_entries.end());
    parts.insert(parts.end(), step.argv.begin(), step.argv.end());
    step.created_by = "RUN";
    for (const std::string& p : parts) step.created_by += " " + p;
    step.created_by += " # buildkit";
    canon.Field("user").String(config.user);
    canon.Field("workdir").String(config.working_dir);
    canon.Field("shell").Strings(config.shell);
    canon.Field("argv").Strings(step.argv);
    canon.Field("env").Strings(step.env);
    canon.Field("network").String(step.network);
    JsonWriter& docs = canon.Field("heredocs").Punct('[');
    for (const InlineFile& f : step.heredocs) {
      CanonicalJson doc;
      doc.Field("name").String(f.name);
      doc.Field("content").String(f.content);
      doc.Field("fd").Int(f.file_descriptor);
      if (&f != &step.heredocs.front()) docs.Punct(',');
      doc.AppendTo(&docs);
    }
    docs.Punct(']');
  } else if (cmd == "copy" || cmd == "add") {
    const bool add = cmd == "add";
    step.kind = add ? StepKind::kAdd : StepKind::kCopy;
    SF_ASSIGN_OR_RETURN(step.chown, expand(flags.String("chown")));
    SF_ASSIGN_OR_RETURN(step.chmod, expand(flags.String("chmod")));
    if (!step.chmod.empty()) {
      if (StatusOr<FileModeChange> mode = FileModeChange::Parse(step.chmod); !mode.ok()) {
        return Wrap(node, mode.status());
      }
    }
    step.link = flags.Bool("link");
    for (const std::string& e : flags.Strings("exclude")) {
      SF_ASSIGN_OR_RETURN(std::string x, expand(e));
      step.excludes.push_back(x);
    }
    if (add) {
      SF_ASSIGN_OR_RETURN(step.checksum, expand(flags.String("checksum")));
      if (flags.Used("keep-git-dir")) step.keep_git_dir = flags.Bool("keep-git-dir");
      if (flags.Used("unpack")) step.unpack = flags.Bool("unpack");
    } else {
      step.parents = flags.Bool("parents");
      if (flags.Used("from")) {
        step.from = flags.String("from");  // never expanded: see CheckStructure
        if (step.from.empty()) return Error(node, "--from must not be empty");
        bool is_stage = false;
        SF_ASSIGN_OR_RETURN(int idx, FindStageRef(node, step.from, stage_index, &is_stage));
        if (is_stage) {
          step.from_stage = idx;
          st->deps.insert(idx);
        } else {
          // Not a stage: an image, which must exist (checked now, so the build fails before
          // anything runs).
          StatusOr<ImageConfig> image = ImageConfigOf(node, step.from);
          if (!image.ok() && image.status().code() == StatusCode::kNotFound) {
            return NoStageOrImage(node, "COPY --from=" + flags.String("from"), step.from,
                                  stage_index, image.status());
          }
          if (!image.ok()) return Wrap(node, image.status());
          step.from_image = step.from;
          AddExternal(step.from);
        }
      }
    }
    std::map<std::string, const Heredoc*> docs;
    for (const Heredoc& h : node.heredocs) docs[h.name] = &h;
    for (size_t i = 0; i + 1 < node.args.size(); ++i) {
      const std::string& src = node.args[i];
      StatusOr<std::optional<Heredoc>> h = ParseHeredocWord(src);
      if (!node.json && h.ok() && h->has_value()) {
        const Heredoc* doc = docs.count((*h)->name) ? docs[(*h)->name] : nullptr;
        InlineFile f{(*h)->name, doc ? doc->content : "", (*h)->expand, (*h)->chomp, 0};
        if (f.chomp) f.content = ChompHeredocContent(f.content);
        if (f.expand) {
          // BuildKit's ExpandRaw: quotes are plain characters, `\` escapes whatever the
          // Dockerfile's escape token is (`\$` is `$`, `\\` is `\`, a `\` ending a line goes).
          ShellLexOptions body_options;
          body_options.skip_process_quotes = true;
          ShellLex body(body_options);
          WordMatches matches;
          StatusOr<std::string> v = body.ProcessWord(f.content, env, &matches);
          if (!v.ok()) return Wrap(node, v.status());
          WarnUndefinedVars(node, matches, *st);
          f.content = *v;
        }
        step.heredocs.push_back(std::move(f));
        continue;
      }
      SF_ASSIGN_OR_RETURN(std::string s, expand(src));
      step.sources.push_back(s);
    }
    SF_ASSIGN_OR_RETURN(step.dest, expand(node.args.back()));
    step.created_by = add ? "ADD" : "COPY";
    if (step.parents) step.created_by += " --parents";
    if (!step.chown.empty()) step.created_by += " --chown=" + step.chown;
    if (!step.chmod.empty()) step.created_by += " --chmod=" + step.chmod;
    for (const std::string& s : step.sources) step.created_by += " " + s;
    for (const InlineFile& f : step.heredocs) step.created_by += " <<" + f.name;
    step.created_by += " " + step.dest + " # buildkit";
    canon.Field("workdir").String(config.working_dir);
    canon.Field("sources").Strings(step.sources);
    canon.Field("dest").String(step.dest);
    canon.Field("from").String(step.from);
    canon.Field("chown").String(step.chown);
    canon.Field("chmod").String(step.chmod);
    canon.Field("link").Bool(step.link);
    canon.Field("parents").Bool(step.parents);
    canon.Field("excludes").Strings(step.excludes);
    canon.Field("checksum").String(step.checksum);
    for (auto [key, value] :
         {std::pair{"keep_git_dir", step.keep_git_dir}, std::pair{"unpack", step.unpack}}) {
      JsonWriter& w = canon.Field(key);
      value ? w.Bool(*value) : w.Null();
    }
    JsonWriter& inline_files = canon.Field("heredocs").Punct('[');
    for (const InlineFile& f : step.heredocs) {
      CanonicalJson doc;
      doc.Field("name").String(f.name);
      doc.Field("content").String(f.content);
      if (&f != &step.heredocs.front()) inline_files.Punct(',');
      doc.AppendTo(&inline_files);
    }
    inline_files.Punct(']');
  } else if (cmd == "env" || cmd == "label") {
    const bool is_env = cmd == "env";
    step.kind = is_env ? StepKind::kEnv : StepKind::kLabel;
    std::vector<std::pair<std::string, std::string>> pairs;
    for (size_t i = 0; i + 3 <= node.args.size(); i += 3) {
      SF_ASSIGN_OR_RETURN(std::string k, expand(node.args[i]));
      SF_ASSIGN_OR_RETURN(std::string v, expand(node.args[i + 1]));
      pairs.emplace_back(k, v);
    }
    for (size_t i = 0; i < pairs.size(); ++i) {
      if (node.args[i * 3 + 2].empty()) {
        Warn(node, "LegacyKeyValueFormat",
             "\"" + node.keyword + " key=value\" should be used instead of legacy \"" +
                 node.keyword + " key value\" format");
      }
      if (is_env && LooksSecret(pairs[i].first)) {
        Warn(node, "SecretsUsedInArgOrEnv",
             "Do not use ARG or ENV instructions for sensitive data (ENV " +
                 GoQuote(pairs[i].first) + ")");
      }
    }
    step.created_by = is_env ? "ENV" : "LABEL";
    JsonWriter& list = canon.Field("args").Punct('[');
    for (const auto& [k, v] : pairs) {
      if (is_env) {
        config.SetEnv(k, v);
        st->SetVar(k, v);
      } else {
        config.labels[k] = v;
      }
      step.created_by += " " + k + "=" + v;
      if (&k != &pairs.front().first) list.Punct(',');
      list.Punct('[').String(k).Punct(',').String(v).Punct(']');
    }
    list.Punct(']');
  } else if (cmd == "arg") {
    step.kind = StepKind::kArg;
    std::vector<std::string> commit;
    // The only field written while the words are read.
    JsonWriter& list = canon.Field("args").Punct('[');
    for (const std::string& word : node.args) {
      size_t eq = word.find('=');
      std::string key = word.substr(0, eq);
      std::optional<std::string> value;
      consumed_.insert(key);
      if (LooksSecret(key)) {
        Warn(node, "SecretsUsedInArgOrEnv",
             "Do not use ARG or ENV instructions for sensitive data (ARG " + GoQuote(key) + ")");
      }
      // As BuildKit's dispatchArg: the build arg, else the default, else the global ARG's value
      // (the automatic platform args are global ones). The name is never expanded.
      if (auto it = options_.build_args.find(key); it != options_.build_args.end()) {
        value = it->second;
      } else if (eq != std::string::npos) {
        SF_ASSIGN_OR_RETURN(std::string v, expand(word.substr(eq + 1)));
        value = v;
      } else {
        for (const auto& [mk, mv] : meta_args_) {
          if (mk == key) value = mv;
        }
        if (auto a = auto_args_.find(key); !value && a != auto_args_.end()) value = a->second;
      }
      if (value && !IsNonEnvArg(key)) st->SetVar(key, *value);
      st->args.emplace_back(key, value);
      st->declared_args.insert(key);
      commit.push_back(value ? key + "=" + *value : key);
      if (commit.size() > 1) list.Punct(',');
      list.Punct('[').String(key);
      if (value) list.Punct(',').String(*value);
      list.Punct(']');
    }
    list.Punct(']');
    step.created_by = "ARG";
    for (const std::string& c : commit) step.created_by += " " + c;
  } else if (cmd == "cmd" || cmd == "entrypoint") {
    const bool is_cmd = cmd == "cmd";
    step.kind = is_cmd ? StepKind::kCmd : StepKind::kEntrypoint;
    if (!node.json && config.shell.empty()) {  // with a SHELL, the shell form is deliberate
      Warn(node, "JSONArgsRecommended",
           "JSON arguments recommended for " + node.keyword +
               " to prevent unintended behavior related to OS signals");
    }
    std::vector<std::string> args =
        node.json
            ? node.args
            : (node.args.empty() ? std::vector<std::string>{} : WithShell(config, node.args[0]));
    if (is_cmd) {
      config.cmd = args;
      config.args_escaped = true;
      st->cmd_set = true;
    } else {
      config.entrypoint = args;
      if (!st->cmd_set) config.cmd.clear();
    }
    step.created_by = std::string(is_cmd ? "CMD " : "ENTRYPOINT ") + GoQuotedList(args);
    canon.Field("args").Strings(args);
  } else if (cmd == "expose") {
    step.kind = StepKind::kExpose;
    std::vector<std::string> raw = node.args;
    std::sort(raw.begin(), raw.end());
    std::vector<std::string> words;
    for (const std::string& p : raw) {
      StatusOr<std::vector<std::string>> w = lex_.ProcessWords(p, env);
      if (!w.ok()) return Wrap(node, w.status());
      words.insert(words.end(), w->begin(), w->end());
    }
    StatusOr<std::vector<std::string>> ports = ParsePorts(words);
    if (!ports.ok()) return Wrap(node, ports.status());
    for (const std::string& p : *ports) config.exposed_ports.insert(p);
    step.created_by = "EXPOSE " + GoList(*ports);
    canon.Field("args").Strings(*ports);
  } else if (cmd == "volume") {
    step.kind = StepKind::kVolume;
    std::vector<std::string> volumes;
    for (const std::string& v : node.args) {
      SF_ASSIGN_OR_RETURN(std::string x, expand(v));
      std::string trimmed(internal::TrimSpace(x));
      if (trimmed.empty()) return Error(node, "VOLUME specified can not be an empty string");
      volumes.push_back(trimmed);
      config.volumes.insert(trimmed);
    }
    step.created_by = "VOLUME " + GoList(volumes);
    canon.Field("args").Strings(volumes);
  } else if (cmd == "user") {
    step.kind = StepKind::kUser;
    SF_ASSIGN_OR_RETURN(config.user, expand(node.args[0]));
    step.created_by = "USER " + config.user;
    canon.Field("args").Punct('[').String(config.user).Punct(']');
  } else if (cmd == "workdir") {
    step.kind = StepKind::kWorkdir;
    SF_ASSIGN_OR_RETURN(std::string p, expand(node.args[0]));
    // Only the first WORKDIR of the stage (or of the stages it is built FROM) is checked: a base
    // image's working directory does not count, it may change.
    const bool absolute = !p.empty() && p[0] == '/';
    if (!absolute && !st->workdir_set) {
      Warn(node, "WorkdirRelativePath",
           "Relative workdir " + GoQuote(p) + " can have unexpected results if the base image "
                                              "changes");
    }
    st->workdir_set = true;
    // As BuildKit's NormalizeWorkdir: an absolute path is kept as written (trailing slash, `//`
    // and all: the config and the history show it so, the worker makes the cleaned path); a
    // relative one is joined to the current directory and cleaned; an empty one keeps it.
    std::string base = config.working_dir;
    if (base.empty() || base[0] != '/') base = CleanSlashPath("/" + base);
    if (p.empty()) p = base;
    config.working_dir = p[0] == '/' ? p : CleanSlashPath(base + "/" + p);
    step.created_by = "WORKDIR " + config.working_dir;
    canon.Field("args").Punct('[').String(config.working_dir).Punct(']');
  } else if (cmd == "shell") {
    step.kind = StepKind::kShell;
    config.shell = node.args;
    step.created_by = "SHELL " + GoList(node.args);
    canon.Field("args").Strings(node.args);
  } else if (cmd == "stopsignal") {
    step.kind = StepKind::kStopSignal;
    SF_ASSIGN_OR_RETURN(std::string sig, expand(node.args[0]));
    if (!ValidSignal(sig)) return Error(node, "Invalid signal: " + sig);
    config.stop_signal = sig;
    step.created_by = "STOPSIGNAL " + sig;
    canon.Field("args").Punct('[').String(sig).Punct(']');
  } else if (cmd == "healthcheck") {
    step.kind = StepKind::kHealthcheck;
    HealthConfig hc;
    std::string type = ToUpper(node.args[0]);
    if (type == "NONE") {
      hc.test = {"NONE"};
    } else {
      std::vector<std::string> rest(node.args.begin() + 1, node.args.end());
      hc.test = {node.json ? "CMD" : "CMD-SHELL"};
      hc.test.insert(hc.test.end(), rest.begin(), rest.end());
      struct Field {
        const char* flag;
        int64_t* out;
      } fields[] = {{"interval", &hc.interval_ns},
                    {"timeout", &hc.timeout_ns},
                    {"start-period", &hc.start_period_ns},
                    {"start-interval", &hc.start_interval_ns}};
      for (const Field& f : fields) {
        std::string v = flags.String(f.flag);
        if (v.empty()) continue;
        std::optional<int64_t> d = ParseGoDuration(v);
        if (!d) return Error(node, "time: invalid duration " + GoQuote(v));
        if (*d != 0 && *d < 1000000) {
          return Error(node, std::string("Interval \"") + f.flag + "\" cannot be less than 1ms");
        }
        *f.out = *d;
      }
      if (std::string r = flags.String("retries"); !r.empty()) {
        char* end = nullptr;
        long v = std::strtol(r.c_str(), &end, 10);
        if (*end != '\0') return Error(node, "invalid --retries value " + GoQuote(r));
        if (v < 0) return Error(node, "--retries cannot be negative (" + r + ")");
        hc.retries = static_cast<int>(v);
      }
    }
    config.healthcheck = hc;
    // BuildKit's history text is Go's %q of the *HealthcheckConfig: each duration quoted as
    // time.Duration prints, the retries as a quoted rune.
    step.created_by = "HEALTHCHECK &{" + GoQuotedList(hc.test);
    for (int64_t d : {hc.interval_ns, hc.timeout_ns, hc.start_period_ns, hc.start_interval_ns}) {
      step.created_by += " " + GoQuote(GoDuration(d));
    }
    step.created_by += " " + internal::GoQuoteRune(hc.retries) + "}";
    CanonicalJson args;
    args.Field("test").Strings(hc.test);
    args.Field("interval").Int(hc.interval_ns);
    args.Field("timeout").Int(hc.timeout_ns);
    args.Field("start_period").Int(hc.start_period_ns);
    args.Field("start_interval").Int(hc.start_interval_ns);
    args.Field("retries").Int(hc.retries);
    args.AppendTo(&canon.Field("args"));
  } else if (cmd == "onbuild") {
    step.kind = StepKind::kOnbuild;
    // The trigger as written, without the ONBUILD keyword; heredocs appended.
    std::string expr(internal::TrimSpace(node.original));
    expr = expr.substr(node.keyword.size());
    expr = std::string(internal::TrimSpace(expr));
    for (const Heredoc& h : node.heredocs) expr += "\n" + h.content + h.name;
    config.on_build.push_back(expr);
    canon.Field("args").Punct('[').String(expr).Punct(']');
    // BuildKit writes no history entry for ONBUILD: created_by stays empty.
  } else if (cmd == "maintainer") {
    step.kind = StepKind::kMaintainer;
    config.author = node.args[0];
    step.created_by = "MAINTAINER " + node.args[0];
    canon.Field("args").Punct('[').String(node.args[0]).Punct(']');
  } else {
    return UnknownInstruction(node);
  }
  std::optional<std::string> canonical = canon.Dump();
  // The key must be injective, so invalid bytes are refused rather than replaced.
  if (!canonical) return Error(node, "the instruction is not valid UTF-8");
  step.canonical = std::move(*canonical);
  // RUN, COPY, ADD and ARG leave the config as it was: share the last copy.
  const bool keeps_config = cmd == "run" || cmd == "copy" || cmd == "add" || cmd == "arg";
  if (!keeps_config || !st->snapshot) st->snapshot = std::make_shared<ImageConfig>(config);
  step.set_config(st->snapshot);
  stage.steps.push_back(std::move(step));
  return Status::Ok();
}

Status Resolver::ResolveStage(int index) {
  if (resolved_.count(index)) return Status::Ok();
  if (in_progress_.count(index)) {
    return Error(*sources_[index].from, "stage dependency cycle");  // forward references prevent it
  }
  in_progress_.insert(index);
  const StageSource& src = sources_[index];
  const Node& from = *src.from;

  ResolvedStage stage;
  stage.index = index;
  stage.name = src.name;
  stage.display_name = src.name.empty() ? "stage-" + std::to_string(index) : src.name;
  stage.line = from.start_line;

  EnvLookup global = [this](const std::string& name) -> std::optional<std::string> {
    for (auto it = meta_args_.rbegin(); it != meta_args_.rend(); ++it) {
      if (it->first == name) return it->second;
    }
    if (auto a = auto_args_.find(name); a != auto_args_.end()) return a->second;
    return std::nullopt;
  };
  StatusOr<std::string> base = lex_.ProcessWord(from.args[0], global);
  if (!base.ok()) return Wrap(from, base.status());
  stage.base = *base;
  if (stage.base.empty()) {
    return Error(from, "base name (" + from.args[0] + ") should not be blank");
  }
  Flags flags = FlagsFor("from");
  if (Status s = flags.Parse(from.flags); !s.ok()) return Wrap(from, s);  // checked before
  std::string platform;
  if (flags.Used("platform")) {
    StatusOr<std::string> p = lex_.ProcessWord(flags.String("platform"), global);
    if (!p.ok()) return Wrap(from, p.status());
    platform = *p;
  }

  // Only a name refers to a stage in FROM (a number is an image name), and only as written: names
  // are kept lower-cased, so `FROM Build` is an image even after `AS build` (BuildKit's addState).
  // Of two earlier stages with the name, the later one.
  bool is_stage = false;
  int base_stage = -1;
  for (int i = index - 1; i >= 0 && !is_stage; --i) {
    if (!sources_[i].name.empty() && sources_[i].name == stage.base) {
      is_stage = true;
      base_stage = i;
    }
  }
  StageState st;
  if (is_stage) {
    SF_RETURN_IF_ERROR(ResolveStage(base_stage));
    stage.base_stage = base_stage;
    const ResolvedStage& parent = resolved_[base_stage];
    stage.base_config = parent.steps.empty() ? parent.base_config : parent.steps.back().config();
    stage.platform = platform.empty() ? parent.platform : platform;
    st.deps.insert(base_stage);
    const InheritedState& from_parent = inherited_[base_stage];
    st.vars = from_parent.vars;
    st.args = from_parent.args;
    st.workdir_set = from_parent.workdir_set;
    st.declared_args = from_parent.declared_args;
  } else {
    stage.platform = platform.empty() ? ParsePlatform(options_.platform).str() : platform;
    if (stage.base != "scratch") {  // exactly, as docker build: "SCRATCH" is an image name
      AddExternal(stage.base);
      StatusOr<ImageConfig> image = ImageConfigOf(from, stage.base);
      if (!image.ok() && image.status().code() == StatusCode::kNotFound) {
        return NoStageOrImage(from, QuoteNode(from), stage.base, index, image.status());
      }
      if (!image.ok()) return Wrap(from, image.status());
      stage.base_config = *image;
    } else {
      stage.base_config.working_dir = "/";  // BuildKit's empty image config
    }
  }
  if (!stage.base_config.GetEnv("PATH")) stage.base_config.SetEnv("PATH", kDefaultPath);

  // The base image's ONBUILD triggers run first, as docker build does. Their errors name the FROM
  // and the trigger: "Dockerfile:3: FROM base (ONBUILD COPY a b): ...".
  std::vector<Node> triggers;
  for (const std::string& expr : stage.base_config.on_build) {
    const std::string quote = QuoteNode(from) + " (ONBUILD " + QuoteInstruction(expr) + ")";
    StatusOr<ParsedDockerfile> t = ParseDockerfile(expr, kTriggerFile);
    if (!t.ok()) return TriggerParseError(from, quote, t.status());
    for (Node& n : t->nodes) {
      n.start_line = n.end_line = from.start_line;
      triggers.push_back(std::move(n));
    }
    for (size_t i = triggers.size() - t->nodes.size(); i < triggers.size(); ++i) {
      trigger_quotes_[&triggers[i]] = quote;
    }
  }
  // The entries name nodes of `triggers`, which dies with this call.
  struct ForgetTriggers {
    std::map<const Node*, std::string>& quotes;
    const std::vector<Node>& nodes;
    ~ForgetTriggers() {
      for (const Node& n : nodes) quotes.erase(&n);
    }
  } forget{trigger_quotes_, triggers};
  for (const Node& n : triggers) SF_RETURN_IF_ERROR(CheckStructure(n, true));
  stage.base_config.on_build.clear();
  st.config = stage.base_config;
  st.SetVarsFromEnv(st.config.env);
  stage.steps.reserve(triggers.size() + src.commands.size());
  resolved_[index] = std::move(stage);

  for (const Node& n : triggers) SF_RETURN_IF_ERROR(Dispatch(index, n, &st));
  for (const Node* n : src.commands) SF_RETURN_IF_ERROR(Dispatch(index, *n, &st));

  resolved_[index].deps.assign(st.deps.begin(), st.deps.end());
  inherited_[index] = {std::move(st.vars), std::move(st.args), st.workdir_set,
                       std::move(st.declared_args)};
  for (int dep : st.deps) SF_RETURN_IF_ERROR(ResolveStage(dep));
  in_progress_.erase(index);
  order_.push_back(index);
  return Status::Ok();
}

bool Resolver::CheckEnabled(std::string_view rule, const Node* instruction) const {
  if (checks_.Skips(rule)) return false;
  if (instruction == nullptr || instruction->comments.empty()) return true;
  std::optional<CheckConfig> extra = CommentCheckConfig(*instruction);
  return !extra || !extra->Skips(rule);
}

void Resolver::Warn(const Node& at, std::string_view rule, std::string msg,
                    const Node* instruction) {
  if (!CheckEnabled(rule, instruction)) return;
  const CheckRule* r = std::find_if(std::begin(kCheckRules), std::end(kCheckRules),
                                    [&](const CheckRule& k) { return k.name == rule; });
  SF_CHECK(r != std::end(kCheckRules));
  CheckWarning w{std::string(r->name), std::move(msg), std::string(r->description),
                 std::string(r->url), at.start_line};
  auto same = [&](const CheckWarning& o) {
    return o.line == w.line && o.rule == w.rule && o.message == w.message;
  };
  if (std::none_of(check_warnings_.begin(), check_warnings_.end(), same)) {
    check_warnings_.push_back(std::move(w));
  }
}

// BuildKit's reportUnmatchedVariables: names declared by an ARG (even without a value) and the
// SBOM scan args are not reported; a name close to a defined one is suggested.
void Resolver::WarnUndefinedVars(const Node& node, const WordMatches& matches,
                                 const StageState& st) {
  for (const std::string& name : matches.unmatched) {
    if (st.declared_args.count(name) || name == "BUILDKIT_SBOM_SCAN_CONTEXT" ||
        name == "BUILDKIT_SBOM_SCAN_STAGE") {
      continue;
    }
    std::vector<std::string> defined;
    for (const std::string& kv : st.config.env) defined.push_back(kv.substr(0, kv.find('=')));
    for (const auto& [k, v] : st.args) {
      if (v) defined.push_back(k);
    }
    // suggest.Search: the first name at the smallest Levenshtein distance under 3.
    std::string near;
    size_t best = 3;
    for (const std::string& d : defined) {
      size_t dist = EditDistance(name, d, false);
      if (dist < best) near = d, best = dist;
    }
    Warn(node, "UndefinedVar",
         "Usage of undefined variable '$" + name + "'" +
             (near.empty() ? "" : " (did you mean $" + near + "?)"));
  }
}

bool IsAscii(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}
bool IsUpper(std::string_view s) {
  if (IsAscii(s))
    return std::none_of(s.begin(), s.end(), [](char c) { return c >= 'a' && c <= 'z'; });
  return ToUpper(s) == s;
}
bool IsLower(std::string_view s) {
  if (IsAscii(s))
    return std::none_of(s.begin(), s.end(), [](char c) { return c >= 'A' && c <= 'Z'; });
  return ToLower(s) == s;
}

// The checks BuildKit runs on the parse tree, before any stage is built, in its order: while
// parsing (MaintainerDeprecated, StageNameCasing, FromAsCasing, in every stage), then duplicate
// stage names, then the casing of the FROMs and the stages' instructions (not the global ARGs)
// against their majority.
void Resolver::CheckStatically() {
  for (const Node& node : parsed_.nodes) {
    const std::string cmd = node.command();
    if (cmd == "maintainer") {
      Warn(node, "MaintainerDeprecated",
           "Maintainer instruction is deprecated in favor of using label");
    }
    if (cmd == "from" && node.args.size() == 3) {
      const std::string& as = node.args[1];
      if (!IsLower(node.args[2])) {
        Warn(node, "StageNameCasing", "Stage name '" + node.args[2] + "' should be lowercase");
      }
      // A mixed-case FROM is ConsistentInstructionCasing's finding, not this one's.
      if ((IsUpper(node.keyword) && !IsUpper(as)) || (IsLower(node.keyword) && !IsLower(as))) {
        Warn(node, "FromAsCasing",
             "'" + as + "' and '" + node.keyword + "' keywords' casing do not match");
      }
    }
  }
  std::set<std::string> names;
  for (const StageSource& stage : sources_) {
    if (!stage.name.empty() && !names.insert(stage.name).second) {
      Warn(*stage.from, "DuplicateStageName",
           "Duplicate stage name " + GoQuote(stage.name) + ", stage names should be unique");
    }
  }
  std::vector<const Node*> instructions;
  for (const StageSource& stage : sources_) {
    instructions.push_back(stage.from);
    instructions.insert(instructions.end(), stage.commands.begin(), stage.commands.end());
  }
  size_t upper = 0, lower = 0;
  for (const Node* node : instructions) {
    upper += IsUpper(node->keyword) && !IsLower(node->keyword);
    lower += IsLower(node->keyword);
  }
  const bool majority_lower = lower > upper;
  for (const Node* node : instructions) {
    if (majority_lower ? !IsLower(node->keyword) : !IsUpper(node->keyword)) {
      Warn(*node, "ConsistentInstructionCasing",
           "Command '" + node->keyword + "' should match the case of the command majority (" +
               (majority_lower ? "lowercase" : "uppercase") + ")",
           nullptr);
    }
  }
}

StatusOr<BuildPlan> Resolver::Run(std::string_view text) {
  SF_ASSIGN_OR_RETURN(parsed_, ParseDockerfile(text, options_.filename));
  ShellLexOptions lex_options;
  lex_options.escape_token = parsed_.escape_token;
  lex_ = ShellLex(lex_options);
  // The frontend: BuildKit's own, or an image we cannot run (see IsBuiltinFrontend).
  auto refuse_frontend = [](const std::string& where, const std::string& ref) {
    return InvalidArgumentError(where + ": stagefarm cannot run the frontend image " +
                                GoQuote(ref.substr(0, ref.find(' '))) +
                                ": its only frontend is the Dockerfile frontend 1.18 built into "
                                "BuildKit v0.24 (# syntax=docker/dockerfile:1)");
  };
  if (auto it = options_.build_args.find("BUILDKIT_SYNTAX"); it != options_.build_args.end()) {
    if (!IsBuiltinFrontend(internal::TrimSpace(it->second))) {
      return refuse_frontend("--build-arg BUILDKIT_SYNTAX=" + it->second,
                             std::string(internal::TrimSpace(it->second)));
    }
  } else {
    for (const Directive& d : parsed_.directives) {
      if (d.name == "syntax" && !IsBuiltinFrontend(d.value)) {
        return refuse_frontend(
            options_.filename + ":" + std::to_string(d.line) + ": # syntax=" + d.value, d.value);
      }
    }
  }

  Platform target = ParsePlatform(options_.platform);
  Platform build =
      ParsePlatform(options_.build_platform.empty() ? options_.platform : options_.build_platform);
  // TARGETSTAGE is added once the stages are known.
  auto_args_ = {{"TARGETPLATFORM", target.str()}, {"TARGETOS", target.os},
                {"TARGETARCH", target.arch},      {"TARGETVARIANT", target.variant},
                {"TARGETOSVERSION", ""},          {"BUILDPLATFORM", build.str()},
                {"BUILDOS", build.os},            {"BUILDARCH", build.arch},
                {"BUILDVARIANT", build.variant},  {"BUILDOSVERSION", ""}};

  // Split into the global ARGs and the stages; check every instruction's shape and flags.
  std::vector<const Node*> meta;
  for (const Node& node : parsed_.nodes) {
    SF_RETURN_IF_ERROR(CheckStructure(node, false));
    const std::string command = node.command();
    const std::string_view cmd = command;  // compared with literals below
    if (cmd == "from") {
      StageSource s;
      s.index = static_cast<int>(sources_.size());
      s.from = &node;
      if (node.args.size() == 3) {
        // A name may be given twice (BuildKit only warns): --target and --from name the last.
        s.name = ToLower(node.args[2]);
        by_name_[s.name] = s.index;
      }
      sources_.push_back(std::move(s));
    } else if (sources_.empty()) {
      if (cmd != "arg") return Error(node, "no build stage in current context");
      meta.push_back(&node);
    } else {
      sources_.back().commands.push_back(&node);
    }
  }
  if (sources_.empty()) {
    return InvalidArgumentError(options_.filename + ": no FROM instruction: nothing to build");
  }
  // TARGETSTAGE: the --target as given, else the last stage's name, else "default".
  std::string& target_stage = auto_args_["TARGETSTAGE"];
  target_stage = !options_.target.empty() ? options_.target : sources_.back().name;
  if (target_stage.empty()) target_stage = "default";
  // A build arg replaces an automatic value (BuildKit's defaultArgs).
  for (auto& [key, value] : auto_args_) {
    if (auto it = options_.build_args.find(key); it != options_.build_args.end()) {
      value = it->second;
    }
  }
  SF_RETURN_IF_ERROR(ResolveMetaArgs(meta));
  // As docker build, the build arg replaces the directive, which is then not even read.
  if (auto it = options_.build_args.find("BUILDKIT_DOCKERFILE_CHECK");
      it != options_.build_args.end()) {
    StatusOr<CheckConfig> config = ParseCheckConfig(it->second);
    if (!config.ok()) {
      return InvalidArgumentError("--build-arg BUILDKIT_DOCKERFILE_CHECK=" + it->second + ": " +
                                  config.status().message());
    }
    checks_ = *config;
  } else {
    for (const Directive& d : parsed_.directives) {
      if (d.name != "check") continue;
      StatusOr<CheckConfig> config = ParseCheckConfig(d.value);
      if (!config.ok()) {
        return InvalidArgumentError(options_.filename + ":" + std::to_string(d.line) +
                                    ": # check=" + d.value + ": " + config.status().message());
      }
      checks_ = *config;
      break;
    }
  }
  // The parser's findings read "Dockerfile:<line>: NoEmptyContinuation: Empty continuation line".
  for (const std::string& w : parsed_.warnings) {
    Node at;
    at.start_line = std::atoi(w.c_str() + options_.filename.size() + 1);
    Warn(at, "NoEmptyContinuation", "Empty continuation line", nullptr);
  }
  CheckStatically();

  int target_index = static_cast<int>(sources_.size()) - 1;
  if (!options_.target.empty()) {
    auto it = by_name_.find(ToLower(options_.target));
    if (it == by_name_.end()) {
      std::vector<std::string> names;
      for (const auto& [name, idx] : by_name_) names.push_back(name);
      std::optional<std::string> near = NearestName(options_.target, names);
      return NotFoundError(options_.filename + ": target stage " + GoQuote(options_.target) +
                           " could not be found" +
                           (near ? " (did you mean " + GoQuote(*near) + "?)" : ""));
    }
    target_index = it->second;
  }
  SF_RETURN_IF_ERROR(ResolveStage(target_index));

  BuildPlan plan;
  for (int idx : order_) {
    if (idx == target_index) plan.target = static_cast<int>(plan.stages.size());
    plan.stages.push_back(std::move(resolved_[idx]));
  }
  plan.external_images = external_;
  if (checks_.error && !check_warnings_.empty()) {
    // As docker build with `# check=error=true`: the findings fail the build.
    std::set<std::string> rules;
    for (const CheckWarning& w : check_warnings_) rules.insert(w.rule);
    std::string msg = options_.filename + ": lint violation found for rules:";
    for (const std::string& r : rules) msg += (msg.back() == ':' ? " " : ", ") + r;
    msg += " (# check=error=true)";
    for (const CheckWarning& w : check_warnings_) msg += "\n  " + CheckLine(w);
    return FailedPreconditionError(std::move(msg));
  }
  for (const CheckWarning& w : check_warnings_) plan.warnings.push_back(CheckLine(w));
  plan.checks = std::move(check_warnings_);
  for (const auto& [key, value] : options_.build_args) {
    if (!consumed_.count(key) && !IsBuiltinArg(key) && !auto_args_.count(key)) {
      plan.warnings.push_back("build arg " + key + " was not consumed: no ARG " + key +
                              " in the stages built");
    }
  }
  for (const Directive& d : parsed_.directives) plan.directives.emplace_back(d.name, d.value);
  return plan;
}

}  // namespace

const std::map<std::string, std::map<std::string, FlagKind>, std::less<>>& InstructionFlags() {
  using Tables = std::map<std::string, std::map<std::string, FlagKind>, std::less<>>;
  static const Tables kTables = [] {
    Tables t;
    for (const char* cmd : {"copy", "add"}) {
      t[cmd]["chown"] = FlagKind::kString;
      t[cmd]["chmod"] = FlagKind::kString;
      t[cmd]["link"] = FlagKind::kBool;
      t[cmd]["exclude"] = FlagKind::kStrings;
    }
    t["copy"]["from"] = FlagKind::kString;
    t["copy"]["parents"] = FlagKind::kBool;
    t["add"]["keep-git-dir"] = FlagKind::kBool;
    t["add"]["checksum"] = FlagKind::kString;
    t["add"]["unpack"] = FlagKind::kBool;
    t["run"]["mount"] = FlagKind::kStrings;
    t["run"]["network"] = FlagKind::kString;
    t["run"]["device"] = FlagKind::kStrings;  // refused: BuildKit has it in its labs frontend only
    t["from"]["platform"] = FlagKind::kString;
    for (const char* n : {"interval", "timeout", "start-period", "start-interval", "retries"}) {
      t["healthcheck"][n] = FlagKind::kString;
    }
    return t;
  }();
  return kTables;
}

std::string_view StepKindName(StepKind kind) {
  switch (kind) {
    case StepKind::kRun:
      return "RUN";
    case StepKind::kCopy:
      return "COPY";
    case StepKind::kAdd:
      return "ADD";
    case StepKind::kEnv:
      return "ENV";
    case StepKind::kLabel:
      return "LABEL";
    case StepKind::kCmd:
      return "CMD";
    case StepKind::kEntrypoint:
      return "ENTRYPOINT";
    case StepKind::kExpose:
      return "EXPOSE";
    case StepKind::kVolume:
      return "VOLUME";
    case StepKind::kUser:
      return "USER";
    case StepKind::kWorkdir:
      return "WORKDIR";
    case StepKind::kArg:
      return "ARG";
    case StepKind::kShell:
      return "SHELL";
    case StepKind::kStopSignal:
      return "STOPSIGNAL";
    case StepKind::kHealthcheck:
      return "HEALTHCHECK";
    case StepKind::kOnbuild:
      return "ONBUILD";
    case StepKind::kMaintainer:
      return "MAINTAINER";
  }
  return "?";
}

const ImageConfig& ResolvedStep::EmptyConfig() {
  static const ImageConfig empty;
  return empty;
}

ImageConfig& ResolvedStep::mutable_config() {
  if (!config_ || config_.use_count() > 1) config_ = std::make_shared<ImageConfig>(config());
  // This step is the only owner, and every config is made as a non-const ImageConfig.
  return const_cast<ImageConfig&>(*config_);
}

int BuildPlan::PositionOf(int original_index) const {
  for (size_t i = 0; i < stages.size(); ++i) {
    if (stages[i].index == original_index) return static_cast<int>(i);
  }
  return -1;
}

StatusOr<BuildPlan> Resolve(std::string_view dockerfile_text, const BuildOptions& options,
                            const ImageResolver& resolver) {
  Resolver r(options, resolver);
  return r.Run(dockerfile_text);
}

std::string DescribePlan(const BuildPlan& plan) {
  std::string out;
  for (size_t i = 0; i < plan.stages.size(); ++i) {
    const ResolvedStage& s = plan.stages[i];
    out += "stage " + std::to_string(s.index) + " " + s.display_name;
    if (static_cast<int>(i) == plan.target) out += " (target)";
    out += "\n  line " + std::to_string(s.line) + ": FROM " + s.base;
    if (s.base_stage >= 0) out += " (stage " + std::to_string(s.base_stage) + ")";
    out += "  platform " + s.platform + "\n";
    if (!s.deps.empty()) {
      out += "  needs stages:";
      for (int d : s.deps) out += " " + std::to_string(d);
      out += "\n";
    }
    for (const ResolvedStep& step : s.steps) {
      out += "  line " + std::to_string(step.line) + ": " + std::string(StepKindName(step.kind));
      out += step.makes_layer() ? " [layer]" : "";
      out += "\n    " + step.text + "\n";
      if (!step.created_by.empty()) out += "    history: " + step.created_by + "\n";
      if (step.kind == StepKind::kRun) {
        constexpr auto kReplace = Json::error_handler_t::replace;  // display only
        out += "    argv: " + Json(step.argv).dump(-1, ' ', false, kReplace) + "\n";
        out += "    env: " + Json(step.env).dump(-1, ' ', false, kReplace) + "\n";
        if (!step.config().user.empty()) out += "    user: " + step.config().user + "\n";
        if (!step.config().working_dir.empty())
          out += "    workdir: " + step.config().working_dir + "\n";
      }
      if (step.from_stage >= 0) out += "    from stage " + std::to_string(step.from_stage) + "\n";
      if (!step.from_image.empty()) out += "    from image " + step.from_image + "\n";
    }
  }
  if (!plan.external_images.empty()) {
    out += "images:";
    for (const std::string& img : plan.external_images) out += " " + img;
    out += "\n";
  }
  for (const std::string& w : plan.warnings) out += "warning: " + w + "\n";
  return out;
}

}  // namespace stagefarm::frontend
