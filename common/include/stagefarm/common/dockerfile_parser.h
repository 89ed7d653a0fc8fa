// The Dockerfile parser: text to a tree of instruction nodes, as BuildKit's
// frontend/dockerfile/parser builds it. It knows the line syntax (parser directives, comments,
// line continuations, heredocs, exec vs shell form, per-instruction argument splitting) but not
// what instructions mean: build_plan.h resolves them. Nothing is expanded here.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "stagefarm/common/status.h"

namespace stagefarm::frontend {

// A heredoc attached to RUN, COPY or ADD: `<<EOF`, `<<-EOF` (chomp leading tabs), `<<"EOF"`
// (quoted: the content is not expanded), `3<<EOF` (file descriptor).
struct Heredoc {
  std::string name;
  unsigned file_descriptor = 0;
  bool expand = true;
  bool chomp = false;
  std::string content;  // the lines between the instruction and the terminator, with newlines
};

// One instruction. `args` depends on the instruction, as in BuildKit's AST:
// - exec form (json == true): the JSON array's strings;
// - RUN/CMD/ENTRYPOINT/SHELL shell form, MAINTAINER, USER, WORKDIR, STOPSIGNAL: one string;
// - COPY/ADD/VOLUME shell form, FROM, EXPOSE: the white-space separated words;
// - ENV/LABEL: triples key, value, separator ("=" for KEY=VALUE, "" for the legacy `KEY VALUE`);
// - ARG: the words, quotes kept (`a="x y"`);
// - HEALTHCHECK: the type ("CMD", "NONE"...) then the command as above;
// - ONBUILD: no args; `children` holds the trigger instruction.
// Unknown instructions are kept with no args (resolution rejects them).
struct Node {
  std::string keyword;             // as written: "RUN", "run"
  std::vector<std::string> flags;  // "--from=build", as written, in order
  std::vector<std::string> args;
  std::vector<Node> children;  // ONBUILD's trigger
  bool json = false;           // exec (JSON array) form
  std::vector<Heredoc> heredocs;
  std::string original;               // the logical line, continuations joined
  int start_line = 0;                 // 1-based, inclusive
  int end_line = 0;                   // last line, heredoc bodies included
  std::vector<std::string> comments;  // comment lines right above the instruction

  // The keyword in lower case: "run".
  std::string command() const;
};

struct Directive {
  std::string name;  // "syntax", "escape" or "check", lower case
  std::string value;
  int line = 0;
};

struct ParsedDockerfile {
  std::vector<Node> nodes;
  std::vector<Directive> directives;
  char escape_token = '\\';
  // Build-check warnings the parser finds: "Dockerfile:7: NoEmptyContinuation: ...".
  std::vector<std::string> warnings;
};

// Parses Dockerfile text. Errors are InvalidArgument, start with "<filename>:<line>: " and quote
// the instruction or directive: `Dockerfile:3: ENV A: ENV must have two arguments`. A file
// without instructions is an error.
StatusOr<ParsedDockerfile> ParseDockerfile(std::string_view text,
                                           std::string_view filename = "Dockerfile");

// The parse tree in BuildKit's dump format (one "(instruction ...)" line per node, each ending
// with a newline), as in the conformance data's `result` files.
std::string DumpParseTree(const ParsedDockerfile& parsed);
// One node without the surrounding parentheses: `run "echo hi"`.
std::string DumpNode(const Node& node);

// An instruction as errors quote it: `line` (a logical line, e.g. Node::original) trimmed, on one
// line, its keyword in upper case, cut to about 60 bytes with "...".
std::string QuoteInstruction(std::string_view line);

// Parses a heredoc word such as "<<-EOF" or `<<"EOF"`; nullopt when the word is not one.
StatusOr<std::optional<Heredoc>> ParseHeredocWord(std::string_view word);

// Removes leading tabs from every line (for `<<-`).
std::string ChompHeredocContent(std::string_view content);

}  // namespace stagefarm::frontend
