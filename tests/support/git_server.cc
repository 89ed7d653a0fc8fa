#include "support/git_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <regex>
#include <sstream>

namespace stagefarm::testing {
namespace {

// http.server on 127.0.0.1, port 0, serving argv[1]; prints its port on stderr.
constexpr const char* kHttpServer = R"(
import functools, http.server, sys
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])
handler.func.log_message = lambda *args: None
server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
print('port', server.server_address[1], file=sys.stderr, flush=True)
server.serve_forever()
)";

// A port of 127.0.0.1 that nothing listens on now (the kernel's pick for port 0).
int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

}  // namespace

GitServer::GitServer() {
  std::string out, err;
  int rc = RunCommand(
      {std::string(STAGEFARM_SOURCE_DIR) + "/tests/fixtures/make-git-repos", repos()}, &out, &err);
  if (rc != 0) {
    ADD_FAILURE() << "tests/fixtures/make-git-repos failed (" << rc << "):\n" << err;
    return;
  }
  std::istringstream lines(out);
  for (std::string name, sha; lines >> name >> sha;) commits_[name] = sha;
  ok_ = StartHttp() && StartDaemon();
}

bool GitServer::StartHttp() {
  http_ = std::make_unique<ChildProcess>(
      std::vector<std::string>{"python3", "-c", kHttpServer, repos()}, dir_.path() + "/http");
  std::optional<std::string> port =
      http_->WaitForStderr(std::regex(R"(port (\d+))"), std::chrono::seconds(20));
  if (!port) {
    ADD_FAILURE() << "the http server did not start:\n" << http_->Stderr();
    return false;
  }
  http_port_ = std::stoi(*port);
  return true;
}

bool GitServer::StartDaemon() {
  // git daemon takes no port 0: try free ports until one is still free when it binds.
  std::string last_error;
  for (int attempt = 0; attempt < 5; ++attempt) {
    int port = FreePort();
    daemon_ = std::make_unique<ChildProcess>(
        std::vector<std::string>{"git", "daemon", "--verbose", "--reuseaddr", "--export-all",
                                 "--informative-errors", "--listen=127.0.0.1",
                                 "--port=" + std::to_string(port), "--base-path=" + repos(),
                                 repos()},
        dir_.path() + "/daemon");
    if (daemon_->WaitForStderr(std::regex("Ready to rumble"), std::chrono::seconds(20))) {
      git_port_ = port;
      return true;
    }
    last_error = daemon_->Stderr();
    daemon_.reset();
  }
  ADD_FAILURE() << "git daemon did not start:\n" << last_error;
  return false;
}

std::vector<std::string> GitServer::BuildArgs() const {
  return {"GIT_HTTP=" + http_url(), "GIT_DAEMON=" + git_url()};
}

std::string GitServer::Commit(const std::string& name) const {
  auto it = commits_.find(name);
  return it == commits_.end() ? "" : it->second;
}

}  // namespace stagefarm::testing
