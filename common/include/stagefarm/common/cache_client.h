// The cache server as its users (CLI, coordinator, workers) see it: a content-addressed store of
// blobs (CAS), an action cache (step key -> step result) and image refs (name -> manifest).
//
// Thread-safety: a CacheClient is used by one thread at a time. Make one per thread.
// Errors: Unavailable and DeadlineExceeded mean the server could not be reached (already retried
// by the remote client); NotFound means the blob or entry is absent; DataLoss means the bytes did
// not match their digest.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "stagefarm/common/digest.h"
#include "stagefarm/common/layer_ref.h"
#include "stagefarm/common/status.h"

namespace stagefarm {

class Transport;

// What the action cache holds for one step key. Only steps that made a layer are recorded;
// metadata-only instructions extend the key chain without an entry.
struct ActionResult {
  LayerRef layer;          // the step's layer; the server checks both blobs exist
  std::string created_by;  // the history entry's created_by
  double seconds = 0;      // how long the step took when it ran

  friend bool operator==(const ActionResult&, const ActionResult&) = default;
};

// Fills `buf` with up to `cap` bytes; returns the count, 0 at the end.
using ByteSource = std::function<StatusOr<size_t>(char* buf, size_t cap)>;
// A source of `bytes`, in order; they must outlive it.
ByteSource SourceOf(std::string_view bytes);
// Receives the next bytes of a blob, in order.
using ByteSink = std::function<Status(std::string_view bytes)>;

// A blob sent as it is made, its digest known only at the end (a layer tar as it is written).
// Memory stays bounded: a chunk being filled and the chunks in flight.
class BlobUpload {
 public:
  virtual ~BlobUpload() = default;  // one not committed is abandoned: nothing of it is kept
  // Appends bytes. An error ends the upload; later calls return it again.
  virtual Status Write(std::string_view bytes) = 0;
  // Makes the blob visible as `digest` once it is durable; DataLoss if the bytes do not match.
  // A blob stored meanwhile by someone else is success. The upload ends either way.
  virtual Status Commit(const Digest& digest) = 0;
};

class CacheClient {
 public:
  virtual ~CacheClient() = default;

  // The digests among `digests` that the store does not hold. Refreshes the others' access time.
  virtual StatusOr<std::vector<Digest>> FindMissing(const std::vector<Digest>& digests) = 0;
  // Uploads a blob whose digest (and size) the caller already knows. An existing blob is
  // acknowledged without transfer. If the bytes do not match, DataLoss and nothing is stored.
  virtual Status Put(const Digest& digest, const ByteSource& source) = 0;
  // Starts a streamed upload. While it is open the client serves nothing else, and it must not
  // outlive the client. Its bytes cannot be sent again, so a transient failure in the middle is
  // not retried: it fails the upload, and the caller makes the bytes again.
  virtual StatusOr<std::unique_ptr<BlobUpload>> StartUpload() = 0;
  // Streams bytes [offset, offset+length) of a blob to `sink`; length 0 means to the end.
  virtual Status Read(const Digest& digest, uint64_t offset, uint64_t length,
                      const ByteSink& sink) = 0;

  virtual StatusOr<std::optional<ActionResult>> GetAction(const std::string& key) = 0;
  // Refused (FailedPrecondition) if the result names a blob the store does not hold.
  virtual Status PutAction(const std::string& key, const ActionResult& result) = 0;

  virtual StatusOr<std::optional<Digest>> GetRef(const std::string& name) = 0;
  virtual Status PutRef(const std::string& name, const Digest& manifest) = 0;
  virtual StatusOr<std::vector<std::pair<std::string, Digest>>> ListRefs() = 0;

  // Conveniences over Put/Read.
  Status PutBytes(std::string_view bytes, Digest* digest_out = nullptr);
  Status PutFile(const std::string& path, const Digest& digest);
  // Reads a whole blob into memory; refused above `max_bytes` (for manifests, configs, TOCs).
  StatusOr<std::string> ReadBytes(const Digest& digest, uint64_t max_bytes = 64 << 20);
  // Writes a whole blob to `path` (created or truncated), verifying its digest.
  Status ReadToFile(const Digest& digest, const std::string& path);
};

// A client for the cache server at `endpoint` over `transport` (which must outlive it).
// Retries Unavailable/DeadlineExceeded a few times with backoff.
std::unique_ptr<CacheClient> ConnectCache(Transport& transport, const std::string& endpoint);

}  // namespace stagefarm
