#include "stagefarm/common/dockerfile_parser.h"

#include <nlohmann/json.hpp>
#include <set>

#include "frontend/unicode_util.h"
#include "stagefarm/common/shell_words.h"

namespace stagefarm::frontend {
namespace {

using internal::IsSpaceByte;
using internal::IsSpaceRune;
using internal::ToLower;
using internal::TrimSpace;

// Go regexp `[\t\v\f\r ]`, the separator BuildKit splits words and commands on.
bool IsSeparator(char c) { return c == '\t' || c == '\v' || c == '\f' || c == '\r' || c == ' '; }
// Go regexp `\s`.
bool IsRegexSpace(char c) { return c == '\t' || c == '\n' || c == '\f' || c == '\r' || c == ' '; }

// reWhitespace.Split(s, limit): limit < 0 splits everywhere, 2 splits once.
std::vector<std::string> SplitWhitespace(std::string_view s, int limit) {
  std::vector<std::string> out;
  size_t start = 0;
  size_t i = 0;
  while (i < s.size()) {
    if (limit > 0 && static_cast<int>(out.size()) == limit - 1) break;
    if (IsSeparator(s[i])) {
      size_t j = i;
      while (j < s.size() && IsSeparator(s[j])) ++j;
      out.emplace_back(s.substr(start, i - start));
      start = i = j;
    } else {
      ++i;
    }
  }
  out.emplace_back(s.substr(start));
  return out;
}

struct DirectiveState {
  char escape = '\\';
  bool done = false;
  std::set<std::string> seen;
  int line = 0;
};

// The parser directive on `line` (`# escape=` etc.), if the directive section is still open.
// Returns true when the line was a directive.
StatusOr<bool> ParseDirectiveLine(DirectiveState* d, std::string_view line,
                                  std::vector<Directive>* out) {
  d->line++;
  if (d->done) return false;
  if (line.empty() || line[0] != '#') {
    d->done = true;
    return false;
  }
  line.remove_prefix(1);
  // TrimLeftFunc(unicode.IsSpace)
  while (!line.empty()) {
    size_t w;
    if (!IsSpaceRune(internal::DecodeRune(line, 0, &w))) break;
    line.remove_prefix(w);
  }
  // ^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$
  auto is_alpha = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
  auto is_alnum = [&](char c) { return is_alpha(c) || (c >= '0' && c <= '9'); };
  size_t i = 0;
  if (line.empty() || !is_alpha(line[0])) {
    d->done = true;
    return false;
  }
  while (i < line.size() && is_alnum(line[i])) ++i;
  std::string name = ToLower(line.substr(0, i));
  while (i < line.size() && IsRegexSpace(line[i])) ++i;
  if (i >= line.size() || line[i] != '=') {
    d->done = true;
    return false;
  }
  ++i;
  size_t ws_start = i;
  while (i < line.size() && IsRegexSpace(line[i])) ++i;
  std::string_view rest = line.substr(i);
  if (rest.find('\n') != std::string_view::npos) rest = rest.substr(0, rest.find('\n'));
  size_t end = rest.size();
  while (end > 0 && IsRegexSpace(rest[end - 1])) --end;
  std::string value(rest.substr(0, end));
  if (value.empty()) {
    if (i == ws_start) {
      d->done = true;
      return false;
    }
    value = std::string(1, line[i - 1]);  // the regex backtracks into the spaces
  }
  if (name != "syntax" && name != "escape" && name != "check") {
    d->done = true;
    return false;
  }
  if (!d->seen.insert(name).second) {
    return InvalidArgumentError("only one " + name + " parser directive can be used");
  }
  if (name == "escape") {
    if (value != "`" && value != "\\") {
      return InvalidArgumentError("invalid escape token '" + value + "' does not match ` or \\");
    }
    d->escape = value[0];
  }
  out->push_back(Directive{name, value, d->line});
  return true;
}

bool IsComment(std::string_view line) {
  size_t i = 0;
  while (i < line.size()) {
    size_t w;
    if (!IsSpaceRune(internal::DecodeRune(line, i, &w))) break;
    i += w;
  }
  return i < line.size() && line[i] == '#';
}

std::string_view TrimLeadingWhitespace(std::string_view s) {
  while (!s.empty()) {
    size_t w;
    if (!IsSpaceRune(internal::DecodeRune(s, 0, &w))) break;
    s.remove_prefix(w);
  }
  return s;
}

std::string_view TrimNewline(std::string_view s) {
  while (!s.empty() && (s.back() == '\r' || s.back() == '\n')) s.remove_suffix(1);
  return s;
}

// Removes a trailing line-continuation escape. Returns false when the line continues.
bool TrimContinuation(std::string* line, char escape) {
  size_t p = line->size();
  while (p > 0 && ((*line)[p - 1] == ' ' || (*line)[p - 1] == '\t')) --p;
  if (p == 0 || (*line)[p - 1] != escape) return true;
  if (p == 1) {
    line->clear();
    return false;
  }
  if ((*line)[p - 2] == escape) return true;  // an escaped escape token
  line->resize(p - 1);
  return false;
}

// The flags (`--x=y`) at the start of an instruction's arguments; returns the rest (a part of
// `line`).
std::string_view ExtractBuilderFlags(std::string_view line, char escape,
                                     std::vector<std::string>* flags) {
  enum { kSpaces, kWord, kQuote } phase = kSpaces;
  std::string word;
  char quote = 0;
  bool blank_ok = false;
  for (size_t pos = 0; pos <= line.size(); ++pos) {
    char ch = pos < line.size() ? line[pos] : 0;
    if (phase == kSpaces) {
      if (pos == line.size()) break;
      if (IsSpaceByte(static_cast<unsigned char>(ch))) continue;
      if (ch != '-' || pos + 1 == line.size() || line[pos + 1] != '-') {
        return line.substr(pos);
      }
      phase = kWord;
    }
    if (pos == line.size()) {
      if (word != "--" && (blank_ok || !word.empty())) flags->push_back(word);
      break;
    }
    if (phase == kWord) {
      if (IsSpaceByte(static_cast<unsigned char>(ch))) {
        phase = kSpaces;
        if (word == "--") return line.substr(pos);
        if (blank_ok || !word.empty()) flags->push_back(word);
        word.clear();
        blank_ok = false;
        continue;
      }
      if (ch == '\'' || ch == '"') {
        quote = ch;
        blank_ok = true;
        phase = kQuote;
        continue;
      }
      if (ch == escape) {
        if (pos + 1 == line.size()) continue;
        ch = line[++pos];
      }
      word += ch;
      continue;
    }
    // kQuote
    if (ch == quote) {
      phase = kWord;
      continue;
    }
    if (ch == escape) {
      if (pos + 1 == line.size()) {
        phase = kWord;
        continue;
      }
      ch = line[++pos];
    }
    word += ch;
  }
  return {};
}

// Words separated by white space, quotes and escapes kept (they are removed on expansion).
std::vector<std::string> ParseWords(std::string_view rest, char escape) {
  enum { kSpaces, kWord, kQuote } phase = kSpaces;
  std::vector<std::string> words;
  std::string word;
  char32_t quote = 0;
  bool blank_ok = false;
  char32_t ch = 0;
  size_t width = 0;
  const char32_t esc = static_cast<unsigned char>(escape);
  for (size_t pos = 0; pos <= rest.size(); pos += width) {
    if (pos != rest.size()) ch = internal::DecodeRune(rest, pos, &width);
    if (phase == kSpaces) {
      if (pos == rest.size()) break;
      if (IsSpaceRune(ch)) continue;
      phase = kWord;
    }
    if (pos == rest.size()) {
      if (blank_ok || !word.empty()) words.push_back(word);
      break;
    }
    if (phase == kWord) {
      if (IsSpaceRune(ch)) {
        phase = kSpaces;
        if (blank_ok || !word.empty()) words.push_back(word);
        word.clear();
        blank_ok = false;
        continue;
      }
      if (ch == '\'' || ch == '"') {
        quote = ch;
        blank_ok = true;
        phase = kQuote;
      }
      if (ch == esc) {
        if (pos + width == rest.size()) continue;
        internal::AppendRune(&word, ch);
        pos += width;
        ch = internal::DecodeRune(rest, pos, &width);
      }
      internal::AppendRune(&word, ch);
      continue;
    }
    // kQuote
    if (ch == quote) phase = kWord;
    if (ch == esc && quote != '\'') {
      if (pos + width == rest.size()) {
        phase = kWord;
        continue;
      }
      pos += width;
      internal::AppendRune(&word, ch);
      ch = internal::DecodeRune(rest, pos, &width);
    }
    internal::AppendRune(&word, ch);
  }
  return words;
}

struct LineResult {
  std::vector<std::string> args;
  std::vector<Node> children;
  bool json = false;
};

Status ParseNameVal(std::string_view rest, const char* key, char escape, LineResult* r) {
  std::vector<std::string> words = ParseWords(rest, escape);
  if (words.empty()) return Status::Ok();
  if (words[0].find('=') == std::string::npos) {
    std::vector<std::string> parts = SplitWhitespace(rest, 2);
    if (parts.size() < 2)
      return InvalidArgumentError(std::string(key) + " must have two arguments");
    r->args = {parts[0], parts[1], ""};
    return Status::Ok();
  }
  for (const std::string& word : words) {
    size_t eq = word.find('=');
    if (eq == std::string::npos) {
      return InvalidArgumentError("Syntax error - can't find = in " + internal::GoQuote(word) +
                                  ". Must be of the form: name=value");
    }
    r->args.push_back(word.substr(0, eq));
    r->args.push_back(word.substr(eq + 1));
    r->args.push_back("=");
  }
  return Status::Ok();
}

const char kNotStringArray[] =
    "when using JSON array syntax, arrays must be comprised of strings only";

// The common exec form, `["a", "b\\n"]` (ASCII strings, short escapes), read without a JSON
// tree: true and `*out` set when `text` is exactly that. False for anything else, which
// nlohmann::json then reads (or refuses) as before.
bool ParseSimpleStringArray(std::string_view text, std::vector<std::string>* out) {
  auto is_ws = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  size_t i = 1;  // text[0] is '['
  auto skip_ws = [&] {
    while (i < text.size() && is_ws(text[i])) ++i;
  };
  std::vector<std::string> args;
  skip_ws();
  if (i < text.size() && text[i] == ']') {
    ++i;
  } else {
    for (;;) {
      if (i >= text.size() || text[i] != '"') return false;
      std::string arg;
      for (++i;; ++i) {
        if (i >= text.size()) return false;
        unsigned char c = static_cast<unsigned char>(text[i]);
        if (c == '"') break;
        if (c < 0x20 || c >= 0x80) return false;
        if (c == '\\') {
          if (++i >= text.size()) return false;
          switch (text[i]) {
            case '"':
            case '\\':
            case '/':
              arg += text[i];
              break;
            case 'b':
              arg += '\b';
              break;
            case 'f':
              arg += '\f';
              break;
            case 'n':
              arg += '\n';
              break;
            case 'r':
              arg += '\r';
              break;
            case 't':
              arg += '\t';
              break;
            default:
              return false;  // \u and errors
          }
          continue;
        }
        arg += static_cast<char>(c);
      }
      ++i;
      args.push_back(std::move(arg));
      skip_ws();
      if (i < text.size() && text[i] == ']') {
        ++i;
        break;
      }
      if (i >= text.size() || text[i] != ',') return false;
      ++i;
      skip_ws();
    }
  }
  skip_ws();
  if (i != text.size()) return false;
  *out = std::move(args);
  return true;
}

// Exec form. Returns true when `rest` is a JSON array of strings; an error when it is a JSON
// array of something else; false when it is not JSON.
StatusOr<bool> ParseJson(std::string_view rest, LineResult* r) {
  rest = TrimLeadingWhitespace(rest);
  if (rest.empty() || rest[0] != '[') return false;
  if (ParseSimpleStringArray(rest, &r->args)) {
    r->json = true;
    return true;
  }
  nlohmann::json j = nlohmann::json::parse(rest.begin(), rest.end(), nullptr, false);
  if (j.is_discarded() || !j.is_array()) return false;
  std::vector<std::string> args;
  for (const auto& e : j) {
    if (!e.is_string()) return InvalidArgumentError(kNotStringArray);
    args.push_back(e.get<std::string>());
  }
  r->args = std::move(args);
  r->json = true;
  return true;
}

Status ParseMaybeJson(std::string_view rest, LineResult* r) {
  if (rest.empty()) return Status::Ok();
  SF_ASSIGN_OR_RETURN(bool json, ParseJson(rest, r));
  if (!json) r->args = {std::string(rest)};
  return Status::Ok();
}

void ParseStringsWhitespaceDelimited(std::string_view rest, LineResult* r) {
  if (rest.empty()) return;
  r->args = SplitWhitespace(rest, -1);
}

Status ParseMaybeJsonToList(std::string_view rest, LineResult* r) {
  SF_ASSIGN_OR_RETURN(bool json, ParseJson(rest, r));
  if (!json) ParseStringsWhitespaceDelimited(rest, r);
  return Status::Ok();
}

Status ParseHealthConfig(std::string_view rest, LineResult* r) {
  size_t sep = 0;
  while (sep < rest.size() && !IsSpaceByte(static_cast<unsigned char>(rest[sep]))) ++sep;
  size_t next = sep;
  while (next < rest.size() && IsSpaceByte(static_cast<unsigned char>(rest[next]))) ++next;
  if (sep == 0) return Status::Ok();
  LineResult cmd;
  SF_RETURN_IF_ERROR(ParseMaybeJson(rest.substr(next), &cmd));
  r->args.push_back(std::string(rest.substr(0, sep)));
  r->args.insert(r->args.end(), cmd.args.begin(), cmd.args.end());
  r->json = cmd.json;
  return Status::Ok();
}

StatusOr<Node> NodeFromLine(std::string_view line, char escape);

Status ParseSubCommand(std::string_view rest, char escape, LineResult* r) {
  if (rest.empty()) return Status::Ok();
  SF_ASSIGN_OR_RETURN(Node child, NodeFromLine(rest, escape));
  r->children.push_back(std::move(child));
  return Status::Ok();
}

StatusOr<Node> NodeFromLine(std::string_view line, char escape) {
  Node node;
  node.original = std::string(line);
  // reWhitespace.Split(TrimSpace(line), 2): the keyword, then the rest.
  std::string_view trimmed = TrimSpace(line);
  size_t keyword_end = 0;
  while (keyword_end < trimmed.size() && !IsSeparator(trimmed[keyword_end])) ++keyword_end;
  node.keyword = std::string(trimmed.substr(0, keyword_end));
  std::string_view args;
  if (keyword_end < trimmed.size()) {
    size_t rest_start = keyword_end;
    while (rest_start < trimmed.size() && IsSeparator(trimmed[rest_start])) ++rest_start;
    args = ExtractBuilderFlags(trimmed.substr(rest_start), escape, &node.flags);
  }
  std::string_view rest = TrimSpace(args);
  const std::string command = node.command();
  const std::string_view cmd = command;  // compared with literals below
  LineResult r;
  if (cmd == "add" || cmd == "copy" || cmd == "volume") {
    SF_RETURN_IF_ERROR(ParseMaybeJsonToList(rest, &r));
  } else if (cmd == "arg") {
    r.args = ParseWords(rest, escape);
  } else if (cmd == "cmd" || cmd == "entrypoint" || cmd == "run" || cmd == "shell") {
    SF_RETURN_IF_ERROR(ParseMaybeJson(rest, &r));
  } else if (cmd == "env") {
    SF_RETURN_IF_ERROR(ParseNameVal(rest, "ENV", escape, &r));
  } else if (cmd == "label") {
    SF_RETURN_IF_ERROR(ParseNameVal(rest, "LABEL", escape, &r));
  } else if (cmd == "expose" || cmd == "from") {
    ParseStringsWhitespaceDelimited(rest, &r);
  } else if (cmd == "healthcheck") {
    SF_RETURN_IF_ERROR(ParseHealthConfig(rest, &r));
  } else if (cmd == "maintainer" || cmd == "stopsignal" || cmd == "user" || cmd == "workdir") {
    if (!rest.empty()) r.args = {std::string(rest)};
  } else if (cmd == "onbuild") {
    SF_RETURN_IF_ERROR(ParseSubCommand(rest, escape, &r));
  }
  node.args = std::move(r.args);
  node.children = std::move(r.children);
  node.json = r.json;
  return node;
}

bool CanContainHeredoc(const Node& node) {
  const Node* n = &node;
  if (n->command() == "onbuild" && !n->children.empty()) n = &n->children[0];
  const std::string command = n->command();
  const std::string_view cmd = command;  // compared with literals below
  if (cmd != "add" && cmd != "copy" && cmd != "run") return false;
  return !n->json;
}

StatusOr<std::vector<Heredoc>> HeredocsFromLine(std::string_view line) {
  ShellLexOptions options;
  options.raw_quotes = options.raw_escapes = options.skip_unset_env = true;
  ShellLex lex(options);
  StatusOr<std::vector<std::string>> words = lex.ProcessWords(line, EnvLookup());
  std::vector<Heredoc> docs;
  if (!words.ok()) return docs;  // as BuildKit: a line the lexer rejects has no heredocs
  for (const std::string& word : *words) {
    SF_ASSIGN_OR_RETURN(std::optional<Heredoc> doc, ParseHeredocWord(word));
    if (doc) docs.push_back(std::move(*doc));
  }
  return docs;
}

Status LocatedError(std::string_view filename, int line, const Status& s) {
  return Status(s.code(), std::string(filename) + ":" + std::to_string(line) + ": " + s.message());
}
// "Dockerfile:3: ENV A: <message>".
Status QuotedError(std::string_view filename, int line, std::string_view instruction,
                   const Status& s) {
  return LocatedError(filename, line,
                      Status(s.code(), QuoteInstruction(instruction) + ": " + s.message()));
}

}  // namespace

std::string Node::command() const { return ToLower(keyword); }

std::string QuoteInstruction(std::string_view line) {
  std::string q(TrimSpace(line));
  size_t keyword_end = 0;
  while (keyword_end < q.size() && !IsSeparator(q[keyword_end]) && q[keyword_end] != '\n') {
    ++keyword_end;
  }
  for (size_t i = 0; i < q.size(); ++i) {
    char& c = q[i];
    if (i < keyword_end && c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
    if (c == '\n' || c == '\t' || c == '\r') c = ' ';
  }
  constexpr size_t kMax = 60;
  if (q.size() > kMax) {
    size_t cut = kMax - 3;
    while (cut > 0 && (static_cast<unsigned char>(q[cut]) & 0xC0) == 0x80) --cut;  // UTF-8
    q = q.substr(0, cut) + "...";
  }
  return q;
}

StatusOr<std::optional<Heredoc>> ParseHeredocWord(std::string_view word) {
  // ^(\d*)<<(-?)\s*([^<]*)$
  size_t i = 0;
  while (i < word.size() && word[i] >= '0' && word[i] <= '9') ++i;
  std::string_view digits = word.substr(0, i);
  if (word.substr(i, 2) != "<<") return std::optional<Heredoc>();
  i += 2;
  bool chomp = false;
  if (i < word.size() && word[i] == '-') {
    chomp = true;
    ++i;
  }
  while (i < word.size() && IsRegexSpace(word[i])) ++i;
  std::string_view rest = word.substr(i);
  if (rest.find('<') != std::string_view::npos || rest.empty()) return std::optional<Heredoc>();

  ShellLexOptions options;
  options.skip_unset_env = true;
  ShellLex plain(options);
  SF_ASSIGN_OR_RETURN(std::vector<std::string> words, plain.ProcessWords(rest, EnvLookup()));
  if (words.size() != 1) return std::optional<Heredoc>();
  options.raw_quotes = true;
  ShellLex raw(options);
  SF_ASSIGN_OR_RETURN(std::vector<std::string> raw_words, raw.ProcessWords(rest, EnvLookup()));
  if (raw_words.size() != words.size()) {
    return InternalError("internal lexing of heredoc produced inconsistent results: " +
                         std::string(rest));
  }
  auto quotes = [](const std::string& s) {
    size_t n = 0;
    for (char c : s) n += (c == '\'' || c == '"');
    return n;
  };
  Heredoc doc;
  doc.name = words[0];
  doc.expand = quotes(words[0]) == quotes(raw_words[0]);
  doc.chomp = chomp;
  unsigned fd = 0;
  for (char c : digits) fd = fd * 10 + static_cast<unsigned>(c - '0');
  doc.file_descriptor = fd;
  return std::optional<Heredoc>(std::move(doc));
}

std::string ChompHeredocContent(std::string_view content) {
  std::string out;
  bool line_start = true;
  for (char c : content) {
    if (line_start && c == '\t') continue;
    line_start = c == '\n';
    out += c;
  }
  return out;
}

StatusOr<ParsedDockerfile> ParseDockerfile(std::string_view text, std::string_view filename) {
  // Physical lines, each with its line ending.
  std::vector<std::string_view> lines;
  for (size_t pos = 0; pos < text.size();) {
    size_t nl = text.find('\n', pos);
    size_t end = nl == std::string_view::npos ? text.size() : nl + 1;
    lines.push_back(text.substr(pos, end - pos));
    pos = end;
  }
  if (!lines.empty() && lines[0].substr(0, 3) == "\xEF\xBB\xBF") lines[0].remove_prefix(3);

  ParsedDockerfile result;
  DirectiveState directives;
  std::vector<std::string> comments;
  size_t next = 0;
  int current_line = 0;

  // processLine: trims the newline (and leading white space on a first line), looks for a parser
  // directive, and drops comment lines.
  auto process_line = [&](std::string_view raw, bool strip_left, bool* is_directive,
                          std::string* out) -> Status {
    std::string_view token = TrimNewline(raw);
    if (strip_left) token = TrimLeadingWhitespace(token);
    StatusOr<bool> d = ParseDirectiveLine(&directives, token, &result.directives);
    if (!d.ok()) return d.status();
    if (is_directive) *is_directive = *d;
    *out = IsComment(token) ? std::string() : std::string(token);
    return Status::Ok();
  };

  while (next < lines.size()) {
    std::string_view raw = lines[next++];
    if (IsComment(raw)) {
      std::string c(TrimSpace(raw.substr(1)));
      if (c.empty()) {
        comments.clear();
      } else {
        comments.push_back(c);
      }
    }
    bool is_directive = false;
    std::string line;
    Status s = process_line(raw, true, &is_directive, &line);
    if (is_directive && !comments.empty()) comments.pop_back();
    if (!s.ok()) return QuotedError(filename, current_line + 1, TrimNewline(raw), s);
    current_line++;
    int start_line = current_line;
    bool end_of_line = TrimContinuation(&line, directives.escape);
    if (end_of_line && line.empty()) continue;
    std::string buf = std::move(line);
    bool empty_continuation = false;
    while (!end_of_line && next < lines.size()) {
      std::string_view cont = lines[next++];
      std::string part;
      Status cs = process_line(cont, false, nullptr, &part);
      if (!cs.ok()) return QuotedError(filename, current_line + 1, TrimNewline(cont), cs);
      current_line++;
      if (IsComment(cont)) continue;
      if (TrimLeadingWhitespace(TrimNewline(part)).empty()) {
        empty_continuation = true;
        continue;
      }
      end_of_line = TrimContinuation(&part, directives.escape);
      buf += part;
    }
    if (empty_continuation) {
      result.warnings.push_back(std::string(filename) + ":" + std::to_string(current_line) +
                                ": NoEmptyContinuation: Empty continuation line");
    }
    StatusOr<Node> node = NodeFromLine(buf, directives.escape);
    if (!node.ok()) return QuotedError(filename, start_line, buf, node.status());
    if (CanContainHeredoc(*node) && buf.find("<<") != std::string::npos) {
      StatusOr<std::vector<Heredoc>> docs = HeredocsFromLine(buf);
      if (!docs.ok()) return QuotedError(filename, start_line, buf, docs.status());
      for (Heredoc& doc : *docs) {
        bool terminated = false;
        std::string content;
        while (next < lines.size()) {
          std::string_view body = lines[next++];
          current_line++;
          std::string_view candidate = TrimNewline(body);
          if (doc.chomp) {
            while (!candidate.empty() && candidate[0] == '\t') candidate.remove_prefix(1);
          }
          if (candidate == doc.name) {
            terminated = true;
            break;
          }
          content += body;
        }
        if (!terminated) {
          return QuotedError(filename, start_line, buf,
                             InvalidArgumentError("unterminated heredoc " + doc.name));
        }
        doc.content = std::move(content);
        node->heredocs.push_back(std::move(doc));
      }
    }
    node->start_line = start_line;
    node->end_line = current_line;
    node->comments = std::move(comments);
    comments.clear();
    result.nodes.push_back(std::move(*node));
  }
  if (result.nodes.empty()) {
    return LocatedError(filename, current_line, InvalidArgumentError("file with no instructions"));
  }
  result.escape_token = directives.escape;
  return result;
}

std::string DumpNode(const Node& node) {
  std::string out = node.command();
  if (!node.flags.empty()) {
    out += " [";
    for (size_t i = 0; i < node.flags.size(); ++i) {
      if (i > 0) out += ' ';
      out += internal::GoQuote(node.flags[i]);
    }
    out += ']';
  }
  for (const std::string& arg : node.args) {
    out += ' ';
    out += internal::GoQuote(arg);
  }
  for (const Node& child : node.children) {
    out += " (";
    out += DumpNode(child);
    out += ')';
  }
  return std::string(TrimSpace(out));
}

std::string DumpParseTree(const ParsedDockerfile& parsed) {
  std::string out;
  for (const Node& node : parsed.nodes) {
    out += '(';
    out += DumpNode(node);
    out += ")\n";
  }
  return out;
}

}  // namespace stagefarm::frontend
