// Renders a build's event stream for a person. Plain mode (CI logs, --progress=plain): one line
// per event, every output line prefixed by its step's number, as BuildKit's plain output does.
#pragma once

#include <cstdio>
#include <map>
#include <string>
#include <utility>

#include "stagefarm/common/build_protocol.h"

namespace stagefarm::cli {

class PlainProgress {
 public:
  explicit PlainProgress(std::FILE* out, bool quiet = false) : out_(out), quiet_(quiet) {}
  void OnEvent(const BuildEvent& e);
  // Prints a line that is not an event (context upload, export).
  void Note(const std::string& text);

 private:
  // The "#N" of a step, assigned on first sight.
  int Number(const std::string& stage, int step);
  void PrintFailure(const BuildEvent& e);

  std::FILE* out_;
  bool quiet_;
  std::map<std::pair<std::string, int>, int> numbers_;
  std::map<std::pair<std::string, int>, std::string> partial_;  // unfinished output lines
  int next_ = 1;
};

// "1.9 MB", "512 B" (decimal units, as docker prints sizes).
std::string HumanSize(uint64_t bytes);

}  // namespace stagefarm::cli
