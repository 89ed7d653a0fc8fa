#include "stagefarm/cache/cache_service.h"

#include <thread>

#include "cache_metrics.h"
#include "stagefarm/common/cache_protocol.h"

namespace stagefarm::cache {
namespace {

constexpr auto kPollInterval = std::chrono::milliseconds(100);
constexpr auto kHousekeepingInterval = std::chrono::seconds(1);
constexpr auto kAccessFlushInterval = std::chrono::seconds(10);
constexpr size_t kMaxFindMissing = 100000;  // digests per FindMissing request

// Decodes the body of `request` as T, refusing data frames (no method but UploadChunk has any).
template <typename T>
Status DecodeBody(const Message& request, T* out) {
  if (!request.data.empty()) {
    return InvalidArgumentError(std::string(MethodName(request.method)) +
                                " takes no data frames, got " +
                                std::to_string(request.data.size()));
  }
  return Decode(request.body, out).Annotate(MethodName(request.method));
}

}  // namespace

StatusOr<std::unique_ptr<CacheService>> CacheService::Open(const CacheServerOptions& options,
                                                           prometheus::Registry* registry) {
  BlobStoreOptions store_options;
  store_options.data_dir = options.data_dir;
  store_options.max_bytes = options.max_bytes;
  store_options.chunk_size = kCacheChunkSize;
  store_options.upload_idle_timeout = options.upload_idle_timeout;
  SF_ASSIGN_OR_RETURN(std::unique_ptr<BlobStore> store, BlobStore::Open(store_options));
  return std::unique_ptr<CacheService>(new CacheService(std::move(store), registry));
}

CacheService::CacheService(std::unique_ptr<BlobStore> store, prometheus::Registry* registry)
    : store_(std::move(store)), metrics_(std::make_unique<CacheMetrics>(registry)) {
  StoreStats st = store_->Stats();
  metrics_->SetStoreSize(st.bytes, st.blobs);
}

CacheService::~CacheService() = default;

void CacheService::Stop() { stop_.store(true); }

Status CacheService::Serve(Transport& transport, const std::string& endpoint, bool insecure,
                           const std::function<void(const std::string&)>& on_ready) {
  SF_ASSIGN_OR_RETURN(std::unique_ptr<ServerSocket> socket, transport.Bind(endpoint, insecure));
  if (on_ready) on_ready(socket->endpoint());

  {
    std::lock_guard lock(evict_mu_);
    evict_stop_ = false;
  }
  std::thread evictor([this] { EvictLoop(); });
  Status result;
  auto next_housekeeping = std::chrono::steady_clock::now() + kHousekeepingInterval;
  while (!stop_.load()) {
    std::string peer;
    Message request;
    StatusOr<bool> got = socket->Receive(&peer, &request, kPollInterval);
    if (!got.ok()) {
      result = got.status().Annotate("cache server on " + socket->endpoint());
      break;
    }
    if (*got) Handle(*socket, peer, std::move(request));
    auto now = std::chrono::steady_clock::now();
    if (now >= next_housekeeping) {
      Housekeeping(now);
      next_housekeeping = now + kHousekeepingInterval;
    }
  }
  {
    std::lock_guard lock(evict_mu_);
    evict_stop_ = true;
  }
  evict_cv_.notify_all();
  evictor.join();
  // Access times are an eviction hint; a failure here only makes eviction less exact.
  store_->FlushAccessTimes().IgnoreError();
  return result;
}

void CacheService::Housekeeping(std::chrono::steady_clock::time_point now) {
  store_->ExpireIdleUploads(now);
  if (now - last_flush_ >= kAccessFlushInterval) {
    // Retried at the next interval; access times only order eviction.
    store_->FlushAccessTimes().IgnoreError();
    last_flush_ = now;
  }
  StoreStats st = store_->Stats();
  metrics_->SetStoreSize(st.bytes, st.blobs);
  if (st.max_bytes != 0 && st.bytes > st.max_bytes) {
    std::lock_guard lock(evict_mu_);
    evict_wanted_ = true;
    evict_cv_.notify_all();
  }
}

void CacheService::EvictLoop() {
  std::unique_lock lock(evict_mu_);
  for (;;) {
    evict_cv_.wait(lock, [&] { return evict_stop_ || evict_wanted_; });
    if (evict_stop_) return;
    evict_wanted_ = false;
    lock.unlock();
    StatusOr<uint64_t> n = store_->EvictIfNeeded();
    // A failed eviction is retried at the next housekeeping that finds the store too big.
    if (n.ok() && *n > 0) metrics_->AddEvictions(*n);
    lock.lock();
  }
}

void CacheService::Handle(ServerSocket& socket, const std::string& peer, Message request) {
  auto start = std::chrono::steady_clock::now();
  StatusOr<Message> reply =
      request.status.ok()
          ? Dispatch(peer, request)
          : StatusOr<Message>(InvalidArgumentError("a request must not carry an error status"));
  Status outcome = reply.status();
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::string_view op = MethodName(request.method);
  if (op == "Unknown") op = "unknown";
  metrics_->RecordOp(op, outcome, seconds);
  Message out = reply.ok() ? std::move(reply).value() : request.ErrorReply(outcome);
  // A peer that went away is not an error (ROUTER drops the reply); a broken socket shows up in
  // the next Receive.
  socket.Send(peer, out).IgnoreError();
}

StatusOr<Message> CacheService::Dispatch(const std::string& peer, const Message& request) {
  switch (request.method) {
    case Method::kFindMissing: {
      FindMissingRequest req;
      SF_RETURN_IF_ERROR(DecodeBody(request, &req));
      if (req.digests.size() > kMaxFindMissing) {
        return InvalidArgumentError("FindMissing of " + std::to_string(req.digests.size()) +
                                    " digests; at most " + std::to_string(kMaxFindMissing));
      }
      FindMissingResponse resp;
      SF_ASSIGN_OR_RETURN(resp.missing, store_->FindMissing(req.digests));
      return request.Reply(Encode(resp));
    }
    case Method::kBeginUpload: {
      BeginUploadRequest req;
      SF_RETURN_IF_ERROR(DecodeBody(request, &req));
      SF_ASSIGN_OR_RETURN(BlobStore::BeginResult r, store_->BeginUpload(req.digest, peer));
      BeginUploadResponse resp;
      resp.exists = r.exists;
      resp.upload_id = r.upload_id;
      resp.credit = r.exists ? 0 : store_->options().upload_credit;
      resp.chunk_size = store_->options().chunk_size;
      return request.Reply(Encode(resp));
    }
    case Method::kUploadChunk: {
      UploadChunkRequest req;
      SF_RETURN_IF_ERROR(Decode(request.body, &req).Annotate("UploadChunk"));
      if (request.data.size() != 1) {
        // The upload cannot continue in order without this chunk: end it.
        store_->AbortUpload(req.upload_id, peer);
        return InvalidArgumentError("UploadChunk takes exactly one data frame, got " +
                                    std::to_string(request.data.size()));
      }
      SF_ASSIGN_OR_RETURN(uint64_t received,
                          store_->WriteChunk(req.upload_id, peer, req.offset, request.data[0]));
      metrics_->AddTransfer(true, request.data[0].size());
      UploadChunkResponse resp;
      resp.credit = store_->options().upload_credit;
      resp.received = received;
      return request.Reply(Encode(resp));
    }
    case Method::kCommitUpload: {
      CommitUploadRequest req;
      SF_RETURN_IF_ERROR(DecodeBody(request, &req));
      SF_RETURN_IF_ERROR(store_->CommitUpload(req.upload_id, peer));
      return request.Reply(Encode(CommitUploadResponse{}));
    }
    case Method::kReadBlob: {
      ReadBlobRequest req;
      SF_RETURN_IF_ERROR(DecodeBody(request, &req));
      if (req.length > kCacheMaxReadLength) {
        return InvalidArgumentError("ReadBlob of " + std::to_string(req.length) +
                                    " bytes; at most " + std::to_string(kCacheMaxReadLength));
      }
      std::string bytes;
      ReadBlobResponse resp;
      SF_RETURN_IF_ERROR(
          store_->ReadRange(req.digest.hex, req.offset, req.length, &bytes, &resp.blob_size));
      resp.offset = req.offset;
      resp.length = bytes.size();
      metrics_->AddTransfer(false, bytes.size());
      Message reply = request.Reply(Encode(resp));
      reply.data.push_back(std::move(bytes));
      return reply;
    }
    case Method::kGetAction: {
      GetActionRequest req;
      SF_RETURN_IF_ERROR(DecodeBody(request, &req));
      ActionLookup lookup = ActionLookup::kMiss;
      GetActionResponse resp;
      SF_ASSIGN_OR_RETURN(resp.result, store_->GetAction(req.key, &lookup));
      metrics_->RecordAcLookup(lookup);
      return request.Reply(Encode(resp));
    }
    case Method::kPutAction: {
      PutActionRequest req;
      SF_RETURN_IF_ERROR(DecodeBody(request, &req));
      SF_RETURN_IF_ERROR(store_->PutAction(req.key, req.result));
      return request.Reply(Encode(PutActionResponse{}));
    }
    case Method::kGetRef: {
      GetRefRequest req;
      SF_RETURN_IF_ERROR(DecodeBody(request, &req));
      GetRefResponse resp;
      SF_ASSIGN_OR_RETURN(resp.digest, store_->GetRef(req.name));
      return request.Reply(Encode(resp));
    }
    case Method::kPutRef: {
      PutRefRequest req;
      SF_RETURN_IF_ERROR(DecodeBody(request, &req));
      SF_RETURN_IF_ERROR(store_->PutRef(req.name, req.digest));
      return request.Reply(Encode(PutRefResponse{}));
    }
    case Method::kListRefs: {
      ListRefsRequest req;
      SF_RETURN_IF_ERROR(DecodeBody(request, &req));
      ListRefsResponse resp;
      SF_ASSIGN_OR_RETURN(resp.refs, store_->ListRefs());
      return request.Reply(Encode(resp));
    }
    case Method::kCacheStats: {
      CacheStatsRequest req;
      SF_RETURN_IF_ERROR(DecodeBody(request, &req));
      StoreStats st = store_->Stats();
      CacheStatsResponse resp;
      resp.bytes = st.bytes;
      resp.blobs = st.blobs;
      resp.uploads_in_progress = st.uploads_in_progress;
      resp.actions = st.actions;
      resp.refs = st.refs;
      resp.max_bytes = st.max_bytes;
      return request.Reply(Encode(resp));
    }
    case Method::kPing:
      return request.Reply();
    default:
      return UnimplementedError("the cache server has no method " +
                                std::to_string(static_cast<unsigned>(request.method)) + " (" +
                                std::string(MethodName(request.method)) + ")");
  }
}

}  // namespace stagefarm::cache
