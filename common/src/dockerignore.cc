#include "stagefarm/common/dockerignore.h"

#include <sstream>

namespace stagefarm {
namespace {

// Cleans a pattern like Go's filepath.Clean: no "./", no duplicate or trailing slashes, no
// leading "/".
std::string CleanPattern(std::string p) {
  std::vector<std::string> parts;
  std::stringstream ss(p);
  std::string part;
  while (std::getline(ss, part, '/')) {
    if (part.empty() || part == ".") continue;
    if (part == "..") {
      if (!parts.empty()) parts.pop_back();
      continue;
    }
    parts.push_back(part);
  }
  std::string out;
  for (const auto& x : parts) out += (out.empty() ? "" : "/") + x;
  return out;
}

StatusOr<std::string> PatternToRegex(const std::string& p) {
  std::string re = "^";
  for (size_t i = 0; i < p.size(); ++i) {
    char c = p[i];
    if (c == '*') {
      if (i + 1 < p.size() && p[i + 1] == '*') {
        ++i;
        if (i + 1 < p.size() && p[i + 1] == '/') {
          ++i;
          re += "(.*/)?";
        } else {
          re += ".*";
        }
      } else {
        re += "[^/]*";
      }
    } else if (c == '?') {
      re += "[^/]";
    } else if (c == '[') {
      size_t end = p.find(']', i + 1);
      if (end == std::string::npos) return InvalidArgumentError("unterminated [ in \"" + p + "\"");
      std::string cls = p.substr(i + 1, end - i - 1);
      if (!cls.empty() && cls[0] == '^') cls[0] = '^';
      re += "[" + cls + "]";
      i = end;
    } else if (c == '\\' && i + 1 < p.size()) {
      ++i;
      re += "\\";
      re += p[i];
    } else if (std::string_view(".+()|{}$^").find(c) != std::string_view::npos) {
      re += "\\";
      re += c;
    } else {
      re += c;
    }
  }
  return re + "$";
}

}  // namespace

StatusOr<DockerIgnore> DockerIgnore::Parse(std::string_view text) {
  DockerIgnore di;
  std::stringstream ss{std::string(text)};
  std::string line;
  int n = 0;
  while (std::getline(ss, line)) {
    ++n;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    size_t a = line.find_first_not_of(" \t");
    if (a == std::string::npos || line[a] == '#') continue;
    line = line.substr(a, line.find_last_not_of(" \t") - a + 1);
    Pattern pat;
    if (line[0] == '!') {
      pat.exclusion = true;
      line = line.substr(1);
    }
    std::string cleaned = CleanPattern(line);
    if (cleaned.empty()) continue;
    StatusOr<std::string> re = PatternToRegex(cleaned);
    if (!re.ok()) return re.status().Annotate(".dockerignore:" + std::to_string(n));
    try {
      pat.re = std::regex(*re, std::regex::ECMAScript | std::regex::optimize);
    } catch (const std::regex_error& e) {
      return InvalidArgumentError(".dockerignore:" + std::to_string(n) + ": bad pattern \"" +
                                  line + "\"");
    }
    di.patterns_.push_back(std::move(pat));
  }
  return di;
}

bool DockerIgnore::Excluded(std::string_view path) const {
  bool excluded = false;
  std::string p(path);
  for (const Pattern& pat : patterns_) {
    // The pattern applies to the path or any of its parent directories.
    bool match = std::regex_match(p, pat.re);
    for (size_t slash = p.find('/'); !match && slash != std::string::npos;
         slash = p.find('/', slash + 1)) {
      match = std::regex_match(p.substr(0, slash), pat.re);
    }
    if (match) excluded = !pat.exclusion;
  }
  return excluded;
}

}  // namespace stagefarm
