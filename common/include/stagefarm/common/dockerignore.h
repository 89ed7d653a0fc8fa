// .dockerignore: patterns with Go filepath.Match syntax plus "**", "!" exceptions, the last
// matching pattern deciding; a path is also excluded when one of its parent directories is.
#pragma once

#include <regex>
#include <string>
#include <string_view>
#include <vector>

#include "stagefarm/common/status.h"

namespace stagefarm {

class DockerIgnore {
 public:
  // Parses the file's text (comments with "#", blank lines ignored). Bad patterns are an error
  // naming their line.
  static StatusOr<DockerIgnore> Parse(std::string_view text);
  // True if the relative path `path` ("a/b/c") is left out of the context.
  bool Excluded(std::string_view path) const;
  bool empty() const { return patterns_.empty(); }

 private:
  struct Pattern {
    std::regex re;
    bool exclusion = false;  // "!pattern"
  };
  std::vector<Pattern> patterns_;
};

}  // namespace stagefarm
