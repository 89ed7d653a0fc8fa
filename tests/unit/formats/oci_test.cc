#include "stagefarm/common/oci.h"

#include <gtest/gtest.h>

#include "support/fake_cache_client.h"

namespace stagefarm {
namespace {

using testing::FakeCacheClient;

ImageConfig FullConfig() {
  ImageConfig c;
  c.user = "app:app";
  c.env = {"PATH=/usr/bin:/bin", "LANG=C.UTF-8"};
  c.entrypoint = {"/entry", "--flag"};
  c.cmd = {"serve"};
  c.working_dir = "/srv";
  c.labels = {{"b", "2"}, {"a", "1"}};
  c.exposed_ports = {"80/tcp", "53/udp"};
  c.volumes = {"/data"};
  c.stop_signal = "SIGTERM";
  c.shell = {"/bin/bash", "-c"};
  c.on_build = {"RUN make"};
  c.args_escaped = true;
  HealthConfig h;
  h.test = {"CMD-SHELL", "curl -f localhost"};
  h.interval_ns = 30'000'000'000;
  h.timeout_ns = 5'000'000'000;
  h.start_period_ns = 1;
  h.start_interval_ns = 2;
  h.retries = 3;
  c.healthcheck = h;
  return c;
}

// Puts a layer and TOC blob in the cache and returns their ref.
LayerRef PutLayer(FakeCacheClient& cache, const std::string& content) {
  LayerRef ref;
  EXPECT_TRUE(cache.PutBytes(content, &ref.diff_id).ok());
  EXPECT_TRUE(cache.PutBytes("{\"path\":\"" + content + "\",\"type\":\"d\"}\n", &ref.toc).ok());
  return ref;
}

TEST(Oci, ImageConfigJsonRoundTrips) {
  ImageConfig c = FullConfig();
  std::string text = ImageConfigToJson(c);
  auto back = ImageConfigFromJson(text);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, c);
  EXPECT_NE(text.find("\"ExposedPorts\":{\"53/udp\":{},\"80/tcp\":{}}"), std::string::npos) << text;
  EXPECT_NE(text.find("\"Interval\":30000000000"), std::string::npos) << text;
  EXPECT_EQ(text.find(' '), text.find("curl -f") + 4) << "no whitespace outside strings: " << text;
  EXPECT_EQ(ImageConfigToJson(ImageConfig()), "{}");
}

TEST(Oci, DockerStyleNullsAreAbsentFields) {
  auto c = ImageConfigFromJson(
      R"({"Cmd":null,"Entrypoint":null,"Env":["A=1"],"Volumes":null,"OnBuild":null,"Labels":null})");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->env, std::vector<std::string>{"A=1"});
  EXPECT_TRUE(c->cmd.empty());
}

TEST(Oci, UntrustedJsonRefusedWithClearMessage) {
  for (const char* bad :
       {"", "{", "[]", R"({"Env":"A=1"})", R"({"Env":[1]})", R"({"Labels":{"a":1}})",
        R"({"Healthcheck":{"Retries":-1}})", R"({"Healthcheck":{"Interval":1.5}})",
        R"({"ArgsEscaped":"yes"})", "\xff\xfe"}) {
    auto c = ImageConfigFromJson(bad);
    if (std::string_view(bad) == "[]") {
      EXPECT_FALSE(c.ok());
      continue;
    }
    ASSERT_FALSE(c.ok()) << bad;
    EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument) << bad;
  }
  auto c = ImageConfigFromJson(R"({"Env":"A=1"})");
  EXPECT_NE(c.status().message().find("config.Env"), std::string::npos) << c.status().ToString();

  for (std::string bad :
       std::vector<std::string>{"{}", R"({"schemaVersion":1})", R"({"schemaVersion":2})",
                                R"({"schemaVersion":2,"config":{"digest":"sha256:xx","size":1}})",
                                R"({"schemaVersion":2,"manifests":[]})",
                                R"({"schemaVersion":2,"config":{"digest":"sha256:)" +
                                    std::string(64, 'a') + R"(","size":-1}})",
                                "nope"}) {
    auto m = ParseManifest(bad);
    ASSERT_FALSE(m.ok()) << bad;
    EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument) << bad;
  }
  ImageRecord image;
  EXPECT_EQ(
      ParseImageConfigDocument(R"({"rootfs":{"diff_ids":["md5:1"]}})", &image).status().code(),
      StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseImageConfigDocument(R"({"architecture":"amd64"})", &image).status().code(),
            StatusCode::kInvalidArgument);
}

TEST(Oci, StoreAndLoadImageRoundTrip) {
  FakeCacheClient cache;
  ImageRecord image;
  image.config = FullConfig();
  image.layers = {PutLayer(cache, "layer-one"), PutLayer(cache, "layer-two")};
  image.history = {{"", "RUN one", "", false},
                   {"", "ENV A=1", "", true},
                   {"2024-01-01T00:00:00Z", "RUN two", "c", false}};
  auto stored = StoreImage(cache, image);
  ASSERT_TRUE(stored.ok()) << stored.status().ToString();
  EXPECT_FALSE(stored->manifest.empty());
  EXPECT_FALSE(stored->config_digest.empty());

  auto again = StoreImage(cache, image);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->manifest, stored->manifest);

  auto loaded = LoadImage(cache, stored->manifest);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->manifest, stored->manifest);
  EXPECT_EQ(loaded->config_digest, stored->config_digest);
  EXPECT_EQ(loaded->config, image.config);
  EXPECT_EQ(loaded->history, image.history);
  EXPECT_EQ(loaded->layers, image.layers);
  EXPECT_EQ(loaded->architecture, "amd64");
  EXPECT_EQ(loaded->os, "linux");

  auto manifest = ParseManifest(*cache.ReadBytes(stored->manifest));
  ASSERT_TRUE(manifest.ok());
  EXPECT_EQ(manifest->media_type, kMediaTypeOciManifest);
  ASSERT_EQ(manifest->layers.size(), 2u);
  EXPECT_EQ(manifest->layers[0].media_type, kMediaTypeLayerTar);
  EXPECT_EQ(manifest->layers[0].annotations.at(std::string(kAnnotationToc)),
            image.layers[0].toc.str());
  EXPECT_EQ(manifest->layers[0].annotations.at(std::string(kAnnotationTocSize)),
            std::to_string(image.layers[0].toc.size));
  // A change anywhere changes the manifest.
  image.config.cmd = {"other"};
  EXPECT_NE(StoreImage(cache, image)->manifest, stored->manifest);
}

TEST(Oci, SerializedDocumentsAreCanonical) {
  ImageRecord image;
  image.layers = {LayerRef{Digest::Of("x"), Digest::Of("t")}};
  EXPECT_EQ(SerializeImageConfigDocument(image),
            R"({"architecture":"amd64","config":{},"os":"linux","rootfs":{"diff_ids":[")" +
                Digest::Of("x").str() + R"("],"type":"layers"}})");
  std::string m = SerializeManifest(MakeStoredManifest(Digest::Of("c"), image.layers));
  EXPECT_EQ(m.find("{\"config\":{\"digest\":"), 0u) << m;
  EXPECT_NE(m.find("\"schemaVersion\":2}"), std::string::npos) << m;
}

TEST(Oci, LoadImageValidates) {
  FakeCacheClient cache;
  EXPECT_EQ(LoadImage(cache, Digest::Of("absent")).status().code(), StatusCode::kNotFound);

  // A manifest with two layers over a config with one diff_id.
  ImageRecord one;
  one.layers = {PutLayer(cache, "a")};
  std::string config = SerializeImageConfigDocument(one);
  Digest config_digest;
  ASSERT_TRUE(cache.PutBytes(config, &config_digest).ok());
  Manifest bad = MakeStoredManifest(config_digest, {one.layers[0], PutLayer(cache, "b")});
  Digest bad_digest;
  ASSERT_TRUE(cache.PutBytes(SerializeManifest(bad), &bad_digest).ok());
  auto loaded = LoadImage(cache, bad_digest);
  EXPECT_EQ(loaded.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(loaded.status().message().find("diff_ids"), std::string::npos);

  // A manifest without TOCs (not ours).
  Manifest foreign = MakeStoredManifest(config_digest, one.layers);
  foreign.layers[0].annotations.clear();
  Digest foreign_digest;
  ASSERT_TRUE(cache.PutBytes(SerializeManifest(foreign), &foreign_digest).ok());
  EXPECT_EQ(LoadImage(cache, foreign_digest).status().code(), StatusCode::kInvalidArgument);

  // Garbage in place of a manifest.
  Digest garbage;
  ASSERT_TRUE(cache.PutBytes("\x01\x02not json", &garbage).ok());
  EXPECT_EQ(LoadImage(cache, garbage).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace stagefarm
