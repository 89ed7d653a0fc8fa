// Running the farm in production (issue 8), with real processes on 127.0.0.1:
// - CURVE: a farm started with --curve-keys builds for a listed client key, refuses an unlisted
//   key, refuses builds from a worker key and worker registration from a client key, and nothing
//   of the Dockerfile is readable on the wire (tcpdump on loopback), while without CURVE it is;
// - `stagefarm health` answers 0/1 for each daemon, and every daemon exits 0 on SIGTERM, the
//   cache server keeping what it stored;
// - the Prometheus metrics of all three daemons move as a build runs.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <thread>

#include "support/images.h"
#include "support/process.h"

namespace stagefarm::testing {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

const std::string kBin = STAGEFARM_BINARY;
const std::string kSrc = STAGEFARM_SOURCE_DIR;
const std::regex kListening(R"(listening on (tcp://[0-9.]+:[0-9]+))");
// Written into a Dockerfile; must never be readable on an encrypted wire.
const std::string kMarker = "stagefarm-wire-marker-7f3a9c";

int CountOf(const std::string& text, const std::string& needle) {
  int n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

int FreePort() {
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(s);
  return ntohs(a.sin_port);
}

std::string PortOf(const std::string& endpoint) { return endpoint.substr(endpoint.rfind(':') + 1); }

// GET http://127.0.0.1:port/metrics -> {"name{labels}": value}. Empty when unreachable.
std::map<std::string, double> Scrape(int port) {
  std::map<std::string, double> out;
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(s);
    return out;
  }
  std::string req = "GET /metrics HTTP/1.0\r\n\r\n";
  if (::send(s, req.data(), req.size(), MSG_NOSIGNAL) < 0) {
    ::close(s);
    return out;
  }
  std::string resp;
  char buf[8192];
  for (ssize_t n; (n = ::recv(s, buf, sizeof buf, 0)) > 0;) resp.append(buf, n);
  ::close(s);
  std::istringstream in(resp.substr(std::min(resp.size(), resp.find("\r\n\r\n") + 4)));
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    size_t sp = line.rfind(' ');
    if (sp == std::string::npos) continue;
    out[line.substr(0, sp)] = std::stod(line.substr(sp + 1));
  }
  return out;
}

// Sum of every sample of `name` whose labels contain all of `labels` (e.g. outcome="success").
double Sum(const std::map<std::string, double>& m, const std::string& name,
           const std::vector<std::string>& labels = {}) {
  double total = 0;
  for (const auto& [k, v] : m) {
    std::string base = k.substr(0, k.find('{'));
    if (base != name) continue;
    bool all = true;
    for (const auto& l : labels) all = all && k.find(l) != std::string::npos;
    if (all) total += v;
  }
  return total;
}

bool Has(const std::map<std::string, double>& m, const std::string& name) {
  for (const auto& [k, v] : m) {
    if (k.substr(0, k.find('{')) == name) return true;
  }
  return false;
}

class OpsTest : public ::testing::Test {
 protected:
  static std::string busybox() { return BusyboxLayout(); }

  // A build context whose Dockerfile carries kMarker.
  std::string MarkerContext() {
    std::string ctx = tmp_.path() + "/ctx";
    fs::create_directories(ctx);
    std::ofstream(ctx + "/Dockerfile") << "FROM busybox\nRUN echo " << kMarker << " > /marker\n";
    return ctx;
  }

  std::vector<std::string> Keys(const std::string& dir, const std::string& role,
                                const std::string& name) {
    return {kBin, "keys", "generate", dir, "--role", role, name};
  }

  // A directory with the server's public key and one secret of `role`.
  std::string KeyDirFor(const std::string& all, const std::string& role, const std::string& name) {
    std::string d = tmp_.path() + "/keys-" + role + "-" + name;
    fs::create_directories(d);
    fs::copy_file(all + "/server.farm.pub", d + "/server.farm.pub");
    fs::copy_file(all + "/" + role + "." + name + ".secret",
                  d + "/" + role + "." + name + ".secret");
    return d;
  }

  TempDir tmp_;
};


// A cache server, a coordinator and one worker; with `keys` (a directory from `keys generate`
// holding the server pair and every accepted public key) they run CURVE.
struct Farm {
  Farm(const std::string& t, const std::string& server_keys, const std::string& worker_keys,
       std::vector<std::string> worker_extra = {}, std::vector<std::string> coord_extra = {}) {
    std::vector<std::string> k = server_keys.empty()
                                     ? std::vector<std::string>{}
                                     : std::vector<std::string>{"--curve-keys", server_keys};
    std::vector<std::string> c = {
        kBin,     "cache",      "--listen",         "tcp://127.0.0.1:0",
        "--data", t + "/cache", "--metrics-listen", "127.0.0.1:" + std::to_string(cache_metrics)};
    c.insert(c.end(), k.begin(), k.end());
    cache = std::make_unique<ChildProcess>(c, t + "/cache-log");
    cache_ep = cache->WaitForStderr(kListening, 20s).value_or("");
    std::vector<std::string> co = {
        kBin,      "coordinator", "--listen",         "tcp://127.0.0.1:0",
        "--cache", cache_ep,      "--metrics-listen", "127.0.0.1:" + std::to_string(coord_metrics)};
    co.insert(co.end(), k.begin(), k.end());
    co.insert(co.end(), coord_extra.begin(), coord_extra.end());
    coord = std::make_unique<ChildProcess>(co, t + "/coord-log");
    coord_ep = coord->WaitForStderr(kListening, 20s).value_or("");
    std::vector<std::string> w = {
        kBin,      "worker", "--coordinator",    coord_ep,
        "--cache", cache_ep, "--root",           t + "/w1",
        "--name",  "w1",     "--metrics-listen", "127.0.0.1:" + std::to_string(worker_metrics)};
    if (!worker_keys.empty()) w.insert(w.end(), {"--curve-keys", worker_keys});
    w.insert(w.end(), worker_extra.begin(), worker_extra.end());
    worker = std::make_unique<ChildProcess>(w, t + "/w1-log");
  }
  bool Ready() {
    return !cache_ep.empty() && !coord_ep.empty() &&
           coord->WaitForStderr(std::regex("worker w1 registered"), 20s).has_value();
  }
  std::string Logs() const {
    return "--- cache\n" + cache->Stderr() + "--- coordinator\n" + coord->Stderr() +
           "--- worker\n" + worker->Stderr();
  }

  int cache_metrics = FreePort(), coord_metrics = FreePort(), worker_metrics = FreePort();
  std::unique_ptr<ChildProcess> cache, coord, worker;
  std::string cache_ep, coord_ep;
};

// Captures loopback traffic to both daemons' ports into a pcap file while alive.
class Capture {
 public:
  Capture(const std::string& pcap, const Farm& f)
      : proc_({"tcpdump", "-i", "lo", "-U", "-s", "0", "-w", pcap,
               "tcp port " + PortOf(f.cache_ep) + " or tcp port " + PortOf(f.coord_ep)},
              pcap + "-log"),
        pcap_(pcap) {}
  bool Started() { return proc_.WaitForStderr(std::regex("listening on"), 10s).has_value(); }
  std::string Stop() {
    proc_.Kill(SIGINT);  // tcpdump flushes and closes the file on SIGINT
    proc_.Wait(10s);
    return ReadFileOrEmpty(pcap_);
  }

 private:
  ChildProcess proc_;
  std::string pcap_;
};

// Builds the marker Dockerfile on a farm with or without CURVE and returns the captured bytes.
std::string BuildAndCapture(const std::string& t, const std::string& busybox,
                            const std::string& ctx, bool curve, const std::string& all_keys,
                            const std::string& worker_keys, const std::string& client_keys) {
  Farm farm(t, curve ? all_keys : "", curve ? worker_keys : "");
  EXPECT_TRUE(farm.Ready()) << farm.Logs();
  Capture cap(t + "/wire.pcap", farm);
  EXPECT_TRUE(cap.Started());
  std::vector<std::string> k;
  if (curve) k = {"--curve-keys", client_keys};
  std::string out, err;
  std::vector<std::string> import = {kBin,          "image", "import", "--cache",
                                     farm.cache_ep, busybox, "busybox"};
  import.insert(import.end(), k.begin(), k.end());
  EXPECT_EQ(RunCommand(import, &out, &err), 0) << err;
  std::vector<std::string> build = {kBin, "build", "--farm", farm.coord_ep, "--progress=plain",
                                    "-t", "marker"};
  build.insert(build.end(), k.begin(), k.end());
  build.push_back(ctx);
  EXPECT_EQ(RunCommand(build, &out, &err), 0) << err << farm.Logs();
  EXPECT_NE(err.find(kMarker), std::string::npos) << "the client saw the step" << err;
  return cap.Stop();
}

TEST_F(OpsTest, CurveFarmEncryptsTheWireAndChecksEveryKey) {
  const std::string t = tmp_.path();
  const std::string all = t + "/keys";
  std::string out, err;
  using Key = std::pair<std::string, std::string>;
  for (const auto& [role, name] :
       {Key{"server", "farm"}, Key{"worker", "w1"}, Key{"client", "ci"}}) {
    ASSERT_EQ(RunCommand(Keys(all, role, name), &out, &err), 0) << err;
  }
  // A client key nobody listed, made the same way elsewhere.
  ASSERT_EQ(RunCommand(Keys(t + "/stranger", "client", "eve"), &out, &err), 0) << err;
  fs::copy_file(all + "/server.farm.pub", t + "/stranger/server.farm.pub");
  std::string worker_keys = KeyDirFor(all, "worker", "w1");
  std::string client_keys = KeyDirFor(all, "client", "ci");
  std::string ctx = MarkerContext();

  // Plaintext first: the capture sees the Dockerfile, so the capture works.
  fs::create_directories(t + "/plain");
  std::string plain = BuildAndCapture(t + "/plain", busybox(), ctx, false, "", "", "");
  ASSERT_GT(plain.size(), 1000u);
  EXPECT_NE(plain.find(kMarker), std::string::npos) << "plaintext farm: marker not captured";

  fs::create_directories(t + "/curve");
  std::string wire =
      BuildAndCapture(t + "/curve", busybox(), ctx, true, all, worker_keys, client_keys);
  ASSERT_GT(wire.size(), 1000u);
  EXPECT_EQ(wire.find(kMarker), std::string::npos) << "CURVE farm: marker readable on the wire";
  EXPECT_EQ(wire.find("FROM busybox"), std::string::npos);

  // Roles and unlisted keys against a CURVE farm.
  fs::create_directories(t + "/roles");
  Farm farm(t + "/roles", all, worker_keys);
  ASSERT_TRUE(farm.Ready()) << farm.Logs();
  EXPECT_EQ(RunCommand({kBin, "health", "--coordinator", farm.coord_ep, "--cache", farm.cache_ep,
                        "--curve-keys", client_keys},
                       &out, &err),
            0)
      << err;
  // The unlisted key: the handshake is refused, nothing answers.
  EXPECT_EQ(RunCommand({kBin, "health", "--coordinator", farm.coord_ep, "--curve-keys",
                        t + "/stranger", "--timeout", "2"},
                       &out, &err),
            1);
  EXPECT_EQ(RunCommand({kBin, "health", "--cache", farm.cache_ep, "--curve-keys", t + "/stranger",
                        "--timeout", "2"},
                       &out, &err),
            1);
  // No key at all.
  EXPECT_EQ(
      RunCommand({kBin, "health", "--coordinator", farm.coord_ep, "--timeout", "2"}, &out, &err),
      1);
  // A worker's key cannot submit a build.
  ASSERT_EQ(RunCommand({kBin, "image", "import", "--cache", farm.cache_ep, "--curve-keys",
                        client_keys, busybox(), "busybox"},
                       &out, &err),
            0)
      << err;
  EXPECT_NE(RunCommand({kBin, "build", "--farm", farm.coord_ep, "--cache", farm.cache_ep,
                        "--curve-keys", worker_keys, "--progress=plain", ctx},
                       &out, &err, {}, 60s),
            0);
  EXPECT_NE(err.find("may not call SubmitBuild"), std::string::npos) << err;
  // A client's key cannot register as a worker, even filed as a worker key on the intruder's side.
  std::string stolen = t + "/stolen";
  fs::create_directories(stolen);
  fs::copy_file(all + "/server.farm.pub", stolen + "/server.farm.pub");
  fs::copy_file(all + "/client.ci.secret", stolen + "/worker.ci.secret");
  ChildProcess intruder({kBin, "worker", "--coordinator", farm.coord_ep, "--cache", farm.cache_ep,
                         "--root", t + "/roles/w2", "--name", "w2", "--curve-keys", stolen},
                        t + "/roles/w2-log");
  EXPECT_TRUE(intruder.WaitForStderr(std::regex("registration refused"), 20s)) << intruder.Stderr();
  EXPECT_FALSE(farm.coord->WaitForStderr(std::regex("worker w2 registered"), 1s));
}

TEST_F(OpsTest, HealthProbesAndGracefulShutdownOnSigterm) {
  const std::string t = tmp_.path();
  // Without keys no daemon listens beyond loopback unless told --insecure.
  {
    std::string out, err;
    EXPECT_EQ(RunCommand({kBin, "cache", "--listen", "tcp://0.0.0.0:0", "--data", t + "/open"},
                         &out, &err, {}, 20s),
              1);
    EXPECT_NE(err.find("--insecure"), std::string::npos) << err;
    EXPECT_EQ(RunCommand({kBin, "coordinator", "--listen", "tcp://0.0.0.0:0", "--cache",
                          "tcp://127.0.0.1:1"},
                         &out, &err, {}, 20s),
              1);
    EXPECT_NE(err.find("--insecure"), std::string::npos) << err;
  }
  Farm farm(t, "", "");
  ASSERT_TRUE(farm.Ready()) << farm.Logs();
  std::string out, err;
  std::string worker_metrics = "127.0.0.1:" + std::to_string(farm.worker_metrics);
  ASSERT_EQ(RunCommand({kBin, "health", "--coordinator", farm.coord_ep, "--cache", farm.cache_ep,
                        "--worker", worker_metrics},
                       &out, &err),
            0)
      << err;
  EXPECT_NE(out.find("(1 workers)"), std::string::npos) << out;
  // The coordinator's metrics port is no worker.
  EXPECT_EQ(RunCommand({kBin, "health", "--worker",
                        "127.0.0.1:" + std::to_string(farm.coord_metrics), "--timeout", "2"},
                       &out, &err),
            1);
  EXPECT_EQ(RunCommand({kBin, "health", "--coordinator", "tcp://127.0.0.1:1", "--timeout", "1"},
                       &out, &err),
            1);
  EXPECT_EQ(RunCommand({kBin, "health"}, &out, &err), 2);

  ASSERT_EQ(RunCommand({kBin, "image", "import", "--cache", farm.cache_ep, busybox(), "busybox"},
                       &out, &err),
            0)
      << err;

  // SIGTERM: each daemon exits 0, promptly, and then fails its probe.
  farm.worker->Kill(SIGTERM);
  EXPECT_EQ(farm.worker->Wait(15s), std::optional<int>(0)) << farm.worker->Stderr();
  EXPECT_EQ(RunCommand({kBin, "health", "--worker", worker_metrics, "--timeout", "1"}, &out, &err),
            1);
  farm.coord->Kill(SIGTERM);
  EXPECT_EQ(farm.coord->Wait(10s), std::optional<int>(0)) << farm.coord->Stderr();
  farm.cache->Kill(SIGTERM);
  EXPECT_EQ(farm.cache->Wait(10s), std::optional<int>(0)) << farm.cache->Stderr();
  EXPECT_EQ(RunCommand({kBin, "health", "--cache", farm.cache_ep, "--timeout", "1"}, &out, &err),
            1);

  // The cache server reopens its store with the image in it.
  ChildProcess again({kBin, "cache", "--listen", "tcp://127.0.0.1:0", "--data", t + "/cache"},
                     t + "/cache2-log");
  std::optional<std::string> ep = again.WaitForStderr(kListening, 20s);
  ASSERT_TRUE(ep) << again.Stderr();
  ASSERT_EQ(RunCommand({kBin, "image", "ls", "--cache", *ep}, &out, &err), 0) << err;
  EXPECT_NE(out.find("busybox"), std::string::npos) << out;
}

// Two workers with `drain_timeout` seconds to finish on SIGTERM, busybox imported, and a build
// of `dockerfile` under way; `busy` is the worker that took its step. A long heartbeat timeout
// shows that nothing below relies on the coordinator noticing a worker gone silent.
struct DrainFixture {
  DrainFixture(const std::string& t, int drain_timeout, const std::string& dockerfile)
      : farm(t, "", "", {"--drain-timeout", std::to_string(drain_timeout)},
             {"--heartbeat-timeout", "60"}) {
    if (!farm.Ready()) return;
    w2 = std::make_unique<ChildProcess>(
        std::vector<std::string>{kBin, "worker", "--coordinator", farm.coord_ep, "--cache",
                                 farm.cache_ep, "--root", t + "/w2", "--name", "w2",
                                 "--drain-timeout", std::to_string(drain_timeout)},
        t + "/w2-log");
    if (!farm.coord->WaitForStderr(std::regex("worker w2 registered"), 20s)) return;
    std::string out, err;
    if (RunCommand({kBin, "image", "import", "--cache", farm.cache_ep, BusyboxLayout(), "busybox"}, &out,
                   &err) != 0) {
      return;
    }
    ctx = t + "/ctx";
    fs::create_directories(ctx);
    std::ofstream(ctx + "/Dockerfile") << dockerfile;
    client = std::make_unique<ChildProcess>(
        std::vector<std::string>{kBin, "build", "--farm", farm.coord_ep, "--progress=plain", ctx},
        t + "/client-log");
    for (int i = 0; i < 200 && !busy; ++i) {
      if (farm.worker->WaitForStderr(std::regex(": task "), 25ms)) {
        busy = farm.worker.get();
        busy_name = "w1";
      } else if (w2->WaitForStderr(std::regex(": task "), 25ms)) {
        busy = w2.get();
        busy_name = "w2";
      }
    }
  }
  std::string Logs() {
    return farm.Logs() + "--- w2\n" + (w2 ? w2->Stderr() : "") + "--- client\n" +
           (client ? client->Stderr() : "");
  }
  std::string other() const { return busy_name == "w1" ? "w2" : "w1"; }

  Farm farm;
  std::unique_ptr<ChildProcess> w2, client;
  std::string ctx, busy_name;
  ChildProcess* busy = nullptr;
};

TEST_F(OpsTest, WorkerDrainsOnSigtermFinishingItsStepAndTakingNoNewWork) {
  const std::string t = tmp_.path();
  DrainFixture f(t, 60, "FROM busybox\nRUN sleep 3 && echo done > /done\n");
  ASSERT_NE(f.busy, nullptr) << f.Logs();
  std::this_thread::sleep_for(500ms);
  f.busy->Kill(SIGTERM);
  ASSERT_TRUE(f.farm.coord->WaitForStderr(
      std::regex("worker " + f.busy_name + " is shutting down"), 10s))
      << f.Logs();
  // While it drains, new work goes to the other worker.
  std::string ctx2 = t + "/ctx2";
  fs::create_directories(ctx2);
  std::ofstream(ctx2 + "/Dockerfile") << "FROM busybox\nRUN echo second > /second\n";
  std::string out, err;
  ASSERT_EQ(RunCommand({kBin, "build", "--farm", f.farm.coord_ep, "--progress=plain", ctx2}, &out,
                       &err),
            0)
      << err << f.Logs();
  EXPECT_NE(err.find("(on " + f.other() + " "), std::string::npos) << err;

  // The step it was running finishes there, once; then it leaves the farm and exits 0.
  ASSERT_EQ(f.client->Wait(60s), std::optional<int>(0)) << f.Logs();
  EXPECT_EQ(f.busy->Wait(20s), std::optional<int>(0)) << f.Logs();
  std::string build = f.client->Stderr();
  EXPECT_EQ(CountOf(build, "] RUN sleep 3"), 1) << build;
  EXPECT_NE(build.find("(on " + f.busy_name + " "), std::string::npos) << build;
  EXPECT_TRUE(
      f.farm.coord->WaitForStderr(std::regex("worker " + f.busy_name + " left the farm"), 10s))
      << f.Logs();
}

TEST_F(OpsTest, WorkerHandsBackWhatOutlivesTheDrainTimeout) {
  const std::string t = tmp_.path();
  DrainFixture f(t, 1, "FROM busybox\nRUN sleep 6 && echo done > /done\n");
  ASSERT_NE(f.busy, nullptr) << f.Logs();
  std::this_thread::sleep_for(500ms);
  auto signalled = std::chrono::steady_clock::now();
  f.busy->Kill(SIGTERM);
  // After the drain timeout the step is handed back and runs on the other worker at once (the
  // heartbeat timeout is 60 s); the worker exits 0 with nothing left running.
  EXPECT_EQ(f.busy->Wait(15s), std::optional<int>(0)) << f.Logs();
  EXPECT_LT(std::chrono::steady_clock::now() - signalled, 6s);
  ASSERT_EQ(f.client->Wait(60s), std::optional<int>(0)) << f.Logs();
  std::string build = f.client->Stderr();
  EXPECT_NE(build.find("handed the stage back"), std::string::npos) << build;
  EXPECT_NE(build.find("(on " + f.other() + " "), std::string::npos) << build;
  EXPECT_EQ(CountOf(build, "] RUN sleep 6"), 2) << build;
}

TEST_F(OpsTest, MetricsMoveDuringAndAfterABuild) {
  const std::string t = tmp_.path();
  Farm farm(t, "", "");
  ASSERT_TRUE(farm.Ready()) << farm.Logs();
  std::string out, err;
  ASSERT_EQ(RunCommand({kBin, "image", "import", "--cache", farm.cache_ep, busybox(), "busybox"},
                       &out, &err),
            0)
      << err;
  auto coord0 = Scrape(farm.coord_metrics);
  // The store's size gauges are refreshed by the cache server's housekeeping, every second.
  auto cache0 = Scrape(farm.cache_metrics);
  for (int i = 0; i < 50 && Sum(cache0, "stagefarm_cache_bytes") == 0; ++i) {
    std::this_thread::sleep_for(100ms);
    cache0 = Scrape(farm.cache_metrics);
  }
  auto worker0 = Scrape(farm.worker_metrics);
  ASSERT_FALSE(coord0.empty());
  ASSERT_FALSE(cache0.empty());
  ASSERT_FALSE(worker0.empty());
  EXPECT_EQ(Sum(coord0, "stagefarm_builds_total"), 0);
  EXPECT_EQ(Sum(worker0, "stagefarm_worker_slots_busy"), 0);
  EXPECT_TRUE(Has(coord0, "stagefarm_queue_depth"));
  EXPECT_TRUE(Has(coord0, "stagefarm_workers"));
  EXPECT_GT(Sum(cache0, "stagefarm_cache_bytes"), 0);  // the imported image
  EXPECT_GT(Sum(cache0, "stagefarm_cache_blobs"), 0);

  std::string ctx = t + "/ctx";
  fs::create_directories(ctx);
  std::ofstream(ctx + "/Dockerfile") << "FROM busybox\nRUN sleep 3 && echo slow > /slow\n";
  std::vector<std::string> build = {kBin, "build", "--farm", farm.coord_ep, "--progress=plain",
                                    "-t", "slow",  ctx};
  // During the build: the worker's slot is busy.
  std::thread builder([&] { EXPECT_EQ(RunCommand(build, &out, &err), 0) << err; });
  double busy = 0;
  for (int i = 0; i < 60 && busy == 0; ++i) {
    std::this_thread::sleep_for(100ms);
    busy = Sum(Scrape(farm.worker_metrics), "stagefarm_worker_slots_busy");
  }
  builder.join();
  EXPECT_EQ(busy, 1) << "the worker never showed a busy slot";

  std::this_thread::sleep_for(1500ms);  // one housekeeping round for the size gauges
  auto coord1 = Scrape(farm.coord_metrics);
  auto cache1 = Scrape(farm.cache_metrics);
  auto worker1 = Scrape(farm.worker_metrics);
  EXPECT_EQ(Sum(coord1, "stagefarm_builds_total", {"outcome=\"success\""}), 1);
  EXPECT_EQ(Sum(coord1, "stagefarm_build_duration_seconds_count"), 1);
  EXPECT_GE(Sum(coord1, "stagefarm_build_duration_seconds_sum"), 3);
  EXPECT_EQ(Sum(coord1, "stagefarm_stages_total", {"outcome=\"executed\""}), 1);
  EXPECT_EQ(Sum(coord1, "stagefarm_queue_depth"), 0);
  EXPECT_EQ(Sum(worker1, "stagefarm_worker_slots_busy"), 0);
  // The one RUN step, counted by the executor through the worker's registry.
  EXPECT_EQ(Sum(worker1, "stagefarm_worker_steps_total", {"kind=\"run\""}), 1);
  EXPECT_EQ(Sum(worker1, "stagefarm_worker_step_duration_seconds_count", {"kind=\"run\""}), 1);
  EXPECT_GT(Sum(worker1, "stagefarm_worker_layer_bytes_total"), 0);
  EXPECT_GT(Sum(cache1, "stagefarm_cache_ops_total"), Sum(cache0, "stagefarm_cache_ops_total"));
  EXPECT_GT(Sum(cache1, "stagefarm_cache_bytes"), Sum(cache0, "stagefarm_cache_bytes"));  // layer
  EXPECT_GT(Sum(cache1, "stagefarm_cache_transfer_bytes_total", {"direction"}),
            Sum(cache0, "stagefarm_cache_transfer_bytes_total", {"direction"}));
  EXPECT_GT(Sum(cache1, "stagefarm_cache_ac_lookups_total"),
            Sum(cache0, "stagefarm_cache_ac_lookups_total"));

  // The same build again: cached, no new worker work, a second successful build.
  ASSERT_EQ(RunCommand(build, &out, &err), 0) << err;
  auto coord2 = Scrape(farm.coord_metrics);
  EXPECT_EQ(Sum(coord2, "stagefarm_builds_total", {"outcome=\"success\""}), 2);
  EXPECT_EQ(Sum(coord2, "stagefarm_stages_total", {"outcome=\"executed\""}), 1);
  EXPECT_EQ(Sum(coord2, "stagefarm_stages_total", {"outcome=\"cached\""}), 1);

  // A failing step counts as a failed build.
  std::ofstream(ctx + "/Dockerfile") << "FROM busybox\nRUN exit 3\n";
  EXPECT_NE(RunCommand(build, &out, &err), 0);
  auto coord3 = Scrape(farm.coord_metrics);
  EXPECT_EQ(Sum(coord3, "stagefarm_builds_total", {"outcome=\"failed\""}), 1);
}

}  // namespace
}  // namespace stagefarm::testing
