#include "stagefarm/cli/progress.h"

#include <algorithm>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cinttypes>
#include <vector>

namespace stagefarm::cli {

std::string HumanSize(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "kB", "MB", "GB", "TB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1000 && u < 4) {
    v /= 1000;
    ++u;
  }
  char buf[32];
  if (u == 0) {
    std::snprintf(buf, sizeof buf, "%" PRIu64 " B", bytes);
  } else {
    std::snprintf(buf, sizeof buf, "%.3g %s", v, kUnits[u]);
  }
  return buf;
}

std::string DockerfileExcerpt(const std::string& text, int line, int context) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start <= text.size()) {
    size_t nl = text.find('\n', start);
    if (nl == std::string::npos) nl = text.size();
    lines.push_back(text.substr(start, nl - start));
    start = nl + 1;
  }
  if (!lines.empty() && lines.back().empty()) lines.pop_back();
  if (line < 1 || line > static_cast<int>(lines.size())) return "";
  std::string out;
  int first = std::max(1, line - context);
  int last = std::min(static_cast<int>(lines.size()), line + context);
  for (int i = first; i <= last; ++i) {
    char num[16];
    std::snprintf(num, sizeof num, "%4d", i);
    out += std::string(num) + (i == line ? " | >>> " : " |     ") + lines[i - 1] + "\n";
  }
  return out;
}

int PlainProgress::Number(const std::string& stage, int step) {
  auto [it, inserted] = numbers_.emplace(std::make_pair(stage, step), next_);
  if (inserted) ++next_;
  return it->second;
}

void PlainProgress::Note(const std::string& text) {
  if (quiet_) return;
  std::fprintf(out_, "#0 %s\n", text.c_str());
  std::fflush(out_);
}

namespace {
std::string TransferText(const std::string& what, uint64_t done, uint64_t total) {
  int percent = total == 0 ? 100 : static_cast<int>(done * 100 / total);
  return what + ": " + HumanSize(done) + " of " + HumanSize(total) + " (" +
         std::to_string(percent) + "%)";
}
}  // namespace

void PlainProgress::Transfer(const std::string& what, uint64_t done, uint64_t total) {
  auto now = std::chrono::steady_clock::now();
  if (done < total && now - last_transfer_ < std::chrono::seconds(1)) return;
  last_transfer_ = now;
  Note(TransferText(what, done, total));
}

void PlainProgress::OnEvent(const BuildEvent& e) {
  if (e.kind == BuildEvent::Kind::kBuildFailed) {
    PrintFailure(e);
    return;
  }
  if (quiet_) return;
  auto header = [&](const char* suffix) {
    int n = Number(e.stage, e.step);
    std::fprintf(out_, "#%d [%s %d] %s%s\n", n, e.stage.c_str(), e.step + 1, e.text.c_str(),
                 suffix);
    return n;
  };
  switch (e.kind) {
    case BuildEvent::Kind::kInfo:
      std::fprintf(out_, "#0 %s\n", e.text.c_str());
      break;
    case BuildEvent::Kind::kStageQueued:
      std::fprintf(out_, "#0 stage %s -> worker %s%s%s\n", e.stage.c_str(), e.worker.c_str(),
                   e.text.empty() ? "" : " ", e.text.c_str());
      break;
    case BuildEvent::Kind::kStageRetried:
      std::fprintf(out_, "#0 stage %s lost worker %s: %s\n", e.stage.c_str(), e.worker.c_str(),
                   e.text.c_str());
      break;
    case BuildEvent::Kind::kStepCached: {
      int n = header("");
      std::fprintf(out_, "#%d CACHED\n", n);
      break;
    }
    case BuildEvent::Kind::kStepStarted: {
      int n = Number(e.stage, e.step);
      std::fprintf(out_, "#%d [%s %d] %s (on %s at +%.3fs)\n", n, e.stage.c_str(), e.step + 1,
                   e.text.c_str(), e.worker.c_str(), e.time);
      break;
    }
    case BuildEvent::Kind::kStepLog: {
      int n = Number(e.stage, e.step);
      auto key = std::make_pair(e.stage, e.step);
      std::string text = partial_[key] + e.log;
      size_t start = 0;
      for (size_t nl; (nl = text.find('\n', start)) != std::string::npos; start = nl + 1) {
        std::fprintf(out_, "#%d %.3f %s\n", n, e.time, text.substr(start, nl - start).c_str());
      }
      partial_[key] = text.substr(start);
      break;
    }
    case BuildEvent::Kind::kStepDone: {
      int n = Number(e.stage, e.step);
      auto key = std::make_pair(e.stage, e.step);
      if (auto it = partial_.find(key); it != partial_.end() && !it->second.empty()) {
        std::fprintf(out_, "#%d %.3f %s\n", n, e.time, it->second.c_str());
        partial_.erase(it);
      }
      std::fprintf(out_, "#%d DONE %.1fs (layer %s)\n", n, e.seconds,
                   HumanSize(e.layer_size).c_str());
      break;
    }
    case BuildEvent::Kind::kStageDone:
      std::fprintf(out_, "#0 stage %s done in %.1fs%s%s\n", e.stage.c_str(), e.seconds,
                   e.worker.empty() ? " (cached)" : " on ", e.worker.c_str());
      break;
    case BuildEvent::Kind::kBuildDone:
      PrintSummary(e);
      break;
    case BuildEvent::Kind::kBuildFailed:
      break;
  }
  std::fflush(out_);
}

void PlainProgress::PrintSummary(const BuildEvent& e) {
  std::fprintf(out_, "\n%-16s %-24s %8s %10s\n", "STAGE", "WORKER", "TIME", "SIZE");
  for (const StageSummary& s : e.stages) {
    std::fprintf(out_, "%-16s %-24s %7.1fs %10s\n", s.name.c_str(),
                 s.cached ? "(cached)" : s.worker.c_str(), s.seconds, HumanSize(s.size).c_str());
  }
  std::fprintf(out_, "image %s, %s, built in %.1fs\n", e.manifest.str().c_str(),
               HumanSize(e.image_size).c_str(), e.time);
  std::fflush(out_);
}

void PlainProgress::PrintFailure(const BuildEvent& e) {
  if (!e.log.empty()) {
    std::fprintf(out_, "------\n%s%s------\n", e.log.c_str(),
                 e.log.back() == '\n' ? "" : "\n");
  }
  if (std::string excerpt = DockerfileExcerpt(dockerfile_, e.line); !excerpt.empty()) {
    std::fprintf(out_, " %s:%d\n--------------------\n%s--------------------\n",
                 dockerfile_name_.c_str(), e.line, excerpt.c_str());
  }
  std::string where;
  if (e.line > 0) where = " (stage " + e.stage + ", line " + std::to_string(e.line) + ")";
  if (e.exit_code != 0) {
    std::fprintf(out_, "ERROR: %s%s: exit code %d: %s\n", e.text.c_str(), where.c_str(),
                 e.exit_code, e.error.c_str());
  } else {
    std::fprintf(out_, "ERROR: %s%s%s\n", e.text.empty() ? "" : (e.text + ": ").c_str(),
                 e.error.c_str(), where.c_str());
  }
  std::fflush(out_);
}

// ---------------------------------------------------------------------------------------------
// TtyProgress

namespace {
constexpr size_t kTailLines = 6;
constexpr double kRedrawSeconds = 0.1;
}  // namespace

TtyProgress::TtyProgress(std::FILE* out)
    : out_(out), plain_(out), start_(std::chrono::steady_clock::now()) {
  struct winsize ws = {};
  if (::ioctl(::fileno(out), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 20) width_ = ws.ws_col;
}

double TtyProgress::Now() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

TtyProgress::Step& TtyProgress::Find(const BuildEvent& e) {
  for (Step& s : steps_) {
    if (s.stage == e.stage && s.step == e.step) return s;
  }
  Step s;
  s.stage = e.stage;
  s.step = e.step;
  s.started = Now();
  steps_.push_back(std::move(s));
  return steps_.back();
}

void TtyProgress::Transfer(const std::string& what, uint64_t done, uint64_t total) {
  double now = Now();
  if (done < total && now - last_bar_ < 0.1) return;
  last_bar_ = now;
  const int bar = std::max(10, std::min(40, width_ - 60));
  int filled = total == 0 ? bar : static_cast<int>(static_cast<double>(done) / total * bar);
  std::string line = "[" + std::string(filled, '=') + std::string(bar - filled, ' ') + "] " +
                     TransferText(what, done, total);
  if (static_cast<int>(line.size()) > width_ - 1) line.resize(std::max(0, width_ - 1));
  std::fprintf(out_, "\r\x1b[K%s%s", line.c_str(), done >= total ? "\n" : "");
  std::fflush(out_);
}

void TtyProgress::Note(const std::string& text) {
  // Printed above the live view, which is drawn again below it.
  if (drawn_ > 0) std::fprintf(out_, "\x1b[%dA\x1b[J", drawn_);
  drawn_ = 0;
  std::fprintf(out_, "%s\n", text.c_str());
  Redraw(false);
}

void TtyProgress::OnEvent(const BuildEvent& e) {
  switch (e.kind) {
    case BuildEvent::Kind::kInfo:
    case BuildEvent::Kind::kStageRetried:
      Note(e.kind == BuildEvent::Kind::kInfo
               ? e.text
               : "stage " + e.stage + " lost worker " + e.worker + ": " + e.text);
      return;
    case BuildEvent::Kind::kStageQueued:
    case BuildEvent::Kind::kStageDone:
      break;
    case BuildEvent::Kind::kStepCached: {
      Step& s = Find(e);
      s.text = e.text;
      s.state = Step::State::kCached;
      break;
    }
    case BuildEvent::Kind::kStepStarted: {
      Step& s = Find(e);
      s.text = e.text;
      s.worker = e.worker;
      s.started = Now();
      break;
    }
    case BuildEvent::Kind::kStepLog: {
      Step& s = Find(e);
      std::string text = s.partial + e.log;
      size_t start = 0;
      for (size_t nl; (nl = text.find('\n', start)) != std::string::npos; start = nl + 1) {
        s.tail.push_back(text.substr(start, nl - start));
        if (s.tail.size() > kTailLines) s.tail.erase(s.tail.begin());
      }
      s.partial = text.substr(start);
      break;
    }
    case BuildEvent::Kind::kStepDone: {
      Step& s = Find(e);
      s.state = Step::State::kDone;
      s.seconds = e.seconds;
      break;
    }
    case BuildEvent::Kind::kBuildDone:
      Redraw(true);
      plain_.PrintSummary(e);
      return;
    case BuildEvent::Kind::kBuildFailed:
      Redraw(true);
      plain_.PrintFailure(e);
      return;
  }
  Redraw(false);
}

void TtyProgress::Tick() {
  if (Now() - last_draw_ >= kRedrawSeconds) Redraw(false);
}

void TtyProgress::Redraw(bool final) {
  last_draw_ = Now();
  std::vector<std::string> lines;
  size_t finished = 0;
  for (const Step& s : steps_) finished += s.state != Step::State::kRunning;
  char buf[256];
  std::snprintf(buf, sizeof buf, "[+] Building %.1fs (%zu/%zu)%s", Now(), finished, steps_.size(),
                final ? " FINISHED" : "");
  lines.push_back(buf);
  for (const Step& s : steps_) {
    std::string head = "[" + s.stage + " " + std::to_string(s.step + 1) + "] " + s.text;
    switch (s.state) {
      case Step::State::kCached:
        lines.push_back(" => CACHED " + head);
        break;
      case Step::State::kDone:
        std::snprintf(buf, sizeof buf, "%.1fs", s.seconds);
        lines.push_back(" => " + head + " " + buf);
        break;
      case Step::State::kRunning: {
        std::snprintf(buf, sizeof buf, "%.1fs", Now() - s.started);
        lines.push_back(" => " + head + (s.worker.empty() ? "" : " (on " + s.worker + ")") + " " +
                        buf);
        std::vector<std::string> tail = s.tail;
        if (!s.partial.empty()) tail.push_back(s.partial);
        size_t first = tail.size() > kTailLines ? tail.size() - kTailLines : 0;
        for (size_t i = first; i < tail.size(); ++i) lines.push_back(" => => # " + tail[i]);
        break;
      }
    }
  }
  // Move back over the previous view; each line is cleared and cut to the terminal width so
  // nothing wraps and the count of lines to move over stays right.
  if (drawn_ > 0) std::fprintf(out_, "\x1b[%dA", drawn_);
  for (std::string& l : lines) {
    for (char& c : l) {
      if (c == '\t' || c == '\r' || static_cast<unsigned char>(c) < 0x20) c = ' ';
    }
    if (static_cast<int>(l.size()) >= width_) l.resize(width_ - 1);
    std::fprintf(out_, "\x1b[2K%s\n", l.c_str());
  }
  std::fprintf(out_, "\x1b[J");
  drawn_ = final ? 0 : static_cast<int>(lines.size());
  std::fflush(out_);
}

}  // namespace stagefarm::cli
