// libFuzzer target for the cache server's request path: the envelope decoder, every method's body
// decoder, and the real handler over a BlobStore (RocksDB in a temp dir). Whatever the bytes, the
// server answers with exactly one reply and never crashes; a reply is never an OK answer to a
// request that carried an error status.
//
// Input layout (so the fuzzer reaches both layers): byte 0 picks the mode.
//   mode even: the rest is split into 1..4 wire frames [envelope, body, data...] (cut points from
//              bytes 1..3) and decoded with DecodeFrames, then handled if it decodes;
//   mode odd:  a request with method byte 1 (cache methods and a few others), body = the rest up
//              to a 0xff byte, and the bytes after it as one data frame; handled directly, and the
//              body given to every cache body decoder.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "stagefarm/cache/cache_service.h"
#include "stagefarm/common/cache_protocol.h"
#include "stagefarm/common/message.h"

namespace {

using namespace stagefarm;

cache::CacheService* Service() {
  static cache::CacheService* service = [] {
    std::string tmpl = (std::filesystem::temp_directory_path() / "sf-cache-fuzz-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) std::abort();
    cache::CacheServerOptions o;
    o.data_dir = tmpl;
    o.max_bytes = 64 << 20;
    auto s = cache::CacheService::Open(o, nullptr);
    if (!s.ok()) std::abort();
    // The store lives for the whole run; its directory goes when the fuzzer exits normally.
    static std::string dir = tmpl;
    std::atexit([] {
      std::error_code ignored;
      std::filesystem::remove_all(dir, ignored);
    });
    return std::move(s).value().release();
  }();
  return service;
}

template <typename T>
void TryDecode(std::string_view bytes) {
  T m;
  Decode(bytes, &m).IgnoreError();  // only that it returns
}

void DecodeEveryBody(std::string_view b) {
  TryDecode<FindMissingRequest>(b);
  TryDecode<BeginUploadRequest>(b);
  TryDecode<UploadChunkRequest>(b);
  TryDecode<CommitUploadRequest>(b);
  TryDecode<ReadBlobRequest>(b);
  TryDecode<GetActionRequest>(b);
  TryDecode<PutActionRequest>(b);
  TryDecode<GetRefRequest>(b);
  TryDecode<PutRefRequest>(b);
  TryDecode<ListRefsRequest>(b);
  TryDecode<CacheStatsRequest>(b);
  TryDecode<PruneCacheRequest>(b);
  TryDecode<DeleteRefRequest>(b);
  // Replies too: the client decodes what a (hostile) server sends.
  TryDecode<FindMissingResponse>(b);
  TryDecode<BeginUploadResponse>(b);
  TryDecode<ReadBlobResponse>(b);
  TryDecode<GetActionResponse>(b);
  TryDecode<ListRefsResponse>(b);
  TryDecode<CacheStatsResponse>(b);
  TryDecode<PruneCacheResponse>(b);
}

void HandleAndCheck(const Message& request) {
  Message reply = Service()->Handle("fuzz-peer", request);
  if (reply.request_id != request.request_id) std::abort();
  if (!request.status.ok() && reply.status.ok()) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  std::string_view in(reinterpret_cast<const char*>(data), size);
  if (data[0] % 2 == 0) {
    size_t frames = 1 + data[0] / 2 % 4;
    std::string_view rest = in.substr(1);
    std::vector<std::string> parts;
    for (size_t i = 0; i + 1 < frames && !rest.empty(); ++i) {
      size_t cut = static_cast<uint8_t>(rest[0]) % rest.size();
      rest.remove_prefix(1);
      cut = std::min(cut, rest.size());
      parts.emplace_back(rest.substr(0, cut));
      rest.remove_prefix(cut);
    }
    parts.emplace_back(rest);
    Message m;
    if (DecodeFrames(std::move(parts), &m).ok()) HandleAndCheck(m);
    return 0;
  }
  static const Method kMethods[] = {
      Method::kUnknown,     Method::kFindMissing, Method::kBeginUpload, Method::kUploadChunk,
      Method::kCommitUpload, Method::kReadBlob,   Method::kGetAction,   Method::kPutAction,
      Method::kGetRef,      Method::kPutRef,      Method::kListRefs,    Method::kCacheStats,
      Method::kPruneCache,  Method::kPing,        Method::kSubmitBuild, Method::kDeleteRef};
  Message m;
  m.method = kMethods[data[1] % (sizeof kMethods / sizeof kMethods[0])];
  m.request_id = data[0];
  std::string_view rest = in.substr(2);
  size_t sep = rest.find('\xff');
  m.body = std::string(rest.substr(0, sep));
  if (sep != std::string_view::npos) m.data.emplace_back(rest.substr(sep + 1));
  if (data[0] & 0x80) m.status = InvalidArgumentError("fuzz");
  DecodeEveryBody(m.body);
  HandleAndCheck(m);
  return 0;
}
