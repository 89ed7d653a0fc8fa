// Operator commands: `stagefarm health` (Kubernetes probes) and `stagefarm keys generate` (CURVE
// key pairs for --curve-keys).
//
// Health of a worker: a worker binds no ZeroMQ socket (it connects to the coordinator), so its
// health is its metrics endpoint: `--worker HOST:PORT` asks http://HOST:PORT/metrics and expects
// HTTP 200 with the worker's metrics in it. Run workers with --metrics-listen for this.
#include <netdb.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "stagefarm/cli/commands.h"
#include "stagefarm/cli/curve_keys.h"
#include "stagefarm/common/build_protocol.h"
#include "stagefarm/common/transport.h"

namespace stagefarm::cli {
namespace {

using Millis = std::chrono::milliseconds;

// Pings a coordinator or cache server; returns a one-line description of the answer.
StatusOr<std::string> PingDaemon(const std::string& what, const std::string& endpoint,
                                 const std::string& keys, Millis timeout) {
  Transport transport;
  SF_RETURN_IF_ERROR(UseClientCurveKeys(transport, keys));
  SF_ASSIGN_OR_RETURN(std::unique_ptr<ClientSocket> sock, transport.Connect(endpoint));
  RpcChannel rpc(std::move(sock));
  Message ping;
  ping.method = Method::kPing;
  StatusOr<Message> reply = rpc.Call(std::move(ping), timeout);
  if (!reply.ok()) {
    return UnavailableError(what + " " + endpoint + " did not answer: " + reply.status().message());
  }
  std::string line = what + " " + endpoint + " ok";
  if (what == "coordinator") {
    FarmInfo info;
    if (Decode(reply->body, &info).ok()) {
      line += " (" + std::to_string(info.workers) + " workers)";
    }
  }
  return line;
}

class Socket {
 public:
  explicit Socket(int fd) : fd_(fd) {}
  ~Socket() {
    if (fd_ >= 0) ::close(fd_);  // never retried: the fd is gone either way
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// GET http://HOST:PORT/metrics; returns the body of a 200 answer.
StatusOr<std::string> HttpGetMetrics(const std::string& address, Millis timeout) {
  std::string a = address;
  if (a.rfind("http://", 0) == 0) a = a.substr(7);
  if (size_t slash = a.find('/'); slash != std::string::npos) a = a.substr(0, slash);
  size_t colon = a.rfind(':');
  if (colon == std::string::npos)
    return InvalidArgumentError("--worker " + address + ": HOST:PORT");
  std::string host = a.substr(0, colon), port = a.substr(colon + 1);
  if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &res); rc != 0) {
    return UnavailableError("resolve " + host + ": " + gai_strerror(rc));
  }
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> guard(res, freeaddrinfo);
  Socket s(::socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, res->ai_protocol));
  if (s.get() < 0) return UnavailableError(std::string("socket: ") + std::strerror(errno));
  timeval tv{static_cast<time_t>(timeout.count() / 1000),
             static_cast<suseconds_t>(timeout.count() % 1000 * 1000)};
  // Linux applies SO_SNDTIMEO to connect too.
  setsockopt(s.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  setsockopt(s.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (::connect(s.get(), res->ai_addr, res->ai_addrlen) != 0) {
    return UnavailableError("connect " + a + ": " + std::strerror(errno));
  }
  std::string req = "GET /metrics HTTP/1.0\r\nHost: " + a + "\r\nConnection: close\r\n\r\n";
  if (::send(s.get(), req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
    return UnavailableError("send to " + a + ": " + std::strerror(errno));
  }
  std::string resp;
  char buf[16384];
  for (;;) {
    ssize_t n = ::recv(s.get(), buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return UnavailableError("read from " + a + ": " + std::strerror(errno));
    if (n == 0) break;
    resp.append(buf, static_cast<size_t>(n));
    if (resp.size() > (64u << 20)) break;  // metrics are small; enough to judge
  }
  size_t eol = resp.find("\r\n");
  std::string status_line = resp.substr(0, eol);
  if (status_line.find(" 200") == std::string::npos) {
    return UnavailableError("http://" + a + "/metrics answered \"" + status_line + "\"");
  }
  size_t body = resp.find("\r\n\r\n");
  return body == std::string::npos ? std::string() : resp.substr(body + 4);
}

int RunHealth(const std::string& coordinator, const std::string& cache, const std::string& worker,
              const std::string& keys, double timeout_seconds) {
  Millis timeout(static_cast<int64_t>(timeout_seconds * 1000));
  int checked = 0;
  auto report = [&](const StatusOr<std::string>& r) {
    ++checked;
    if (!r.ok()) return Fail(r.status());
    std::printf("%s\n", r->c_str());
    return 0;
  };
  int rc = 0;
  if (!coordinator.empty()) rc |= report(PingDaemon("coordinator", coordinator, keys, timeout));
  if (!cache.empty()) rc |= report(PingDaemon("cache", cache, keys, timeout));
  if (!worker.empty()) {
    StatusOr<std::string> body = HttpGetMetrics(worker, timeout);
    if (body.ok() && body->find("stagefarm_worker_slots_busy") == std::string::npos) {
      body = FailedPreconditionError("http://" + worker + "/metrics has no worker metrics");
    }
    rc |= report(body.ok() ? StatusOr<std::string>("worker " + worker + " ok") : body);
  }
  if (checked == 0) {
    return Fail(InvalidArgumentError("health: give --coordinator, --cache or --worker"), 2);
  }
  std::fflush(stdout);
  return rc;
}

int RunKeysGenerate(const std::string& dir, const std::string& role_name, const std::string& name) {
  StatusOr<PeerRole> role = ParsePeerRole(role_name);
  if (!role.ok()) return Fail(role.status(), 2);
  StatusOr<std::string> pub = GenerateCurveKeyPair(dir, *role, name);
  if (!pub.ok()) return Fail(pub.status());
  std::string base = dir + "/" + role_name + "." + name;
  std::printf("%s.secret  (keep on the %s only)\n%s.pub     %s\n", base.c_str(), role_name.c_str(),
              base.c_str(), pub->c_str());
  return 0;
}

}  // namespace

void AddOpsCommands(CLI::App& app, CommandContext& ctx) {
  struct HealthFlags {
    std::string coordinator, cache, worker, keys;
    double timeout = 5;
  };
  auto h = std::make_shared<HealthFlags>();
  CLI::App* health = app.add_subcommand(
      "health", "check that daemons answer (exit 0) or not (exit 1), for Kubernetes probes");
  health->add_option("--coordinator", h->coordinator, "coordinator endpoint to Ping");
  health->add_option("--cache", h->cache, "cache server endpoint to Ping");
  health->add_option("--worker", h->worker,
                     "a worker's --metrics-listen HOST:PORT (workers bind no ZeroMQ socket)");
  health->add_option("--curve-keys", h->keys,
                     "CURVE key directory (or STAGEFARM_CURVE_KEYS); see `keys generate`");
  health->add_option("--timeout", h->timeout, "seconds to wait for each answer")
      ->capture_default_str();
  health->callback([&ctx, h] {
    ctx.run = [h] { return RunHealth(h->coordinator, h->cache, h->worker, h->keys, h->timeout); };
  });

  struct KeyFlags {
    std::string dir, role, name;
  };
  auto k = std::make_shared<KeyFlags>();
  CLI::App* keys = app.add_subcommand("keys", "CURVE keys for --curve-keys");
  keys->require_subcommand(1);
  CLI::App* gen = keys->add_subcommand(
      "generate", "write DIR/ROLE.NAME.secret and DIR/ROLE.NAME.pub (a new key pair)");
  gen->add_option("dir", k->dir, "key directory")->required();
  gen->add_option("name", k->name, "key name, e.g. a host or a team")->required();
  gen->add_option("--role", k->role, "server (coordinator and cache), worker or client")
      ->required()
      ->check(CLI::IsMember({"server", "worker", "client"}));
  gen->callback([&ctx, k] { ctx.run = [k] { return RunKeysGenerate(k->dir, k->role, k->name); }; });
}

}  // namespace stagefarm::cli
