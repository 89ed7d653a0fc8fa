// The cheap paths of the wire codecs: the envelope alone, bodies read in place or copied when a
// frame is not word-aligned, messages grown past the builder's stack segment, and digests read
// from hex without the "sha256:" text.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "stagefarm/common/cache_protocol.h"
#include "stagefarm/common/digest.h"
#include "stagefarm/common/message.h"

namespace stagefarm {
namespace {

TEST(Envelope, EncodeEnvelopeIsTheFirstFrame) {
  Message m;
  m.method = Method::kGetAction;
  m.request_id = 1234567890123ull;
  m.status = NotFoundError("no such key");
  m.body = "body";
  EXPECT_EQ(EncodeEnvelope(m), EncodeFrames(m)[0]);
  Message out;
  out.body = "left alone";
  ASSERT_TRUE(DecodeEnvelope(EncodeEnvelope(m), &out).ok());
  EXPECT_EQ(out.method, Method::kGetAction);
  EXPECT_EQ(out.request_id, m.request_id);
  EXPECT_EQ(out.status.code(), StatusCode::kNotFound);
  EXPECT_EQ(out.status.message(), "no such key");
  EXPECT_EQ(out.body, "left alone");
}

TEST(Envelope, DecodeEnvelopeRejectsMalformedFrames) {
  Message out;
  EXPECT_EQ(DecodeEnvelope("", &out).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(DecodeEnvelope("1234567", &out).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(DecodeEnvelope(std::string(24, '\x7f'), &out).code(), StatusCode::kInvalidArgument);
  // A segment table promising more than the frame holds.
  std::string truncated = EncodeEnvelope(Message{});
  truncated.resize(truncated.size() - 8);
  EXPECT_EQ(DecodeEnvelope(truncated, &out).code(), StatusCode::kInvalidArgument);
}

// A body at an odd address (as a ZeroMQ frame may be) decodes like an aligned one.
TEST(Codec, UnalignedFramesDecodeLikeAlignedOnes) {
  GetActionRequest req{"step-key"};
  std::string body = Encode(req);
  std::string shifted = "x" + body;
  std::string_view unaligned(shifted.data() + 1, body.size());
  ASSERT_NE(reinterpret_cast<uintptr_t>(unaligned.data()) % 8, 0u);
  GetActionRequest a, b;
  ASSERT_TRUE(Decode(body, &a).ok());
  ASSERT_TRUE(Decode(unaligned, &b).ok());
  EXPECT_EQ(a.key, "step-key");
  EXPECT_EQ(b.key, "step-key");
  Message m, out;
  m.method = Method::kPing;
  m.request_id = 9;
  std::string env = "y" + EncodeEnvelope(m);
  ASSERT_TRUE(DecodeEnvelope(std::string_view(env.data() + 1, env.size() - 1), &out).ok());
  EXPECT_EQ(out.request_id, 9u);
}

// Past the builder's first (stack) segment a message spills into more segments; it still reads
// back whole, and a truncated one is an error.
TEST(Codec, LargeMessagesRoundTripAcrossSegments) {
  FindMissingRequest req;
  for (int i = 0; i < 10000; ++i) req.digests.push_back(Digest::Of(std::to_string(i)));
  req.digests[17].size = 1ull << 40;
  std::string body = Encode(req);
  FindMissingRequest back;
  ASSERT_TRUE(Decode(body, &back).ok());
  EXPECT_EQ(back.digests, req.digests);
  ASSERT_TRUE(Decode(body.substr(0, body.size() / 2), &back).code() ==
              StatusCode::kInvalidArgument);
  ActionResult r{LayerRef{Digest::Of("l"), Digest::Of("t")}, std::string(5000, 'r'), 3};
  GetActionResponse resp{r}, resp_back;
  ASSERT_TRUE(Decode(Encode(resp), &resp_back).ok());
  ASSERT_TRUE(resp_back.result.has_value());
  EXPECT_EQ(resp_back.result->created_by, r.created_by);
}

TEST(Digest, FromHexChecksLikeParse) {
  const std::string hex = Digest::Of("abc").hex;
  auto d = Digest::FromHex(hex, 3);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(*d, (Digest{hex, 3}));
  EXPECT_EQ(*Digest::Parse("sha256:" + hex, 3), *d);
  std::vector<std::string> bad_ones = {hex.substr(1), hex + "0", std::string()};
  // Each character just outside '0'-'9' and 'a'-'f', at the end and at the start.
  for (char c : {'/', ':', '`', 'g', 'A', 'F', 'G', '\0', '\xff', ' '}) {
    bad_ones.push_back(std::string(63, 'a') + c);
    bad_ones.push_back(c + std::string(63, '0'));
  }
  for (const std::string& bad : bad_ones) {
    auto r = Digest::FromHex(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find("sha256:" + bad), std::string::npos)
        << r.status().message();
    EXPECT_EQ(Digest::Parse("sha256:" + bad).status().message(), r.status().message());
  }
}

// A digest in a FindMissing body that is not lowercase hex is refused by the decoder.
TEST(Codec, FindMissingRefusesBadDigests) {
  FindMissingRequest req;
  req.digests.push_back(Digest::Of("a"));
  req.digests.push_back(Digest{std::string(64, 'Z'), 1});
  FindMissingRequest back;
  Status s = Decode(Encode(req), &back);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("not lowercase hex"), std::string::npos) << s.message();
}

// A body of 32 bytes whose digest list claims `count` elements of no size (an inline-composite
// list of empty structs): Cap'n Proto counts each as one word read, nothing more.
std::string EmptyStructList(uint32_t count) {
  const uint64_t words[] = {
      uint64_t{3} << 32,               // segment table: one segment of 3 words
      uint64_t{1} << 48,               // root: a struct of no data words and one pointer
      1 | (uint64_t{7} << 32),         // that pointer: a list of inline composites, 0 words
      static_cast<uint64_t>(count) << 2,  // the list's tag: `count` structs of no size
  };
  return std::string(reinterpret_cast<const char*>(words), sizeof(words));
}

// Such a list becomes neither millions of Digests nor a success: the traversal limit follows the
// message's size, and FindMissing lists are refused past kCacheMaxFindMissing before allocation.
TEST(Codec, ListsOfEmptyStructsCannotAmplifyAMessage) {
  for (uint32_t count : {8000000u, 1000000u}) {
    FindMissingRequest req;
    Status s = Decode(EmptyStructList(count), &req);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << count;
    EXPECT_TRUE(req.digests.empty()) << count;
  }
  // Within the limit, the same shape decodes: the list is well formed, merely empty of fields.
  FindMissingRequest req;
  ASSERT_TRUE(Decode(EmptyStructList(10), &req).ok());
  EXPECT_EQ(req.digests.size(), 10u);
  // A body as large as the digests it claims is held to kCacheMaxFindMissing.
  FindMissingRequest big, back;
  big.digests.assign(kCacheMaxFindMissing + 1, Digest::Of("x"));
  Status s = Decode(Encode(big), &back);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("at most"), std::string::npos) << s.message();
  big.digests.pop_back();
  EXPECT_TRUE(Decode(Encode(big), &back).ok());
  EXPECT_EQ(back.digests.size(), kCacheMaxFindMissing);
}

}  // namespace
}  // namespace stagefarm
