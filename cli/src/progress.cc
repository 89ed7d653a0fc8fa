#include "stagefarm/cli/progress.h"

#include <cinttypes>

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
    case BuildEvent::Kind::kBuildDone: {
      std::fprintf(out_, "\n%-16s %-24s %8s %10s\n", "STAGE", "WORKER", "TIME", "SIZE");
      for (const StageSummary& s : e.stages) {
        std::fprintf(out_, "%-16s %-24s %7.1fs %10s\n", s.name.c_str(),
                     s.cached ? "(cached)" : s.worker.c_str(), s.seconds,
                     HumanSize(s.size).c_str());
      }
      std::fprintf(out_, "image %s, %s, built in %.1fs\n", e.manifest.str().c_str(),
                   HumanSize(e.image_size).c_str(), e.time);
      break;
    }
    case BuildEvent::Kind::kBuildFailed:
      break;
  }
  std::fflush(out_);
}

void PlainProgress::PrintFailure(const BuildEvent& e) {
  if (!e.log.empty()) {
    std::fprintf(out_, "------\n%s%s------\n", e.log.c_str(),
                 e.log.back() == '\n' ? "" : "\n");
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

}  // namespace stagefarm::cli
