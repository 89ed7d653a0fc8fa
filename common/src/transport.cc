// The only file that includes zmq.hpp. cppzmq exceptions stop here and become a Status.
#include "stagefarm/common/transport.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <algorithm>
#include <map>
#include <optional>
#include <thread>
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

// The frames of one message as ZeroMQ received them: nothing is copied until a frame becomes a
// field of a Message.
using Frames = std::vector<zmq::message_t>;

std::string_view View(const zmq::message_t& frame) {
  return std::string_view(static_cast<const char*>(frame.data()), frame.size());
}

// Receives all frames of one message. A message already waiting is taken at once, without a
// poll: under load a server drains its socket with one syscall less per message. Otherwise waits
// up to `timeout`; returns false if none came.
// `user_id`, if given, gets the ZAP user id the message's connection was authenticated with
// (empty without one).
// A readable `wake_fd` (an eventfd; -1 for none) is drained and makes it return false, and so
// does a signal (EINTR): the caller sees its flag (Ctrl-C) at once instead of an error.
StatusOr<bool> RecvFrames(zmq::socket_t& s, Frames* frames, std::chrono::milliseconds timeout,
                          std::string* user_id = nullptr, int wake_fd = -1) {
  try {
    frames->clear();
    zmq::message_t first;
    if (!s.recv(first, zmq::recv_flags::dontwait)) {
      zmq::pollitem_t items[2] = {{s.handle(), 0, ZMQ_POLLIN, 0},
                                  {nullptr, wake_fd, ZMQ_POLLIN, 0}};
      int ready = zmq_poll(items, wake_fd >= 0 ? 2 : 1, static_cast<long>(timeout.count()));
      if (ready < 0 && zmq_errno() != EINTR) throw zmq::error_t();
      if (ready <= 0) return false;
      if (wake_fd >= 0 && (items[1].revents & ZMQ_POLLIN)) {
        uint64_t n;
        // Nonblocking: a failed read means the counter was drained already; still a wake.
        if (read(wake_fd, &n, sizeof n) < 0) n = 0;
        return false;
      }
      if (!s.recv(first, zmq::recv_flags::dontwait)) return false;
    }
    bool more = first.more();
    frames->push_back(std::move(first));
    while (more) {
      // The parts of a message arrive together: the rest are waiting already.
      zmq::message_t part;
      if (!s.recv(part, zmq::recv_flags::none)) return false;
      more = part.more();
      frames->push_back(std::move(part));
    }
    if (user_id) {
      user_id->clear();
      // ROUTER's routing-id frame has no metadata; the frames from the wire do.
      for (zmq::message_t& f : *frames) {
        if (const char* u = zmq_msg_gets(f.handle(), "User-Id")) {
          *user_id = u;
          break;
        }
      }
    }
    return true;
  } catch (const zmq::error_t& e) {
    return ZmqError("receive", e);
  }
}

// Receives one message as strings (the ZAP handler's requests).
StatusOr<bool> RecvMultipart(zmq::socket_t& s, std::vector<std::string>* parts,
                             std::chrono::milliseconds timeout) {
  Frames frames;
  SF_ASSIGN_OR_RETURN(bool got, RecvFrames(s, &frames, timeout));
  parts->clear();
  for (const zmq::message_t& f : frames) parts->emplace_back(View(f));
  return got;
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

// Data frames from this size on are lent to ZeroMQ rather than copied into its message, and a
// received one becomes a Frame that holds ZeroMQ's buffer. Smaller ones are cheaper to copy.
constexpr size_t kLendFrameBytes = 16 << 10;

// What a ZeroMQ message lent bytes keeps: their owner and, for a server's message, the count of
// its peer's unsent bytes (ServerSocket::Unsent), which falls when ZeroMQ lets go of them.
using UnsentCount = std::shared_ptr<std::atomic<uint64_t>>;
struct Lent {
  Lent(std::shared_ptr<const void> owner, UnsentCount unsent, size_t size)
      : owner(std::move(owner)), unsent(std::move(unsent)), size(size) {
    if (this->unsent) this->unsent->fetch_add(size, std::memory_order_relaxed);
  }
  ~Lent() {
    if (unsent) unsent->fetch_sub(size, std::memory_order_relaxed);
  }
  Lent(const Lent&) = delete;
  Lent& operator=(const Lent&) = delete;

  std::shared_ptr<const void> owner;
  UnsentCount unsent;
  size_t size;
};

// A ZeroMQ message of `bytes`, which `owner` keeps alive, without copying them: ZeroMQ holds a
// reference until it has sent them, and drops it on its own thread.
zmq::message_t LentMessage(std::shared_ptr<const void> owner, std::string_view bytes,
                           const UnsentCount& unsent) {
  auto lent = std::make_unique<Lent>(std::move(owner), unsent, bytes.size());
  zmq::message_t m(
      const_cast<char*>(bytes.data()), bytes.size(),
      [](void*, void* hint) { delete static_cast<Lent*>(hint); }, lent.get());
  // ZeroMQ's now (it deletes it even for a message never sent); had the message not been made,
  // the count would have fallen here rather than held its peer for good.
  lent.release();
  return m;
}

// A ZeroMQ message of `frame`'s bytes: a large frame is lent, a small one copied.
zmq::message_t FrameMessage(const Frame& frame, const UnsentCount& unsent) {
  if (frame.size() < kLendFrameBytes) return zmq::message_t(frame.data(), frame.size());
  return LentMessage(frame.owner(), frame.view(), unsent);
}

// Sends [peer (ROUTER only), envelope, body, data...] straight from `m`: no vector of frames is
// built, the envelope and body are copied once into ZeroMQ's messages and large data frames not
// at all. With `unsent`, a large body and large data frames count there while ZeroMQ holds them
// (the body then goes in a copy of its own, as large as ZeroMQ's).
Status SendMessage(zmq::socket_t& s, const std::string* peer, const Message& m,
                   const UnsentCount& unsent = nullptr) {
  try {
    const std::string envelope = EncodeEnvelope(m);
    if (peer) s.send(zmq::buffer(*peer), zmq::send_flags::sndmore);
    s.send(zmq::buffer(envelope), zmq::send_flags::sndmore);
    const auto body_flags = m.data.empty() ? zmq::send_flags::none : zmq::send_flags::sndmore;
    if (unsent && m.body.size() >= kLendFrameBytes) {
      auto body = std::make_shared<const std::string>(m.body);
      s.send(LentMessage(body, *body, unsent), body_flags);
    } else {
      s.send(zmq::buffer(m.body), body_flags);
    }
    for (size_t i = 0; i < m.data.size(); ++i) {
      auto flags = i + 1 < m.data.size() ? zmq::send_flags::sndmore : zmq::send_flags::none;
      s.send(FrameMessage(m.data[i], unsent), flags);
    }
    return Status();
  } catch (const zmq::error_t& e) {
    return ZmqError("send", e);
  }
}

// Decodes frames [first, end) as [envelope, body, data...] into *m, with the checks of
// DecodeFrames: fails with InvalidArgument on anything malformed.
// Large data frames are taken out of *frames, without a copy.
Status DecodeMessage(Frames* frames, size_t first, Message* m) {
  if (frames->size() < first + 2) return InvalidArgumentError("message has fewer than 2 frames");
  SF_RETURN_IF_ERROR(DecodeEnvelope(View((*frames)[first]), m));
  m->body.assign(View((*frames)[first + 1]));
  m->data.clear();
  m->data.reserve(frames->size() - first - 2);
  for (size_t i = first + 2; i < frames->size(); ++i) {
    if ((*frames)[i].size() < kLendFrameBytes) {
      m->data.emplace_back(View((*frames)[i]));
    } else {
      auto held = std::make_shared<zmq::message_t>(std::move((*frames)[i]));
      m->data.emplace_back(held, View(*held));
    }
  }
  return Status();
}

class ZmqServerSocket : public ServerSocket {
 public:
  ZmqServerSocket(zmq::socket_t socket, std::string endpoint)
      : socket_(std::move(socket)),
        endpoint_(std::move(endpoint)),
        wake_fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}
  ~ZmqServerSocket() override {
    if (wake_fd_ >= 0) close(wake_fd_);
  }

  void Wake() override {
    uint64_t one = 1;
    // Fails only if the counter would overflow, and then a wake is pending anyway.
    if (write(wake_fd_, &one, sizeof one) < 0) return;
  }

  const std::string& endpoint() const override { return endpoint_; }

  Status Send(const std::string& peer, const Message& m) override {
    return SendMessage(socket_, &peer, m, UnsentOf(peer));
  }

  std::shared_ptr<const std::atomic<uint64_t>> Unsent(const std::string& peer) override {
    return UnsentOf(peer);
  }

  StatusOr<bool> Receive(std::string* peer, Message* m,
                         std::chrono::milliseconds timeout) override {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      SF_ASSIGN_OR_RETURN(bool got, RecvFrames(socket_, &frames_, std::max(left, {}), &user_id_,
                                               wake_fd_));
      if (!got) return false;
      if (frames_.empty()) continue;
      StatusOr<PeerRole> role =
          user_id_.empty() ? StatusOr<PeerRole>(PeerRole::kAny) : ParsePeerRole(user_id_);
      peer_role_ = role.ok() ? *role : PeerRole::kAny;
      peer->assign(View(frames_[0]));
      Status s = DecodeMessage(&frames_, 1, m);
      frames_.clear();  // ZeroMQ's buffers go now, not at the next message
      if (s.ok()) return true;
      // A peer's malformed bytes: answer with the error and wait for the next message.
      ++malformed_;
      Message reply;
      reply.status = s;
      Send(*peer, reply).IgnoreError();  // the peer may already be gone; nothing to do then
      if (std::chrono::steady_clock::now() >= deadline) return false;
    }
  }

  PeerRole last_peer_role() const override { return peer_role_; }
  uint64_t malformed() const override { return malformed_; }

 private:
  const UnsentCount& UnsentOf(const std::string& peer) {
    auto [it, added] = unsent_.try_emplace(peer);
    if (added) {
      it->second = std::make_shared<std::atomic<uint64_t>>(0);
      // Peers come and go: the counts nothing holds any more (so at zero) go once the map has
      // doubled since the last sweep, which keeps it near the number of live peers.
      if (unsent_.size() >= sweep_at_) {
        std::erase_if(unsent_,
                      [&](const auto& e) { return e.first != peer && e.second.use_count() == 1; });
        sweep_at_ = std::max<size_t>(kMinUnsentSweep, 2 * unsent_.size());
        it = unsent_.find(peer);
      }
    }
    return it->second;
  }

  static constexpr size_t kMinUnsentSweep = 64;
  zmq::socket_t socket_;
  std::string endpoint_;
  PeerRole peer_role_ = PeerRole::kAny;
  uint64_t malformed_ = 0;
  int wake_fd_;  // eventfd written by Wake(); -1 if it could not be made (Wake is then a no-op)
  Frames frames_;        // reused by every Receive
  std::string user_id_;  // of the last message
  std::unordered_map<std::string, UnsentCount> unsent_;  // by peer, see Unsent()
  size_t sweep_at_ = kMinUnsentSweep;                    // unsent_'s size for the next sweep
};

class ZmqClientSocket : public ClientSocket {
 public:
  explicit ZmqClientSocket(zmq::socket_t socket) : socket_(std::move(socket)) {}

  Status Send(const Message& m) override { return SendMessage(socket_, nullptr, m); }

  StatusOr<bool> Receive(Message* m, std::chrono::milliseconds timeout) override {
    SF_ASSIGN_OR_RETURN(bool got, RecvFrames(socket_, &frames_, timeout));
    if (!got) return false;
    Status s = DecodeMessage(&frames_, 0, m);
    frames_.clear();
    SF_RETURN_IF_ERROR(s.Annotate("reply from server"));
    return true;
  }

 private:
  zmq::socket_t socket_;
  Frames frames_;  // reused by every Receive
};

// --- CURVE keys -------------------------------------------------------------------------------

constexpr size_t kZ85KeyChars = 40;

bool IsZ85Key(const std::string& k) {
  if (k.size() != kZ85KeyChars) return false;
  uint8_t raw[32];
  return zmq_z85_decode(raw, k.c_str()) != nullptr;
}

StatusOr<std::string> ReadKeyFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return PermissionDeniedError("cannot read " + path + ": " + std::strerror(errno));
  std::string key;
  in >> key;
  if (!IsZ85Key(key)) return InvalidArgumentError(path + ": not a Z85 CURVE key");
  return key;
}

Status WriteKeyFile(const std::string& path, const std::string& key, mode_t mode) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) {
    int e = errno;
    if (e == EEXIST) return AlreadyExistsError(path + " exists; not overwriting a key");
    return PermissionDeniedError("open " + path + ": " + std::strerror(e));
  }
  std::string text = key + "\n";
  ssize_t n = ::write(fd, text.data(), text.size());
  int e = errno;
  ::close(fd);  // not retried on error (POSIX leaves the fd state unspecified)
  if (n != static_cast<ssize_t>(text.size())) {
    return UnavailableError("write " + path + ": " + std::strerror(e));
  }
  return Status();
}

// Answers ZAP requests (RFC 27) on inproc://zeromq.zap.01 of one context: a CURVE key listed in
// `authorized` is accepted with its role as user id, anything else is refused.
class ZapHandler {
 public:
  ZapHandler(zmq::context_t& context, std::map<std::string, PeerRole> authorized)
      : socket_(context, zmq::socket_type::rep), authorized_(std::move(authorized)) {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.bind("inproc://zeromq.zap.01");
    thread_ = std::thread([this] { Loop(); });
  }
  ~ZapHandler() {
    stop_ = true;
    thread_.join();
  }

 private:
  void Loop() {
    while (!stop_) {
      std::vector<std::string> req;
      StatusOr<bool> got = RecvMultipart(socket_, &req, std::chrono::milliseconds(100));
      if (!got.ok() || !*got) continue;
      // version, request id, domain, address, routing id, mechanism, credentials...
      std::string status = "400", text = "unknown key", user;
      if (req.size() >= 7 && req[5] == "CURVE" && req[6].size() == 32) {
        char z85[kZ85KeyChars + 1];
        zmq_z85_encode(z85, reinterpret_cast<const uint8_t*>(req[6].data()), 32);
        if (auto it = authorized_.find(z85); it != authorized_.end()) {
          status = "200";
          text = "OK";
          user = std::string(PeerRoleName(it->second));
        }
      } else if (req.size() >= 6) {
        text = "mechanism " + req[5] + " not allowed";
      }
      std::string version = req.empty() ? "1.0" : req[0];
      std::string id = req.size() > 1 ? req[1] : "";
      // The REP socket must answer before the next request; a send failure only delays the
      // handshake, which the client retries.
      SendMultipart(socket_, {version, id, status, text, user, ""}).IgnoreError();
    }
  }

  zmq::socket_t socket_;
  std::map<std::string, PeerRole> authorized_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace

std::string_view PeerRoleName(PeerRole role) {
  switch (role) {
    case PeerRole::kAny: return "any";
    case PeerRole::kServer: return "server";
    case PeerRole::kWorker: return "worker";
    case PeerRole::kClient: return "client";
  }
  return "any";
}

StatusOr<PeerRole> ParsePeerRole(std::string_view name) {
  if (name == "server") return PeerRole::kServer;
  if (name == "worker") return PeerRole::kWorker;
  if (name == "client") return PeerRole::kClient;
  return InvalidArgumentError("unknown role \"" + std::string(name) +
                              "\" (server, worker or client)");
}

StatusOr<CurveKeys> LoadCurveKeys(const std::string& dir, PeerRole role) {
  if (role == PeerRole::kAny) return InvalidArgumentError("LoadCurveKeys needs a role");
  std::error_code ec;
  std::filesystem::directory_iterator it(dir, ec);
  if (ec) return FailedPreconditionError("--curve-keys " + dir + ": " + ec.message());
  CurveKeys keys;
  keys.role = role;
  std::vector<std::string> own, servers;
  for (const auto& entry : it) {
    std::string name = entry.path().filename().string();
    if (name.empty() || name[0] == '.') continue;
    size_t dot = name.find('.');
    size_t last = name.rfind('.');
    if (dot == std::string::npos || last == dot) continue;
    StatusOr<PeerRole> r = ParsePeerRole(name.substr(0, dot));
    std::string kind = name.substr(last + 1);
    if (!r.ok() || (kind != "pub" && kind != "secret")) continue;
    SF_ASSIGN_OR_RETURN(std::string key, ReadKeyFile(entry.path().string()));
    std::string pub = key;
    if (kind == "secret") {
      char z85[kZ85KeyChars + 1];
      if (zmq_curve_public(z85, key.c_str()) != 0) {
        return InvalidArgumentError(entry.path().string() + ": not a CURVE secret key");
      }
      pub = z85;
      if (*r == role) {
        own.push_back(name);
        keys.secret_key = key;
        keys.public_key = pub;
      }
    }
    keys.authorized[pub] = *r;
    if (*r == PeerRole::kServer) servers.push_back(pub);
  }
  std::string role_name(PeerRoleName(role));
  if (own.empty()) {
    return FailedPreconditionError("--curve-keys " + dir + ": no " + role_name +
                                   ".*.secret (stagefarm keys generate " + dir + " --role " +
                                   role_name + " NAME)");
  }
  if (own.size() > 1) {
    return FailedPreconditionError("--curve-keys " + dir + ": several " + role_name +
                                   " secret keys (" + own[0] + ", " + own[1] +
                                   "); keep only this process's");
  }
  std::sort(servers.begin(), servers.end());
  servers.erase(std::unique(servers.begin(), servers.end()), servers.end());
  if (servers.size() != 1) {
    return FailedPreconditionError("--curve-keys " + dir + ": needs exactly one server key, has " +
                                   std::to_string(servers.size()));
  }
  keys.server_public_key = servers[0];
  return keys;
}

StatusOr<std::string> GenerateCurveKeyPair(const std::string& dir, PeerRole role,
                                           const std::string& name) {
  if (role == PeerRole::kAny) return InvalidArgumentError("a key needs a role");
  if (name.empty() || name.find('/') != std::string::npos || name[0] == '.') {
    return InvalidArgumentError("bad key name \"" + name + "\"");
  }
  char pub[kZ85KeyChars + 1], sec[kZ85KeyChars + 1];
  if (zmq_curve_keypair(pub, sec) != 0) {
    return FailedPreconditionError(std::string("zmq_curve_keypair: ") + zmq_strerror(zmq_errno()));
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return PermissionDeniedError("mkdir " + dir + ": " + ec.message());
  std::string base = dir + "/" + std::string(PeerRoleName(role)) + "." + name;
  if (std::filesystem::exists(base + ".pub") || std::filesystem::exists(base + ".secret")) {
    return AlreadyExistsError(base + ".pub/.secret exist; not overwriting a key");
  }
  SF_RETURN_IF_ERROR(WriteKeyFile(base + ".secret", sec, 0600));
  SF_RETURN_IF_ERROR(WriteKeyFile(base + ".pub", pub, 0644));
  return std::string(pub);
}

struct Transport::Impl {
  zmq::context_t context;
  std::optional<CurveKeys> curve;
  std::unique_ptr<ZapHandler> zap;  // declared after context: stopped before it is closed

  void Secure(zmq::socket_t& s, bool server) {
    if (!curve) return;
    if (server) {
      s.set(zmq::sockopt::curve_server, 1);
      s.set(zmq::sockopt::curve_secretkey, curve->secret_key);
      s.set(zmq::sockopt::zap_domain, "stagefarm");
    } else {
      s.set(zmq::sockopt::curve_serverkey, curve->server_public_key);
      s.set(zmq::sockopt::curve_publickey, curve->public_key);
      s.set(zmq::sockopt::curve_secretkey, curve->secret_key);
    }
  }
};

Transport::Transport() : impl_(std::make_unique<Impl>()) {}
Transport::~Transport() = default;

void* Transport::context() { return impl_->context.handle(); }

bool Transport::curve_enabled() const { return impl_->curve.has_value(); }

Status Transport::EnableCurve(CurveKeys keys) {
  if (!zmq_has("curve")) return FailedPreconditionError("this libzmq was built without CURVE");
  if (impl_->curve) return FailedPreconditionError("CURVE is already enabled");
  try {
    if (keys.role == PeerRole::kServer) {
      impl_->zap = std::make_unique<ZapHandler>(impl_->context, keys.authorized);
    }
  } catch (const zmq::error_t& e) {
    return ZmqError("ZAP handler", e);
  }
  impl_->curve = std::move(keys);
  return Status();
}

StatusOr<std::unique_ptr<ServerSocket>> Transport::Bind(const std::string& endpoint,
                                                        bool insecure, int max_unsent_per_peer) {
  if (!insecure && !impl_->curve && !IsLocalEndpoint(endpoint)) {
    return PermissionDeniedError("refusing to listen on " + endpoint +
                                 " without --curve-keys; pass --insecure to allow it");
  }
  if (impl_->curve && impl_->curve->role != PeerRole::kServer) {
    return FailedPreconditionError("listening with CURVE needs the server key");
  }
  try {
    zmq::socket_t s(impl_->context, zmq::socket_type::router);
    s.set(zmq::sockopt::linger, 0);
    s.set(zmq::sockopt::maxmsgsize, kMaxFrameBytes);
    s.set(zmq::sockopt::router_mandatory, 0);
    if (max_unsent_per_peer > 0) s.set(zmq::sockopt::sndhwm, max_unsent_per_peer);
    impl_->Secure(s, /*server=*/true);
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
    impl_->Secure(s, /*server=*/false);
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
    if (pending_.count(m.request_id)) early_.insert_or_assign(m.request_id, std::move(m));
  }
}

StatusOr<Message> RpcChannel::Call(Message request, std::chrono::milliseconds timeout) {
  SF_ASSIGN_OR_RETURN(uint64_t id, SendRequest(std::move(request)));
  return AwaitReply(id, timeout);
}

}  // namespace stagefarm
