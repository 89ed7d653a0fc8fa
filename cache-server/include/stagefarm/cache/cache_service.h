// CacheService: the cache server. Serves the methods of cache_protocol.h on a ROUTER socket over
// a BlobStore, for many clients at once.
//
// Threads: the thread calling Serve owns the socket; it receives requests, queues them and
// sends replies. A pool of `threads` workers handles them. Each peer's requests are handled one at
// a time in the order they came (a strand: chunks of an upload stay in order), different peers'
// in parallel, so a slow request (a commit's synced write, a cold read, a large FindMissing)
// delays only its own client. Quick requests (GetAction, GetRef, Ping, a FindMissing of a few
// digests) from a peer with nothing queued are answered on the socket's thread at once: a
// hand-off to a worker and back would cost more than the lookup. A client that stops reading its
// replies costs only its ZeroMQ queue; one that stops sending only holds its upload until the idle
// timeout.
//
// Every request gets exactly one reply. Malformed bodies, unknown methods, data frames where none
// belong and out-of-order chunks get an error reply; nothing a peer sends aborts the process.
// Memory is bounded: a peer may have at most kMaxQueuedPerPeer requests waiting; all peers
// together kMaxQueuedBytes of UploadChunk requests, and apart from those kMaxQueuedOtherBytes of
// other requests, of which one peer at most kMaxQueuedOtherBytesPerPeer. Past any of these the
// request is refused at once with Unavailable (the remote client retries those, but not an
// upload's chunks) instead of being queued. The uploads' credit shares most of the chunks' bytes
// (BlobStore::UploadCredit), so the chunks of a client that keeps to its credit find room unless
// some 80 uploads are sending at once, whatever other requests arrive.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <deque>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "stagefarm/cache/blob_store.h"
#include "stagefarm/common/status.h"
#include "stagefarm/common/transport.h"

namespace prometheus {
class Registry;
}  // namespace prometheus

namespace stagefarm::cache {

struct CacheServerOptions {
  std::string data_dir;
  uint64_t max_bytes = 0;  // 0 = unbounded
  std::chrono::seconds upload_idle_timeout{300};
  int threads = 4;  // workers handling requests
  uint32_t upload_credit = BlobStoreOptions().upload_credit;  // most chunks in flight per upload
};

class CacheMetrics;

class CacheService {
 public:
  // Opens the store in options.data_dir (removing unfinished uploads). Metrics go to `registry`
  // when given (it must outlive the service), otherwise to a private registry.
  static StatusOr<std::unique_ptr<CacheService>> Open(const CacheServerOptions& options,
                                                      prometheus::Registry* registry);
  ~CacheService();
  CacheService(const CacheService&) = delete;
  CacheService& operator=(const CacheService&) = delete;

  // Binds a ROUTER on `endpoint` (tcp://127.0.0.1:0 or inproc://...) and serves on the calling
  // thread until Stop(); calls on_ready(bound endpoint) once listening. Returns an error if the
  // bind fails or the socket breaks. One Serve at a time; after Stop() it returns at once.
  Status Serve(Transport& transport, const std::string& endpoint, bool insecure,
               const std::function<void(const std::string&)>& on_ready);
  // Thread-safe; Serve returns within about 100 ms.
  void Stop();

  // The store, for in-process users and tests. Thread-safe.
  BlobStore& store() { return *store_; }

  // Handles one request from `peer` on the calling thread, as a worker of Serve does, and returns
  // its reply (an error reply for anything malformed). Thread-safe, but one peer's requests must
  // come in order from one thread at a time. For in-process callers and the fuzzer.
  Message Handle(const std::string& peer, const Message& request);

 private:
  struct PeerQueue {
    std::deque<Message> pending;
    bool scheduled = false;  // in ready_, in held_ or being handled by a worker
    size_t other_bytes = 0;  // of its queued requests other than UploadChunk
    // Bytes of its replies ZeroMQ holds still (ServerSocket::Unsent); null if not counted.
    std::shared_ptr<const std::atomic<uint64_t>> unsent;
  };
  // Whether a peer's next request waits until ZeroMQ has sent more of its replies.
  static bool Held(const PeerQueue& q);
  // What a queued request counts for in the queues' budgets.
  static size_t QueuedBytes(const Message& request);

  CacheService(std::unique_ptr<BlobStore> store, prometheus::Registry* registry, int threads);
  // On the socket's thread: answers a quick request at once if its peer has nothing queued.
  // Returns false (and does nothing) otherwise.
  bool HandleQuick(ServerSocket& socket, const std::string& peer, const Message& request);
  // On the socket's thread: queues a request, or refuses it when the queues are full.
  void Enqueue(ServerSocket& socket, const std::string& peer, Message request);
  void SendReplies(ServerSocket& socket);
  // On the socket's thread: gives back to the workers the held peers whose replies have gone out.
  // Returns whether some are still held.
  bool ReleaseHeld();
  void WorkerLoop(ServerSocket& socket);
  StatusOr<Message> Dispatch(const std::string& peer, const Message& request);
  StatusOr<Message> Prune(const Message& request);
  void Housekeeping();  // on the socket thread: metrics, and wakes eviction when wanted
  // The background thread while Serve runs: idle uploads, access times, eviction.
  void EvictLoop();

  std::unique_ptr<BlobStore> store_;
  std::unique_ptr<CacheMetrics> metrics_;
  const int threads_;
  std::atomic<bool> stop_{false};

  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  bool workers_stop_ = false;                            // guarded by queue_mu_
  std::unordered_map<std::string, PeerQueue> peers_;     // guarded by queue_mu_
  std::deque<std::string> ready_;                        // peers with work and no worker
  std::vector<std::string> held_;  // peers with work, waiting for their replies to go out
  std::deque<std::pair<std::string, Message>> replies_;  // made by workers, to send
  size_t queued_bytes_ = 0;        // of the UploadChunk requests in peers_
  size_t queued_other_bytes_ = 0;  // of the other requests in peers_

  std::mutex prune_mu_;  // one prune at a time

  std::mutex evict_mu_;
  std::condition_variable evict_cv_;
  bool evict_stop_ = false;    // guarded by evict_mu_
  bool evict_wanted_ = false;  // guarded by evict_mu_
};

}  // namespace stagefarm::cache
