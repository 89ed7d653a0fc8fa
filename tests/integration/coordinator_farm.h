// A farm of real processes on 127.0.0.1 for the coordinator's integration tests: a cache server,
// a coordinator with short timeouts and named workers, the busybox image imported. Every process
// is a ChildProcess owned here, so a failed assertion leaks nothing; what a killed worker leaves
// behind (its sandbox's processes, its mounts) is cleaned up by CleanUp().
#pragma once

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "support/images.h"
#include "support/process.h"

namespace stagefarm::testing {

inline const std::string kBin = STAGEFARM_BINARY;
inline const std::string kSrc = STAGEFARM_SOURCE_DIR;

// Pids of processes whose command line contains `marker`.
inline std::vector<pid_t> PidsWith(const std::string& marker) {
  std::vector<pid_t> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string cmd = ReadFileOrEmpty(e.path().string() + "/cmdline");
    std::replace(cmd.begin(), cmd.end(), '\0', ' ');
    if (cmd.find(marker) != std::string::npos && static_cast<pid_t>(std::stoi(name)) != getpid()) {
      out.push_back(static_cast<pid_t>(std::stoi(name)));
    }
  }
  return out;
}

// Mount points under `dir`.
inline std::vector<std::string> MountsUnder(const std::string& dir) {
  std::vector<std::string> out;
  std::istringstream in(ReadFileOrEmpty("/proc/self/mountinfo"));
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, devs, root, point;
    fields >> id >> parent >> devs >> root >> point;
    if (point.rfind(dir, 0) == 0) out.push_back(point);
  }
  return out;
}

struct FarmOptions {
  int workers = 2;
  int slots = 1;
  double heartbeat_timeout = 3;
  double client_timeout = 3;
  // Where the cache server and the coordinator listen; other than loopback needs --insecure.
  std::string host = "127.0.0.1";
  // More flags for the worker of this name, e.g. {"w2", {"--label", "size=large"}}.
  std::map<std::string, std::vector<std::string>> worker_flags = {};
};

class Farm {
 public:
  // Starts everything under `dir`; check ok() (gtest assertions cannot stop a constructor).
  Farm(std::string dir, FarmOptions o) : dir_(std::move(dir)), options_(o) {
    cache_ = std::make_unique<ChildProcess>(
        std::vector<std::string>{kBin, "cache", "--listen", "tcp://" + o.host + ":0", "--data",
                                 dir_ + "/cache", "--insecure"},
        dir_ + "/cache-log");
    auto ep = cache_->WaitForStderr(std::regex(R"(listening on (tcp://[0-9.]+:[0-9]+))"),
                                    std::chrono::seconds(20));
    if (!ep) return;
    cache_ep_ = *ep;
    if (!StartCoordinator("tcp://" + o.host + ":0")) return;
    for (int i = 1; i <= o.workers; ++i) StartWorker("w" + std::to_string(i));
    for (int i = 1; i <= o.workers; ++i) {
      if (!coord_->WaitForStderr(std::regex("worker w" + std::to_string(i) + " registered"),
                                 std::chrono::seconds(20))) {
        return;
      }
    }
    std::string out, err;
    if (RunCommand({kBin, "image", "import", "--cache", cache_ep_, BusyboxLayout(), "busybox"},
                   &out, &err) != 0) {
      return;
    }
    ok_ = true;
  }
  ~Farm() { CleanUp(); }

  bool ok() const { return ok_; }
  const std::string& coord_ep() const { return coord_ep_; }
  const std::string& cache_ep() const { return cache_ep_; }
  ChildProcess& coordinator() { return *coord_; }
  ChildProcess& worker(const std::string& name) { return *workers_.at(name); }
  std::string worker_root(const std::string& name) const { return dir_ + "/" + name; }
  std::string Logs() const {
    std::string s = "--- coordinator\n" + coord_->Stderr();
    for (const auto& [n, w] : workers_) s += "--- " + n + "\n" + w->Stderr();
    return s;
  }

  bool StartCoordinator(const std::string& listen) {
    ++coord_generation_;
    coord_ = std::make_unique<ChildProcess>(
        std::vector<std::string>{kBin, "coordinator", "--listen", listen, "--cache", cache_ep_,
                                 "--heartbeat-timeout", std::to_string(options_.heartbeat_timeout),
                                 "--client-timeout", std::to_string(options_.client_timeout),
                                 "--insecure"},
        dir_ + "/coord" + std::to_string(coord_generation_) + "-log");
    auto ep = coord_->WaitForStderr(std::regex(R"(listening on (tcp://[0-9.]+:[0-9]+))"),
                                    std::chrono::seconds(20));
    if (!ep) return false;
    coord_ep_ = *ep;
    return true;
  }
  void StopCoordinator() {
    coord_->Kill(SIGKILL);
    coord_->Wait(std::chrono::seconds(10));
  }

  // `prefix` runs the worker through another command, e.g. {"ip", "netns", "exec", "NS"}.
  void StartWorker(const std::string& name, std::vector<std::string> prefix = {}) {
    std::vector<std::string> argv = std::move(prefix);
    for (std::string a :
         {kBin, std::string("worker"), std::string("--coordinator"), coord_ep_,
          std::string("--cache"), cache_ep_, std::string("--root"), worker_root(name),
          std::string("--name"), name, std::string("--slots"), std::to_string(options_.slots)}) {
      argv.push_back(std::move(a));
    }
    if (auto f = options_.worker_flags.find(name); f != options_.worker_flags.end()) {
      argv.insert(argv.end(), f->second.begin(), f->second.end());
    }
    workers_[name] = std::make_unique<ChildProcess>(argv, dir_ + "/" + name + "-log");
  }
  bool WaitForWorker(const std::string& name) {
    return coord_
        ->WaitForStderr(std::regex("worker " + name + " registered"), std::chrono::seconds(20))
        .has_value();
  }

  // A context dir with this Dockerfile.
  std::string Context(const std::string& name, const std::string& dockerfile) const {
    std::string ctx = dir_ + "/" + name;
    std::filesystem::create_directories(ctx);
    std::ofstream(ctx + "/Dockerfile") << dockerfile;
    return ctx;
  }
  std::vector<std::string> BuildArgv(const std::string& ctx,
                                     std::vector<std::string> extra = {}) const {
    std::vector<std::string> argv = {kBin, "build", "--farm", coord_ep_, "--progress=plain"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.push_back(ctx);
    return argv;
  }

  // Kills what a SIGKILLed worker left running and unmounts what it left mounted.
  void CleanUp() {
    for (const std::string& m : markers_) {
      for (pid_t p : PidsWith(m)) kill(p, SIGKILL);
    }
    std::vector<std::string> mounts = MountsUnder(dir_ + "/");
    for (auto it = mounts.rbegin(); it != mounts.rend(); ++it) umount2(it->c_str(), MNT_DETACH);
  }
  // A string to put in RUN commands, so their processes can be found (and are killed at the end).
  std::string Marker(const std::string& what) {
    std::string m = "sfmark-" + std::to_string(getpid()) + "-" + what;
    markers_.push_back(m);
    return m;
  }

 private:
  std::string dir_;
  FarmOptions options_;
  bool ok_ = false;
  int coord_generation_ = 0;
  std::string cache_ep_, coord_ep_;
  std::unique_ptr<ChildProcess> cache_, coord_;
  std::map<std::string, std::unique_ptr<ChildProcess>> workers_;
  std::vector<std::string> markers_;
};

// "#N [stage k] TEXT (on WORKER at +T.TTTs)" lines: step -> worker and start time.
struct StepStart {
  std::string stage, worker;
  double at = 0;
};
inline std::vector<StepStart> StepStarts(const std::string& out) {
  static const std::regex started(R"(#\d+ \[(\S+) \d+\] .* \(on (\S+) at \+([0-9.]+)s\))");
  std::vector<StepStart> v;
  for (std::sregex_iterator it(out.begin(), out.end(), started), end; it != end; ++it) {
    v.push_back(StepStart{(*it)[1], (*it)[2], std::stod((*it)[3])});
  }
  return v;
}

inline std::string ManifestOf(const std::string& out) {
  static const std::regex image(R"(image (sha256:[0-9a-f]{64}))");
  std::smatch m;
  return std::regex_search(out, m, image) ? std::string(m[1]) : "";
}

inline int CountMatches(const std::string& text, const std::regex& re) {
  return static_cast<int>(
      std::distance(std::sregex_iterator(text.begin(), text.end(), re), std::sregex_iterator()));
}

}  // namespace stagefarm::testing
