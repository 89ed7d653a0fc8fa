// Ignore files (.dockerignore) with docker build's semantics (moby/patternmatcher):
// - one pattern a line; a line starting with "#" is a comment, blank lines are skipped, leading
//   and trailing white space is trimmed; a UTF-8 byte order mark on the first line is dropped;
// - patterns are Go filepath.Match globs ("*" and "?" never match "/", "[a-z]", "[^a]", "\"
//   escapes) cleaned like filepath.Clean, a leading "/" dropped; "**" matches any number of
//   directories, including none;
// - "!pattern" re-includes what an earlier pattern excluded; the last matching pattern decides;
// - a path is also matched when one of its parent directories is ("dir" leaves out "dir/a/b").
//
// A DockerIgnore is immutable after Parse and safe to use from several threads.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "stagefarm/common/status.h"

namespace stagefarm {

class DockerIgnore {
 public:
  // Parses the file's text. A malformed pattern ("[a", "a\" at the end, a bare "!") is
  // InvalidArgument naming `filename` and the line: ".dockerignore:3: bad pattern ...".
  static StatusOr<DockerIgnore> Parse(std::string_view text,
                                      std::string_view filename = ".dockerignore");
  // The patterns of COPY --exclude (and --parents), one per element, as moby's
  // patternmatcher.New reads them: trimmed and cleaned, "!" re-includes, but no comments and a
  // leading "/" is kept (so "/a" matches nothing). A malformed pattern is InvalidArgument.
  static StatusOr<DockerIgnore> FromPatterns(const std::vector<std::string>& patterns);

  // True if the relative path `path` ("a/b/c"; cleaned first) is left out of the context.
  bool Excluded(std::string_view path) const;

  // For a directory that Excluded() leaves out: true if an exception ("!...") could still
  // re-include something below it, so a walker must look inside instead of skipping it whole.
  // Conservative: may say true when nothing turns out to be re-included, never false when
  // something would be.
  bool MayReincludeUnder(std::string_view dir) const;

  // Whether a pattern that is not an exception ("!...") could match some path below `dir`
  // (one starting with "dir/"). Conservative in the same way.
  bool MayMatchUnder(std::string_view dir) const;

  bool empty() const { return patterns_.empty(); }

  // One element of a compiled pattern; public for the matcher in dockerignore.cc.
  struct Token {
    enum Kind { kLiteral, kStar, kQuestion, kClass, kDoubleStar, kAnyRest };
    Kind kind = kLiteral;
    char ch = 0;                                       // kLiteral
    bool negated = false;                              // kClass
    std::vector<std::pair<uint32_t, uint32_t>> ranges;  // kClass: inclusive code point ranges
  };

 private:
  struct Pattern {
    std::string cleaned;          // as matched, without "!"
    bool exclusion = false;       // "!pattern": re-includes
    bool suffix_match = false;    // "**" then only literal text: any path ending in that text
    std::string suffix;           // the text after the leading "**" when suffix_match
    std::vector<Token> tokens;
    std::vector<std::string> components;  // `cleaned` split on "/"
  };
  static StatusOr<Pattern> Compiled(std::string cleaned, bool exclusion);
  bool Matches(const Pattern& p, std::string_view path) const;
  bool MatchesOrParentMatches(const Pattern& p, std::string_view path) const;

  std::vector<Pattern> patterns_;
};

// The ignore file docker build would use for this build: `<Dockerfile path>.dockerignore`
// (next to the Dockerfile, e.g. "build/app.Dockerfile.dockerignore") if it exists, otherwise
// `<context_dir>/.dockerignore`, otherwise an empty DockerIgnore. `dockerfile` empty means
// "<context_dir>/Dockerfile"; "-" (stdin) has no Dockerfile-specific ignore file. An unreadable
// or malformed file is an error naming it.
StatusOr<DockerIgnore> LoadDockerIgnore(const std::string& context_dir,
                                        const std::string& dockerfile);

}  // namespace stagefarm
