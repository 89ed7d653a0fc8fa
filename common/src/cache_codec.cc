// Cap'n Proto codec of the cache server's messages (cache_protocol.h). The only file that sees
// cache.capnp.h.
#include <capnp/message.h>

#include <algorithm>

#include "cache.capnp.h"
#include "codec_common.h"
#include "codec_util.h"
#include "stagefarm/common/cache_protocol.h"

namespace stagefarm {
namespace {

template <typename T, typename Fill>
std::string Build(Fill&& fill) {
  codec::ScratchBuilder builder;
  fill(builder.initRoot<T>());
  return codec::ToBytes(builder);
}

void WriteAction(schema::ActionResult::Builder b, const ActionResult& r) {
  codec::Write(b.initLayer(), r.layer);
  b.setCreatedBy(r.created_by);
  b.setSeconds(r.seconds);
}

StatusOr<ActionResult> ReadAction(schema::ActionResult::Reader r) {
  ActionResult out;
  SF_ASSIGN_OR_RETURN(out.layer, codec::ReadLayerRef(r.getLayer()));
  out.created_by = codec::Str(r.getCreatedBy());
  out.seconds = r.getSeconds();
  return out;
}

template <typename ListBuilder>
void WriteDigests(ListBuilder b, const std::vector<Digest>& v) {
  for (size_t i = 0; i < v.size(); ++i) codec::Write(b[i], v[i]);
}

// At most kCacheMaxFindMissing: a list's header may claim millions of elements that take no
// bytes on the wire (empty structs), each of which would still become a Digest here.
template <typename ListReader>
Status ReadDigests(ListReader r, std::vector<Digest>* out) {
  out->clear();
  if (r.size() > kCacheMaxFindMissing) {
    return InvalidArgumentError(std::to_string(r.size()) + " digests; at most " +
                                std::to_string(kCacheMaxFindMissing));
  }
  out->reserve(r.size());
  for (auto d : r) {
    SF_ASSIGN_OR_RETURN(Digest digest, codec::ReadDigest(d));
    out->push_back(std::move(digest));
  }
  return Status();
}

}  // namespace

// --- FindMissing

std::string Encode(const FindMissingRequest& m) {
  return Build<schema::FindMissingRequest>(
      [&](auto b) { WriteDigests(b.initDigests(m.digests.size()), m.digests); });
}
Status Decode(std::string_view bytes, FindMissingRequest* m) {
  return codec::Read<schema::FindMissingRequest>(
      bytes, [&](auto r) { return ReadDigests(r.getDigests(), &m->digests); });
}
std::string Encode(const FindMissingResponse& m) {
  return Build<schema::FindMissingResponse>(
      [&](auto b) { WriteDigests(b.initMissing(m.missing.size()), m.missing); });
}
Status Decode(std::string_view bytes, FindMissingResponse* m) {
  return codec::Read<schema::FindMissingResponse>(
      bytes, [&](auto r) { return ReadDigests(r.getMissing(), &m->missing); });
}

// --- Uploads

std::string Encode(const BeginUploadRequest& m) {
  return Build<schema::BeginUploadRequest>([&](auto b) { codec::Write(b.initDigest(), m.digest); });
}
Status Decode(std::string_view bytes, BeginUploadRequest* m) {
  return codec::Read<schema::BeginUploadRequest>(bytes, [&](auto r) -> Status {
    SF_ASSIGN_OR_RETURN(m->digest, codec::ReadDigest(r.getDigest()));
    return Status();
  });
}
std::string Encode(const BeginUploadResponse& m) {
  return Build<schema::BeginUploadResponse>([&](auto b) {
    b.setExists(m.exists);
    b.setUploadId(m.upload_id);
    b.setCredit(m.credit);
    b.setChunkSize(m.chunk_size);
    b.setChunksPerRequest(m.chunks_per_request);
  });
}
Status Decode(std::string_view bytes, BeginUploadResponse* m) {
  return codec::Read<schema::BeginUploadResponse>(bytes, [&](auto r) -> Status {
    m->exists = r.getExists();
    m->upload_id = r.getUploadId();
    m->credit = r.getCredit();
    m->chunk_size = r.getChunkSize();
    m->chunks_per_request = std::max<uint32_t>(r.getChunksPerRequest(), 1);
    return Status();
  });
}

std::string Encode(const UploadChunkRequest& m) {
  return Build<schema::UploadChunkRequest>([&](auto b) {
    b.setUploadId(m.upload_id);
    b.setOffset(m.offset);
  });
}
Status Decode(std::string_view bytes, UploadChunkRequest* m) {
  return codec::Read<schema::UploadChunkRequest>(bytes, [&](auto r) -> Status {
    m->upload_id = r.getUploadId();
    m->offset = r.getOffset();
    return Status();
  });
}
std::string Encode(const UploadChunkResponse& m) {
  return Build<schema::UploadChunkResponse>([&](auto b) {
    b.setCredit(m.credit);
    b.setReceived(m.received);
  });
}
Status Decode(std::string_view bytes, UploadChunkResponse* m) {
  return codec::Read<schema::UploadChunkResponse>(bytes, [&](auto r) -> Status {
    m->credit = r.getCredit();
    m->received = r.getReceived();
    return Status();
  });
}

std::string Encode(const CommitUploadRequest& m) {
  return Build<schema::CommitUploadRequest>([&](auto b) {
    b.setUploadId(m.upload_id);
    codec::Write(b.initDigest(), m.digest);
  });
}
Status Decode(std::string_view bytes, CommitUploadRequest* m) {
  return codec::Read<schema::CommitUploadRequest>(bytes, [&](auto r) -> Status {
    m->upload_id = r.getUploadId();
    SF_ASSIGN_OR_RETURN(m->digest, codec::ReadDigest(r.getDigest()));
    return Status();
  });
}
std::string Encode(const CommitUploadResponse& m) {
  return Build<schema::CommitUploadResponse>(
      [&](auto b) { codec::Write(b.initDigest(), m.digest); });
}
Status Decode(std::string_view bytes, CommitUploadResponse* m) {
  return codec::Read<schema::CommitUploadResponse>(bytes, [&](auto r) -> Status {
    SF_ASSIGN_OR_RETURN(m->digest, codec::ReadDigest(r.getDigest()));
    return Status();
  });
}

// --- Reads

std::string Encode(const ReadBlobRequest& m) {
  return Build<schema::ReadBlobRequest>([&](auto b) {
    codec::Write(b.initDigest(), m.digest);
    b.setOffset(m.offset);
    b.setLength(m.length);
  });
}
Status Decode(std::string_view bytes, ReadBlobRequest* m) {
  return codec::Read<schema::ReadBlobRequest>(bytes, [&](auto r) -> Status {
    SF_ASSIGN_OR_RETURN(m->digest, codec::ReadDigest(r.getDigest()));
    m->offset = r.getOffset();
    m->length = r.getLength();
    return Status();
  });
}
std::string Encode(const ReadBlobResponse& m) {
  return Build<schema::ReadBlobResponse>([&](auto b) {
    b.setBlobSize(m.blob_size);
    b.setOffset(m.offset);
    b.setLength(m.length);
  });
}
Status Decode(std::string_view bytes, ReadBlobResponse* m) {
  return codec::Read<schema::ReadBlobResponse>(bytes, [&](auto r) -> Status {
    m->blob_size = r.getBlobSize();
    m->offset = r.getOffset();
    m->length = r.getLength();
    return Status();
  });
}

// --- Action cache

std::string Encode(const GetActionRequest& m) {
  return Build<schema::GetActionRequest>([&](auto b) { b.setKey(m.key); });
}
Status Decode(std::string_view bytes, GetActionRequest* m) {
  return codec::Read<schema::GetActionRequest>(bytes, [&](auto r) -> Status {
    m->key = codec::Str(r.getKey());
    return Status();
  });
}
std::string Encode(const GetActionResponse& m) {
  return Build<schema::GetActionResponse>([&](auto b) {
    b.setFound(m.result.has_value());
    if (m.result) WriteAction(b.initResult(), *m.result);
  });
}
Status Decode(std::string_view bytes, GetActionResponse* m) {
  return codec::Read<schema::GetActionResponse>(bytes, [&](auto r) -> Status {
    m->result.reset();
    if (!r.getFound()) return Status();
    SF_ASSIGN_OR_RETURN(ActionResult result, ReadAction(r.getResult()));
    m->result = std::move(result);
    return Status();
  });
}

std::string Encode(const PutActionRequest& m) {
  return Build<schema::PutActionRequest>([&](auto b) {
    b.setKey(m.key);
    WriteAction(b.initResult(), m.result);
  });
}
Status Decode(std::string_view bytes, PutActionRequest* m) {
  return codec::Read<schema::PutActionRequest>(bytes, [&](auto r) -> Status {
    m->key = codec::Str(r.getKey());
    SF_ASSIGN_OR_RETURN(m->result, ReadAction(r.getResult()));
    return Status();
  });
}
std::string Encode(const PutActionResponse&) {
  return Build<schema::PutActionResponse>([](auto) {});
}
Status Decode(std::string_view bytes, PutActionResponse*) {
  return codec::Read<schema::PutActionResponse>(bytes, [](auto) { return Status(); });
}

// --- Refs

std::string Encode(const GetRefRequest& m) {
  return Build<schema::GetRefRequest>([&](auto b) { b.setName(m.name); });
}
Status Decode(std::string_view bytes, GetRefRequest* m) {
  return codec::Read<schema::GetRefRequest>(bytes, [&](auto r) -> Status {
    m->name = codec::Str(r.getName());
    return Status();
  });
}
std::string Encode(const GetRefResponse& m) {
  return Build<schema::GetRefResponse>([&](auto b) {
    b.setFound(m.digest.has_value());
    if (m.digest) codec::Write(b.initDigest(), *m.digest);
  });
}
Status Decode(std::string_view bytes, GetRefResponse* m) {
  return codec::Read<schema::GetRefResponse>(bytes, [&](auto r) -> Status {
    m->digest.reset();
    if (!r.getFound()) return Status();
    SF_ASSIGN_OR_RETURN(Digest d, codec::ReadDigest(r.getDigest()));
    m->digest = std::move(d);
    return Status();
  });
}

std::string Encode(const PutRefRequest& m) {
  return Build<schema::PutRefRequest>([&](auto b) {
    b.setName(m.name);
    codec::Write(b.initDigest(), m.digest);
  });
}
Status Decode(std::string_view bytes, PutRefRequest* m) {
  return codec::Read<schema::PutRefRequest>(bytes, [&](auto r) -> Status {
    m->name = codec::Str(r.getName());
    SF_ASSIGN_OR_RETURN(m->digest, codec::ReadDigest(r.getDigest()));
    return Status();
  });
}
std::string Encode(const PutRefResponse&) {
  return Build<schema::PutRefResponse>([](auto) {});
}
Status Decode(std::string_view bytes, PutRefResponse*) {
  return codec::Read<schema::PutRefResponse>(bytes, [](auto) { return Status(); });
}

std::string Encode(const ListRefsRequest&) {
  return Build<schema::ListRefsRequest>([](auto) {});
}
Status Decode(std::string_view bytes, ListRefsRequest*) {
  return codec::Read<schema::ListRefsRequest>(bytes, [](auto) { return Status(); });
}
std::string Encode(const ListRefsResponse& m) {
  return Build<schema::ListRefsResponse>([&](auto b) {
    auto list = b.initRefs(m.refs.size());
    for (size_t i = 0; i < m.refs.size(); ++i) {
      list[i].setName(m.refs[i].first);
      codec::Write(list[i].initDigest(), m.refs[i].second);
    }
  });
}
Status Decode(std::string_view bytes, ListRefsResponse* m) {
  return codec::Read<schema::ListRefsResponse>(bytes, [&](auto r) -> Status {
    m->refs.clear();
    m->refs.reserve(r.getRefs().size());
    for (auto e : r.getRefs()) {
      SF_ASSIGN_OR_RETURN(Digest d, codec::ReadDigest(e.getDigest()));
      m->refs.emplace_back(codec::Str(e.getName()), std::move(d));
    }
    return Status();
  });
}

// --- Stats

std::string Encode(const CacheStatsRequest&) {
  return Build<schema::CacheStatsRequest>([](auto) {});
}
Status Decode(std::string_view bytes, CacheStatsRequest*) {
  return codec::Read<schema::CacheStatsRequest>(bytes, [](auto) { return Status(); });
}
std::string Encode(const CacheStatsResponse& m) {
  return Build<schema::CacheStatsResponse>([&](auto b) {
    b.setBytes(m.bytes);
    b.setBlobs(m.blobs);
    b.setUploadsInProgress(m.uploads_in_progress);
    b.setActions(m.actions);
    b.setRefs(m.refs);
    b.setMaxBytes(m.max_bytes);
  });
}
Status Decode(std::string_view bytes, CacheStatsResponse* m) {
  return codec::Read<schema::CacheStatsResponse>(bytes, [&](auto r) -> Status {
    m->bytes = r.getBytes();
    m->blobs = r.getBlobs();
    m->uploads_in_progress = r.getUploadsInProgress();
    m->actions = r.getActions();
    m->refs = r.getRefs();
    m->max_bytes = r.getMaxBytes();
    return Status();
  });
}

// --- Prune

std::string Encode(const PruneCacheRequest& m) {
  return Build<schema::PruneCacheRequest>([&](auto b) {
    b.setKeepBytes(m.keep_bytes);
    b.setAll(m.all);
    b.setDryRun(m.dry_run);
  });
}
Status Decode(std::string_view bytes, PruneCacheRequest* m) {
  return codec::Read<schema::PruneCacheRequest>(bytes, [&](auto r) -> Status {
    m->keep_bytes = r.getKeepBytes();
    m->all = r.getAll();
    m->dry_run = r.getDryRun();
    return Status();
  });
}
std::string Encode(const PruneCacheResponse& m) {
  return Build<schema::PruneCacheResponse>([&](auto b) {
    b.setBlobs(m.blobs);
    b.setBytes(m.bytes);
    b.setRefs(m.refs);
    b.setBlobsLeft(m.blobs_left);
    b.setBytesLeft(m.bytes_left);
    b.setActions(m.actions);
  });
}
Status Decode(std::string_view bytes, PruneCacheResponse* m) {
  return codec::Read<schema::PruneCacheResponse>(bytes, [&](auto r) -> Status {
    m->blobs = r.getBlobs();
    m->bytes = r.getBytes();
    m->refs = r.getRefs();
    m->blobs_left = r.getBlobsLeft();
    m->bytes_left = r.getBytesLeft();
    m->actions = r.getActions();
    return Status();
  });
}

// --- DeleteRef

std::string Encode(const DeleteRefRequest& m) {
  return Build<schema::DeleteRefRequest>([&](auto b) { b.setName(m.name); });
}
Status Decode(std::string_view bytes, DeleteRefRequest* m) {
  return codec::Read<schema::DeleteRefRequest>(bytes, [&](auto r) -> Status {
    m->name = codec::Str(r.getName());
    return Status();
  });
}
std::string Encode(const DeleteRefResponse&) {
  return Build<schema::DeleteRefResponse>([](auto) {});
}
Status Decode(std::string_view bytes, DeleteRefResponse*) {
  return codec::Read<schema::DeleteRefResponse>(bytes, [](auto) { return Status(); });
}

}  // namespace stagefarm
