// CacheService: the cache server. Serves the methods of cache_protocol.h on a ROUTER socket over
// a BlobStore, for many clients at once (their requests interleave; uploads are per client).
//
// Every request gets exactly one reply. Malformed bodies, unknown methods, data frames where none
// belong and out-of-order chunks get an error reply; nothing a peer sends aborts the process.
// Memory is bounded: at most one chunk is held per request being handled, and the clients' credit
// bounds what waits in the socket queues.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

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

 private:
  CacheService(std::unique_ptr<BlobStore> store, prometheus::Registry* registry);
  void Handle(ServerSocket& socket, const std::string& peer, Message request);
  StatusOr<Message> Dispatch(const std::string& peer, const Message& request);
  void Housekeeping(std::chrono::steady_clock::time_point now);
  void EvictLoop();  // the background eviction thread, while Serve runs

  std::unique_ptr<BlobStore> store_;
  std::unique_ptr<CacheMetrics> metrics_;
  std::atomic<bool> stop_{false};
  std::chrono::steady_clock::time_point last_flush_{};

  std::mutex evict_mu_;
  std::condition_variable evict_cv_;
  bool evict_stop_ = false;    // guarded by evict_mu_
  bool evict_wanted_ = false;  // guarded by evict_mu_
};

}  // namespace stagefarm::cache
