#include "stagefarm/cache/cache_service.h"

#include <algorithm>
#include <thread>
#include <vector>

#include "cache_metrics.h"
#include "stagefarm/common/cache_protocol.h"
#include "stagefarm/common/oci.h"
#include "stagefarm/common/thread_name.h"

namespace stagefarm::cache {
namespace {

constexpr auto kPollInterval = std::chrono::milliseconds(100);
constexpr auto kHousekeepingInterval = std::chrono::seconds(1);
constexpr auto kAccessFlushInterval = std::chrono::seconds(10);
// Requests waiting to be handled: per peer (well above any client's credit or read window), and
// in bytes for all peers together, UploadChunk requests and the others apart.
constexpr size_t kMaxQueuedPerPeer = 64;
// The bytes of queued UploadChunk requests. A chunk leaves this count once handled, but a large
// upload's chunk is then held by the store's file writer until written (BlobStore::kWriterBytes,
// 32 MiB, for all uploads). With those, the other requests' 24 MiB and RocksDB's two 32 MiB blob
// memtables the server stays under 300 MiB.
constexpr size_t kMaxQueuedBytes = 80u << 20;
// The part of it the uploads' credit shares (BlobStoreOptions::upload_budget). The rest is for
// the one chunk of credit each upload past the budget's count still gets: the chunks of a client
// keeping to its credit find room unless some 80 uploads send at once.
constexpr size_t kUploadBudgetBytes = 64u << 20;
// Requests other than UploadChunk have a budget of their own, so that they never take the
// uploads' room, and each peer a part of it: one peer's large bodies (a FindMissing of 100,000
// digests is about 9 MiB) cannot keep the others' requests out.
constexpr size_t kMaxQueuedOtherBytes = 24u << 20;
constexpr size_t kMaxQueuedOtherBytesPerPeer = 12u << 20;
// What a queued request costs besides its bytes: a frame of none still takes memory.
constexpr size_t kQueuedBytesPerFrame = 64;
// Replies waiting in ZeroMQ to be sent to one peer; past it they are dropped. Well above what a
// client has in flight (a read window of 4, an upload credit of at most 64, a pipeline of 64
// action-cache gets), also while ZeroMQ's count lags by half of it.
constexpr int kMaxUnsentRepliesPerPeer = 256;
// The bytes of one peer's replies ZeroMQ may hold (ServerSocket::Unsent) before its next request
// waits for them to go out. Four times a client's read window of 4 MiB: a client that reads its
// replies never waits, and one that does not holds about this much (plus one reply, and those
// ZeroMQ does not count: at most kMaxUnsentRepliesPerPeer of less than 32 KiB) rather than
// kMaxUnsentRepliesPerPeer reads of a MiB.
constexpr uint64_t kMaxUnsentBytesPerPeer = 16u << 20;
// How often Serve looks whether held peers' replies have gone out (ZeroMQ says nothing when it
// lets go of them).
constexpr auto kHeldPollInterval = std::chrono::milliseconds(5);
constexpr uint64_t kMaxManifestBytes = 4 << 20;
// A FindMissing body up to this size (about 160 digests) is answered on the socket's thread.
constexpr size_t kMaxQuickFindMissingBytes = 16 << 10;

// Requests cheap enough to answer on the socket's thread, saving two thread hand-offs and a
// wake: a lookup of one key or a few, no write but access times in memory, no blob bytes.
bool IsQuick(const Message& request) {
  switch (request.method) {
    case Method::kGetAction:
    case Method::kGetRef:
    case Method::kPing:
      return true;
    case Method::kFindMissing:
      return request.body.size() <= kMaxQuickFindMissingBytes;
    default:
      return false;
  }
}

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
  store_options.upload_credit = options.upload_credit;
  store_options.upload_budget = static_cast<uint32_t>(kUploadBudgetBytes / kCacheChunkSize);
  SF_ASSIGN_OR_RETURN(std::unique_ptr<BlobStore> store, BlobStore::Open(store_options));
  return std::unique_ptr<CacheService>(
      new CacheService(std::move(store), registry, std::max(options.threads, 1)));
}

CacheService::CacheService(std::unique_ptr<BlobStore> store, prometheus::Registry* registry,
                           int threads)
    : store_(std::move(store)),
      metrics_(std::make_unique<CacheMetrics>(registry)),
      threads_(threads) {
  StoreStats st = store_->Stats();
  metrics_->SetStoreSize(st.bytes, st.blobs);
}

CacheService::~CacheService() = default;

void CacheService::Stop() { stop_.store(true); }

Status CacheService::Serve(Transport& transport, const std::string& endpoint, bool insecure,
                           const std::function<void(const std::string&)>& on_ready) {
  SF_ASSIGN_OR_RETURN(std::unique_ptr<ServerSocket> socket,
                      transport.Bind(endpoint, insecure, kMaxUnsentRepliesPerPeer));
  if (on_ready) on_ready(socket->endpoint());

  {
    std::lock_guard lock(evict_mu_);
    evict_stop_ = false;
  }
  {
    std::lock_guard lock(queue_mu_);
    workers_stop_ = false;
  }
  std::thread evictor([this] { EvictLoop(); });
  NameThread(evictor, "sf-cache-evict");
  std::vector<std::thread> workers;
  for (int i = 0; i < threads_; ++i) {
    workers.emplace_back([&] { WorkerLoop(*socket); });
    NameThread(workers.back(), "sf-cache-work");
  }
  Status result;
  auto next_housekeeping = std::chrono::steady_clock::now() + kHousekeepingInterval;
  uint64_t malformed = 0;  // counted so far, of those the socket answered itself
  bool held = false;       // some peers wait for their replies to go out
  while (!stop_.load()) {
    std::string peer;
    Message request;
    StatusOr<bool> got =
        socket->Receive(&peer, &request, held ? kHeldPollInterval : kPollInterval);
    if (!got.ok()) {
      result = got.status().Annotate("cache server on " + socket->endpoint());
      break;
    }
    for (; malformed < socket->malformed(); ++malformed) {
      metrics_->RecordOp("malformed", InvalidArgumentError("malformed message"), 0);
    }
    if (*got && !HandleQuick(*socket, peer, request)) Enqueue(*socket, peer, std::move(request));
    SendReplies(*socket);
    held = ReleaseHeld();
    auto now = std::chrono::steady_clock::now();
    if (now >= next_housekeeping) {
      Housekeeping();
      next_housekeeping = now + kHousekeepingInterval;
    }
  }
  {
    std::lock_guard lock(queue_mu_);
    workers_stop_ = true;
  }
  queue_cv_.notify_all();
  for (auto& t : workers) t.join();
  SendReplies(*socket);
  {
    std::lock_guard lock(queue_mu_);
    peers_.clear();
    ready_.clear();
    held_.clear();
    queued_bytes_ = 0;
    queued_other_bytes_ = 0;
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

bool CacheService::HandleQuick(ServerSocket& socket, const std::string& peer,
                               const Message& request) {
  if (!IsQuick(request)) return false;
  {
    std::lock_guard lock(queue_mu_);
    // A peer with requests queued or in progress keeps its order: this one waits its turn.
    if (peers_.count(peer) != 0) return false;
  }
  // So does one whose replies ZeroMQ holds: queued, it waits for them to go out.
  if (auto unsent = socket.Unsent(peer); unsent && *unsent >= kMaxUnsentBytesPerPeer) {
    return false;
  }
  // A worker queues a peer's last reply and forgets the peer under one lock: whatever this peer
  // was answered before is in replies_ now, and goes first.
  SendReplies(socket);
  socket.Send(peer, Handle(peer, request)).IgnoreError();  // a gone peer drops it
  return true;
}

size_t CacheService::QueuedBytes(const Message& request) {
  size_t bytes = request.body.size() + kQueuedBytesPerFrame * (2 + request.data.size());
  for (const auto& d : request.data) bytes += d.size();
  return bytes;
}

void CacheService::Enqueue(ServerSocket& socket, const std::string& peer, Message request) {
  const size_t bytes = QueuedBytes(request);
  const bool upload = request.method == Method::kUploadChunk;
  {
    std::lock_guard lock(queue_mu_);
    PeerQueue& q = peers_[peer];
    if (!q.unsent) q.unsent = socket.Unsent(peer);
    const bool room =
        upload ? queued_bytes_ + bytes <= kMaxQueuedBytes
               : queued_other_bytes_ + bytes <= kMaxQueuedOtherBytes &&
                     q.other_bytes + bytes <= kMaxQueuedOtherBytesPerPeer;
    if (q.pending.size() < kMaxQueuedPerPeer && room) {
      (upload ? queued_bytes_ : queued_other_bytes_) += bytes;
      if (!upload) q.other_bytes += bytes;
      q.pending.push_back(std::move(request));
      if (!q.scheduled) {
        q.scheduled = true;
        ready_.push_back(peer);
        queue_cv_.notify_one();
      }
      return;
    }
    if (q.pending.empty() && !q.scheduled) peers_.erase(peer);
  }
  // Refused without queuing, so memory stays bounded whatever peers send.
  Status busy = UnavailableError("cache server busy: too many requests waiting, retry later");
  std::string_view op = MethodName(request.method);
  metrics_->RecordOp(op == "Unknown" ? "unknown" : op, busy, 0);
  socket.Send(peer, request.ErrorReply(busy)).IgnoreError();  // a gone peer drops it
}

void CacheService::SendReplies(ServerSocket& socket) {
  std::deque<std::pair<std::string, Message>> out;
  {
    std::lock_guard lock(queue_mu_);
    out.swap(replies_);
  }
  // A peer that went away is not an error (ROUTER drops the reply); a broken socket shows up in
  // the next Receive.
  for (auto& [peer, m] : out) socket.Send(peer, m).IgnoreError();
}

bool CacheService::Held(const PeerQueue& q) {
  return q.unsent && q.unsent->load(std::memory_order_relaxed) >= kMaxUnsentBytesPerPeer;
}

bool CacheService::ReleaseHeld() {
  std::lock_guard lock(queue_mu_);
  if (held_.empty()) return false;
  size_t released = 0;
  std::erase_if(held_, [&](const std::string& peer) {
    auto it = peers_.find(peer);
    SF_CHECK(it != peers_.end());
    if (Held(it->second)) return false;
    ready_.push_back(peer);
    ++released;
    return true;
  });
  for (size_t i = 0; i < released; ++i) queue_cv_.notify_one();
  return !held_.empty();
}

void CacheService::WorkerLoop(ServerSocket& socket) {
  std::unique_lock lock(queue_mu_);
  for (;;) {
    queue_cv_.wait(lock, [&] { return workers_stop_ || !ready_.empty(); });
    if (workers_stop_) return;
    std::string peer = std::move(ready_.front());
    ready_.pop_front();
    auto it = peers_.find(peer);
    SF_CHECK(it != peers_.end() && !it->second.pending.empty());
    if (Held(it->second)) {
      // Its replies are not going out: its requests wait (and past its queue are refused as
      // busy) instead of filling ZeroMQ with replies it does not read. Serve gives it back.
      held_.push_back(std::move(peer));
      continue;
    }
    Message request = std::move(it->second.pending.front());
    it->second.pending.pop_front();
    const size_t bytes = QueuedBytes(request);
    const bool upload = request.method == Method::kUploadChunk;
    lock.unlock();

    Message reply = Handle(peer, request);
    request = Message();  // the chunk's memory goes before the next request is taken

    lock.lock();
    (upload ? queued_bytes_ : queued_other_bytes_) -= bytes;
    // One wake per batch of replies: if some were waiting already, their wake is still pending
    // (SendReplies takes them all at once), which saves a syscall per reply under load.
    const bool wake = replies_.empty();
    replies_.emplace_back(peer, std::move(reply));
    it = peers_.find(peer);  // the map may have rehashed meanwhile
    if (!upload) it->second.other_bytes -= bytes;
    if (it->second.pending.empty()) {
      peers_.erase(it);
    } else {
      ready_.push_back(peer);  // behind the others: peers take turns
    }
    if (wake) socket.Wake();
  }
}

void CacheService::Housekeeping() {
  StoreStats st = store_->Stats();
  metrics_->SetStoreSize(st.bytes, st.blobs);
  if (st.max_bytes != 0 && st.bytes > st.max_bytes) {
    std::lock_guard lock(evict_mu_);
    evict_wanted_ = true;
    evict_cv_.notify_all();
  }
}

void CacheService::EvictLoop() {
  // Everything that writes to the store for its own sake happens here, off the socket's thread
  // and the workers: idle uploads expire, access times are flushed, eviction runs when wanted.
  std::unique_lock lock(evict_mu_);
  auto last_flush = std::chrono::steady_clock::now();
  for (;;) {
    evict_cv_.wait_for(lock, kHousekeepingInterval, [&] { return evict_stop_ || evict_wanted_; });
    if (evict_stop_) return;
    bool evict = std::exchange(evict_wanted_, false);
    lock.unlock();
    auto now = std::chrono::steady_clock::now();
    store_->ExpireIdleUploads(now);
    if (now - last_flush >= kAccessFlushInterval) {
      // Retried at the next interval; access times only order eviction.
      store_->FlushAccessTimes().IgnoreError();
      last_flush = now;
    }
    if (evict) {
      StatusOr<uint64_t> n = store_->EvictIfNeeded();
      // A failed eviction is retried at the next housekeeping that finds the store too big.
      if (n.ok() && *n > 0) metrics_->AddEvictions(*n);
    }
    lock.lock();
  }
}

Message CacheService::Handle(const std::string& peer, const Message& request) {
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
  return reply.ok() ? std::move(reply).value() : request.ErrorReply(outcome);
}

StatusOr<Message> CacheService::Prune(const Message& request) {
  PruneCacheRequest req;
  SF_RETURN_IF_ERROR(DecodeBody(request, &req));
  std::lock_guard prune_lock(prune_mu_);
  BlobStore::PruneOptions opts;
  opts.keep_bytes = req.keep_bytes;
  opts.dry_run = req.dry_run;
  SF_ASSIGN_OR_RETURN(auto refs, store_->ListRefs());
  if (!req.all) {
    // What every image ref needs: its manifest, config, layers and TOCs.
    for (const auto& [name, manifest] : refs) {
      opts.keep.insert(manifest.hex);
      std::string bytes;
      uint64_t size = 0;
      Status read = store_->ReadRange(manifest.hex, 0, kMaxManifestBytes, &bytes, &size);
      if (!read.ok() || size > kMaxManifestBytes) continue;  // a dangling ref protects nothing
      StatusOr<Manifest> m = ParseManifest(bytes);
      if (!m.ok()) continue;
      opts.keep.insert(m->config.digest.hex);
      StatusOr<std::vector<LayerRef>> layers = StoredLayers(*m);
      if (!layers.ok()) continue;
      for (const LayerRef& l : *layers) {
        opts.keep.insert(l.diff_id.hex);
        if (!l.toc.empty()) opts.keep.insert(l.toc.hex);
      }
    }
  }
  SF_ASSIGN_OR_RETURN(BlobStore::PruneResult r, store_->Prune(opts));
  PruneCacheResponse resp;
  resp.blobs = r.blobs;
  resp.bytes = r.bytes;
  resp.blobs_left = r.blobs_left;
  resp.bytes_left = r.bytes_left;
  resp.actions = r.actions;
  if (req.all && !req.dry_run) {
    for (const auto& [name, manifest] : refs) {
      if (store_->Stat(manifest.hex).ok()) continue;
      SF_RETURN_IF_ERROR(store_->DeleteRef(name));
      ++resp.refs;
    }
  }
  StoreStats st = store_->Stats();
  metrics_->SetStoreSize(st.bytes, st.blobs);
  return request.Reply(Encode(resp));
}

StatusOr<Message> CacheService::Dispatch(const std::string& peer, const Message& request) {
  switch (request.method) {
    case Method::kFindMissing: {
      FindMissingRequest req;
      SF_RETURN_IF_ERROR(DecodeBody(request, &req));  // at most kCacheMaxFindMissing digests
      FindMissingResponse resp;
      SF_ASSIGN_OR_RETURN(resp.missing, store_->FindMissing(std::move(req.digests)));
      return request.Reply(Encode(resp));
    }
    case Method::kBeginUpload: {
      BeginUploadRequest req;
      SF_RETURN_IF_ERROR(DecodeBody(request, &req));
      SF_ASSIGN_OR_RETURN(BlobStore::BeginResult r, store_->BeginUpload(req.digest, peer));
      BeginUploadResponse resp;
      resp.exists = r.exists;
      resp.upload_id = r.upload_id;
      resp.credit = r.credit;
      resp.chunk_size = store_->options().chunk_size;
      resp.chunks_per_request = kMaxChunksPerRequest;
      return request.Reply(Encode(resp));
    }
    case Method::kUploadChunk: {
      UploadChunkRequest req;
      SF_RETURN_IF_ERROR(Decode(request.body, &req).Annotate("UploadChunk"));
      if (request.data.empty() || request.data.size() > kMaxChunksPerRequest) {
        // The upload cannot continue in order without these chunks: end it.
        store_->AbortUpload(req.upload_id, peer);
        return InvalidArgumentError("UploadChunk takes 1 to " +
                                    std::to_string(kMaxChunksPerRequest) + " data frames, got " +
                                    std::to_string(request.data.size()));
      }
      uint64_t received = req.offset;
      for (const Frame& chunk : request.data) {
        SF_ASSIGN_OR_RETURN(received, store_->WriteChunk(req.upload_id, peer, received, chunk));
        metrics_->AddTransfer(true, chunk.size());
      }
      UploadChunkResponse resp;
      resp.credit =
          store_->UploadCredit(req.upload_id, peer, static_cast<uint32_t>(request.data.size()));
      resp.received = received;
      return request.Reply(Encode(resp));
    }
    case Method::kCommitUpload: {
      CommitUploadRequest req;
      SF_RETURN_IF_ERROR(DecodeBody(request, &req));
      SF_RETURN_IF_ERROR(store_->CommitUpload(req.upload_id, peer, req.digest));
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
    case Method::kDeleteRef: {
      DeleteRefRequest req;
      SF_RETURN_IF_ERROR(DecodeBody(request, &req));
      SF_RETURN_IF_ERROR(store_->DeleteRef(req.name));
      return request.Reply(Encode(DeleteRefResponse{}));
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
    case Method::kPruneCache:
      return Prune(request);
    case Method::kPing:
      return request.Reply();
    default:
      return UnimplementedError("the cache server has no method " +
                                std::to_string(static_cast<unsigned>(request.method)) + " (" +
                                std::string(MethodName(request.method)) + ")");
  }
}

}  // namespace stagefarm::cache
