// Renders a build's event stream for a person. Plain mode (CI logs, --progress=plain): one line
// per event, every output line prefixed by its step's number, as BuildKit's plain output does.
#pragma once

#include <chrono>
#include <cstdio>
#include <vector>
#include <map>
#include <string>
#include <utility>

#include "stagefarm/common/build_protocol.h"

namespace stagefarm::cli {

// What `stagefarm build` reports to: plain lines, or a live terminal view.
class Progress {
 public:
  virtual ~Progress() = default;
  virtual void OnEvent(const BuildEvent& e) = 0;
  // Prints a line that is not an event (context upload, export).
  virtual void Note(const std::string& text) = 0;
  // The Dockerfile being built, so a failure can show the lines around the failing instruction.
  virtual void SetDockerfile(std::string name, std::string text) = 0;
  // Called a few times a second while waiting for events (timers of running steps).
  virtual void Tick() {}
  // A transfer under way (the context upload): `done` of `total` bytes. Called often, from one
  // thread at a time; the last call has done == total.
  virtual void Transfer(const std::string& what, uint64_t done, uint64_t total) = 0;
};

class PlainProgress : public Progress {
 public:
  explicit PlainProgress(std::FILE* out, bool quiet = false) : out_(out), quiet_(quiet) {}
  void OnEvent(const BuildEvent& e) override;
  void Note(const std::string& text) override;
  // A line at most once a second, and one at the end.
  void Transfer(const std::string& what, uint64_t done, uint64_t total) override;
  // The Dockerfile being built, so a failure can show the lines around the failing instruction.
  void SetDockerfile(std::string name, std::string text) override {
    dockerfile_name_ = std::move(name);
    dockerfile_ = std::move(text);
  }
  // Prints the error, the Dockerfile lines around it and the step's last output.
  void PrintFailure(const BuildEvent& e);
  // The stage summary table and the image line of a finished build.
  void PrintSummary(const BuildEvent& e);

 private:
  // The "#N" of a step, assigned on first sight.
  int Number(const std::string& stage, int step);

  std::FILE* out_;
  bool quiet_;
  std::string dockerfile_name_, dockerfile_;
  std::map<std::pair<std::string, int>, int> numbers_;
  std::map<std::pair<std::string, int>, std::string> partial_;  // unfinished output lines
  int next_ = 1;
  std::chrono::steady_clock::time_point last_transfer_;
};

// The live view for a terminal, like BuildKit's: a header with the elapsed time, one line per
// step (CACHED, DONE with its time, or running with a timer and its worker), and under each
// running step the last lines of its output; redrawn in place with ANSI escapes. Notes and the
// final summary are printed as plain lines.
class TtyProgress : public Progress {
 public:
  explicit TtyProgress(std::FILE* out);
  void OnEvent(const BuildEvent& e) override;
  void Note(const std::string& text) override;
  // A progress bar redrawn in place (before the live view of steps exists).
  void Transfer(const std::string& what, uint64_t done, uint64_t total) override;
  void SetDockerfile(std::string name, std::string text) override {
    plain_.SetDockerfile(std::move(name), std::move(text));
  }
  void Tick() override;

 private:
  struct Step {
    std::string stage, text, worker;
    int step = 0;
    enum class State { kRunning, kCached, kDone } state = State::kRunning;
    double started = 0;  // seconds since the view started
    double seconds = 0;
    std::vector<std::string> tail;  // last output lines
    std::string partial;
  };
  Step& Find(const BuildEvent& e);
  double Now() const;
  void Redraw(bool final);

  std::FILE* out_;
  PlainProgress plain_;
  std::chrono::steady_clock::time_point start_;
  std::vector<Step> steps_;
  int drawn_ = 0;  // lines of the live view on screen, to move back over
  double last_bar_ = -1;  // when the transfer bar was last drawn
  int width_ = 80;
  double last_draw_ = -1;
};

// The lines of `text` around line `line` (1-based), BuildKit style, the line itself marked ">>>":
//    2 |     RUN echo about to fail
//    3 | >>> RUN echo failing now && exit 7
// Empty when `line` is outside the text.
std::string DockerfileExcerpt(const std::string& text, int line, int context = 2);

// "1.9 MB", "512 B" (decimal units, as docker prints sizes).
std::string HumanSize(uint64_t bytes);

}  // namespace stagefarm::cli
