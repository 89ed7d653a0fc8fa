// A COPY/ADD --chmod value as BuildKit v0.24 takes it: an octal mode up to 07777, or chmod(1)'s
// symbolic clauses ("go-w", "u=rw,g=r,o=r", "a+X"), which change each file's own mode. The
// frontend parses it to refuse a bad one; the worker applies it to every file it copies.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "stagefarm/common/status.h"

namespace stagefarm {

class FileModeChange {
 public:
  // InvalidArgument, naming the value, for anything else (BuildKit's message for a numeric one).
  static StatusOr<FileModeChange> Parse(std::string_view text);

  // The permission bits (with setuid, setgid and sticky) a file of `mode` gets. `X` adds execute
  // permission to a directory, or to a file that has some already.
  uint32_t Apply(uint32_t mode, bool is_dir) const;

 private:
  struct Clause {
    uint32_t who = 0;  // the bits the clause may touch
    char op = '+';     // '+', '-' or '='
    uint32_t bits = 0;
    bool exec_if_dir_or_exec = false;  // X
    char copy_from = 0;                // 'u', 'g' or 'o': the bits that class has
  };
  std::vector<Clause> clauses_;  // empty with an octal mode
  uint32_t octal_ = 0;
};

}  // namespace stagefarm
