// A message on the wire: [envelope, body, data...]. The envelope (Cap'n Proto) carries the
// protocol version, request id, method and status; the body is the method's encoded Cap'n Proto
// struct (see the *_protocol.h headers for Encode/Decode); blob bytes travel as raw data frames.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "stagefarm/common/status.h"

namespace stagefarm {

inline constexpr uint32_t kProtocolVersion = 1;

// Every method of every service. Values are on the wire: never renumber.
enum class Method : uint16_t {
  kUnknown = 0,
  // cache server (cache_protocol.h)
  kFindMissing = 1,
  kBeginUpload = 2,
  kUploadChunk = 3,
  kCommitUpload = 4,
  kReadBlob = 5,
  kGetAction = 6,
  kPutAction = 7,
  kGetRef = 8,
  kPutRef = 9,
  kListRefs = 10,
  kCacheStats = 11,
  kPruneCache = 12,
  kDeleteRef = 13,
  // coordinator, from clients (build_protocol.h)
  kSubmitBuild = 100,
  kCancelBuild = 101,
  kBuildEvent = 102,  // coordinator -> client, unsolicited, request_id = the SubmitBuild's
  // client -> coordinator about once a second while it waits (body: CancelBuildRequest naming the
  // build): a build whose client goes silent is cancelled; NotFound means the coordinator no
  // longer knows the build (it restarted).
  kKeepAlive = 103,
  // coordinator <-> worker (worker_protocol.h)
  kRegisterWorker = 200,
  kHeartbeat = 201,
  kAssignTask = 202,  // coordinator -> worker
  kTaskEvent = 203,   // worker -> coordinator
  kTaskDone = 204,    // worker -> coordinator
  kCancelTask = 205,  // coordinator -> worker
  // any daemon
  kPing = 300,
};

std::string_view MethodName(Method m);

// The bytes of one data frame, immutable and shared: copying a Frame copies a pointer, and the
// transport sends and receives frames without copying their bytes (ZeroMQ holds a reference
// to a frame it sends, and a received frame is ZeroMQ's buffer).
class Frame {
 public:
  Frame() = default;
  Frame(std::string bytes);  // NOLINT(google-explicit-constructor): takes the string's buffer
  Frame(std::string_view bytes) : Frame(std::string(bytes)) {}  // NOLINT: copies
  Frame(const char* text) : Frame(std::string(text)) {}         // NOLINT: copies
  Frame(const char* bytes, size_t n) : Frame(std::string(bytes, n)) {}
  // Bytes that `owner` keeps alive.
  Frame(std::shared_ptr<const void> owner, std::string_view bytes)
      : owner_(std::move(owner)), view_(bytes) {}

  std::string_view view() const { return view_; }
  operator std::string_view() const { return view_; }  // NOLINT(google-explicit-constructor)
  const char* data() const { return view_.data(); }
  size_t size() const { return view_.size(); }
  bool empty() const { return view_.empty(); }
  // What keeps the bytes alive (null for an empty frame).
  const std::shared_ptr<const void>& owner() const { return owner_; }

  friend bool operator==(const Frame& a, const Frame& b) { return a.view_ == b.view_; }

 private:
  std::shared_ptr<const void> owner_;
  std::string_view view_;
};

struct Message {
  Method method = Method::kUnknown;
  uint64_t request_id = 0;
  Status status;            // of a reply; OK for requests
  std::string body;         // encoded method struct; may be empty
  std::vector<Frame> data;  // raw data frames (blob chunks)

  // A reply to this request with the same method and request id.
  Message Reply(std::string reply_body = {}) const;
  Message ErrorReply(Status error) const;
};

// Envelope codec (Cap'n Proto). Frames are [envelope, body, data...].
std::vector<std::string> EncodeFrames(const Message& m);
// Fails with InvalidArgument on malformed frames; never throws.
Status DecodeFrames(std::vector<std::string> frames, Message* out);

// The envelope frame alone, for a transport that sends the other frames from `m` itself
// without copying them into a vector first: EncodeFrames(m)[0].
std::string EncodeEnvelope(const Message& m);
// Sets out's method, request id and status from an envelope frame; the body and data frames
// are the caller's. Fails like DecodeFrames on a malformed envelope; never throws.
Status DecodeEnvelope(std::string_view frame, Message* out);

}  // namespace stagefarm
