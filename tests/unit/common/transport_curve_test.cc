// CURVE on the transport: key files, the ZAP handler's accept/refuse, and the peer role a server
// sees per message. Real sockets on 127.0.0.1.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "stagefarm/common/transport.h"

namespace stagefarm {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

class KeyDir {
 public:
  KeyDir() {
    char tmpl[] = "/tmp/stagefarm-curve-XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~KeyDir() { fs::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Replies to every request with the role the transport saw for it.
class RoleEchoServer {
 public:
  RoleEchoServer(Transport& t, const std::string& endpoint, bool insecure = false) {
    auto s = t.Bind(endpoint, insecure);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    if (!s.ok()) return;
    socket_ = std::move(*s);
    thread_ = std::thread([this] {
      while (!stop_) {
        std::string peer;
        Message m;
        auto got = socket_->Receive(&peer, &m, 20ms);
        if (!got.ok() || !*got) continue;
        socket_->Send(peer, m.Reply(std::string(PeerRoleName(socket_->last_peer_role()))))
            .IgnoreError();
      }
    });
  }
  ~RoleEchoServer() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  std::string endpoint() const { return socket_ ? socket_->endpoint() : ""; }

 private:
  std::unique_ptr<ServerSocket> socket_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

StatusOr<Message> Ping(Transport& t, const std::string& endpoint, std::chrono::milliseconds wait) {
  SF_ASSIGN_OR_RETURN(std::unique_ptr<ClientSocket> sock, t.Connect(endpoint));
  RpcChannel rpc(std::move(sock));
  Message m;
  m.method = Method::kPing;
  return rpc.Call(std::move(m), wait);
}

// A farm's key directory: the server's pair, one worker's and one client's.
class CurveTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(GenerateCurveKeyPair(dir_.path(), PeerRole::kServer, "farm").ok());
    ASSERT_TRUE(GenerateCurveKeyPair(dir_.path(), PeerRole::kWorker, "w1").ok());
    ASSERT_TRUE(GenerateCurveKeyPair(dir_.path(), PeerRole::kClient, "ci").ok());
  }
  // A directory holding the server's public key and the `role` secret of `from`.
  std::string ClientDir(const std::string& from, PeerRole role, const std::string& name) {
    std::string d = dir_.path() + "/" + std::string(PeerRoleName(role)) + "-only";
    fs::create_directories(d);
    fs::copy_file(dir_.path() + "/server.farm.pub", d + "/server.farm.pub");
    std::string base = "/" + std::string(PeerRoleName(role)) + "." + name;
    fs::copy_file(from + base + ".secret", d + base + ".secret");
    return d;
  }
  KeyDir dir_;
};

TEST_F(CurveTest, GeneratedKeysLoadWithTheirRoles) {
  struct stat st;
  ASSERT_EQ(stat((dir_.path() + "/server.farm.secret").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  StatusOr<CurveKeys> server = LoadCurveKeys(dir_.path(), PeerRole::kServer);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  EXPECT_EQ(server->server_public_key, server->public_key);
  ASSERT_EQ(server->authorized.size(), 3u);
  std::map<PeerRole, int> roles;
  for (const auto& [key, role] : server->authorized) roles[role]++;
  EXPECT_EQ(roles[PeerRole::kServer], 1);
  EXPECT_EQ(roles[PeerRole::kWorker], 1);
  EXPECT_EQ(roles[PeerRole::kClient], 1);

  StatusOr<CurveKeys> worker = LoadCurveKeys(dir_.path(), PeerRole::kWorker);
  ASSERT_TRUE(worker.ok()) << worker.status().ToString();
  EXPECT_EQ(worker->server_public_key, server->public_key);
  EXPECT_NE(worker->public_key, server->public_key);
  EXPECT_EQ(server->authorized.at(worker->public_key), PeerRole::kWorker);
}

TEST_F(CurveTest, MissingOrDuplicateOwnKeyIsAnError) {
  KeyDir other;
  ASSERT_TRUE(GenerateCurveKeyPair(other.path(), PeerRole::kServer, "s").ok());
  StatusOr<CurveKeys> k = LoadCurveKeys(other.path(), PeerRole::kClient);
  ASSERT_FALSE(k.ok());
  EXPECT_NE(k.status().message().find("keys generate"), std::string::npos);
  ASSERT_TRUE(GenerateCurveKeyPair(other.path(), PeerRole::kServer, "t").ok());
  EXPECT_FALSE(LoadCurveKeys(other.path(), PeerRole::kServer).ok());
  // Never overwrites.
  EXPECT_EQ(GenerateCurveKeyPair(other.path(), PeerRole::kServer, "t").status().code(),
            StatusCode::kAlreadyExists);
}

TEST_F(CurveTest, ListedKeysAreServedWithTheirRole) {
  Transport server;
  ASSERT_TRUE(server.EnableCurve(*LoadCurveKeys(dir_.path(), PeerRole::kServer)).ok());
  RoleEchoServer echo(server, "tcp://127.0.0.1:0");

  for (auto [role, name] :
       {std::pair{PeerRole::kWorker, "w1"}, std::pair{PeerRole::kClient, "ci"}}) {
    Transport client;
    ASSERT_TRUE(client.EnableCurve(*LoadCurveKeys(ClientDir(dir_.path(), role, name), role)).ok());
    StatusOr<Message> reply = Ping(client, echo.endpoint(), 5s);
    ASSERT_TRUE(reply.ok()) << reply.status().ToString();
    EXPECT_EQ(reply->body, PeerRoleName(role));
  }
  // The server's own key (the coordinator talking to the cache server) is a server.
  StatusOr<Message> self = Ping(server, echo.endpoint(), 5s);
  ASSERT_TRUE(self.ok()) << self.status().ToString();
  EXPECT_EQ(self->body, "server");
}

TEST_F(CurveTest, UnlistedKeyPlaintextAndWrongServerKeyAreRefused) {
  Transport server;
  ASSERT_TRUE(server.EnableCurve(*LoadCurveKeys(dir_.path(), PeerRole::kServer)).ok());
  RoleEchoServer echo(server, "tcp://127.0.0.1:0");

  // A client key the farm never listed, made beside a copy of the right server key.
  KeyDir stranger;
  fs::copy_file(dir_.path() + "/server.farm.pub", stranger.path() + "/server.farm.pub");
  ASSERT_TRUE(GenerateCurveKeyPair(stranger.path(), PeerRole::kClient, "eve").ok());
  Transport eve;
  ASSERT_TRUE(eve.EnableCurve(*LoadCurveKeys(stranger.path(), PeerRole::kClient)).ok());
  EXPECT_EQ(Ping(eve, echo.endpoint(), 1500ms).status().code(), StatusCode::kDeadlineExceeded);

  // No CURVE at all.
  Transport plain;
  EXPECT_EQ(Ping(plain, echo.endpoint(), 1500ms).status().code(), StatusCode::kDeadlineExceeded);

  // A listed client that expects another server key (a man in the middle's view).
  KeyDir fake;
  ASSERT_TRUE(GenerateCurveKeyPair(fake.path(), PeerRole::kServer, "mitm").ok());
  fs::copy_file(dir_.path() + "/client.ci.secret", fake.path() + "/client.ci.secret");
  Transport misled;
  ASSERT_TRUE(misled.EnableCurve(*LoadCurveKeys(fake.path(), PeerRole::kClient)).ok());
  EXPECT_EQ(Ping(misled, echo.endpoint(), 1500ms).status().code(), StatusCode::kDeadlineExceeded);
}

TEST_F(CurveTest, NonLoopbackNeedsCurveOrInsecure) {
  Transport plain;
  EXPECT_EQ(plain.Bind("tcp://0.0.0.0:0").status().code(), StatusCode::kPermissionDenied);
  EXPECT_TRUE(plain.Bind("tcp://0.0.0.0:0", /*insecure=*/true).ok());

  Transport secure;
  ASSERT_TRUE(secure.EnableCurve(*LoadCurveKeys(dir_.path(), PeerRole::kServer)).ok());
  EXPECT_TRUE(secure.Bind("tcp://0.0.0.0:0").ok());

  // Only the server key can listen.
  Transport worker;
  ASSERT_TRUE(worker.EnableCurve(*LoadCurveKeys(dir_.path(), PeerRole::kWorker)).ok());
  EXPECT_FALSE(worker.Bind("tcp://127.0.0.1:0").ok());
}

TEST_F(CurveTest, WithoutCurveEveryPeerIsAny) {
  Transport t;
  RoleEchoServer echo(t, "tcp://127.0.0.1:0");
  StatusOr<Message> reply = Ping(t, echo.endpoint(), 5s);
  ASSERT_TRUE(reply.ok()) << reply.status().ToString();
  EXPECT_EQ(reply->body, "any");
}

}  // namespace
}  // namespace stagefarm
