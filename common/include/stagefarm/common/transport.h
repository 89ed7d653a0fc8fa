// The ZeroMQ transport. Servers (coordinator, cache server) bind ROUTER sockets; clients and
// workers connect DEALER sockets. Endpoints are ZeroMQ's: tcp://127.0.0.1:0 (port chosen by the
// system; see ServerSocket::endpoint()), inproc://name (same Transport only).
//
// Thread-safety: a Transport may be shared by all threads; each socket belongs to one thread at a
// time. No ZeroMQ type or exception leaves this header's implementation.
#pragma once

#include <chrono>
#include <map>
#include <set>
#include <memory>
#include <string>

#include "stagefarm/common/message.h"
#include "stagefarm/common/status.h"

namespace stagefarm {

class ServerSocket {
 public:
  virtual ~ServerSocket() = default;
  // The bound endpoint with the real port, e.g. "tcp://127.0.0.1:40123".
  virtual const std::string& endpoint() const = 0;
  // Sends to the peer a message came from. A peer that has gone away is not an error: ROUTER
  // drops the message.
  virtual Status Send(const std::string& peer, const Message& m) = 0;
  // Waits up to `timeout` for a message. Returns false on timeout. A malformed message is
  // answered with an InvalidArgument error reply here and not returned.
  virtual StatusOr<bool> Receive(std::string* peer, Message* m,
                                 std::chrono::milliseconds timeout) = 0;
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

  // Binds a ROUTER socket. Without `insecure`, only loopback and inproc endpoints are accepted.
  StatusOr<std::unique_ptr<ServerSocket>> Bind(const std::string& endpoint, bool insecure = false);
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
  std::set<uint64_t> pending_;           // sent, not yet awaited
  std::map<uint64_t, Message> early_;  // replies that came before their AwaitReply
};

}  // namespace stagefarm
