#include "stagefarm/common/message.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>

#include "codec_util.h"
#include "envelope.capnp.h"

namespace stagefarm {

std::string_view MethodName(Method m) {
  switch (m) {
    case Method::kUnknown: return "Unknown";
    case Method::kFindMissing: return "FindMissing";
    case Method::kBeginUpload: return "BeginUpload";
    case Method::kUploadChunk: return "UploadChunk";
    case Method::kCommitUpload: return "CommitUpload";
    case Method::kReadBlob: return "ReadBlob";
    case Method::kGetAction: return "GetAction";
    case Method::kPutAction: return "PutAction";
    case Method::kGetRef: return "GetRef";
    case Method::kPutRef: return "PutRef";
    case Method::kListRefs: return "ListRefs";
    case Method::kCacheStats: return "CacheStats";
    case Method::kPruneCache: return "PruneCache";
    case Method::kDeleteRef: return "DeleteRef";
    case Method::kSubmitBuild: return "SubmitBuild";
    case Method::kCancelBuild: return "CancelBuild";
    case Method::kBuildEvent: return "BuildEvent";
    case Method::kKeepAlive: return "KeepAlive";
    case Method::kRegisterWorker: return "RegisterWorker";
    case Method::kHeartbeat: return "Heartbeat";
    case Method::kAssignTask: return "AssignTask";
    case Method::kTaskEvent: return "TaskEvent";
    case Method::kTaskDone: return "TaskDone";
    case Method::kCancelTask: return "CancelTask";
    case Method::kPing: return "Ping";
  }
  return "Unknown";
}

Message Message::Reply(std::string reply_body) const {
  Message r;
  r.method = method;
  r.request_id = request_id;
  r.body = std::move(reply_body);
  return r;
}

Message Message::ErrorReply(Status error) const {
  Message r;
  r.method = method;
  r.request_id = request_id;
  r.status = std::move(error);
  return r;
}

std::string EncodeEnvelope(const Message& m) {
  codec::ScratchBuilder builder;
  auto env = builder.initRoot<schema::Envelope>();
  env.setVersion(kProtocolVersion);
  env.setRequestId(m.request_id);
  env.setMethod(static_cast<uint16_t>(m.method));
  env.setStatusCode(static_cast<uint16_t>(m.status.code()));
  if (!m.status.ok()) env.setStatusMessage(m.status.message());
  return codec::ToBytes(builder);
}

Status DecodeEnvelope(std::string_view frame, Message* out) {
  return codec::Read<schema::Envelope>(frame, [&](schema::Envelope::Reader env) -> Status {
    if (env.getVersion() != kProtocolVersion) {
      return InvalidArgumentError("protocol version " + std::to_string(env.getVersion()) +
                                  " (this build speaks " + std::to_string(kProtocolVersion) + ")");
    }
    if (env.getStatusCode() > static_cast<uint16_t>(StatusCode::kDataLoss)) {
      return InvalidArgumentError("unknown status code " + std::to_string(env.getStatusCode()));
    }
    out->request_id = env.getRequestId();
    out->method = static_cast<Method>(env.getMethod());
    out->status = env.getStatusCode() == 0
                      ? Status()
                      : Status(static_cast<StatusCode>(env.getStatusCode()),
                               codec::Str(env.getStatusMessage()));
    return Status();
  });
}

Frame::Frame(std::string bytes) {
  if (bytes.empty()) return;
  // The string object lives in the shared block, so even bytes stored inside it stay put.
  auto owned = std::make_shared<const std::string>(std::move(bytes));
  view_ = *owned;
  owner_ = std::move(owned);
}

std::vector<std::string> EncodeFrames(const Message& m) {
  std::vector<std::string> frames;
  frames.reserve(2 + m.data.size());
  frames.push_back(EncodeEnvelope(m));
  frames.push_back(m.body);
  for (const auto& d : m.data) frames.emplace_back(d.view());
  return frames;
}

Status DecodeFrames(std::vector<std::string> frames, Message* out) {
  if (frames.size() < 2) return InvalidArgumentError("message has fewer than 2 frames");
  SF_RETURN_IF_ERROR(DecodeEnvelope(frames[0], out));
  out->body = std::move(frames[1]);
  out->data.clear();
  for (size_t i = 2; i < frames.size(); ++i) out->data.emplace_back(std::move(frames[i]));
  return Status();
}

}  // namespace stagefarm
