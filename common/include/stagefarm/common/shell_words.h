// Variable expansion and word splitting of Dockerfile words, as docker build's shell lexer does
// it (BuildKit frontend/dockerfile/shell): $V, ${V}, ${V:-w}, ${V-w}, ${V:+w}, ${V+w}, ${V:?m},
// ${V?m}, ${V#p}, ${V##p}, ${V%p}, ${V%%p}, ${V/p/r}, ${V//p/r}, single and double quotes, and the
// escape token (`\` or a backtick). Commands are never run: $(...) is kept as text.
//
// Thread-safety: a ShellLex holds only options and may be used from several threads.
#pragma once

#include <functional>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "stagefarm/common/status.h"

namespace stagefarm::frontend {

// Looks a variable up by name; nullopt when it is unset (an empty value is set).
using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;

// An EnvLookup over "KEY=value" entries (a later entry for the same key wins). It copies the list.
EnvLookup EnvFromList(const std::vector<std::string>& entries);

struct ShellLexOptions {
  char escape_token = '\\';
  bool raw_quotes = false;           // keep the quote characters in the result
  bool raw_escapes = false;          // keep escape tokens in the result
  bool skip_unset_env = false;       // leave references to unset variables as written
  bool skip_process_quotes = false;  // quotes are plain characters (heredoc bodies)
};

// Names a word referred to, found or not: used to report build args nobody consumes.
struct WordMatches {
  std::set<std::string> matched;
  std::set<std::string> unmatched;
};

class ShellLex {
 public:
  explicit ShellLex(ShellLexOptions options = {}) : options_(options) {}

  // Expands `word` into one string; spaces between words are kept. Errors (unterminated quote,
  // bad substitution, ${V?msg} on an unset V) are InvalidArgument naming the word.
  StatusOr<std::string> ProcessWord(std::string_view word, const EnvLookup& env,
                                    WordMatches* matches = nullptr) const;
  // Expands `word` and splits it into words on unquoted white space, after expansion.
  StatusOr<std::vector<std::string>> ProcessWords(std::string_view word,
                                                  const EnvLookup& env) const;

  const ShellLexOptions& options() const { return options_; }

 private:
  ShellLexOptions options_;
};

}  // namespace stagefarm::frontend
