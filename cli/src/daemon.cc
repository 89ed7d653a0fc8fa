#include "stagefarm/cli/daemon.h"

#include <prometheus/exposer.h>
#include <prometheus/registry.h>
#include <signal.h>

#include <cctype>
#include <thread>

namespace stagefarm::cli {

namespace {
sigset_t ShutdownSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}
}  // namespace

void BlockShutdownSignals() {
  sigset_t set = ShutdownSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

void OnShutdownSignal(std::function<void()> on_signal) {
  sigset_t set = ShutdownSignals();
  std::thread([set, on_signal = std::move(on_signal)]() {
    for (;;) {
      int sig = 0;
      sigwait(&set, &sig);
      on_signal();
    }
  }).detach();
}

StatusOr<std::unique_ptr<prometheus::Exposer>> ServeMetrics(
    const std::string& listen, const std::shared_ptr<prometheus::Registry>& registry) {
  if (listen.empty()) return std::unique_ptr<prometheus::Exposer>();
  try {
    auto exposer = std::make_unique<prometheus::Exposer>(listen);
    exposer->RegisterCollectable(registry);
    return exposer;
  } catch (const std::exception& e) {
    return InvalidArgumentError("--metrics-listen " + listen + ": " + e.what());
  }
}

StatusOr<uint64_t> ParseBytes(const std::string& text) {
  size_t i = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
  if (i == 0) return InvalidArgumentError("\"" + text + "\" is not a size (e.g. 200G)");
  if (i > 19) return InvalidArgumentError("\"" + text + "\": too large");
  uint64_t n = std::stoull(text.substr(0, i));
  std::string unit = text.substr(i);
  for (char& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (!unit.empty() && unit.back() == 'B') unit.pop_back();
  if (unit.size() == 2 && unit[1] == 'I') unit.pop_back();
  uint64_t mult = 1;
  if (unit == "K") mult = 1ull << 10;
  else if (unit == "M") mult = 1ull << 20;
  else if (unit == "G") mult = 1ull << 30;
  else if (unit == "T") mult = 1ull << 40;
  else if (!unit.empty()) return InvalidArgumentError("\"" + text + "\": unknown unit");
  if (n > UINT64_MAX / mult) return InvalidArgumentError("\"" + text + "\": too large");
  return n * mult;
}

}  // namespace stagefarm::cli
