// Helpers for the cache tests: temp dirs, deterministic random bytes, and a raw ZeroMQ peer.
#pragma once

#include <stdlib.h>
#include <zmq.h>

#include <filesystem>
#include <random>
#include <string>
#include <vector>

namespace stagefarm::cache::testing {

// A fresh directory under $TMPDIR, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "sf-cache-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) std::abort();
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);  // best effort: a leftover temp dir harms nobody
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline std::string RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed * 7919 + n);
  std::string out(n, '\0');
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<char>(rng() & 0xff);
  return out;
}

// A DEALER socket in a Transport's context (Transport::context()) that sends and receives
// frames as they are, none of the transport's encoding: a peer misbehaving on purpose.
class RawPeer {
 public:
  RawPeer(void* context, const std::string& endpoint, int rcvhwm = 1000, int rcvbuf = -1)
      : socket_(zmq_socket(context, ZMQ_DEALER)) {
    if (socket_ == nullptr) std::abort();
    const int linger = 0, timeout_ms = 5000;
    zmq_setsockopt(socket_, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(socket_, ZMQ_RCVTIMEO, &timeout_ms, sizeof timeout_ms);
    zmq_setsockopt(socket_, ZMQ_RCVHWM, &rcvhwm, sizeof rcvhwm);
    if (rcvbuf > 0) zmq_setsockopt(socket_, ZMQ_RCVBUF, &rcvbuf, sizeof rcvbuf);
    if (zmq_connect(socket_, endpoint.c_str()) != 0) std::abort();
  }
  ~RawPeer() { zmq_close(socket_); }
  RawPeer(const RawPeer&) = delete;
  RawPeer& operator=(const RawPeer&) = delete;

  void SetReceiveTimeout(int ms) { zmq_setsockopt(socket_, ZMQ_RCVTIMEO, &ms, sizeof ms); }
  bool Send(const std::vector<std::string>& frames) {
    for (size_t i = 0; i < frames.size(); ++i) {
      const int flags = i + 1 < frames.size() ? ZMQ_SNDMORE : 0;
      if (zmq_send(socket_, frames[i].data(), frames[i].size(), flags) < 0) return false;
    }
    return true;
  }
  // One whole message, or no frames after the receive timeout (5 s unless set).
  std::vector<std::string> Receive() {
    std::vector<std::string> frames;
    for (int more = 1; more;) {
      zmq_msg_t msg;
      zmq_msg_init(&msg);
      if (zmq_msg_recv(&msg, socket_, 0) < 0) {
        zmq_msg_close(&msg);
        return {};
      }
      frames.emplace_back(static_cast<const char*>(zmq_msg_data(&msg)), zmq_msg_size(&msg));
      more = zmq_msg_more(&msg);
      zmq_msg_close(&msg);
    }
    return frames;
  }

 private:
  void* socket_;
};

}  // namespace stagefarm::cache::testing
