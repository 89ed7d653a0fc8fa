// Messages of the cache server (Method::kFindMissing ... kCacheStats, kPruneCache, kDeleteRef).
// Encode/Decode are the Cap'n Proto codec (common/schema/cache.capnp); Decode fails with
// InvalidArgument on malformed bytes and never throws.
//
// Blob bytes never travel inside these structs: they are raw data frames (Message::data) after
// the body, one chunk each: an UploadChunk request carries one or more, a ReadBlob reply one.
//
// Uploads (the sender is the client):
//   BeginUpload{digest with size} -> {exists} : the blob is already stored; nothing to send.
//                                 -> {upload_id, credit, chunk_size, chunks_per_request}
//   UploadChunk{upload_id, offset} + 1 to chunks_per_request data frames: consecutive chunks,
//     the first at `offset`, in order, each exactly chunk_size bytes except the upload's last;
//     the client never has more than `credit` chunks without a reply. Each reply carries the
//     credit from then on (the chunks the client may have in flight). The server shares a budget
//     of chunks in flight among the uploads in progress (BlobStore::UploadCredit), so chunks sent
//     within the credit find room in its queue unless some 80 uploads send at once. Several
//     chunks to a request save a round of wakes per chunk on both sides: sent one to a request,
//     a 1 GiB put over loopback took 1.58 CPU-seconds on this project's VMs, four to a request
//     1.41 (medians of six runs each, alternated).
//   CommitUpload{upload_id} -> OK once the blob is durable and visible; DataLoss if the bytes do
//     not match the digest (then nothing of the upload is kept).
//   An error on any chunk ends the upload on the server; later chunks get FailedPrecondition.
// A streamed upload (a layer tar sent as it is made, its digest known only at the end) begins
// with an empty digest and names it at the commit: CommitUpload{upload_id, digest}. It is never
// "exists" at the begin; a blob stored meanwhile makes the commit drop the upload's bytes.
//
// Reads (the receiver is the client): ReadBlob{digest, offset, length} returns
// min(length, blob_size - offset) bytes as one data frame; length must be at most
// kCacheMaxReadLength. The client pipelines a few requests (its own credit window) so memory
// stays bounded on both sides. Reads look blobs up by hex only; the reply's blob_size is the truth.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "stagefarm/common/cache_client.h"
#include "stagefarm/common/digest.h"
#include "stagefarm/common/status.h"

namespace stagefarm {

// The chunk size of uploads and the largest ReadBlob length.
inline constexpr uint32_t kCacheChunkSize = 1 << 20;
// The most chunks the server takes in one UploadChunk request.
inline constexpr uint32_t kMaxChunksPerRequest = 8;
inline constexpr uint64_t kCacheMaxReadLength = kCacheChunkSize;
// The most digests in one FindMissing request (and so in its answer): refused when decoded,
// before anything is allocated for them.
inline constexpr size_t kCacheMaxFindMissing = 100000;

struct FindMissingRequest {
  std::vector<Digest> digests;
};
struct FindMissingResponse {
  std::vector<Digest> missing;
};

struct BeginUploadRequest {
  Digest digest;  // with its size; empty for a streamed upload
};
struct BeginUploadResponse {
  bool exists = false;     // already stored: the upload is done, send nothing
  uint64_t upload_id = 0;  // otherwise: name of the upload in the chunks and the commit
  uint32_t credit = 0;     // chunks the client may have in flight
  uint32_t chunk_size = kCacheChunkSize;
  uint32_t chunks_per_request = 1;  // the most chunks one UploadChunk may carry (>= 1)
};

struct UploadChunkRequest {  // + 1 to chunks_per_request data frames
  uint64_t upload_id = 0;
  uint64_t offset = 0;  // of the first chunk; must equal the bytes received so far
};
struct UploadChunkResponse {
  uint32_t credit = 0;    // chunks the client may have in flight from now on (>= 1)
  uint64_t received = 0;  // bytes of the upload received so far
};

struct CommitUploadRequest {
  uint64_t upload_id = 0;
  Digest digest;  // a streamed upload's digest and size; empty otherwise (or the begin's)
};
struct CommitUploadResponse {
  Digest digest;  // the stored blob
};

struct ReadBlobRequest {
  Digest digest;  // looked up by hex
  uint64_t offset = 0;
  uint64_t length = 0;  // <= kCacheMaxReadLength; 0 returns no bytes (a stat)
};
struct ReadBlobResponse {  // + one data frame of exactly `length` bytes
  uint64_t blob_size = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
};

struct GetActionRequest {
  std::string key;
};
struct GetActionResponse {
  std::optional<ActionResult> result;  // absent if unknown or if a blob it names is gone
};

struct PutActionRequest {
  std::string key;
  ActionResult result;
};
struct PutActionResponse {};

struct GetRefRequest {
  std::string name;
};
struct GetRefResponse {
  std::optional<Digest> digest;
};

struct PutRefRequest {
  std::string name;
  Digest digest;
};
struct PutRefResponse {};

struct ListRefsRequest {};
struct ListRefsResponse {
  std::vector<std::pair<std::string, Digest>> refs;  // sorted by name
};

struct CacheStatsRequest {};
struct CacheStatsResponse {
  uint64_t bytes = 0;  // bytes of committed blobs
  uint64_t blobs = 0;  // committed blobs
  uint64_t uploads_in_progress = 0;
  uint64_t actions = 0;    // estimate
  uint64_t refs = 0;       // estimate
  uint64_t max_bytes = 0;  // 0 = unbounded
};

// Frees space (`stagefarm prune`). Blobs go least recently used first until the committed bytes
// are at most keep_bytes. Without `all`, blobs an image ref needs (its manifest, config, layers
// and their TOCs) are kept whatever keep_bytes says; with `all` they may go too, and refs whose
// manifest went are removed. Blobs of uploads in progress are never touched.
struct PruneCacheRequest {
  uint64_t keep_bytes = 0;
  bool all = false;
  bool dry_run = false;  // report what would go, remove nothing
};
struct PruneCacheResponse {
  uint64_t blobs = 0;  // removed (or, dry run, that would be)
  uint64_t bytes = 0;
  uint64_t refs = 0;   // refs removed with their manifest (all only)
  uint64_t blobs_left = 0;
  uint64_t bytes_left = 0;
  uint64_t actions = 0;  // action-cache entries removed because a blob they name went
};

// Removes an image ref (`stagefarm image rm`). NotFound if there is no such name. The blobs it
// named stay until prune or eviction takes them.
struct DeleteRefRequest {
  std::string name;
};
struct DeleteRefResponse {};

std::string Encode(const FindMissingRequest& m);
std::string Encode(const FindMissingResponse& m);
std::string Encode(const BeginUploadRequest& m);
std::string Encode(const BeginUploadResponse& m);
std::string Encode(const UploadChunkRequest& m);
std::string Encode(const UploadChunkResponse& m);
std::string Encode(const CommitUploadRequest& m);
std::string Encode(const CommitUploadResponse& m);
std::string Encode(const ReadBlobRequest& m);
std::string Encode(const ReadBlobResponse& m);
std::string Encode(const GetActionRequest& m);
std::string Encode(const GetActionResponse& m);
std::string Encode(const PutActionRequest& m);
std::string Encode(const PutActionResponse& m);
std::string Encode(const GetRefRequest& m);
std::string Encode(const GetRefResponse& m);
std::string Encode(const PutRefRequest& m);
std::string Encode(const PutRefResponse& m);
std::string Encode(const ListRefsRequest& m);
std::string Encode(const ListRefsResponse& m);
std::string Encode(const CacheStatsRequest& m);
std::string Encode(const CacheStatsResponse& m);
std::string Encode(const PruneCacheRequest& m);
std::string Encode(const PruneCacheResponse& m);
std::string Encode(const DeleteRefRequest& m);
std::string Encode(const DeleteRefResponse& m);

Status Decode(std::string_view bytes, FindMissingRequest* m);
Status Decode(std::string_view bytes, FindMissingResponse* m);
Status Decode(std::string_view bytes, BeginUploadRequest* m);
Status Decode(std::string_view bytes, BeginUploadResponse* m);
Status Decode(std::string_view bytes, UploadChunkRequest* m);
Status Decode(std::string_view bytes, UploadChunkResponse* m);
Status Decode(std::string_view bytes, CommitUploadRequest* m);
Status Decode(std::string_view bytes, CommitUploadResponse* m);
Status Decode(std::string_view bytes, ReadBlobRequest* m);
Status Decode(std::string_view bytes, ReadBlobResponse* m);
Status Decode(std::string_view bytes, GetActionRequest* m);
Status Decode(std::string_view bytes, GetActionResponse* m);
Status Decode(std::string_view bytes, PutActionRequest* m);
Status Decode(std::string_view bytes, PutActionResponse* m);
Status Decode(std::string_view bytes, GetRefRequest* m);
Status Decode(std::string_view bytes, GetRefResponse* m);
Status Decode(std::string_view bytes, PutRefRequest* m);
Status Decode(std::string_view bytes, PutRefResponse* m);
Status Decode(std::string_view bytes, ListRefsRequest* m);
Status Decode(std::string_view bytes, ListRefsResponse* m);
Status Decode(std::string_view bytes, CacheStatsRequest* m);
Status Decode(std::string_view bytes, CacheStatsResponse* m);
Status Decode(std::string_view bytes, PruneCacheRequest* m);
Status Decode(std::string_view bytes, PruneCacheResponse* m);
Status Decode(std::string_view bytes, DeleteRefRequest* m);
Status Decode(std::string_view bytes, DeleteRefResponse* m);

// Tuning of the remote client (remote_cache_client.cc). ConnectCache(transport, endpoint) in
// cache_client.h uses the defaults; tests and daemons may shorten them.
struct RemoteCacheOptions {
  std::chrono::milliseconds request_timeout{5000};  // per request
  int attempts = 3;                                 // tries of a request on Unavailable/Deadline
  std::chrono::milliseconds initial_backoff{100};   // doubled after each failed try
  uint32_t read_window = 4;                         // ReadBlob requests in flight
};
std::unique_ptr<CacheClient> ConnectCache(Transport& transport, const std::string& endpoint,
                                          const RemoteCacheOptions& options);

// Administration of a cache server (`stagefarm du`, `stagefarm prune`), one request each, with the
// remote client's retries. Kept off CacheClient: builds never need them.
StatusOr<CacheStatsResponse> QueryCacheStats(Transport& transport, const std::string& endpoint,
                                             const RemoteCacheOptions& options = {});
StatusOr<PruneCacheResponse> PruneCache(Transport& transport, const std::string& endpoint,
                                        const PruneCacheRequest& request,
                                        const RemoteCacheOptions& options = {});
// Removes the image ref `name` (NotFound if there is none).
Status DeleteCacheRef(Transport& transport, const std::string& endpoint, const std::string& name,
                      const RemoteCacheOptions& options = {});

}  // namespace stagefarm
