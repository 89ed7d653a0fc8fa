@0xc1a3f4e2b7d80003;
using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("stagefarm::schema");
# The cache server's methods (Method::kFindMissing ... kCacheStats). See
# common/include/stagefarm/common/cache_protocol.h for the contracts; blob bytes never travel in
# these structs, only in raw data frames after them.

using Common = import "common.capnp";

struct FindMissingRequest {
  digests @0 :List(Common.Digest);
}
struct FindMissingResponse {
  missing @0 :List(Common.Digest);
}

struct BeginUploadRequest {
  digest @0 :Common.Digest;
}
struct BeginUploadResponse {
  exists @0 :Bool;
  uploadId @1 :UInt64;
  credit @2 :UInt32;
  chunkSize @3 :UInt32;
  # The most chunks one UploadChunk may carry; 0 (a server older than this field) means 1.
  chunksPerRequest @4 :UInt32;
}

# Followed by 1 to BeginUploadResponse.chunksPerRequest data frames: consecutive chunks, the
# first at `offset`.
struct UploadChunkRequest {
  uploadId @0 :UInt64;
  offset @1 :UInt64;
}
struct UploadChunkResponse {
  credit @0 :UInt32;
  received @1 :UInt64;
}

struct CommitUploadRequest {
  uploadId @0 :UInt64;
  digest @1 :Common.Digest;  # a streamed upload's (begun with an empty digest)
}
struct CommitUploadResponse {
  digest @0 :Common.Digest;
}

struct ReadBlobRequest {
  digest @0 :Common.Digest;
  offset @1 :UInt64;
  length @2 :UInt64;
}
# Followed by exactly one data frame: the bytes.
struct ReadBlobResponse {
  blobSize @0 :UInt64;
  offset @1 :UInt64;
  length @2 :UInt64;
}

struct ActionResult {
  layer @0 :Common.LayerRef;
  createdBy @1 :Text;
  seconds @2 :Float64;
}

struct GetActionRequest {
  key @0 :Text;
}
struct GetActionResponse {
  found @0 :Bool;
  result @1 :ActionResult;
}

struct PutActionRequest {
  key @0 :Text;
  result @1 :ActionResult;
}
struct PutActionResponse {}

struct GetRefRequest {
  name @0 :Text;
}
struct GetRefResponse {
  found @0 :Bool;
  digest @1 :Common.Digest;
}

struct PutRefRequest {
  name @0 :Text;
  digest @1 :Common.Digest;
}
struct PutRefResponse {}

struct ListRefsRequest {}
struct RefEntry {
  name @0 :Text;
  digest @1 :Common.Digest;
}
struct ListRefsResponse {
  refs @0 :List(RefEntry);
}

struct CacheStatsRequest {}
struct CacheStatsResponse {
  bytes @0 :UInt64;
  blobs @1 :UInt64;
  uploadsInProgress @2 :UInt64;
  actions @3 :UInt64;
  refs @4 :UInt64;
  maxBytes @5 :UInt64;
}

struct PruneCacheRequest {
  keepBytes @0 :UInt64;
  all @1 :Bool;
  dryRun @2 :Bool;
}
struct PruneCacheResponse {
  blobs @0 :UInt64;
  bytes @1 :UInt64;
  refs @2 :UInt64;
  blobsLeft @3 :UInt64;
  bytesLeft @4 :UInt64;
  actions @5 :UInt64;
}

struct DeleteRefRequest {
  name @0 :Text;
}
struct DeleteRefResponse {}
