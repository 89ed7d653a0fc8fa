// Helpers shared by the Cap'n Proto codecs (private to common/src). Every decoder goes through
// Read(), which bounds traversal and turns kj exceptions into InvalidArgument, so a peer's
// malformed bytes are an error reply, never a crash.
#pragma once

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>
#include <kj/io.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <string_view>

#include "stagefarm/common/digest.h"
#include "stagefarm/common/status.h"

namespace stagefarm::codec {

// What a decoder may read of one message: a few times its own size (a field read twice counts
// twice), and never more than 64 MiB. Proportional, so that a small message whose lists claim
// many elements of no size (each counted as a word) cannot make its reader build millions of
// objects.
inline constexpr uint64_t kTraversalLimitWords = 8 * 1024 * 1024;
inline constexpr uint64_t kTraversalWordsPerWord = 4;
inline constexpr uint64_t kTraversalSlackWords = 1024;

// Zeroed words for a ScratchBuilder's first segment: a base, so they are zero before the
// MallocMessageBuilder base (which checks that) is made.
struct ScratchWords {
  static constexpr size_t kWords = 64;
  capnp::word words[kWords] = {};
};

// A MessageBuilder whose first segment lives in the object (on the stack): an envelope or a
// small body costs no allocation but its bytes. Larger messages grow into heap segments.
class ScratchBuilder : private ScratchWords, public capnp::MallocMessageBuilder {
 public:
  ScratchBuilder() : ScratchWords(), MallocMessageBuilder(kj::arrayPtr(words, kWords)) {}
};

// The message as one flat frame, written straight into the string (no intermediate array).
inline std::string ToBytes(capnp::MessageBuilder& builder) {
  std::string out(capnp::computeSerializedSizeInWords(builder) * sizeof(capnp::word), '\0');
  kj::ArrayOutputStream stream(kj::arrayPtr(reinterpret_cast<kj::byte*>(out.data()), out.size()));
  capnp::writeMessage(stream, builder);
  return out;
}

// Decodes `bytes` as a T and hands its reader to `fn`. Fails on malformed input.
template <typename T, typename Fn>
Status Read(std::string_view bytes, Fn&& fn) {
  if (bytes.empty() || bytes.size() % sizeof(capnp::word) != 0) {
    return InvalidArgumentError("malformed message: " + std::to_string(bytes.size()) +
                                " bytes is not a whole number of words");
  }
  // Frames from ZeroMQ carry no alignment guarantee: an unaligned one is copied into
  // word-aligned storage; an aligned one (any heap-allocated string) is read where it is.
  kj::Array<capnp::word> copy;
  kj::ArrayPtr<const capnp::word> words;
  if (reinterpret_cast<uintptr_t>(bytes.data()) % alignof(capnp::word) == 0) {
    words = kj::arrayPtr(reinterpret_cast<const capnp::word*>(bytes.data()),
                         bytes.size() / sizeof(capnp::word));
  } else {
    copy = kj::heapArray<capnp::word>(bytes.size() / sizeof(capnp::word));
    std::memcpy(copy.begin(), bytes.data(), bytes.size());
    words = copy.asPtr();
  }
  Status result;
  kj::Maybe<kj::Exception> error = kj::runCatchingExceptions([&]() {
    capnp::ReaderOptions options;
    options.traversalLimitInWords = std::min<uint64_t>(
        kTraversalLimitWords, words.size() * kTraversalWordsPerWord + kTraversalSlackWords);
    options.nestingLimit = 64;
    capnp::FlatArrayMessageReader reader(words, options);
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
