// Helpers shared by the Cap'n Proto codecs (private to common/src). Every decoder goes through
// Read(), which bounds traversal and turns kj exceptions into InvalidArgument, so a peer's
// malformed bytes are an error reply, never a crash.
#pragma once

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>

#include <cstring>
#include <functional>
#include <string>
#include <string_view>

#include "stagefarm/common/digest.h"
#include "stagefarm/common/status.h"

namespace stagefarm::codec {

inline constexpr uint64_t kTraversalLimitWords = 8 * 1024 * 1024;  // 64 MiB

inline std::string ToBytes(capnp::MessageBuilder& builder) {
  kj::Array<capnp::word> words = capnp::messageToFlatArray(builder);
  auto bytes = words.asBytes();
  return std::string(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
}

// Decodes `bytes` as a T and hands its reader to `fn`. Fails on malformed input.
template <typename T, typename Fn>
Status Read(std::string_view bytes, Fn&& fn) {
  if (bytes.empty() || bytes.size() % sizeof(capnp::word) != 0) {
    return InvalidArgumentError("malformed message: " + std::to_string(bytes.size()) +
                                " bytes is not a whole number of words");
  }
  // Copy into word-aligned storage: frames from ZeroMQ carry no alignment guarantee.
  kj::Array<capnp::word> words = kj::heapArray<capnp::word>(bytes.size() / sizeof(capnp::word));
  std::memcpy(words.begin(), bytes.data(), bytes.size());
  Status result;
  kj::Maybe<kj::Exception> error = kj::runCatchingExceptions([&]() {
    capnp::ReaderOptions options;
    options.traversalLimitInWords = kTraversalLimitWords;
    options.nestingLimit = 64;
    capnp::FlatArrayMessageReader reader(words.asPtr(), options);
    result = fn(reader.getRoot<T>());
  });
  KJ_IF_MAYBE(e, error) {
    return InvalidArgumentError(std::string("malformed message: ") + e->getDescription().cStr());
  }
  return result;
}

inline std::string Str(capnp::Text::Reader t) { return std::string(t.cStr(), t.size()); }
inline std::string Bytes(capnp::Data::Reader d) {
  return std::string(reinterpret_cast<const char*>(d.begin()), d.size());
}

}  // namespace stagefarm::codec
