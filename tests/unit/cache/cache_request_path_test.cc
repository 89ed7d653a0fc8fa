// The cache server's fast request path over tcp://127.0.0.1: quick requests answered on the
// socket's thread keep each peer's order, malformed frames straight from a raw ZeroMQ peer still
// get an error reply, and large FindMissing requests (many MultiGet batches) answer exactly.
#include <gtest/gtest.h>

#include <deque>
#include <future>
#include <thread>

#include "cache_test_util.h"
#include "stagefarm/cache/cache_service.h"
#include "stagefarm/common/cache_client.h"
#include "stagefarm/common/cache_protocol.h"
#include "stagefarm/common/transport.h"

namespace stagefarm::cache {
namespace {

using namespace std::chrono_literals;
using testing::TempDir;

class RequestPathTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CacheServerOptions o;
    o.data_dir = dir_.path() + "/db";
    auto service = CacheService::Open(o, nullptr);
    ASSERT_TRUE(service.ok()) << service.status().ToString();
    service_ = std::move(service).value();
    std::promise<std::string> ready;
    auto bound = ready.get_future();
    thread_ = std::thread([&] {
      Status s = service_->Serve(transport_, "tcp://127.0.0.1:0", false,
                                 [&](const std::string& e) { ready.set_value(e); });
      EXPECT_TRUE(s.ok()) << s.ToString();
    });
    endpoint_ = bound.get();
  }
  void TearDown() override {
    service_->Stop();
    thread_.join();
  }
  static Message Request(Method method, std::string body) {
    Message m;
    m.method = method;
    m.body = std::move(body);
    return m;
  }
  RpcChannel Channel() {
    auto socket = transport_.Connect(endpoint_);
    EXPECT_TRUE(socket.ok());
    return RpcChannel(std::move(socket).value());
  }

  TempDir dir_;
  Transport transport_;
  std::unique_ptr<CacheService> service_;
  std::thread thread_;
  std::string endpoint_;
};

// A GetAction sent right behind the PutAction of the same key, without waiting for the put's
// reply, must see it: a quick request waits behind its peer's queued ones.
TEST_F(RequestPathTest, QuickRequestWaitsBehindItsPeersQueuedRequests) {
  auto client = ConnectCache(transport_, endpoint_);
  std::string layer = "layer bytes", toc = "toc bytes";
  ASSERT_TRUE(client->PutBytes(layer).ok());
  ASSERT_TRUE(client->PutBytes(toc).ok());
  ActionResult result{LayerRef{Digest::Of(layer), Digest::Of(toc)}, "RUN make", 2.5};

  RpcChannel ch = Channel();
  for (int i = 0; i < 50; ++i) {
    std::string key = "key-" + std::to_string(i);
    auto put = ch.SendRequest(Request(Method::kPutAction, Encode(PutActionRequest{key, result})));
    auto get = ch.SendRequest(Request(Method::kGetAction, Encode(GetActionRequest{key})));
    ASSERT_TRUE(put.ok() && get.ok());
    // Straight off the socket: the replies come in the order the requests were sent.
    Message put_reply, get_reply;
    auto got = ch.socket().Receive(&put_reply, 10s);
    ASSERT_TRUE(got.ok() && *got);
    got = ch.socket().Receive(&get_reply, 10s);
    ASSERT_TRUE(got.ok() && *got);
    ASSERT_EQ(put_reply.request_id, *put) << "the GetAction's reply overtook the PutAction's";
    ASSERT_EQ(get_reply.request_id, *get);
    ASSERT_TRUE(put_reply.status.ok()) << put_reply.status.ToString();
    ASSERT_TRUE(get_reply.status.ok()) << get_reply.status.ToString();
    GetActionResponse resp;
    ASSERT_TRUE(Decode(get_reply.body, &resp).ok());
    ASSERT_TRUE(resp.result.has_value()) << "GetAction overtook the PutAction of " << key;
    EXPECT_EQ(resp.result->layer.diff_id, Digest::Of(layer));
    EXPECT_EQ(resp.result->created_by, "RUN make");
  }
}

// Many quick requests in flight from several peers: every one gets its own answer. Each peer keeps
// 64 in flight, as clients do: the server drops replies past 256 waiting to go out to one peer,
// which 300 unanswered requests reached when this machine was busy.
TEST_F(RequestPathTest, PipelinedQuickRequestsFromSeveralPeersAllAnswered) {
  auto client = ConnectCache(transport_, endpoint_);
  std::string layer = "layer", toc = "toc";
  ASSERT_TRUE(client->PutBytes(layer).ok());
  ASSERT_TRUE(client->PutBytes(toc).ok());
  ASSERT_TRUE(client->PutAction("hit", {LayerRef{Digest::Of(layer), Digest::Of(toc)}, "RUN", 1})
                  .ok());
  constexpr size_t kWindow = 64;
  auto peer = [&](int n) {
    RpcChannel ch = Channel();
    std::deque<std::pair<uint64_t, bool>> in_flight;  // id, expect a hit
    int sent = 0;
    auto send = [&] {
      bool hit = sent++ % 3 != 0;
      auto id = ch.SendRequest(
          Request(Method::kGetAction, Encode(GetActionRequest{hit ? "hit" : "miss"})));
      ASSERT_TRUE(id.ok());
      in_flight.emplace_back(*id, hit);
    };
    while (sent < n && in_flight.size() < kWindow) send();
    while (!in_flight.empty()) {
      auto [id, hit] = in_flight.front();
      in_flight.pop_front();
      auto reply = ch.AwaitReply(id, 10s);
      ASSERT_TRUE(reply.ok()) << reply.status().ToString();
      GetActionResponse resp;
      ASSERT_TRUE(Decode(reply->body, &resp).ok());
      EXPECT_EQ(resp.result.has_value(), hit);
      if (sent < n) send();
    }
  };
  std::vector<std::thread> peers;
  for (int p = 0; p < 4; ++p) peers.emplace_back(peer, 300);
  for (auto& t : peers) t.join();
}

// FindMissing of more digests than one MultiGet batch, quick (small) and queued (large): the
// answer is exactly the absent ones, in order, with sizes checked.
TEST_F(RequestPathTest, FindMissingAnswersExactlyAcrossBatches) {
  auto client = ConnectCache(transport_, endpoint_);
  for (size_t n : {1u, 31u, 33u, 100u, 700u}) {
    std::vector<Digest> asked, absent;
    for (size_t i = 0; i < n; ++i) {
      std::string bytes = "blob " + std::to_string(n) + " " + std::to_string(i);
      Digest d = Digest::Of(bytes);
      if (i % 4 == 0) {
        ASSERT_TRUE(client->PutBytes(bytes).ok());
      } else if (i % 4 == 1) {
        ASSERT_TRUE(client->PutBytes(bytes).ok());
        d.size += 1;  // stored, but not with this size
        absent.push_back(d);
      } else {
        absent.push_back(d);
      }
      asked.push_back(d);
    }
    auto missing = client->FindMissing(asked);
    ASSERT_TRUE(missing.ok()) << missing.status().ToString();
    EXPECT_EQ(*missing, absent) << n << " digests";
  }
}

// A quick method carrying an error status (only replies may) is refused like any other, on the
// socket's thread as on a worker, and the server goes on serving.
TEST_F(RequestPathTest, QuickRequestWithAnErrorStatusIsRefused) {
  RpcChannel ch = Channel();
  for (Method method : {Method::kPing, Method::kGetAction, Method::kGetRef, Method::kFindMissing}) {
    Message m = Request(method, "");
    m.status = InternalError("a client's error");
    auto reply = ch.Call(std::move(m), 5s);
    EXPECT_EQ(reply.status().code(), StatusCode::kInvalidArgument) << MethodName(method);
  }
  auto bad_body = ch.Call(Request(Method::kGetAction, std::string(16, '\x01')), 5s);
  EXPECT_EQ(bad_body.status().code(), StatusCode::kInvalidArgument);
  auto ping = ch.Call(Request(Method::kPing, ""), 5s);
  EXPECT_TRUE(ping.ok()) << ping.status().ToString();
}

}  // namespace
}  // namespace stagefarm::cache
