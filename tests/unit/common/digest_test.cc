#include "stagefarm/common/digest.h"

#include <gtest/gtest.h>

#include <fstream>

namespace stagefarm {
namespace {

TEST(Digest, OfKnownBytes) {
  // sha256("abc") from FIPS 180-2.
  Digest d = Digest::Of("abc");
  EXPECT_EQ(d.hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(d.size, 3u);
  EXPECT_EQ(d.str(), "sha256:" + d.hex);
}

TEST(Digest, StreamingEqualsWhole) {
  std::string data(3 << 20, 'x');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 7);
  Sha256 h;
  for (size_t i = 0; i < data.size(); i += 12345) h.Update(std::string_view(data).substr(i, 12345));
  EXPECT_EQ(h.Finish(), Digest::Of(data));
}

TEST(Digest, ParseRejectsBadText) {
  EXPECT_FALSE(Digest::Parse("md5:abc").ok());
  EXPECT_FALSE(Digest::Parse("sha256:abc").ok());
  EXPECT_FALSE(Digest::Parse("sha256:" + std::string(64, 'G')).ok());
  EXPECT_FALSE(Digest::Parse("sha256:" + std::string(64, 'A')).ok());  // uppercase
  StatusOr<Digest> d = Digest::Parse("sha256:" + std::string(64, 'a'), 42);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->size, 42u);
}

TEST(Digest, OfFileMatchesOfBytes) {
  std::string path = ::testing::TempDir() + "/digest_test_file";
  std::string data(2'500'000, 'q');
  std::ofstream(path, std::ios::binary) << data;
  StatusOr<Digest> d = Digest::OfFile(path);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(*d, Digest::Of(data));
  EXPECT_EQ(Digest::OfFile(path + ".missing").status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace stagefarm
