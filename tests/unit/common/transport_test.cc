#include "stagefarm/common/transport.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

namespace stagefarm {
namespace {

using namespace std::chrono_literals;

// An echo server: replies to every request with its body reversed and its data frames as given.
class EchoServer {
 public:
  EchoServer(Transport& t, const std::string& endpoint) {
    auto s = t.Bind(endpoint);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    socket_ = std::move(*s);
    thread_ = std::thread([this] {
      while (!stop_) {
        std::string peer;
        Message m;
        auto got = socket_->Receive(&peer, &m, 20ms);
        if (!got.ok() || !*got) continue;
        Message r = m.Reply(std::string(m.body.rbegin(), m.body.rend()));
        r.data = m.data;
        if (m.body == "fail") r = m.ErrorReply(NotFoundError("asked to fail"));
        socket_->Send(peer, r).IgnoreError();
      }
    });
  }
  ~EchoServer() {
    stop_ = true;
    thread_.join();
  }
  std::string endpoint() const { return socket_->endpoint(); }

 private:
  std::unique_ptr<ServerSocket> socket_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

TEST(Transport, RequestReplyOverTcpAndInproc) {
  Transport t;
  for (std::string ep : {"tcp://127.0.0.1:0", "inproc://transport-test"}) {
    EchoServer server(t, ep);
    if (ep.rfind("tcp", 0) == 0) {
      EXPECT_NE(server.endpoint(), ep);  // the real port
    }
    auto sock = t.Connect(server.endpoint());
    ASSERT_TRUE(sock.ok());
    RpcChannel rpc(std::move(*sock));
    Message req;
    req.method = Method::kPing;
    req.body = "abc";
    // Frames on both sides of the size from which they are lent to ZeroMQ instead of copied,
    // and an empty one. The server echoes the frames it received, so a received frame is sent on
    // as it is.
    std::vector<std::string> sent;
    for (size_t n : {size_t{0}, size_t{10}, size_t{16383}, size_t{16384}, size_t{(1 << 20) + 3}}) {
      std::string bytes(n, '\0');
      for (size_t i = 0; i < n; ++i) bytes[i] = static_cast<char>((i * 131 + n) & 0xff);
      sent.push_back(bytes);
      req.data.emplace_back(std::move(bytes));
    }
    StatusOr<Message> r = rpc.Call(req, 5s);
    req.data.clear();  // the request's frames go; ZeroMQ held its own reference to them
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->body, "cba");
    ASSERT_EQ(r->data.size(), sent.size());
    for (size_t i = 0; i < sent.size(); ++i) {
      EXPECT_TRUE(r->data[i].view() == sent[i]) << "frame " << i << " of " << sent[i].size();
    }
    req.body = "fail";
    EXPECT_EQ(rpc.Call(req, 5s).status().code(), StatusCode::kNotFound);
  }
}

TEST(Transport, PipelinedRepliesReachTheirCallers) {
  Transport t;
  EchoServer server(t, "inproc://pipeline-test");
  RpcChannel rpc(std::move(*t.Connect(server.endpoint())));
  std::vector<uint64_t> ids;
  for (int i = 0; i < 5; ++i) {
    Message req;
    req.method = Method::kPing;
    req.body = std::to_string(i) + "x";
    ids.push_back(*rpc.SendRequest(req));
  }
  // Await out of order: replies that arrive first are kept for their callers.
  for (int i : {4, 0, 3, 1, 2}) {
    StatusOr<Message> r = rpc.AwaitReply(ids[i], 5s);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->body, "x" + std::to_string(i));
  }
}

// A server's socket counts what ZeroMQ holds of the large frames it sent a peer, until they are
// passed on: over inproc, until the peer has received them and let go of them.
TEST(Transport, ServerCountsTheBytesZeroMqHoldsForAPeer) {
  Transport t;
  auto server = t.Bind("inproc://unsent-test");
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  auto client = t.Connect("inproc://unsent-test");
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  Message ping;
  ping.method = Method::kPing;
  ASSERT_TRUE((*client)->Send(ping).ok());
  std::string peer;
  Message request;
  ASSERT_TRUE(*(*server)->Receive(&peer, &request, 5s));
  auto unsent = (*server)->Unsent(peer);
  ASSERT_NE(unsent, nullptr);
  EXPECT_EQ(unsent->load(), 0u);

  // A large body (copied) and a large data frame (lent) count; the envelope and a small frame
  // do not, nor a message of small frames only.
  Message big = request.Reply(std::string(20000, 'b'));
  big.data.emplace_back(std::string(1 << 20, 'd'));
  big.data.emplace_back(std::string(100, 's'));
  ASSERT_TRUE((*server)->Send(peer, big).ok());
  big = Message();  // ZeroMQ holds its own reference to the data frame
  EXPECT_EQ(unsent->load(), 20000u + (1 << 20));
  ASSERT_TRUE((*server)->Send(peer, request.Reply("small")).ok());
  EXPECT_EQ(unsent->load(), 20000u + (1 << 20));
  EXPECT_EQ((*server)->Unsent(peer), unsent);  // one count per peer

  Message got;
  ASSERT_TRUE(*(*client)->Receive(&got, 5s));
  ASSERT_EQ(got.data.size(), 2u);
  EXPECT_EQ(got.body.size(), 20000u);
  // The body was copied out of ZeroMQ's message; the data frame is still ZeroMQ's, held by `got`.
  EXPECT_EQ(unsent->load(), 1u << 20);
  got = Message();
  EXPECT_EQ(unsent->load(), 0u);
  ASSERT_TRUE(*(*client)->Receive(&got, 5s));
  EXPECT_EQ(got.body, "small");
}

TEST(Transport, NoServerMeansDeadlineExceeded) {
  Transport t;
  RpcChannel rpc(std::move(*t.Connect("tcp://127.0.0.1:1")));
  Message req;
  req.method = Method::kPing;
  EXPECT_EQ(rpc.Call(req, 200ms).status().code(), StatusCode::kDeadlineExceeded);
}

TEST(Transport, RefusesNonLoopbackWithoutInsecure) {
  Transport t;
  EXPECT_EQ(t.Bind("tcp://0.0.0.0:0").status().code(), StatusCode::kPermissionDenied);
  EXPECT_TRUE(t.Bind("tcp://0.0.0.0:0", /*insecure=*/true).ok());
  EXPECT_FALSE(t.Bind("bogus://x").ok());
}

}  // namespace
}  // namespace stagefarm
