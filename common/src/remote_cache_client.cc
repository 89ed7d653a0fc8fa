// The CacheClient that talks to a cache server over a DEALER socket (cache_protocol.h).
//
// Failure handling: a request that fails with Unavailable or DeadlineExceeded is retried on a
// fresh socket (the old one may hold stale replies) with exponential backoff. Reads resume from
// the last byte handed to the sink. An upload cannot be replayed once chunks are sent (a
// ByteSource cannot rewind), so a failure in the middle of one is returned; a lost commit reply
// is resolved by asking whether the blob is now stored.
#include <algorithm>
#include <cstring>
#include <deque>
#include <thread>

#include "stagefarm/common/cache_client.h"
#include "stagefarm/common/cache_protocol.h"
#include "stagefarm/common/transport.h"

namespace stagefarm {
namespace {

constexpr uint32_t kMaxCredit = 64;            // whatever a server grants, chunks in flight
constexpr uint32_t kChunksPerRequest = 4;      // at most, whatever a server takes
constexpr uint32_t kMaxChunkSize = 16u << 20;  // a server asking for more is refused
constexpr size_t kFindMissingBatch = 10000;    // digests per request (keeps frames small)

bool Transient(const Status& s) {
  return s.code() == StatusCode::kUnavailable || s.code() == StatusCode::kDeadlineExceeded;
}

class RemoteCacheClient : public CacheClient {
 public:
  RemoteCacheClient(Transport& transport, std::string endpoint, RemoteCacheOptions options)
      : transport_(transport), endpoint_(std::move(endpoint)), options_(options) {
    options_.attempts = std::max(options_.attempts, 1);
    options_.read_window = std::max<uint32_t>(options_.read_window, 1);
  }

  StatusOr<std::vector<Digest>> FindMissing(const std::vector<Digest>& digests) override {
    std::vector<Digest> missing;
    for (size_t i = 0; i < digests.size(); i += kFindMissingBatch) {
      FindMissingRequest req;
      req.digests.assign(digests.begin() + i,
                         digests.begin() + std::min(digests.size(), i + kFindMissingBatch));
      FindMissingResponse resp;
      SF_RETURN_IF_ERROR(Call(Method::kFindMissing, Encode(req), &resp));
      if (resp.missing.size() > req.digests.size()) {
        return InvalidArgumentError("FindMissing reply names more digests than asked");
      }
      for (auto& d : resp.missing) missing.push_back(std::move(d));
    }
    return missing;
  }

  StatusOr<std::unique_ptr<BlobUpload>> StartUpload() override {
    return std::unique_ptr<BlobUpload>(new StreamedUpload(*this));
  }

  Status Put(const Digest& digest, const ByteSource& source) override {
    Status s = Upload(digest, source);
    return s.ok() ? s : s.Annotate("upload " + digest.str());
  }

  Status Read(const Digest& digest, uint64_t offset, uint64_t length,
              const ByteSink& sink) override {
    // [pos, end) is what is left to deliver; end is known after the first reply when length is 0.
    uint64_t pos = offset;
    std::optional<uint64_t> end;
    if (length != 0) end = offset + length;
    std::optional<uint64_t> blob_size;
    auto backoff = options_.initial_backoff;
    int failures = 0;
    for (;;) {
      uint64_t before = pos;
      Status s = ReadFrom(digest, &pos, &end, &blob_size, sink);
      if (s.ok()) return s;
      // Replies to requests still in flight must not reach the next call.
      Reset();
      if (!Transient(s)) return s.Annotate("read " + digest.str());
      if (pos != before) failures = 0;  // progress: the server is alive, keep going
      if (++failures >= options_.attempts) return s.Annotate("read " + digest.str());
      std::this_thread::sleep_for(backoff);
      backoff *= 2;
    }
  }

  StatusOr<std::optional<ActionResult>> GetAction(const std::string& key) override {
    GetActionResponse resp;
    SF_RETURN_IF_ERROR(Call(Method::kGetAction, Encode(GetActionRequest{key}), &resp));
    return std::move(resp.result);
  }

  Status PutAction(const std::string& key, const ActionResult& result) override {
    PutActionResponse resp;
    return Call(Method::kPutAction, Encode(PutActionRequest{key, result}), &resp);
  }

  StatusOr<std::optional<Digest>> GetRef(const std::string& name) override {
    GetRefResponse resp;
    SF_RETURN_IF_ERROR(Call(Method::kGetRef, Encode(GetRefRequest{name}), &resp));
    return std::move(resp.digest);
  }

  Status PutRef(const std::string& name, const Digest& manifest) override {
    PutRefResponse resp;
    return Call(Method::kPutRef, Encode(PutRefRequest{name, manifest}), &resp);
  }

  StatusOr<std::vector<std::pair<std::string, Digest>>> ListRefs() override {
    ListRefsResponse resp;
    SF_RETURN_IF_ERROR(Call(Method::kListRefs, Encode(ListRefsRequest{}), &resp));
    return std::move(resp.refs);
  }

  // One administrative request (QueryCacheStats, PruneCache), retried like the others.
  template <typename Resp>
  Status Admin(Method method, const std::string& body, Resp* resp) {
    return Call(method, body, resp);
  }

 private:
  StatusOr<RpcChannel*> Channel() {
    if (!channel_) {
      SF_ASSIGN_OR_RETURN(std::unique_ptr<ClientSocket> socket, transport_.Connect(endpoint_));
      channel_ = std::make_unique<RpcChannel>(std::move(socket));
    }
    return channel_.get();
  }
  // Drops the socket after a failure: replies still on their way must not reach the next call.
  void Reset() { channel_.reset(); }

  static Message Request(Method method, std::string body) {
    Message m;
    m.method = method;
    m.body = std::move(body);
    return m;
  }

  // One request/reply without data frames, retried on transient failures.
  template <typename Resp>
  Status Call(Method method, const std::string& body, Resp* resp) {
    auto backoff = options_.initial_backoff;
    for (int attempt = 1;; ++attempt) {
      Status s = CallOnce(method, body, resp);
      if (s.ok() || !Transient(s)) return s;
      Reset();
      if (attempt >= options_.attempts) {
        return s.Annotate(std::string(MethodName(method)) + " to " + endpoint_ + " after " +
                          std::to_string(attempt) + " attempts");
      }
      std::this_thread::sleep_for(backoff);
      backoff *= 2;
    }
  }

  template <typename Resp>
  Status CallOnce(Method method, const std::string& body, Resp* resp) {
    SF_ASSIGN_OR_RETURN(RpcChannel * ch, Channel());
    SF_ASSIGN_OR_RETURN(Message reply, ch->Call(Request(method, body), options_.request_timeout));
    SF_RETURN_IF_ERROR(CheckReply(reply, method, 0));
    return Decode(reply.body, resp).Annotate(std::string(MethodName(method)) + " reply");
  }

  static Status CheckReply(const Message& reply, Method method, size_t data_frames) {
    if (reply.method != method) {
      return InvalidArgumentError("reply to " + std::string(MethodName(method)) + " is for " +
                                  std::string(MethodName(reply.method)));
    }
    if (reply.data.size() != data_frames) {
      return InvalidArgumentError(std::string(MethodName(method)) + " reply has " +
                                  std::to_string(reply.data.size()) + " data frames, expected " +
                                  std::to_string(data_frames));
    }
    return Status();
  }

  // Fills `buf` from `source` until it is full or the source ends. Returns the count.
  static StatusOr<size_t> Fill(const ByteSource& source, char* buf, size_t size) {
    size_t n = 0;
    while (n < size) {
      SF_ASSIGN_OR_RETURN(size_t got, source(buf + n, size - n));
      if (got == 0) break;
      if (got > size - n) return InternalError("byte source returned more than asked");
      n += got;
    }
    return n;
  }

  // Ends a server-side upload we cannot finish: a commit of an incomplete upload is refused and
  // drops its chunks. Best effort: the server's idle timeout removes it otherwise.
  void AbandonUpload(uint64_t upload_id) {
    if (!channel_) return;
    channel_
        ->SendRequest(Request(Method::kCommitUpload, Encode(CommitUploadRequest{upload_id, {}})))
        .status()
        .IgnoreError();
  }

  // A transient failure leaves the socket in doubt: drop it. Otherwise tell the server (it may
  // be waiting for more chunks) and keep the socket: stale replies are dropped by request id.
  Status FailUpload(uint64_t upload_id, Status s) {
    if (Transient(s)) {
      Reset();
    } else {
      AbandonUpload(upload_id);
    }
    return s;
  }

  // Begins an upload of `digest` (empty: streamed) and checks what the server asks for.
  StatusOr<BeginUploadResponse> Begin(const Digest& digest) {
    BeginUploadResponse begin;
    SF_RETURN_IF_ERROR(Call(Method::kBeginUpload, Encode(BeginUploadRequest{digest}), &begin));
    if (!begin.exists && (begin.chunk_size == 0 || begin.chunk_size > kMaxChunkSize)) {
      return InvalidArgumentError("server asks for chunks of " + std::to_string(begin.chunk_size) +
                                  " bytes");
    }
    return begin;
  }

  // The chunks of one upload on their way: sent in order, several to a request, with no more
  // than the server's credit waiting for a reply.
  class ChunkSender {
   public:
    ChunkSender(RemoteCacheClient& client, const BeginUploadResponse& begin)
        : client_(client),
          upload_id_(begin.upload_id),
          per_request_(std::clamp<uint32_t>(begin.chunks_per_request, 1, kChunksPerRequest)),
          credit_(std::clamp<uint32_t>(begin.credit, 1, kMaxCredit)) {}

    uint64_t sent() const { return sent_; }

    // Queues the next chunk (the message takes its bytes as they are: the transport lends them
    // to ZeroMQ, and they go once sent). A request goes once it has its chunks: as many as the
    // server takes in one, but no more than half the credit, so that the next request can be
    // on its way while the server handles this one.
    Status Send(Frame chunk) {
      sent_ += chunk.size();
      queued_.push_back(std::move(chunk));
      const size_t group = std::clamp<size_t>(credit_ / 2, 1, per_request_);
      return queued_.size() >= group ? Flush() : Status();
    }

    // Sends what is queued and waits for the replies to every chunk sent.
    Status Drain() {
      SF_RETURN_IF_ERROR(Flush());
      while (!in_flight_.empty()) SF_RETURN_IF_ERROR(AwaitOne());
      return Status();
    }

   private:
    // Sends the queued chunks, first waiting for replies while the credit is used up; a credit
    // that shrank meanwhile splits them over several requests.
    Status Flush() {
      while (!queued_.empty()) {
        while (chunks_in_flight_ >= credit_) SF_RETURN_IF_ERROR(AwaitOne());
        const size_t n =
            std::min<size_t>({queued_.size(), credit_ - chunks_in_flight_, per_request_});
        uint64_t offset = sent_;
        for (const Frame& f : queued_) offset -= f.size();
        Message m = Request(Method::kUploadChunk, Encode(UploadChunkRequest{upload_id_, offset}));
        for (size_t i = 0; i < n; ++i) {
          offset += queued_[i].size();
          m.data.push_back(std::move(queued_[i]));
        }
        queued_.erase(queued_.begin(), queued_.begin() + n);
        SF_ASSIGN_OR_RETURN(RpcChannel * ch, client_.Channel());
        SF_ASSIGN_OR_RETURN(uint64_t id, ch->SendRequest(std::move(m)));
        in_flight_.push_back({id, offset, n});
        chunks_in_flight_ += n;
      }
      return Status();
    }

    Status AwaitOne() {
      const InFlight f = in_flight_.front();
      in_flight_.pop_front();
      chunks_in_flight_ -= f.chunks;
      SF_ASSIGN_OR_RETURN(RpcChannel * ch, client_.Channel());
      SF_ASSIGN_OR_RETURN(Message reply, ch->AwaitReply(f.id, client_.options_.request_timeout));
      SF_RETURN_IF_ERROR(CheckReply(reply, Method::kUploadChunk, 0));
      UploadChunkResponse chunk;
      SF_RETURN_IF_ERROR(Decode(reply.body, &chunk));
      if (chunk.received != f.sent_through) {
        return InvalidArgumentError("server acknowledged " + std::to_string(chunk.received) +
                                    " bytes, " + std::to_string(f.sent_through) + " were sent");
      }
      credit_ = std::clamp<uint32_t>(chunk.credit, 1, kMaxCredit);
      return Status();
    }

    struct InFlight {
      uint64_t id;            // of the request
      uint64_t sent_through;  // the upload's bytes up to the end of its chunks
      size_t chunks;
    };

    RemoteCacheClient& client_;
    const uint64_t upload_id_;
    const uint32_t per_request_;  // the most chunks to a request
    uint32_t credit_;
    uint64_t sent_ = 0;  // bytes queued or sent
    std::deque<InFlight> in_flight_;
    size_t chunks_in_flight_ = 0;
    std::vector<Frame> queued_;  // not yet sent
  };

  // Commits an upload whose chunks are all acknowledged. A lost commit or reply is resolved by
  // asking whether the blob is stored now.
  Status Commit(uint64_t upload_id, const Digest& digest, const Digest& named) {
    CommitUploadResponse commit;
    Status s =
        CallOnce(Method::kCommitUpload, Encode(CommitUploadRequest{upload_id, named}), &commit);
    if (!Transient(s)) return s;
    Reset();
    StatusOr<std::vector<Digest>> missing = FindMissing({digest});
    if (missing.ok() && missing->empty()) return Status();
    return s;
  }

  Status Upload(const Digest& digest, const ByteSource& source) {
    if (digest.hex.size() != 64) return InvalidArgumentError("upload without a digest");
    SF_ASSIGN_OR_RETURN(BeginUploadResponse begin, Begin(digest));
    if (begin.exists) return Status();
    ChunkSender sender(*this, begin);
    for (bool eof = false; !eof;) {
      // Each chunk is read into a buffer of its own, which its message takes.
      std::shared_ptr<char[]> buf(new char[begin.chunk_size]);
      StatusOr<size_t> n = Fill(source, buf.get(), begin.chunk_size);
      if (!n.ok()) return FailUpload(begin.upload_id, n.status());
      eof = *n < begin.chunk_size;
      if (*n == 0) break;
      const uint64_t sent = sender.sent();
      if (*n > digest.size - sent) {
        return FailUpload(begin.upload_id, DataLossError("source has more than the digest's " +
                                                         std::to_string(digest.size) + " bytes"));
      }
      if (eof && sent + *n != digest.size) {
        return FailUpload(begin.upload_id,
                          DataLossError("source has " + std::to_string(sent + *n) +
                                        " bytes, the digest says " + std::to_string(digest.size)));
      }
      Status s = sender.Send(Frame(buf, std::string_view(buf.get(), *n)));
      if (!s.ok()) return FailUpload(begin.upload_id, s);
    }
    Status s = sender.Drain();
    if (!s.ok()) return FailUpload(begin.upload_id, s);
    if (sender.sent() != digest.size) {
      return FailUpload(begin.upload_id,
                        DataLossError("source has " + std::to_string(sender.sent()) +
                                      " bytes, the digest says " + std::to_string(digest.size)));
    }
    return Commit(begin.upload_id, digest, {});
  }

  // A streamed upload: bytes gathered into chunks as they come, the digest named at the commit.
  // The server hears of it only once a whole chunk has come: a smaller blob (the layer of most
  // steps) is put at the commit as one of known digest, which the server keeps in RocksDB with
  // one sync, where a streamed upload costs a file of its own and four.
  class StreamedUpload : public BlobUpload {
   public:
    explicit StreamedUpload(RemoteCacheClient& client) : client_(client) {}
    ~StreamedUpload() override {
      if (!done_ && sender_) {
        client_.FailUpload(upload_id_, CancelledError("upload abandoned")).IgnoreError();
      }
    }

    Status Write(std::string_view bytes) override {
      if (done_) return error_;
      if (!sender_) {
        const size_t take = std::min(bytes.size(), kCacheChunkSize - head_.size());
        head_.append(bytes.substr(0, take));
        bytes.remove_prefix(take);
        if (head_.size() < kCacheChunkSize) return Status();
        SF_RETURN_IF_ERROR(Check(Begin()));
      }
      while (!bytes.empty()) {
        if (!buf_) {
          buf_.reset(new char[chunk_size_]);
          fill_ = 0;
        }
        const size_t take = std::min<size_t>(bytes.size(), chunk_size_ - fill_);
        std::memcpy(buf_.get() + fill_, bytes.data(), take);
        fill_ += take;
        bytes.remove_prefix(take);
        if (fill_ == chunk_size_) SF_RETURN_IF_ERROR(Check(SendBuffer()));
      }
      return Status();
    }

    Status Commit(const Digest& digest) override {
      if (done_) return error_.ok() ? FailedPreconditionError("upload committed already") : error_;
      if (!sender_) {
        done_ = true;
        return client_.Put(digest, SourceOf(head_));
      }
      if (buf_) SF_RETURN_IF_ERROR(Check(SendBuffer()));
      SF_RETURN_IF_ERROR(Check(sender_->Drain()));
      if (sender_->sent() != digest.size) {
        return Check(DataLossError("upload has " + std::to_string(sender_->sent()) +
                                   " bytes, its digest says " + std::to_string(digest.size)));
      }
      done_ = true;
      Status s = client_.Commit(upload_id_, digest, digest);
      return s.ok() ? s : s.Annotate("upload " + digest.str());
    }

   private:
    // Begins the upload on the server and sends what came so far in its chunks.
    Status Begin() {
      SF_ASSIGN_OR_RETURN(BeginUploadResponse begin, client_.Begin(Digest{}));
      if (begin.exists) return InvalidArgumentError("server found a streamed upload existing");
      upload_id_ = begin.upload_id;
      chunk_size_ = begin.chunk_size;
      sender_.emplace(client_, begin);
      std::string head = std::move(head_);
      return Write(head);
    }
    Status SendBuffer() {
      std::shared_ptr<char[]> buf = std::move(buf_);
      const std::string_view bytes(buf.get(), fill_);
      return sender_->Send(Frame(std::move(buf), bytes));
    }
    // Ends the upload on the first failure; the server drops what it has of it.
    Status Check(Status s) {
      if (s.ok()) return s;
      done_ = true;
      error_ = sender_ ? client_.FailUpload(upload_id_, s) : s;
      return error_;
    }

    RemoteCacheClient& client_;
    std::string head_;  // what came before the upload began
    uint64_t upload_id_ = 0;
    uint32_t chunk_size_ = 0;
    std::optional<ChunkSender> sender_;  // once begun
    std::shared_ptr<char[]> buf_;        // the chunk being filled
    size_t fill_ = 0;
    bool done_ = false;
    Status error_;
  };

  // Reads [*pos, *end) with up to read_window requests in flight, advancing *pos as bytes reach
  // the sink. Learns *end and *blob_size from the first reply if unknown.
  Status ReadFrom(const Digest& digest, uint64_t* pos, std::optional<uint64_t>* end,
                  std::optional<uint64_t>* blob_size, const ByteSink& sink) {
    SF_ASSIGN_OR_RETURN(RpcChannel * ch, Channel());
    struct Pending {
      uint64_t id, offset, length;
    };
    std::deque<Pending> in_flight;
    uint64_t next = *pos;
    auto send = [&](uint64_t offset, uint64_t length) -> Status {
      SF_ASSIGN_OR_RETURN(
          uint64_t id, ch->SendRequest(Request(Method::kReadBlob,
                                               Encode(ReadBlobRequest{digest, offset, length}))));
      in_flight.push_back({id, offset, length});
      return Status();
    };
    // Until the size is known, one request at a time (the first tells the size).
    if (!blob_size->has_value()) {
      uint64_t want = kCacheMaxReadLength;
      if (end->has_value()) want = std::min(want, **end - *pos);
      SF_RETURN_IF_ERROR(send(*pos, want));
      next = *pos + want;
    }
    for (;;) {
      while (blob_size->has_value() && in_flight.size() < options_.read_window && next < **end) {
        uint64_t want = std::min<uint64_t>(kCacheMaxReadLength, **end - next);
        SF_RETURN_IF_ERROR(send(next, want));
        next += want;
      }
      if (in_flight.empty()) return Status();
      Pending p = in_flight.front();
      in_flight.pop_front();
      SF_ASSIGN_OR_RETURN(Message reply, ch->AwaitReply(p.id, options_.request_timeout));
      SF_RETURN_IF_ERROR(CheckReply(reply, Method::kReadBlob, 1));
      ReadBlobResponse resp;
      SF_RETURN_IF_ERROR(Decode(reply.body, &resp).Annotate("ReadBlob reply"));
      if (blob_size->has_value() && resp.blob_size != **blob_size) {
        return InvalidArgumentError("blob size changed during the read from " +
                                    std::to_string(**blob_size) + " to " +
                                    std::to_string(resp.blob_size));
      }
      if (!blob_size->has_value()) {
        // A digest that carries its size bounds the read: a server claiming a larger blob would
        // otherwise have the sink take its bytes until the caller's final hash check.
        if (digest.size != 0 && resp.blob_size != digest.size) {
          return DataLossError("ReadBlob of " + digest.str() + ": the server has " +
                               std::to_string(resp.blob_size) + " bytes, the digest says " +
                               std::to_string(digest.size));
        }
        *blob_size = resp.blob_size;
        // Clamped to the blob like a substring; the server refuses an offset past the end.
        *end = end->has_value() ? std::min(**end, resp.blob_size) : resp.blob_size;
        next = std::min(next, **end);
      }
      uint64_t expected =
          p.offset >= resp.blob_size ? 0 : std::min(p.length, resp.blob_size - p.offset);
      if (resp.offset != p.offset || resp.length != expected || reply.data[0].size() != expected) {
        return InvalidArgumentError("ReadBlob reply at offset " + std::to_string(resp.offset) +
                                    " with " + std::to_string(reply.data[0].size()) +
                                    " bytes; asked for " + std::to_string(expected) + " at " +
                                    std::to_string(p.offset));
      }
      if (p.offset != *pos) return InternalError("ReadBlob replies out of order");
      if (expected > 0) SF_RETURN_IF_ERROR(sink(reply.data[0]));
      *pos += expected;
    }
  }

  Transport& transport_;
  const std::string endpoint_;
  RemoteCacheOptions options_;
  std::unique_ptr<RpcChannel> channel_;
};

}  // namespace

std::unique_ptr<CacheClient> ConnectCache(Transport& transport, const std::string& endpoint,
                                          const RemoteCacheOptions& options) {
  return std::make_unique<RemoteCacheClient>(transport, endpoint, options);
}

std::unique_ptr<CacheClient> ConnectCache(Transport& transport, const std::string& endpoint) {
  return ConnectCache(transport, endpoint, RemoteCacheOptions{});
}

StatusOr<CacheStatsResponse> QueryCacheStats(Transport& transport, const std::string& endpoint,
                                             const RemoteCacheOptions& options) {
  RemoteCacheClient client(transport, endpoint, options);
  CacheStatsResponse resp;
  SF_RETURN_IF_ERROR(client.Admin(Method::kCacheStats, Encode(CacheStatsRequest{}), &resp));
  return resp;
}

StatusOr<PruneCacheResponse> PruneCache(Transport& transport, const std::string& endpoint,
                                        const PruneCacheRequest& request,
                                        const RemoteCacheOptions& options) {
  // A prune may walk the whole store: it gets longer than an ordinary request, and one try (a
  // retry would only wait for the same walk).
  RemoteCacheOptions o = options;
  o.request_timeout = std::max<std::chrono::milliseconds>(o.request_timeout, std::chrono::minutes(10));
  o.attempts = 1;
  RemoteCacheClient client(transport, endpoint, o);
  PruneCacheResponse resp;
  SF_RETURN_IF_ERROR(client.Admin(Method::kPruneCache, Encode(request), &resp));
  return resp;
}

Status DeleteCacheRef(Transport& transport, const std::string& endpoint, const std::string& name,
                      const RemoteCacheOptions& options) {
  RemoteCacheClient client(transport, endpoint, options);
  DeleteRefResponse resp;
  return client.Admin(Method::kDeleteRef, Encode(DeleteRefRequest{name}), &resp);
}

}  // namespace stagefarm
