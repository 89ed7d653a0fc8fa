#include "stagefarm/common/dockerignore.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <optional>

#include "stagefarm/common/clean_path.h"

#include "stagefarm/common/unique_fd.h"

namespace stagefarm {
namespace {

using Token = DockerIgnore::Token;

std::string_view Trim(std::string_view s) {
  constexpr std::string_view kSpace = " \t\r\n\v\f";
  size_t a = s.find_first_not_of(kSpace);
  if (a == std::string_view::npos) return {};
  return s.substr(a, s.find_last_not_of(kSpace) - a + 1);
}

// Decodes one UTF-8 character at s[i] (Go's utf8.DecodeRuneInString: a bad byte is U+FFFD,
// length 1).
std::pair<uint32_t, size_t> DecodeRune(std::string_view s, size_t i) {
  auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = b(i);
  if (c < 0x80) return {c, 1};
  size_t len = c >= 0xF0 && c < 0xF8 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 0;
  if (len == 0 || i + len > s.size()) return {0xFFFD, 1};
  uint32_t r = c & (0x7F >> len);
  for (size_t k = 1; k < len; ++k) {
    if ((b(i + k) & 0xC0) != 0x80) return {0xFFFD, 1};
    r = (r << 6) | (b(i + k) & 0x3F);
  }
  return {r, len};
}

// Compiles a cleaned pattern as moby's patternmatcher reads it, with filepath.Match's syntax
// checks: an unterminated or empty class, or a trailing "\", is an error.
StatusOr<std::vector<Token>> Compile(std::string_view p) {
  std::vector<Token> out;
  auto bad = [&](const char* why) {
    return InvalidArgumentError("bad pattern \"" + std::string(p) + "\": " + why);
  };
  size_t i = 0;
  while (i < p.size()) {
    char c = p[i];
    Token t;
    if (c == '*') {
      if (i + 1 < p.size() && p[i + 1] == '*') {
        i += 2;
        if (i < p.size() && p[i] == '/') ++i;  // "**/" is "**"
        t.kind = i == p.size() ? Token::kAnyRest : Token::kDoubleStar;
      } else {
        t.kind = Token::kStar;
        ++i;
      }
    } else if (c == '?') {
      t.kind = Token::kQuestion;
      ++i;
    } else if (c == '\\') {
      if (i + 1 == p.size()) return bad("trailing \\");
      t.ch = p[i + 1];
      i += 2;
    } else if (c == '[') {
      t.kind = Token::kClass;
      ++i;
      if (i < p.size() && p[i] == '^') {
        t.negated = true;
        ++i;
      }
      // One possibly escaped character of a class; '-' and ']' must be escaped.
      auto esc = [&]() -> std::optional<uint32_t> {
        if (i >= p.size() || p[i] == '-' || p[i] == ']') return std::nullopt;
        if (p[i] == '\\') {
          ++i;
          if (i >= p.size()) return std::nullopt;
        }
        auto [r, n] = DecodeRune(p, i);
        i += n;
        return r;
      };
      for (;;) {
        if (i < p.size() && p[i] == ']' && !t.ranges.empty()) {
          ++i;
          break;
        }
        std::optional<uint32_t> lo = esc();
        if (!lo) return bad("malformed character class");
        uint32_t hi = *lo;
        if (i < p.size() && p[i] == '-') {
          ++i;
          std::optional<uint32_t> h = esc();
          if (!h) return bad("malformed character range");
          hi = *h;
        }
        t.ranges.emplace_back(*lo, hi);
      }
    } else {
      t.ch = c;
      ++i;
    }
    out.push_back(std::move(t));
  }
  return out;
}

bool ClassMatches(const Token& t, uint32_t r) {
  bool in = false;
  for (const auto& [lo, hi] : t.ranges) in = in || (lo <= r && r <= hi);
  return in != t.negated;
}

// Runs `tokens` over `s` as an NFA, one byte position at a time (no backtracking: time is
// O(tokens * |s|) whatever the pattern). States are token positions; "**" (the regexp "(.*/)?")
// also has an "inside" state. Reports, for every k where s[k] == '/' or k == |s|, whether the
// pattern matches s[0, k) whole, through `on_match(k)`; returns true as soon as it does. With
// `prefix_only`, instead returns whether any state is still alive after all of s (the pattern
// could match some longer path starting with s).
template <typename OnMatch>
bool RunTokens(const std::vector<Token>& tokens, std::string_view s, bool prefix_only,
               const OnMatch& on_match) {
  const size_t n = tokens.size(), m = s.size();
  const size_t width = 2 * (n + 1);  // [0, n]: at token i; [n+1, 2n+1]: inside the "**" at i
  // Rows for positions si..si+4 (a character is at most 4 bytes), reused as a ring.
  std::vector<std::vector<char>> rows(5, std::vector<char>(width, 0));
  auto row = [&](size_t si) -> std::vector<char>& { return rows[si % 5]; };
  row(0)[0] = 1;
  for (size_t si = 0; si <= m; ++si) {
    std::vector<char>& cur = row(si);
    // Epsilon moves: "*", "**" and a trailing "**" may match nothing.
    for (size_t i = 0; i < n; ++i) {
      if (cur[i] && tokens[i].kind != Token::kLiteral && tokens[i].kind != Token::kQuestion &&
          tokens[i].kind != Token::kClass) {
        cur[i + 1] = 1;
      }
    }
    if (si == m || s[si] == '/') {
      if (cur[n] && on_match(si)) return true;
    }
    if (si == m) {
      if (prefix_only) {
        for (char alive : cur) {
          if (alive) return true;
        }
      }
      return false;
    }
    const char c = s[si];
    auto [rune, len] = DecodeRune(s, si);
    std::vector<char>& next1 = row(si + 1);
    std::vector<char>& nextr = row(si + len);
    bool any = false;
    for (size_t i = 0; i < n; ++i) {
      const Token& t = tokens[i];
      if (cur[n + 1 + i]) {  // inside "**": anything, and a "/" may end it
        next1[n + 1 + i] = 1;
        if (c == '/') next1[i + 1] = 1;
        any = true;
      }
      if (!cur[i]) continue;
      any = true;
      switch (t.kind) {
        case Token::kLiteral:
          if (c == t.ch) next1[i + 1] = 1;
          break;
        case Token::kQuestion:
          if (c != '/') nextr[i + 1] = 1;
          break;
        case Token::kClass:
          if (ClassMatches(t, rune)) nextr[i + 1] = 1;
          break;
        case Token::kStar:
          if (c != '/') next1[i] = 1;
          break;
        case Token::kAnyRest:
          next1[i] = 1;
          break;
        case Token::kDoubleStar:
          next1[n + 1 + i] = 1;
          if (c == '/') next1[i + 1] = 1;
          break;
      }
    }
    std::fill(cur.begin(), cur.end(), 0);  // this row is reused for position si + 5
    if (!any) {
      // No state left: nothing more can match, unless a later row was already reached.
      bool later = false;
      for (size_t k = si + 1; k <= std::min(m, si + 4) && !later; ++k) {
        for (char alive : row(k)) later = later || alive;
      }
      if (!later) return false;
    }
  }
  return false;
}

bool HasSuffix(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

}  // namespace

StatusOr<DockerIgnore::Pattern> DockerIgnore::Compiled(std::string cleaned, bool exclusion) {
  Pattern pat;
  pat.exclusion = exclusion;
  SF_ASSIGN_OR_RETURN(pat.tokens, Compile(cleaned));
  pat.cleaned = std::move(cleaned);
  // moby matches "**text" (only literal text after a leading "**") as a plain suffix.
  if (pat.tokens.size() >= 1 && pat.cleaned.rfind("**", 0) == 0 &&
      (pat.tokens[0].kind == Token::kDoubleStar || pat.tokens[0].kind == Token::kAnyRest)) {
    bool literal = pat.cleaned.find_first_of("*?[]\\", 2) == std::string::npos;
    if (literal) {
      pat.suffix_match = true;
      pat.suffix = pat.cleaned.substr(2);
    }
  }
  return pat;
}

StatusOr<DockerIgnore> DockerIgnore::Parse(std::string_view text, std::string_view filename) {
  DockerIgnore di;
  int n = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    std::string_view line = text.substr(pos, nl - pos);
    pos = nl + 1;
    if (++n == 1 && line.substr(0, 3) == "\xEF\xBB\xBF") line.remove_prefix(3);
    if (!line.empty() && line[0] == '#') continue;  // before trimming, as docker does
    line = Trim(line);
    if (line.empty()) continue;
    bool exclusion = false;
    if (line[0] == '!') {
      exclusion = true;
      line = Trim(line.substr(1));
    }
    auto error = [&](const std::string& why) {
      return InvalidArgumentError(std::string(filename) + ":" + std::to_string(n) + ": " + why);
    };
    if (line.empty()) return error("illegal exclusion pattern: \"!\"");
    std::string cleaned = CleanSlashPath(line);
    if (cleaned.size() > 1 && cleaned[0] == '/') cleaned.erase(0, 1);
    StatusOr<Pattern> pat = Compiled(std::move(cleaned), exclusion);
    if (!pat.ok()) return error(pat.status().message());
    di.patterns_.push_back(std::move(*pat));
  }
  return di;
}

StatusOr<DockerIgnore> DockerIgnore::FromPatterns(const std::vector<std::string>& patterns) {
  DockerIgnore di;
  for (const std::string& raw : patterns) {
    std::string_view trimmed = Trim(raw);
    if (trimmed.empty()) continue;
    std::string cleaned = CleanSlashPath(trimmed);
    bool exclusion = false;
    if (cleaned[0] == '!') {
      if (cleaned.size() == 1) return InvalidArgumentError("illegal exclusion pattern: \"!\"");
      exclusion = true;
      cleaned.erase(0, 1);
    }
    SF_ASSIGN_OR_RETURN(Pattern pat, Compiled(std::move(cleaned), exclusion));
    di.patterns_.push_back(std::move(pat));
  }
  return di;
}

bool DockerIgnore::Matches(const Pattern& p, std::string_view path) const {
  if (p.suffix_match) {
    if (HasSuffix(path, p.suffix)) return true;
    return !p.suffix.empty() && p.suffix[0] == '/' && path == p.suffix.substr(1);
  }
  return RunTokens(p.tokens, path, false, [&](size_t k) { return k == path.size(); });
}

bool DockerIgnore::MatchesOrParentMatches(const Pattern& p, std::string_view path) const {
  if (p.suffix_match) {
    for (size_t k = path.find('/'); k != std::string_view::npos; k = path.find('/', k + 1)) {
      if (Matches(p, path.substr(0, k))) return true;
    }
    return Matches(p, path);
  }
  // One pass over the path checks it and every parent directory ("a", "a/b", ...).
  return RunTokens(p.tokens, path, false, [](size_t) { return true; });
}

bool DockerIgnore::Excluded(std::string_view raw) const {
  std::string path = CleanSlashPath(raw);
  while (path.size() > 1 && path[0] == '/') path.erase(0, 1);
  bool excluded = false;
  for (const Pattern& pat : patterns_) {
    // Only a pattern that could change the answer is tried (moby's shortcut).
    if (pat.exclusion != excluded) continue;
    // The pattern applies to the path or any of its parent directories.
    if (MatchesOrParentMatches(pat, path)) excluded = !pat.exclusion;
  }
  return excluded;
}

bool DockerIgnore::MayReincludeUnder(std::string_view raw) const {
  std::string dir = CleanSlashPath(raw);
  while (dir.size() > 1 && dir[0] == '/') dir.erase(0, 1);
  std::string prefix = dir == "." ? "" : dir + "/";
  for (const Pattern& pat : patterns_) {
    if (!pat.exclusion) continue;
    // Something below `dir` is re-included only by an exception that matches a path starting
    // with "dir/" (an exception matching `dir` or its parents would have kept `dir` itself).
    if (pat.suffix_match || RunTokens(pat.tokens, prefix, true, [](size_t) { return false; })) {
      return true;
    }
  }
  return false;
}

bool DockerIgnore::MayMatchUnder(std::string_view raw) const {
  std::string dir = CleanSlashPath(raw);
  while (dir.size() > 1 && dir[0] == '/') dir.erase(0, 1);
  std::string prefix = dir == "." ? "" : dir + "/";
  for (const Pattern& pat : patterns_) {
    if (pat.exclusion) continue;
    if (pat.suffix_match || RunTokens(pat.tokens, prefix, true, [](size_t) { return false; })) {
      return true;
    }
  }
  return false;
}

StatusOr<DockerIgnore> LoadDockerIgnore(const std::string& context_dir,
                                        const std::string& dockerfile) {
  std::vector<std::string> candidates;
  if (dockerfile != "-") {
    candidates.push_back((dockerfile.empty() ? context_dir + "/Dockerfile" : dockerfile) +
                         ".dockerignore");
  }
  candidates.push_back(context_dir + "/.dockerignore");
  for (const std::string& path : candidates) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
      if (errno == ENOENT || errno == ENOTDIR) continue;
      return ErrnoError("open " + path, errno);
    }
    std::string text;
    char buf[8192];
    for (;;) {
      ssize_t n = ::read(fd.get(), buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return ErrnoError("read " + path, errno);
      if (n == 0) break;
      text.append(buf, static_cast<size_t>(n));
    }
    return DockerIgnore::Parse(text, path);
  }
  return DockerIgnore();
}

}  // namespace stagefarm
