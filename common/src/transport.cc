// The only file that includes zmq.hpp. cppzmq exceptions stop here and become a Status.
#include "stagefarm/common/transport.h"

#include <map>
#include <set>
#include <zmq.hpp>

namespace stagefarm {
namespace {

// Frames above this are refused before decoding: a chunk is about 1 MiB, bodies are small.
constexpr int64_t kMaxFrameBytes = 16 << 20;

Status ZmqError(std::string_view what, const zmq::error_t& e) {
  return UnavailableError(std::string(what) + ": " + e.what());
}

bool IsLocalEndpoint(const std::string& endpoint) {
  if (endpoint.rfind("inproc://", 0) == 0 || endpoint.rfind("ipc://", 0) == 0) return true;
  for (const char* p : {"tcp://127.", "tcp://localhost:", "tcp://[::1]:"}) {
    if (endpoint.rfind(p, 0) == 0) return true;
  }
  return false;
}

// Receives all parts of one message. Returns false if none was waiting.
StatusOr<bool> RecvMultipart(zmq::socket_t& s, std::vector<std::string>* parts,
                             std::chrono::milliseconds timeout) {
  try {
    zmq::pollitem_t item{s.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, timeout) == 0) return false;
    parts->clear();
    for (;;) {
      zmq::message_t msg;
      if (!s.recv(msg, zmq::recv_flags::none)) return false;
      parts->emplace_back(static_cast<const char*>(msg.data()), msg.size());
      if (!msg.more()) break;
    }
    return true;
  } catch (const zmq::error_t& e) {
    return ZmqError("receive", e);
  }
}

Status SendMultipart(zmq::socket_t& s, const std::vector<std::string>& parts) {
  try {
    for (size_t i = 0; i < parts.size(); ++i) {
      auto flags = i + 1 < parts.size() ? zmq::send_flags::sndmore : zmq::send_flags::none;
      s.send(zmq::buffer(parts[i]), flags);
    }
    return Status();
  } catch (const zmq::error_t& e) {
    return ZmqError("send", e);
  }
}

class ZmqServerSocket : public ServerSocket {
 public:
  ZmqServerSocket(zmq::socket_t socket, std::string endpoint)
      : socket_(std::move(socket)), endpoint_(std::move(endpoint)) {}

  const std::string& endpoint() const override { return endpoint_; }

  Status Send(const std::string& peer, const Message& m) override {
    std::vector<std::string> parts = EncodeFrames(m);
    parts.insert(parts.begin(), peer);
    return SendMultipart(socket_, parts);
  }

  StatusOr<bool> Receive(std::string* peer, Message* m,
                         std::chrono::milliseconds timeout) override {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      std::vector<std::string> parts;
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      SF_ASSIGN_OR_RETURN(bool got, RecvMultipart(socket_, &parts, std::max(left, {})));
      if (!got) return false;
      if (parts.empty()) continue;
      *peer = std::move(parts[0]);
      parts.erase(parts.begin());
      Status s = DecodeFrames(std::move(parts), m);
      if (s.ok()) return true;
      // A peer's malformed bytes: answer with the error and wait for the next message.
      Message reply;
      reply.status = s;
      Send(*peer, reply).IgnoreError();  // the peer may already be gone; nothing to do then
      if (std::chrono::steady_clock::now() >= deadline) return false;
    }
  }

 private:
  zmq::socket_t socket_;
  std::string endpoint_;
};

class ZmqClientSocket : public ClientSocket {
 public:
  explicit ZmqClientSocket(zmq::socket_t socket) : socket_(std::move(socket)) {}

  Status Send(const Message& m) override { return SendMultipart(socket_, EncodeFrames(m)); }

  StatusOr<bool> Receive(Message* m, std::chrono::milliseconds timeout) override {
    std::vector<std::string> parts;
    SF_ASSIGN_OR_RETURN(bool got, RecvMultipart(socket_, &parts, timeout));
    if (!got) return false;
    SF_RETURN_IF_ERROR(DecodeFrames(std::move(parts), m).Annotate("reply from server"));
    return true;
  }

 private:
  zmq::socket_t socket_;
};

}  // namespace

struct Transport::Impl {
  zmq::context_t context;
};

Transport::Transport() : impl_(std::make_unique<Impl>()) {}
Transport::~Transport() = default;

void* Transport::context() { return impl_->context.handle(); }

StatusOr<std::unique_ptr<ServerSocket>> Transport::Bind(const std::string& endpoint,
                                                        bool insecure) {
  if (!insecure && !IsLocalEndpoint(endpoint)) {
    return PermissionDeniedError("refusing to listen on " + endpoint +
                                 " without --curve-keys; pass --insecure to allow it");
  }
  try {
    zmq::socket_t s(impl_->context, zmq::socket_type::router);
    s.set(zmq::sockopt::linger, 0);
    s.set(zmq::sockopt::maxmsgsize, kMaxFrameBytes);
    s.set(zmq::sockopt::router_mandatory, 0);
    s.bind(endpoint);
    std::string bound = s.get(zmq::sockopt::last_endpoint);
    return std::unique_ptr<ServerSocket>(new ZmqServerSocket(std::move(s), bound));
  } catch (const zmq::error_t& e) {
    return InvalidArgumentError("bind " + endpoint + ": " + e.what());
  }
}

StatusOr<std::unique_ptr<ClientSocket>> Transport::Connect(const std::string& endpoint) {
  try {
    zmq::socket_t s(impl_->context, zmq::socket_type::dealer);
    s.set(zmq::sockopt::linger, 0);
    s.set(zmq::sockopt::maxmsgsize, kMaxFrameBytes);
    s.connect(endpoint);
    return std::unique_ptr<ClientSocket>(new ZmqClientSocket(std::move(s)));
  } catch (const zmq::error_t& e) {
    return InvalidArgumentError("connect " + endpoint + ": " + e.what());
  }
}

StatusOr<uint64_t> RpcChannel::SendRequest(Message request) {
  request.request_id = next_id_++;
  SF_RETURN_IF_ERROR(socket_->Send(request));
  pending_.insert(request.request_id);
  return request.request_id;
}

StatusOr<Message> RpcChannel::AwaitReply(uint64_t request_id, std::chrono::milliseconds timeout) {
  auto finish = [](Message m) -> StatusOr<Message> {
    if (!m.status.ok()) return m.status;
    return m;
  };
  pending_.erase(request_id);  // from here on a reply is either returned or abandoned
  if (auto it = early_.find(request_id); it != early_.end()) {
    Message m = std::move(it->second);
    early_.erase(it);
    return finish(std::move(m));
  }
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      return DeadlineExceededError("no reply within " + std::to_string(timeout.count()) + " ms");
    }
    Message m;
    SF_ASSIGN_OR_RETURN(bool got, socket_->Receive(&m, left));
    if (!got) continue;
    if (m.request_id == request_id) return finish(std::move(m));
    // A reply to another pipelined request is kept for its AwaitReply; one to a request whose
    // caller gave up is dropped.
    if (pending_.count(m.request_id)) early_[m.request_id] = std::move(m);
  }
}

StatusOr<Message> RpcChannel::Call(Message request, std::chrono::milliseconds timeout) {
  SF_ASSIGN_OR_RETURN(uint64_t id, SendRequest(std::move(request)));
  return AwaitReply(id, timeout);
}

}  // namespace stagefarm
