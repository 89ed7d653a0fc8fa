// The cache server over real sockets (inproc:// and tcp://127.0.0.1:0) with the remote client.
#include "stagefarm/cache/cache_service.h"

#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <atomic>
#include <filesystem>
#include <future>
#include <thread>

#include "cache_test_util.h"
#include "stagefarm/common/cache_client.h"
#include "stagefarm/common/cache_protocol.h"

namespace stagefarm::cache {
namespace {

using testing::RandomBytes;
using testing::TempDir;

constexpr uint64_t kMiB = 1 << 20;

RemoteCacheOptions FastOptions() {
  RemoteCacheOptions o;
  o.request_timeout = std::chrono::milliseconds(3000);
  o.attempts = 2;
  o.initial_backoff = std::chrono::milliseconds(20);
  return o;
}

// Reads a counter or gauge value from the registry; 0 if absent.
double MetricValue(prometheus::Registry& registry, const std::string& name,
                   const std::map<std::string, std::string>& labels) {
  for (const auto& family : registry.Collect()) {
    if (family.name != name) continue;
    for (const auto& metric : family.metric) {
      std::map<std::string, std::string> got;
      for (const auto& l : metric.label) got[l.name] = l.value;
      bool match = true;
      for (const auto& [k, v] : labels) match = match && got[k] == v;
      if (!match) continue;
      return family.type == prometheus::MetricType::Gauge ? metric.gauge.value
                                                          : metric.counter.value;
    }
  }
  return 0;
}

// A server on its own thread, stopped and joined on destruction.
class RunningServer {
 public:
  RunningServer(Transport& transport, const std::string& data_dir, const std::string& endpoint,
                prometheus::Registry* registry,
                uint32_t upload_credit = CacheServerOptions().upload_credit) {
    CacheServerOptions o;
    o.data_dir = data_dir;
    o.upload_credit = upload_credit;
    auto service = CacheService::Open(o, registry);
    EXPECT_TRUE(service.ok()) << service.status().ToString();
    service_ = std::move(service).value();
    std::promise<std::string> ready;
    auto bound = ready.get_future();
    thread_ = std::thread([&, endpoint] {
      Status s = service_->Serve(transport, endpoint, false,
                                 [&](const std::string& e) { ready.set_value(e); });
      EXPECT_TRUE(s.ok()) << s.ToString();
    });
    endpoint_ = bound.get();
  }
  ~RunningServer() {
    service_->Stop();
    thread_.join();
  }
  const std::string& endpoint() const { return endpoint_; }
  CacheService& service() { return *service_; }

 private:
  std::unique_ptr<CacheService> service_;
  std::thread thread_;
  std::string endpoint_;
};

class CacheServiceTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    server_ =
        std::make_unique<RunningServer>(transport_, dir_.path() + "/db", Endpoint(), &registry_);
    client_ = ConnectCache(transport_, server_->endpoint(), FastOptions());
  }
  std::string Endpoint() {
    static int n = 0;
    return GetParam() == "inproc" ? "inproc://cache-test-" + std::to_string(++n)
                                  : "tcp://127.0.0.1:0";
  }
  std::string ReadAll(const Digest& d, uint64_t offset = 0, uint64_t length = 0) {
    std::string out;
    Status s = client_->Read(d, offset, length, [&](std::string_view b) {
      out.append(b);
      return Status();
    });
    EXPECT_TRUE(s.ok()) << s.ToString();
    return out;
  }
  double BytesIn() {
    return MetricValue(registry_, "stagefarm_cache_transfer_bytes_total", {{"direction", "in"}});
  }

  TempDir dir_;
  Transport transport_;
  prometheus::Registry registry_;
  std::unique_ptr<RunningServer> server_;
  std::unique_ptr<CacheClient> client_;
};

TEST_P(CacheServiceTest, BlobRoundTrips) {
  for (uint64_t size : {uint64_t{0}, uint64_t{1}, kMiB, 5 * kMiB + 12345}) {
    std::string bytes = RandomBytes(size, size + 1);
    Digest d;
    ASSERT_TRUE(client_->PutBytes(bytes, &d).ok()) << size;
    EXPECT_EQ(d.size, size);
    EXPECT_EQ(ReadAll(d), bytes) << size;
    auto back = client_->ReadBytes(d);
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_EQ(*back, bytes);
  }
  auto missing = client_->FindMissing({Digest::Of(""), Digest::Of("nope")});
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(*missing, std::vector<Digest>{Digest::Of("nope")});
  EXPECT_EQ(MetricValue(registry_, "stagefarm_cache_ops_total",
                        {{"op", "CommitUpload"}, {"outcome", "ok"}}),
            4);
}

TEST_P(CacheServiceTest, StreamedUploadRoundTrips) {
  const std::string bytes = RandomBytes(3 * kMiB + 777, 9);
  {
    auto upload = client_->StartUpload();
    ASSERT_TRUE(upload.ok()) << upload.status().ToString();
    // In pieces that straddle the chunks, as a tar writer hands them over.
    for (size_t off = 0; off < bytes.size(); off += 100000) {
      ASSERT_TRUE((*upload)->Write(std::string_view(bytes).substr(off, 100000)).ok());
    }
    Status s = (*upload)->Commit(Digest::Of(bytes));
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  EXPECT_EQ(ReadAll(Digest::Of(bytes)), bytes);

  // Committed as bytes it is not: refused, nothing stored; abandoned: nothing left either.
  const std::string other = RandomBytes(kMiB + 1, 10);
  {
    auto upload = client_->StartUpload();
    ASSERT_TRUE(upload.ok());
    ASSERT_TRUE((*upload)->Write(other).ok());
    EXPECT_EQ((*upload)->Commit(Digest::Of("not these")).code(), StatusCode::kDataLoss);
    EXPECT_EQ((*upload)->Write("more").code(), StatusCode::kDataLoss);  // ended
  }
  {
    auto upload = client_->StartUpload();
    ASSERT_TRUE(upload.ok());
    ASSERT_TRUE((*upload)->Write(other).ok());
  }
  auto missing = client_->FindMissing({Digest::Of(other)});
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(missing->size(), 1u);

  // Under a chunk: put as a blob of known digest at the commit, kept in RocksDB (no file); a
  // wrong digest is refused there too.
  auto files = [&] {
    return std::distance(std::filesystem::directory_iterator(dir_.path() + "/db/files"),
                         std::filesystem::directory_iterator());
  };
  const auto files_before = files();
  const std::string small = RandomBytes(5000, 11);
  {
    auto upload = client_->StartUpload();
    ASSERT_TRUE(upload.ok());
    ASSERT_TRUE((*upload)->Write(small.substr(0, 10)).ok());
    ASSERT_TRUE((*upload)->Write(small.substr(10)).ok());
    ASSERT_TRUE((*upload)->Commit(Digest::Of(small)).ok());
  }
  EXPECT_EQ(ReadAll(Digest::Of(small)), small);
  EXPECT_EQ(files(), files_before);
  {
    auto upload = client_->StartUpload();
    ASSERT_TRUE(upload.ok());
    ASSERT_TRUE((*upload)->Write("tiny").ok());
    EXPECT_EQ((*upload)->Commit(Digest::Of("tinx")).code(), StatusCode::kDataLoss);
  }
  // The abandon is a message the server takes in turn: a round trip later it is done.
  ASSERT_TRUE(client_->GetRef("sync").ok());
  EXPECT_EQ(server_->service().store().Stats().uploads_in_progress, 0u);
  EXPECT_EQ(server_->service().store().Stats().blobs, 2u);
}

TEST_P(CacheServiceTest, RangeReads) {
  std::string bytes = RandomBytes(3 * kMiB + 7, 2);
  Digest d;
  ASSERT_TRUE(client_->PutBytes(bytes, &d).ok());
  EXPECT_EQ(ReadAll(d, 5, 10), bytes.substr(5, 10));
  EXPECT_EQ(ReadAll(d, kMiB - 1, kMiB + 2), bytes.substr(kMiB - 1, kMiB + 2));
  EXPECT_EQ(ReadAll(d, 2 * kMiB + 3), bytes.substr(2 * kMiB + 3));
  EXPECT_EQ(ReadAll(d, d.size - 2, 100), bytes.substr(d.size - 2));  // clamped at the end
  EXPECT_EQ(ReadAll(d, d.size), "");
  Status s = client_->Read(d, d.size + 1, 0, [](std::string_view) { return Status(); });
  EXPECT_EQ(s.code(), StatusCode::kOutOfRange);
  s = client_->Read(Digest::Of("absent"), 0, 0, [](std::string_view) { return Status(); });
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
}

TEST_P(CacheServiceTest, SecondPutTransfersNothing) {
  std::string bytes = RandomBytes(2 * kMiB + 1, 3);
  ASSERT_TRUE(client_->PutBytes(bytes).ok());
  EXPECT_EQ(BytesIn(), static_cast<double>(bytes.size()));
  int source_calls = 0;
  Status s = client_->Put(Digest::Of(bytes), [&](char*, size_t) -> StatusOr<size_t> {
    ++source_calls;
    return size_t{0};
  });
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(source_calls, 0);
  EXPECT_EQ(BytesIn(), static_cast<double>(bytes.size()));
  EXPECT_EQ(server_->service().store().Stats().bytes_received, bytes.size());
}

TEST_P(CacheServiceTest, WrongDigestRefusedAndNothingStored) {
  std::string bytes = RandomBytes(kMiB + 100, 4);
  Digest wrong = Digest::Of(RandomBytes(kMiB + 100, 5));
  Status s = client_->Put(wrong, SourceOf(bytes));
  EXPECT_EQ(s.code(), StatusCode::kDataLoss) << s.ToString();
  auto missing = client_->FindMissing({wrong});
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(missing->size(), 1u);
  // A source longer than the digest says.
  Digest short_digest = Digest::Of(bytes.substr(0, 10));
  s = client_->Put(short_digest, SourceOf(bytes));
  EXPECT_EQ(s.code(), StatusCode::kDataLoss) << s.ToString();
  // A source shorter than the digest says.
  s = client_->Put(Digest{Digest::Of(bytes).hex, bytes.size() + 5}, SourceOf(bytes));
  EXPECT_EQ(s.code(), StatusCode::kDataLoss) << s.ToString();
  StoreStats st = server_->service().store().Stats();
  EXPECT_EQ(st.blobs, 0u);
  // The refused uploads are gone (the abandoned one by the client's best-effort abort).
  for (int i = 0; i < 50 && server_->service().store().Stats().uploads_in_progress > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(server_->service().store().Stats().uploads_in_progress, 0u);
}

TEST_P(CacheServiceTest, ConcurrentUploadsOfTheSameBlob) {
  std::string bytes = RandomBytes(3 * kMiB + 5, 6);
  Digest d = Digest::Of(bytes);
  std::vector<std::thread> threads;
  std::vector<Status> results(4);
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      auto client = ConnectCache(transport_, server_->endpoint(), FastOptions());
      results[i] = client->PutBytes(bytes);
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& r : results) EXPECT_TRUE(r.ok()) << r.ToString();
  EXPECT_EQ(ReadAll(d), bytes);
  StoreStats st = server_->service().store().Stats();
  EXPECT_EQ(st.blobs, 1u);
  EXPECT_EQ(st.bytes, bytes.size());
  EXPECT_EQ(st.uploads_in_progress, 0u);
}

TEST_P(CacheServiceTest, ActionCacheCompleteness) {
  std::string layer = RandomBytes(5000, 7), toc = RandomBytes(300, 8);
  ActionResult r;
  r.layer.diff_id = Digest::Of(layer);
  r.layer.toc = Digest::Of(toc);
  r.created_by = "RUN make";
  r.seconds = 2.25;
  EXPECT_EQ(client_->PutAction("key", r).code(), StatusCode::kFailedPrecondition);
  auto got = client_->GetAction("key");
  ASSERT_TRUE(got.ok());
  EXPECT_FALSE(got->has_value());
  ASSERT_TRUE(client_->PutBytes(layer).ok());
  ASSERT_TRUE(client_->PutBytes(toc).ok());
  ASSERT_TRUE(client_->PutAction("key", r).ok());
  got = client_->GetAction("key");
  ASSERT_TRUE(got.ok());
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ(**got, r);
  EXPECT_EQ(MetricValue(registry_, "stagefarm_cache_ac_lookups_total", {{"result", "hit"}}), 1);
  EXPECT_EQ(MetricValue(registry_, "stagefarm_cache_ac_lookups_total", {{"result", "miss"}}), 1);
}

TEST_P(CacheServiceTest, Refs) {
  Digest m = Digest::Of("manifest");
  ASSERT_TRUE(client_->PutRef("app:latest", m).ok());
  auto got = client_->GetRef("app:latest");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ(**got, m);
  got = client_->GetRef("other");
  ASSERT_TRUE(got.ok());
  EXPECT_FALSE(got->has_value());
  auto list = client_->ListRefs();
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(*list, (std::vector<std::pair<std::string, Digest>>{{"app:latest", m}}));
  // DeleteRef: the name goes; a second delete is NotFound.
  ASSERT_TRUE(DeleteCacheRef(transport_, server_->endpoint(), "app:latest", FastOptions()).ok());
  got = client_->GetRef("app:latest");
  ASSERT_TRUE(got.ok());
  EXPECT_FALSE(got->has_value());
  EXPECT_EQ(DeleteCacheRef(transport_, server_->endpoint(), "app:latest", FastOptions()).code(),
            StatusCode::kNotFound);
}

// Sends a request on a raw socket and returns the reply.
Message RawCall(ClientSocket& socket, Message m) {
  static uint64_t id = 1000;
  m.request_id = ++id;
  EXPECT_TRUE(socket.Send(m).ok());
  Message reply;
  auto got = socket.Receive(&reply, std::chrono::seconds(5));
  EXPECT_TRUE(got.ok() && *got);
  EXPECT_EQ(reply.request_id, m.request_id);
  return reply;
}

Message Make(Method method, std::string body, std::vector<std::string> data = {}) {
  Message m;
  m.method = method;
  m.body = std::move(body);
  for (auto& d : data) m.data.emplace_back(std::move(d));
  return m;
}

// Frames that are no message at all, straight from a raw ZeroMQ peer: answered with an error by
// the socket itself, counted as "malformed", and the server goes on serving.
TEST_P(CacheServiceTest, MalformedFramesFromARawPeerAreAnsweredAndCounted) {
  testing::RawPeer raw(transport_.context(), server_->endpoint());
  const std::vector<std::vector<std::string>> bad = {{"one frame"}, {"not an envelope", "body"}};
  for (const auto& frames : bad) {
    ASSERT_TRUE(raw.Send(frames));
    std::vector<std::string> reply = raw.Receive();
    ASSERT_GE(reply.size(), 1u) << frames[0];
    Message m;
    ASSERT_TRUE(DecodeEnvelope(reply[0], &m).ok());
    EXPECT_EQ(m.status.code(), StatusCode::kInvalidArgument) << frames[0];
  }
  // Counted by the time a well-formed request after them is answered.
  ASSERT_TRUE(client_->FindMissing({Digest::Of("x")}).ok());
  EXPECT_EQ(MetricValue(registry_, "stagefarm_cache_ops_total",
                        {{"op", "malformed"}, {"outcome", "InvalidArgument"}}),
            2);
}

TEST_P(CacheServiceTest, MalformedRequestsGetErrorsAndServerKeepsServing) {
  auto socket = transport_.Connect(server_->endpoint());
  ASSERT_TRUE(socket.ok());
  ClientSocket& s = **socket;
  EXPECT_EQ(RawCall(s, Make(Method::kFindMissing, "garbage")).status.code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(RawCall(s, Make(Method::kFindMissing, std::string(64, '\xff'))).status.code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(RawCall(s, Make(Method::kGetAction, "")).status.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(RawCall(s, Make(static_cast<Method>(999), "")).status.code(),
            StatusCode::kUnimplemented);
  EXPECT_EQ(RawCall(s, Make(Method::kSubmitBuild, "")).status.code(), StatusCode::kUnimplemented);
  // Data frames where none belong.
  EXPECT_EQ(RawCall(s, Make(Method::kListRefs, Encode(ListRefsRequest{}), {"x"})).status.code(),
            StatusCode::kInvalidArgument);
  // Chunks of an upload that was never begun.
  EXPECT_EQ(RawCall(s, Make(Method::kUploadChunk, Encode(UploadChunkRequest{42, 0}), {"abc"}))
                .status.code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(
      RawCall(s, Make(Method::kCommitUpload, Encode(CommitUploadRequest{42, {}}))).status.code(),
      StatusCode::kFailedPrecondition);
  // A read asking for more than a chunk.
  EXPECT_EQ(
      RawCall(s, Make(Method::kReadBlob, Encode(ReadBlobRequest{Digest::Of(""), 0, 2 * kMiB})))
          .status.code(),
      StatusCode::kInvalidArgument);
  // Out of order chunks end the upload.
  std::string bytes = RandomBytes(kMiB + 10, 9);
  Message begin =
      RawCall(s, Make(Method::kBeginUpload, Encode(BeginUploadRequest{Digest::Of(bytes)})));
  ASSERT_TRUE(begin.status.ok());
  BeginUploadResponse b;
  ASSERT_TRUE(Decode(begin.body, &b).ok());
  EXPECT_FALSE(b.exists);
  EXPECT_GE(b.credit, 1u);
  EXPECT_EQ(RawCall(s, Make(Method::kUploadChunk, Encode(UploadChunkRequest{b.upload_id, kMiB}),
                            {bytes.substr(kMiB)}))
                .status.code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(RawCall(s, Make(Method::kUploadChunk, Encode(UploadChunkRequest{b.upload_id, 0}),
                            {bytes.substr(0, kMiB)}))
                .status.code(),
            StatusCode::kFailedPrecondition);
  // Still serving.
  ASSERT_TRUE(client_->PutBytes(bytes).ok());
  EXPECT_EQ(ReadAll(Digest::Of(bytes)), bytes);
  EXPECT_EQ(server_->service().store().Stats().uploads_in_progress, 0u);
}

// Many uploads at once, each sending all its credit allows without waiting for a reply: the
// server has room for every chunk (none is refused as busy), and the credits come down to a share
// of the budget (64 chunks) as the uploads are answered.
TEST_P(CacheServiceTest, ChunksWithinTheirCreditAreNeverRefused) {
  auto socket = transport_.Connect(server_->endpoint());
  ASSERT_TRUE(socket.ok());
  ClientSocket& s = **socket;
  constexpr int kUploads = 12;
  const std::string chunk = RandomBytes(kMiB, 31);
  uint64_t request_id = 5000;
  std::map<uint64_t, uint64_t> upload_of;  // request id -> upload id
  std::map<uint64_t, uint32_t> credit;     // upload id -> latest credit
  std::vector<BeginUploadResponse> begun;
  uint32_t granted = 0;
  for (int i = 0; i < kUploads; ++i) {
    // Never committed, so the digest need not match the bytes.
    Digest d{Digest::Of("upload " + std::to_string(i)).hex, 20 * kMiB};
    Message reply = RawCall(s, Make(Method::kBeginUpload, Encode(BeginUploadRequest{d})));
    ASSERT_TRUE(reply.status.ok()) << reply.status.ToString();
    ASSERT_TRUE(Decode(reply.body, &begun.emplace_back()).ok());
    ASSERT_GE(begun.back().credit, 1u);
    granted += begun.back().credit;
  }
  for (const BeginUploadResponse& b : begun) {
    for (uint32_t c = 0; c < b.credit; ++c) {
      Message m =
          Make(Method::kUploadChunk, Encode(UploadChunkRequest{b.upload_id, c * kMiB}), {chunk});
      m.request_id = ++request_id;
      upload_of[m.request_id] = b.upload_id;
      ASSERT_TRUE(s.Send(m).ok());
    }
  }
  // The first ones take the most an upload gets until the budget is spent, the others one each.
  const uint32_t most = CacheServerOptions().upload_credit;
  const uint32_t full = 64 / most;
  ASSERT_LT(full, static_cast<uint32_t>(kUploads));
  EXPECT_EQ(granted, full * most + (kUploads - full));
  for (size_t n = 0; n < upload_of.size(); ++n) {
    Message reply;
    auto got = s.Receive(&reply, std::chrono::seconds(10));
    ASSERT_TRUE(got.ok() && *got);
    ASSERT_TRUE(reply.status.ok()) << reply.status.ToString();
    UploadChunkResponse r;
    ASSERT_TRUE(Decode(reply.body, &r).ok());
    credit[upload_of.at(reply.request_id)] = r.credit;
  }
  uint32_t now_granted = 0;
  for (const auto& [id, c] : credit) now_granted += c;
  EXPECT_LE(now_granted, 64u);
  // All answered: what the uploads hold is their credit, within the budget.
  EXPECT_EQ(server_->service().store().Stats().credit_reserved, now_granted);
  EXPECT_EQ(MetricValue(registry_, "stagefarm_cache_ops_total",
                        {{"op", "UploadChunk"}, {"outcome", "ok"}}),
            granted);
}

TEST_P(CacheServiceTest, SeveralChunksToARequest) {
  auto socket = transport_.Connect(server_->endpoint());
  ASSERT_TRUE(socket.ok());
  ClientSocket& s = **socket;
  auto begin = [&](const std::string& bytes) {
    Message m =
        RawCall(s, Make(Method::kBeginUpload, Encode(BeginUploadRequest{Digest::Of(bytes)})));
    BeginUploadResponse b;
    EXPECT_TRUE(m.status.ok()) << m.status.ToString();
    EXPECT_TRUE(Decode(m.body, &b).ok());
    EXPECT_FALSE(b.exists);
    return b;
  };
  auto chunks = [&](uint64_t id, uint64_t offset, std::vector<std::string> data) {
    return RawCall(
        s, Make(Method::kUploadChunk, Encode(UploadChunkRequest{id, offset}), std::move(data)));
  };

  // Four chunks in two requests, the upload's short last chunk among them.
  const std::string bytes = RandomBytes(3 * kMiB + 5, 11);
  BeginUploadResponse b = begin(bytes);
  EXPECT_EQ(b.chunks_per_request, kMaxChunksPerRequest);
  Message first = chunks(b.upload_id, 0, {bytes.substr(0, kMiB), bytes.substr(kMiB, kMiB)});
  ASSERT_TRUE(first.status.ok()) << first.status.ToString();
  UploadChunkResponse r;
  ASSERT_TRUE(Decode(first.body, &r).ok());
  EXPECT_EQ(r.received, 2 * kMiB);
  Message second =
      chunks(b.upload_id, 2 * kMiB, {bytes.substr(2 * kMiB, kMiB), bytes.substr(3 * kMiB)});
  ASSERT_TRUE(second.status.ok()) << second.status.ToString();
  ASSERT_TRUE(Decode(second.body, &r).ok());
  EXPECT_EQ(r.received, bytes.size());
  ASSERT_TRUE(RawCall(s, Make(Method::kCommitUpload, Encode(CommitUploadRequest{b.upload_id, {}})))
                  .status.ok());
  EXPECT_EQ(ReadAll(Digest::Of(bytes)), bytes);
  EXPECT_EQ(BytesIn(), static_cast<double>(bytes.size()));

  // A short chunk before another in one request is refused, and ends the upload.
  const std::string other = RandomBytes(3 * kMiB, 12);
  b = begin(other);
  EXPECT_EQ(chunks(b.upload_id, 0, {other.substr(0, 10), other.substr(10, kMiB)}).status.code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(chunks(b.upload_id, 0, {other.substr(0, kMiB)}).status.code(),
            StatusCode::kFailedPrecondition);

  // So is a request of more chunks than the server takes, before any is looked at.
  b = begin(other);
  std::vector<std::string> too_many(kMaxChunksPerRequest + 1, std::string(1, 'x'));
  EXPECT_EQ(chunks(b.upload_id, 0, too_many).status.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(chunks(b.upload_id, 0, {other.substr(0, kMiB)}).status.code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(server_->service().store().Stats().uploads_in_progress, 0u);
  EXPECT_EQ(server_->service().store().Stat(Digest::Of(other).hex).status().code(),
            StatusCode::kNotFound);
}

// The client sends its chunks four to a request: a 10 MiB put is 3 requests, not 10.
TEST_P(CacheServiceTest, ClientSendsSeveralChunksToARequest) {
  const std::string bytes = RandomBytes(10 * kMiB + 1, 13);
  ASSERT_TRUE(client_->PutBytes(bytes).ok());
  EXPECT_EQ(MetricValue(registry_, "stagefarm_cache_ops_total",
                        {{"op", "UploadChunk"}, {"outcome", "ok"}}),
            3);
  EXPECT_EQ(ReadAll(Digest::Of(bytes)), bytes);

  // And a streamed upload too.
  auto upload = client_->StartUpload();
  ASSERT_TRUE(upload.ok());
  const std::string streamed = RandomBytes(9 * kMiB, 14);
  for (size_t pos = 0; pos < streamed.size(); pos += 100000) {
    ASSERT_TRUE((*upload)->Write(std::string_view(streamed).substr(pos, 100000)).ok());
  }
  ASSERT_TRUE((*upload)->Commit(Digest::Of(streamed)).ok());
  EXPECT_EQ(MetricValue(registry_, "stagefarm_cache_ops_total",
                        {{"op", "UploadChunk"}, {"outcome", "ok"}}),
            3 + 3);
  EXPECT_EQ(ReadAll(Digest::Of(streamed)), streamed);
}

// With a credit of 4 the client sends two chunks to a request, so that one request can be on its
// way while the server handles the other; with a credit of 1, one.
TEST_P(CacheServiceTest, ClientFitsItsRequestsToTheCredit) {
  for (uint32_t credit : {4u, 1u}) {
    client_.reset();
    server_.reset();
    prometheus::Registry registry;
    server_ = std::make_unique<RunningServer>(transport_, dir_.path() + "/db", Endpoint(),
                                              &registry, credit);
    client_ = ConnectCache(transport_, server_->endpoint(), FastOptions());
    const std::string bytes = RandomBytes(10 * kMiB + 1, 15 + credit);
    ASSERT_TRUE(client_->PutBytes(bytes).ok());
    EXPECT_EQ(MetricValue(registry, "stagefarm_cache_ops_total",
                          {{"op", "UploadChunk"}, {"outcome", "ok"}}),
              credit == 4 ? 6 : 11)
        << "credit " << credit;
    EXPECT_EQ(ReadAll(Digest::Of(bytes)), bytes);
    client_.reset();
    server_.reset();  // before `registry` goes
  }
}

TEST_P(CacheServiceTest, RestartKeepsCommittedBlobs) {
  std::string bytes = RandomBytes(kMiB + 3, 10);
  Digest d;
  ASSERT_TRUE(client_->PutBytes(bytes, &d).ok());
  client_.reset();
  server_.reset();
  prometheus::Registry registry;
  server_ = std::make_unique<RunningServer>(transport_, dir_.path() + "/db", Endpoint(), &registry);
  client_ = ConnectCache(transport_, server_->endpoint(), FastOptions());
  EXPECT_EQ(ReadAll(d), bytes);
  EXPECT_EQ(MetricValue(registry, "stagefarm_cache_blobs", {}), 1);
  server_.reset();  // before `registry` goes
}

INSTANTIATE_TEST_SUITE_P(Transports, CacheServiceTest, ::testing::Values("inproc", "tcp"));

TEST(RemoteCacheClient, DeadServerFailsWithinTheTimeout) {
  Transport transport;
  RemoteCacheOptions o;
  o.request_timeout = std::chrono::milliseconds(200);
  o.attempts = 2;
  o.initial_backoff = std::chrono::milliseconds(10);
  auto client = ConnectCache(transport, "tcp://127.0.0.1:1", o);
  auto start = std::chrono::steady_clock::now();
  auto missing = client->FindMissing({Digest::Of("x")});
  EXPECT_EQ(missing.status().code(), StatusCode::kDeadlineExceeded);
  Status s = client->PutBytes("hello");
  EXPECT_EQ(s.code(), StatusCode::kDeadlineExceeded);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
}

// A server that lies about a blob's size: the digest carries the size, so the client stops at the
// first reply instead of feeding the sink whatever the server sends until the final hash check.
TEST(RemoteCacheClient, ReadRefusesABlobSizeOtherThanTheDigests) {
  Transport transport;
  auto bound = transport.Bind("inproc://lying-cache");
  ASSERT_TRUE(bound.ok()) << bound.status().ToString();
  ServerSocket& server = **bound;
  std::atomic<bool> stop = false;
  std::atomic<int> reads = 0;
  std::thread liar([&] {
    while (!stop) {
      std::string peer;
      Message request;
      auto got = server.Receive(&peer, &request, std::chrono::milliseconds(50));
      if (!got.ok() || !*got) continue;
      ReadBlobRequest read;
      if (request.method != Method::kReadBlob || !Decode(request.body, &read).ok()) {
        EXPECT_TRUE(server.Send(peer, request.ErrorReply(UnimplementedError("liar"))).ok());
        continue;
      }
      ++reads;
      // As many bytes as asked for, of a blob of 1 GiB.
      Message reply = request.Reply(Encode(ReadBlobResponse{1 << 30, read.offset, read.length}));
      reply.data.emplace_back(std::string(read.length, 'x'));
      EXPECT_TRUE(server.Send(peer, reply).ok());
    }
  });
  auto client = ConnectCache(transport, server.endpoint(), FastOptions());
  const Digest abc = Digest::Of("abc");
  ASSERT_EQ(abc.size, 3u);
  uint64_t given = 0;
  Status s = client->Read(abc, 0, 0, [&](std::string_view bytes) {
    given += bytes.size();
    // Without the size check the read would go on for 1 GiB: stop it at the first excess.
    return given > abc.size ? OutOfRangeError("more bytes than the digest says") : Status();
  });
  stop = true;
  liar.join();
  EXPECT_EQ(s.code(), StatusCode::kDataLoss) << s.ToString();
  EXPECT_LE(given, abc.size);
  EXPECT_EQ(reads, 1) << "a wrong size is not retried";
  EXPECT_NE(s.message().find(abc.str()), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find(std::to_string(1 << 30)), std::string::npos) << s.ToString();
}

TEST(CacheProtocol, CodecRoundTrips) {
  ReadBlobRequest r{Digest::Of("abc"), 5, 77};
  ReadBlobRequest back;
  ASSERT_TRUE(Decode(Encode(r), &back).ok());
  EXPECT_EQ(back.digest, r.digest);
  EXPECT_EQ(back.offset, 5u);
  EXPECT_EQ(back.length, 77u);
  GetActionResponse a;
  a.result = ActionResult{LayerRef{Digest::Of("l"), Digest::Of("t")}, "RUN x", 3.5};
  GetActionResponse a2;
  ASSERT_TRUE(Decode(Encode(a), &a2).ok());
  EXPECT_EQ(a2.result, a.result);
  PruneCacheResponse p{1, 2, 3, 4, 5, 6}, p2;
  ASSERT_TRUE(Decode(Encode(p), &p2).ok());
  EXPECT_EQ(p2.actions, 6u);
  EXPECT_EQ(p2.bytes_left, 5u);
  DeleteRefRequest d{"app:1"}, d2;
  ASSERT_TRUE(Decode(Encode(d), &d2).ok());
  EXPECT_EQ(d2.name, "app:1");
  BeginUploadResponse b{false, 7, 8, kCacheChunkSize, 5}, b2;
  ASSERT_TRUE(Decode(Encode(b), &b2).ok());
  EXPECT_EQ(b2.upload_id, 7u);
  EXPECT_EQ(b2.chunks_per_request, 5u);
  // A server from before chunks_per_request sends none: one chunk to a request.
  b.chunks_per_request = 0;
  ASSERT_TRUE(Decode(Encode(b), &b2).ok());
  EXPECT_EQ(b2.chunks_per_request, 1u);
  FindMissingRequest bad;
  EXPECT_EQ(Decode("1234567", &bad).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace stagefarm::cache
