#include "stagefarm/common/image_export.h"

#include <gtest/gtest.h>

#include "format_test_util.h"
#include "stagefarm/common/layer_tar.h"
#include "support/fake_cache_client.h"

namespace stagefarm::testing {
namespace {

// A small real layer in the fake CAS; returns its diffID.
Digest StoreLayer(FakeCacheClient& cache, TempDir& tmp) {
  WriteFile(tmp / "dir/hello.txt", std::string(100000, 'h'));
  WriteFile(tmp / "dir/sub/x", "x\n");
  StatusOr<WrittenLayer> layer = WriteLayer(tmp / "dir", tmp / "layer.tar");
  SF_CHECK(layer.ok());
  SF_CHECK(cache.PutFile(tmp / "layer.tar", layer->diff_id).ok());
  return layer->diff_id;
}

TEST(CompressedLayer, GzipIsDeterministicAndMadeOnce) {
  TempDir tmp;
  FakeCacheClient cache;
  Digest diff_id = StoreLayer(cache, tmp);
  int puts_before = cache.puts;
  StatusOr<Descriptor> first = CompressedLayer(cache, diff_id, LayerCompression::kGzip);
  ASSERT_TRUE(first.ok()) << first.status().message();
  EXPECT_EQ(first->media_type, "application/vnd.oci.image.layer.v1.tar+gzip");
  EXPECT_LT(first->digest.size, diff_id.size);
  EXPECT_EQ(cache.puts, puts_before + 1);

  // The second time the cached form is found: nothing compressed or stored again.
  StatusOr<Descriptor> second = CompressedLayer(cache, diff_id, LayerCompression::kGzip);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->digest, first->digest);
  EXPECT_EQ(cache.puts, puts_before + 1);

  // A fresh store compresses to the same bytes: no timestamp, no name, fixed level.
  TempDir tmp2;
  FakeCacheClient other;
  ASSERT_EQ(StoreLayer(other, tmp2), diff_id);
  StatusOr<Descriptor> again = CompressedLayer(other, diff_id, LayerCompression::kGzip);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->digest, first->digest);

  // The compressed blob decompresses to the layer.
  ASSERT_TRUE(cache.ReadToFile(first->digest, tmp / "layer.tar.gz").ok());
  std::filesystem::create_directories(tmp / "out");
  ASSERT_TRUE(ExtractLayer(tmp / "layer.tar.gz", tmp / "out").ok());
  EXPECT_EQ(std::filesystem::file_size(tmp / "out/hello.txt"), 100000u);
}

TEST(CompressedLayer, ZstdDiffersFromGzipAndUncompressedIsTheLayer) {
  TempDir tmp;
  FakeCacheClient cache;
  Digest diff_id = StoreLayer(cache, tmp);
  StatusOr<Descriptor> gz = CompressedLayer(cache, diff_id, LayerCompression::kGzip);
  StatusOr<Descriptor> zst = CompressedLayer(cache, diff_id, LayerCompression::kZstd);
  StatusOr<Descriptor> raw = CompressedLayer(cache, diff_id, LayerCompression::kUncompressed);
  ASSERT_TRUE(gz.ok() && zst.ok() && raw.ok());
  EXPECT_EQ(zst->media_type, "application/vnd.oci.image.layer.v1.tar+zstd");
  EXPECT_NE(zst->digest, gz->digest);
  EXPECT_EQ(raw->digest, diff_id);
  ASSERT_TRUE(cache.ReadToFile(zst->digest, tmp / "layer.tar.zst").ok());
  std::filesystem::create_directories(tmp / "out");
  ASSERT_TRUE(ExtractLayer(tmp / "layer.tar.zst", tmp / "out").ok());
  EXPECT_EQ(ReadFile(tmp / "out/sub/x"), "x\n");
}

TEST(CompressedLayer, UnknownCompressionNameIsRefused) {
  EXPECT_FALSE(ParseLayerCompression("lz4").ok());
  EXPECT_EQ(*ParseLayerCompression("zstd"), LayerCompression::kZstd);
}

}  // namespace
}  // namespace stagefarm::testing
