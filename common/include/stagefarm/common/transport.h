// The ZeroMQ transport. Servers (coordinator, cache server) bind ROUTER sockets; clients and
// workers connect DEALER sockets. Endpoints are ZeroMQ's: tcp://127.0.0.1:0 (port chosen by the
// system; see ServerSocket::endpoint()), inproc://name (same Transport only).
//
// Security: a Transport given CurveKeys (EnableCurve) runs ZeroMQ CURVE on every tcp/ipc socket:
// servers accept only the public keys listed in the key directory (a ZAP handler on its own
// thread checks them) and tag each message with the role the peer's key is listed under; clients
// present their own key and check the server's. inproc:// connections stay in the process and
// carry no mechanism (their role is kAny).
//
// Thread-safety: a Transport may be shared by all threads; each socket belongs to one thread at a
// time. No ZeroMQ type or exception leaves this header's implementation.
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "stagefarm/common/message.h"
#include "stagefarm/common/status.h"

namespace stagefarm {

// Who a peer is, from the key directory its CURVE public key is listed under. Without CURVE
// (or over inproc) every peer is kAny: the transport knows nothing and allows everything.
enum class PeerRole { kAny, kServer, kWorker, kClient };
std::string_view PeerRoleName(PeerRole role);  // "any", "server", "worker", "client"
StatusOr<PeerRole> ParsePeerRole(std::string_view name);  // "server"|"worker"|"client"

// The keys one process uses, loaded from a --curve-keys directory. The directory holds files
// written by GenerateCurveKeyPair, named by role:
//   <role>.<name>.pub     the Z85 public key (40 characters)
//   <role>.<name>.secret  the Z85 secret key (mode 0600); its public key is listed too
// Every key in the directory is accepted by a server, with the role in its file name. Files
// starting with "." (Kubernetes' ..data links) and other names are ignored.
struct CurveKeys {
  PeerRole role = PeerRole::kAny;      // this process's
  std::string public_key, secret_key;  // this process's pair, Z85
  std::string server_public_key;       // what clients expect servers to present, Z85
  std::map<std::string, PeerRole> authorized;  // Z85 public key -> role
};

// Loads the keys of a process acting as `role` (kServer for the coordinator and the cache server,
// which share one server key pair). Needs exactly one <role>.*.secret and exactly one server key
// (server.*.pub or server.*.secret). FailedPrecondition with what to do when files are missing.
StatusOr<CurveKeys> LoadCurveKeys(const std::string& dir, PeerRole role);
// Makes a new key pair and writes <dir>/<role>.<name>.pub and .secret (0600), creating `dir`.
// Refuses to overwrite an existing key (AlreadyExists). Returns the public key.
StatusOr<std::string> GenerateCurveKeyPair(const std::string& dir, PeerRole role,
                                           const std::string& name);

class ServerSocket {
 public:
  virtual ~ServerSocket() = default;
  // The bound endpoint with the real port, e.g. "tcp://127.0.0.1:40123".
  virtual const std::string& endpoint() const = 0;
  // Sends to the peer a message came from. A peer that has gone away is not an error: ROUTER
  // drops the message.
  virtual Status Send(const std::string& peer, const Message& m) = 0;
  // Waits up to `timeout` for a message. Returns false on timeout. A malformed message is
  // answered with an InvalidArgument error reply here and not returned, only counted.
  virtual StatusOr<bool> Receive(std::string* peer, Message* m,
                                 std::chrono::milliseconds timeout) = 0;
  // What ZeroMQ still holds of the messages Send gave it for `peer`: bytes of their large frames
  // (16 KiB and more) not yet passed on to the connection (over inproc: not yet received, or
  // still held by the received message). A message of small frames only is not counted; ZeroMQ
  // bounds how many wait per peer (Bind's `max_unsent_per_peer`). The count falls on ZeroMQ's
  // own thread as it lets go of frames, so a server may read it from any thread to hold back
  // the replies of a peer that does not read them. Call it on the socket's thread; null for a
  // socket that does not count.
  virtual std::shared_ptr<const std::atomic<uint64_t>> Unsent(const std::string& peer) {
    (void)peer;
    return nullptr;
  }
  // The malformed messages Receive has answered so far (for the server's metrics).
  virtual uint64_t malformed() const { return 0; }
  // The role of the peer the last message returned by Receive came from (see PeerRole): what a
  // server checks before a method only some roles may call.
  virtual PeerRole last_peer_role() const { return PeerRole::kAny; }
  // Makes the Receive in progress, or else the next one, return false at once. The one method
  // other threads may call: a server whose replies are made on worker threads wakes the thread
  // that owns the socket to send them.
  virtual void Wake() {}
};

class ClientSocket {
 public:
  virtual ~ClientSocket() = default;
  virtual Status Send(const Message& m) = 0;
  // Waits up to `timeout` for a message. Returns false on timeout; malformed messages from the
  // server are an InvalidArgument error.
  virtual StatusOr<bool> Receive(Message* m, std::chrono::milliseconds timeout) = 0;
};

class Transport {
 public:
  Transport();
  ~Transport();
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;

  // From now on every Bind and Connect uses CURVE with `keys`. Call it before the first Bind or
  // Connect. A process whose role is kServer also starts the ZAP handler that checks clients.
  Status EnableCurve(CurveKeys keys);
  bool curve_enabled() const;

  // Binds a ROUTER socket. Without `insecure` or CURVE, only loopback and inproc endpoints are
  // accepted. With CURVE the process must hold the server key. With `max_unsent_per_peer`, at
  // most that many replies wait in ZeroMQ to be sent to one peer and more are dropped (ZeroMQ's
  // default is 1000): a peer that stops reading then costs at most that many replies.
  StatusOr<std::unique_ptr<ServerSocket>> Bind(const std::string& endpoint, bool insecure = false,
                                               int max_unsent_per_peer = 0);
  // Connects a DEALER socket. Connecting never fails for a peer that is not up yet; requests
  // then time out.
  StatusOr<std::unique_ptr<ClientSocket>> Connect(const std::string& endpoint);

  // The ZeroMQ context, for the transport implementation only.
  void* context();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A blocking request/reply helper over a ClientSocket: sends `request` with a fresh request id
// and waits for the reply with that id, dropping stale replies. A non-OK reply status is
// returned as the error.
class RpcChannel {
 public:
  explicit RpcChannel(std::unique_ptr<ClientSocket> socket) : socket_(std::move(socket)) {}
  StatusOr<Message> Call(Message request, std::chrono::milliseconds timeout);
  // Sends without waiting; returns the request id used.
  StatusOr<uint64_t> SendRequest(Message request);
  // Waits for the reply to `request_id`.
  StatusOr<Message> AwaitReply(uint64_t request_id, std::chrono::milliseconds timeout);
  ClientSocket& socket() { return *socket_; }

 private:
  std::unique_ptr<ClientSocket> socket_;
  uint64_t next_id_ = 1;
  std::unordered_set<uint64_t> pending_;           // sent, not yet awaited
  std::unordered_map<uint64_t, Message> early_;  // replies that came before their AwaitReply
};

}  // namespace stagefarm
