// Fuzz target: variable expansion and word splitting (ShellLex). The input's first byte picks the
// lexer options; the rest is taken a line at a time, each line one word, so the conformance files
// (tests/conformance/dockerfile/expansion/*) are seeds as they are.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "stagefarm/common/shell_words.h"

using namespace stagefarm;
using namespace stagefarm::frontend;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0 || size > (64 << 10)) return 0;
  const uint8_t flags = data[0];
  ShellLexOptions options;
  options.escape_token = (flags & 1) ? '`' : '\\';
  options.raw_quotes = flags & 2;
  options.raw_escapes = flags & 4;
  options.skip_unset_env = flags & 8;
  options.skip_process_quotes = flags & 16;
  ShellLex lex(options);
  // The environment of the conformance data, plus one long value.
  EnvLookup env = EnvFromList({"PWD=/home", "SHELL=bash", "KOREAN=한국어", "NULL=",
                               "LONG=" + std::string(300, 'x') + " with spaces"});
  std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  while (!rest.empty()) {
    size_t nl = rest.find('\n');
    std::string_view word = rest.substr(0, nl);
    rest = nl == std::string_view::npos ? std::string_view() : rest.substr(nl + 1);
    WordMatches matches;
    StatusOr<std::string> one = lex.ProcessWord(word, env, &matches);
    StatusOr<std::vector<std::string>> words = lex.ProcessWords(word, env);
    // Both read the word with the same grammar: one fails exactly when the other does.
    if (one.ok() != words.ok()) __builtin_trap();
  }
  return 0;
}
