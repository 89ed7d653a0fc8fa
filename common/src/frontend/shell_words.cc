#include "stagefarm/common/shell_words.h"

#include <map>
#include <memory>

#include "frontend/unicode_util.h"

namespace stagefarm::frontend {
namespace {

using internal::AppendRune;
using internal::IsDigitRune;
using internal::IsLetterRune;
using internal::IsSpaceRune;

constexpr char32_t kEof = static_cast<char32_t>(-1);

// Collects words while the word is built: unquoted white space that came from the source text or
// from a variable's value separates words; quoted text and escaped characters never do. A
// disabled one (ProcessWord wants no words) ignores everything.
class Words {
 public:
  explicit Words(bool enabled) : enabled_(enabled) {}
  void AddChar(char32_t ch) {
    if (!enabled_) return;
    if (IsSpaceRune(ch)) {
      if (in_word_ && !buf_.empty()) {
        words_.push_back(std::move(buf_));
        buf_.clear();
        in_word_ = false;
      }
    } else {
      AddRawChar(ch);
    }
  }
  void AddRawChar(char32_t ch) {
    if (!enabled_) return;
    AppendRune(&buf_, ch);
    in_word_ = true;
  }
  void AddString(std::string_view s) {
    if (!enabled_) return;
    for (char32_t ch : internal::DecodeAll(s)) AddChar(ch);
  }
  void AddRawString(std::string_view s) {
    if (!enabled_) return;
    buf_ += s;
    in_word_ = true;
  }
  std::vector<std::string> Take() {
    if (!buf_.empty()) words_.push_back(std::move(buf_));
    return std::move(words_);
  }

 private:
  std::string buf_;
  std::vector<std::string> words_;
  bool in_word_ = false;
  bool enabled_;
};

bool IsSpecialParam(char32_t ch) {
  switch (ch) {
    case '@':
    case '*':
    case '#':
    case '?':
    case '-':
    case '$':
    case '!':
    case '0':
      return true;
    default:
      return false;
  }
}

// A shell pattern (`*`, `?`, escapes) for ${V#p}, ${V%p} and ${V/p/r}.
struct PatternToken {
  enum Kind { kLiteral, kAnyOne, kAnyRun } kind;
  char32_t ch = 0;
};

StatusOr<std::vector<PatternToken>> CompilePattern(std::string_view pattern) {
  std::vector<char32_t> in = internal::DecodeAll(pattern);
  std::vector<PatternToken> out;
  for (size_t i = 0; i < in.size(); ++i) {
    char32_t ch = in[i];
    if (ch == '*') {
      out.push_back({PatternToken::kAnyRun});
    } else if (ch == '?') {
      out.push_back({PatternToken::kAnyOne});
    } else if (ch == '\\') {
      if (i + 1 < in.size() && (in[i + 1] == '}' || in[i + 1] == '/')) continue;
      if (i + 1 >= in.size() || (in[i + 1] != '*' && in[i + 1] != '?' && in[i + 1] != '\\')) {
        std::string bad;
        if (i + 1 < in.size()) AppendRune(&bad, in[i + 1]);
        return InvalidArgumentError("invalid pattern (" + std::string(pattern) +
                                    ") in substitution: invalid escape '\\" + bad + "'");
      }
      out.push_back({PatternToken::kLiteral, in[++i]});
    } else {
      out.push_back({PatternToken::kLiteral, ch});
    }
  }
  return out;
}

bool MatchPattern(const std::vector<PatternToken>& p, size_t pi, const std::vector<char32_t>& s,
                  size_t si, size_t send) {
  for (; pi < p.size(); ++pi) {
    switch (p[pi].kind) {
      case PatternToken::kAnyRun:
        for (size_t k = si; k <= send; ++k) {
          if (MatchPattern(p, pi + 1, s, k, send)) return true;
        }
        return false;
      case PatternToken::kAnyOne:
        if (si >= send) return false;
        ++si;
        break;
      case PatternToken::kLiteral:
        if (si >= send || s[si] != p[pi].ch) return false;
        ++si;
        break;
    }
  }
  return si == send;
}

std::string Encode(const std::vector<char32_t>& s, size_t begin, size_t end) {
  std::string out;
  for (size_t i = begin; i < end; ++i) AppendRune(&out, s[i]);
  return out;
}

// The state of one ProcessWord call: a rune scanner over the word.
class Scanner {
 public:
  Scanner(const ShellLexOptions& options, std::string_view word, const EnvLookup& env,
          WordMatches* matches)
      : options_(options),
        text_(internal::DecodeAll(word)),
        env_(env),
        matches_(matches),
        raw_escapes_(options.raw_escapes) {}

  Status Process(std::string* result, std::vector<std::string>* words) {
    return ProcessStopOn(kEof, raw_escapes_, result, words);
  }

 private:
  char32_t Peek() const { return pos_ < text_.size() ? text_[pos_] : kEof; }
  char32_t Next() { return pos_ < text_.size() ? text_[pos_++] : kEof; }

  std::optional<std::string> GetEnv(const std::string& name) {
    std::optional<std::string> v = env_ ? env_(name) : std::nullopt;
    if (matches_ != nullptr) (v ? matches_->matched : matches_->unmatched).insert(name);
    return v;
  }

  Status ProcessStopOn(char32_t stop, bool raw_escapes, std::string* result,
                       std::vector<std::string>* words_out) {
    bool saved = raw_escapes_;
    raw_escapes_ = raw_escapes;
    Status s = ProcessStopOnImpl(stop, result, words_out);
    raw_escapes_ = saved;
    return s;
  }

  Status ProcessStopOnImpl(char32_t stop, std::string* result,
                           std::vector<std::string>* words_out) {
    Words words(words_out != nullptr);
    while (Peek() != kEof) {
      char32_t ch = Peek();
      if (stop != kEof && ch == stop) {
        Next();
        if (words_out) *words_out = words.Take();
        return Status::Ok();
      }
      if (ch == '$' || ch == '<' || (!options_.skip_process_quotes && (ch == '\'' || ch == '"'))) {
        std::string tmp;
        Status s;
        switch (ch) {
          case '$':
            s = ProcessDollar(&tmp);
            break;
          case '<':
            ProcessPossibleHeredoc(&tmp);
            break;
          case '\'':
            s = ProcessSingleQuote(&tmp);
            break;
          default:
            s = ProcessDoubleQuote(&tmp);
            break;
        }
        SF_RETURN_IF_ERROR(s);
        *result += tmp;
        if (ch == '$') {
          words.AddString(tmp);
        } else {
          words.AddRawString(tmp);
        }
        continue;
      }
      ch = Next();
      if (ch == static_cast<char32_t>(static_cast<unsigned char>(options_.escape_token))) {
        if (raw_escapes_) {
          words.AddRawChar(ch);
          AppendRune(result, ch);
        }
        ch = Next();
        if (ch == kEof) break;
        words.AddRawChar(ch);
      } else {
        words.AddChar(ch);
      }
      AppendRune(result, ch);
    }
    if (stop != kEof) {
      std::string s;
      AppendRune(&s, stop);
      return InvalidArgumentError("unexpected end of statement while looking for matching " + s);
    }
    if (words_out) *words_out = words.Take();
    return Status::Ok();
  }

  Status ProcessSingleQuote(std::string* out) {
    char32_t ch = Next();
    if (options_.raw_quotes) AppendRune(out, ch);
    for (;;) {
      ch = Next();
      if (ch == kEof) {
        return InvalidArgumentError(
            "unexpected end of statement while looking for matching single-quote");
      }
      if (ch == '\'') {
        if (options_.raw_quotes) AppendRune(out, ch);
        return Status::Ok();
      }
      AppendRune(out, ch);
    }
  }

  Status ProcessDoubleQuote(std::string* out) {
    char32_t ch = Next();
    if (options_.raw_quotes) AppendRune(out, ch);
    const char32_t esc = static_cast<unsigned char>(options_.escape_token);
    for (;;) {
      char32_t peek = Peek();
      if (peek == kEof) {
        return InvalidArgumentError(
            "unexpected end of statement while looking for matching double-quote");
      }
      if (peek == '"') {
        ch = Next();
        if (options_.raw_quotes) AppendRune(out, ch);
        return Status::Ok();
      }
      if (peek == '$') {
        std::string value;
        SF_RETURN_IF_ERROR(ProcessDollar(&value));
        *out += value;
        continue;
      }
      ch = Next();
      if (ch == esc) {
        if (raw_escapes_) AppendRune(out, ch);
        char32_t after = Peek();
        if (after == kEof) continue;  // an escape at the end of the word is dropped
        if (after == '"' || after == '$' || after == esc) ch = Next();
      }
      AppendRune(out, ch);
    }
  }

  std::string ProcessName() {
    std::string name;
    while (Peek() != kEof) {
      char32_t ch = Peek();
      if (name.empty() && IsDigitRune(ch)) {
        while (Peek() != kEof && IsDigitRune(Peek())) AppendRune(&name, Next());
        return name;
      }
      if (name.empty() && IsSpecialParam(ch)) {
        AppendRune(&name, Next());
        return name;
      }
      if (!IsLetterRune(ch) && !IsDigitRune(ch) && ch != '_') break;
      AppendRune(&name, Next());
    }
    return name;
  }

  void ProcessPossibleHeredoc(std::string* out) {
    Next();
    if (Peek() != '<') {
      *out = "<";
      return;
    }
    Next();
    *out = "<<";
    while (Peek() == '\t' || Peek() == '\r' || Peek() == ' ') AppendRune(out, Next());
  }

  Status ProcessDollar(std::string* out) {
    Next();
    if (Peek() != '{') {
      std::string name = ProcessName();
      if (name.empty()) {
        *out = "$";
        return Status::Ok();
      }
      std::optional<std::string> v = GetEnv(name);
      if (!v && options_.skip_unset_env) {
        *out = "$" + name;
      } else {
        *out = v.value_or("");
      }
      return Status::Ok();
    }
    Next();
    switch (Peek()) {
      case kEof:
        return InvalidArgumentError("syntax error: missing '}'");
      case '{':
      case '}':
      case ':':
        return InvalidArgumentError("syntax error: bad substitution");
      default:
        break;
    }
    std::string name = ProcessName();
    char32_t ch = Next();
    std::string chs;
    if (ch != kEof) AppendRune(&chs, ch);
    bool null_is_unset = false;
    if (ch == '}') {
      std::optional<std::string> v = GetEnv(name);
      if (!v && options_.skip_unset_env) {
        *out = "${" + name + "}";
      } else {
        *out = v.value_or("");
      }
      return Status::Ok();
    }
    if (ch == ':') {
      null_is_unset = true;
      ch = Next();
      if (ch != kEof) AppendRune(&chs, ch);
    }
    if (ch == '+' || ch == '-' || ch == '?' || ch == '#' || ch == '%') {
      bool pattern = ch == '#' || ch == '%';
      if (null_is_unset && pattern) {
        return InvalidArgumentError("unsupported modifier (" + chs + ") in substitution");
      }
      std::string word;
      Status s = ProcessStopOn('}', pattern, &word, nullptr);
      if (!s.ok()) {
        if (Peek() == kEof) return InvalidArgumentError("syntax error: missing '}'");
        return s;
      }
      std::optional<std::string> value = GetEnv(name);
      if (options_.skip_unset_env && !value) {
        *out = "${" + name + chs + word + "}";
        return Status::Ok();
      }
      bool empty_or_unset = !value || (null_is_unset && value->empty());
      switch (ch) {
        case '-':
          *out = empty_or_unset ? word : *value;
          return Status::Ok();
        case '+':
          *out = empty_or_unset ? "" : word;
          return Status::Ok();
        case '?':
          if (!value) {
            return InvalidArgumentError(name + ": " +
                                        (word.empty() ? "is not allowed to be unset" : word));
          }
          if (null_is_unset && value->empty()) {
            return InvalidArgumentError(name + ": " +
                                        (word.empty() ? "is not allowed to be empty" : word));
          }
          *out = *value;
          return Status::Ok();
        default: {
          bool greedy = !word.empty() && static_cast<char32_t>(word[0]) == ch;
          if (greedy) word.erase(0, 1);
          SF_ASSIGN_OR_RETURN(std::vector<PatternToken> p, CompilePattern(word));
          // An unset variable trims to "" (found by expander_fuzz: it was dereferenced).
          const std::string subject = value.value_or("");
          std::vector<char32_t> v = internal::DecodeAll(subject);
          size_t n = v.size();
          *out = subject;
          if (ch == '#') {
            for (size_t k = 0; k <= n; ++k) {
              size_t len = greedy ? n - k : k;
              if (MatchPattern(p, 0, v, 0, len)) {
                *out = Encode(v, len, n);
                break;
              }
            }
          } else {
            for (size_t k = 0; k <= n; ++k) {
              size_t len = greedy ? n - k : k;
              if (MatchPattern(p, 0, v, n - len, n)) {
                *out = Encode(v, 0, n - len);
                break;
              }
            }
          }
          return Status::Ok();
        }
      }
    }
    if (ch == '/') {
      bool replace_all = Peek() == '/';
      if (replace_all) Next();
      std::string pattern, replacement;
      Status s = ProcessStopOn('/', true, &pattern, nullptr);
      if (!s.ok()) {
        if (Peek() == kEof) return InvalidArgumentError("syntax error: missing '/' in ${}");
        return s;
      }
      s = ProcessStopOn('}', true, &replacement, nullptr);
      if (!s.ok()) {
        if (Peek() == kEof) return InvalidArgumentError("syntax error: missing '}'");
        return s;
      }
      std::optional<std::string> value = GetEnv(name);
      if (options_.skip_unset_env && !value) {
        *out = "${" + name + "/" + pattern + "/" + replacement + "}";
        return Status::Ok();
      }
      SF_ASSIGN_OR_RETURN(std::vector<PatternToken> p, CompilePattern(pattern));
      std::vector<char32_t> v = internal::DecodeAll(value.value_or(""));
      std::string result;
      size_t i = 0;
      bool replaced = false;
      while (i <= v.size()) {
        size_t match_end = std::string::npos;
        if (!replaced || replace_all) {
          for (size_t j = v.size() + 1; j-- > i;) {
            if (MatchPattern(p, 0, v, i, j)) {
              match_end = j;
              break;
            }
          }
        }
        if (match_end != std::string::npos) {
          result += replacement;
          replaced = true;
          if (match_end > i) {
            i = match_end;
            continue;
          }
        }
        if (i < v.size()) AppendRune(&result, v[i]);
        ++i;
      }
      *out = result;
      return Status::Ok();
    }
    return InvalidArgumentError("unsupported modifier (" + chs + ") in substitution");
  }

  const ShellLexOptions& options_;
  std::vector<char32_t> text_;
  size_t pos_ = 0;
  const EnvLookup& env_;
  WordMatches* matches_;
  bool raw_escapes_;
};

// A word with nothing to expand, unquote or unescape: its value is its text.
bool IsPlainWord(std::string_view word, const ShellLexOptions& options) {
  for (char c : word) {
    if (c == '$' || c == '<' || c == options.escape_token) return false;
    if (!options.skip_process_quotes && (c == '\'' || c == '"')) return false;
  }
  return true;
}

}  // namespace

EnvLookup EnvFromList(const std::vector<std::string>& entries) {
  auto map = std::make_shared<std::map<std::string, std::string, std::less<>>>();
  for (const std::string& e : entries) {
    size_t eq = e.find('=');
    if (eq == std::string::npos) {
      (*map)[e] = "";
    } else {
      (*map)[e.substr(0, eq)] = e.substr(eq + 1);
    }
  }
  return [map](const std::string& name) -> std::optional<std::string> {
    auto it = map->find(name);
    if (it == map->end()) return std::nullopt;
    return it->second;
  };
}

StatusOr<std::string> ShellLex::ProcessWord(std::string_view word, const EnvLookup& env,
                                            WordMatches* matches) const {
  if (IsPlainWord(word, options_)) return std::string(word);
  Scanner scanner(options_, word, env, matches);
  std::string result;
  Status s = scanner.Process(&result, nullptr);
  if (!s.ok()) {
    return InvalidArgumentError("failed to process \"" + std::string(word) + "\": " + s.message());
  }
  return result;
}

StatusOr<std::vector<std::string>> ShellLex::ProcessWords(std::string_view word,
                                                          const EnvLookup& env) const {
  Scanner scanner(options_, word, env, nullptr);
  std::string result;
  std::vector<std::string> words;
  Status s = scanner.Process(&result, &words);
  if (!s.ok()) {
    return InvalidArgumentError("failed to process \"" + std::string(word) + "\": " + s.message());
  }
  return words;
}

}  // namespace stagefarm::frontend
