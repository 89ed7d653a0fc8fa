#include "stagefarm/common/image_import.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <filesystem>
#include <functional>

#include "stagefarm/common/layer_tar.h"
#include "stagefarm/common/oci.h"
#include "stagefarm/common/toc.h"
#include "support/fake_cache_client.h"
#include "unit/formats/format_test_util.h"

namespace stagefarm {
namespace {

using testing::FakeCacheClient;
using testing::ReadFile;
using testing::SetAllMtimes;
using testing::Shell;
using testing::TarBuilder;
using testing::TempDir;
using testing::WriteFile;

const std::string kScript = std::string(STAGEFARM_SOURCE_DIR) + "/scripts/make-busybox-image";

FsIndex IndexOf(FakeCacheClient& cache, const ImageRecord& image) {
  FsIndex fs;
  for (const LayerRef& l : image.layers) {
    auto blob = cache.ReadBytes(l.toc);
    EXPECT_TRUE(blob.ok()) << blob.status().ToString();
    auto toc = Toc::Parse(*blob);
    EXPECT_TRUE(toc.ok()) << toc.status().ToString();
    fs.Apply(*toc);
  }
  return fs;
}

TEST(ImageImport, BusyboxLayoutFromScript) {
  TempDir t;
  ASSERT_EQ(Shell(kScript + " " + t / "bb" + " > /dev/null"), 0);
  FakeCacheClient cache;
  auto digest = ImportImage(cache, t / "bb");
  ASSERT_TRUE(digest.ok()) << digest.status().ToString();
  auto image = LoadImage(cache, *digest);
  ASSERT_TRUE(image.ok()) << image.status().ToString();
  ASSERT_EQ(image->layers.size(), 1u);
  EXPECT_EQ(image->config.cmd, std::vector<std::string>{"sh"});
  EXPECT_EQ(image->config.GetEnv("PATH"),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
  EXPECT_EQ(image->os, "linux");

  // The stored layer is the layout's layer, byte for byte.
  auto layer_digest = Digest::OfFile(t / ("bb/blobs/sha256/" + image->layers[0].diff_id.hex));
  ASSERT_TRUE(layer_digest.ok());
  EXPECT_EQ(*layer_digest, image->layers[0].diff_id);

  FsIndex fs = IndexOf(cache, *image);
  auto busybox = fs.Lookup("/bin/busybox");
  ASSERT_TRUE(busybox);
  EXPECT_EQ(busybox->type, TocType::kFile);
  EXPECT_EQ(busybox->mode, 0755u);
  EXPECT_EQ(busybox->digest, Digest::OfFile("/bin/busybox")->str());
  auto sh = fs.Lookup("bin/sh");
  ASSERT_TRUE(sh);
  EXPECT_EQ(sh->type, TocType::kSymlink);
  EXPECT_EQ(sh->link, "busybox");
  EXPECT_EQ(fs.Lookup("tmp")->mode, 01777u);
  EXPECT_TRUE(fs.Lookup("etc/passwd"));

  // Extracting the layer and writing it again describes the same filesystem.
  ASSERT_TRUE(std::filesystem::create_directory(t / "rootfs"));
  Status s = ExtractLayer(t / ("bb/blobs/sha256/" + image->layers[0].diff_id.hex), t / "rootfs");
  ASSERT_TRUE(s.ok()) << s.ToString();
  auto rewritten = WriteLayer(t / "rootfs", t / "rewritten.tar");
  ASSERT_TRUE(rewritten.ok()) << rewritten.status().ToString();
  FsIndex fs2;
  fs2.Apply(rewritten->toc);
  EXPECT_EQ(fs2.entries(), fs.entries());
  EXPECT_EQ(*fs2.SubtreeDigest("/"), *fs.SubtreeDigest("/"));

  // Importing twice stores the same manifest; the gzip variant decompresses to the same image.
  EXPECT_EQ(*ImportImage(cache, t / "bb"), *digest);
  ASSERT_EQ(Shell(kScript + " " + t / "bbgz" + " --gzip > /dev/null"), 0);
  auto gz = ImportImage(cache, t / "bbgz");
  ASSERT_TRUE(gz.ok()) << gz.status().ToString();
  EXPECT_EQ(*gz, *digest);
}

// A `docker save` tarball: manifest.json, config, one directory per layer with layer.tar.
struct DockerSave {
  std::string tar;
  std::vector<WrittenLayer> layers;
};

DockerSave MakeDockerSave(const TempDir& t, bool corrupt_diff_id = false) {
  DockerSave out;
  std::string l1 = t / "l1", l2 = t / "l2", save = t / "save";
  WriteFile(l1 + "/etc/conf", "v1");
  WriteFile(l1 + "/etc/old", "old");
  WriteFile(l1 + "/usr/bin/tool", "#!/bin/sh\n", 0755);
  SF_CHECK(::link((l1 + "/usr/bin/tool").c_str(), (l1 + "/usr/bin/tool2").c_str()) == 0);
  WriteFile(l2 + "/etc/conf", "v2");
  SF_CHECK(::mknod((l2 + "/etc/old").c_str(), S_IFCHR, makedev(0, 0)) == 0);
  SetAllMtimes(l1, 100);
  SetAllMtimes(l2, 200);
  std::filesystem::create_directories(save + "/aaa");
  std::filesystem::create_directories(save + "/bbb");
  out.layers.push_back(*WriteLayer(l1, save + "/aaa/layer.tar"));
  out.layers.push_back(*WriteLayer(l2, save + "/bbb/layer.tar"));
  std::string second = corrupt_diff_id ? Digest::Of("wrong").str() : out.layers[1].diff_id.str();
  std::string config =
      R"({"architecture":"amd64","os":"linux","config":{"Cmd":["/usr/bin/tool"],"Env":null},)"
      R"("rootfs":{"type":"layers","diff_ids":[")" +
      out.layers[0].diff_id.str() + R"(",")" + second +
      R"("]},)"
      R"("history":[{"created_by":"ADD a"},{"created_by":"RUN b"}]})";
  std::string config_name = Digest::Of(config).hex + ".json";
  WriteFile(save + "/" + config_name, config);
  WriteFile(save + "/manifest.json",
            R"([{"Config":")" + config_name +
                R"(","RepoTags":["app:latest"],"Layers":["aaa/layer.tar","bbb/layer.tar"]}])");
  out.tar = t / "save.tar";
  SF_CHECK(Shell("tar -C " + save + " -cf " + out.tar + " .") == 0);
  return out;
}

TEST(ImageImport, DockerSaveTarball) {
  TempDir t;
  DockerSave save = MakeDockerSave(t);
  FakeCacheClient cache;
  auto digest = ImportImage(cache, save.tar);
  ASSERT_TRUE(digest.ok()) << digest.status().ToString();
  auto image = LoadImage(cache, *digest);
  ASSERT_TRUE(image.ok()) << image.status().ToString();
  ASSERT_EQ(image->layers.size(), 2u);
  EXPECT_EQ(image->config.cmd, std::vector<std::string>{"/usr/bin/tool"});
  ASSERT_EQ(image->history.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(image->layers[i].diff_id, save.layers[i].diff_id);
    // The TOC read back from the tar is the one WriteLayer made while writing it.
    EXPECT_EQ(*cache.ReadBytes(image->layers[i].toc), save.layers[i].toc_blob);
  }
  FsIndex fs = IndexOf(cache, *image);
  EXPECT_EQ(fs.Lookup("etc/conf")->digest, Digest::Of("v2").str());
  EXPECT_FALSE(fs.Lookup("etc/old"));
  EXPECT_EQ(fs.Lookup("usr/bin/tool2")->digest, Digest::Of("#!/bin/sh\n").str());
}

TEST(ImageImport, DiffIdMismatchSaysSo) {
  TempDir t;
  DockerSave save = MakeDockerSave(t, /*corrupt_diff_id=*/true);
  FakeCacheClient cache;
  auto digest = ImportImage(cache, save.tar);
  ASSERT_FALSE(digest.ok());
  EXPECT_EQ(digest.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(digest.status().message().find("does not match the config's rootfs.diff_ids[1]"),
            std::string::npos)
      << digest.status().ToString();
}

TEST(ImageImport, RefusesLayerPathsOutsideTheImage) {
  TempDir t;
  WriteFile(t / "img/config.json",
            R"({"rootfs":{"type":"layers","diff_ids":[")" + Digest::Of("x").str() + R"("]}})");
  WriteFile(t / "img/manifest.json",
            R"([{"Config":"config.json","Layers":["../../../../etc/passwd"]}])");
  FakeCacheClient cache;
  auto digest = ImportImage(cache, t / "img");
  ASSERT_FALSE(digest.ok());
  EXPECT_EQ(digest.status().code(), StatusCode::kInvalidArgument) << digest.status().ToString();

  // A FIFO or device under a layer's name is refused, not read (nor waited on).
  ASSERT_EQ(::mkfifo((t / "img/fifo").c_str(), 0600), 0);
  WriteFile(t / "img/manifest.json", R"([{"Config":"config.json","Layers":["fifo"]}])");
  digest = ImportImage(cache, t / "img");
  EXPECT_EQ(digest.status().code(), StatusCode::kInvalidArgument) << digest.status().ToString();

  WriteFile(t / "junk/manifest.json", "{not json");
  EXPECT_EQ(ImportImage(cache, t / "junk").status().code(), StatusCode::kInvalidArgument);
  WriteFile(t / "empty/x", "");
  EXPECT_EQ(ImportImage(cache, t / "empty").status().code(), StatusCode::kInvalidArgument);
}

// An image directory (docker save's layout) with one layer, the tar at `layer`.
std::string ImageWithLayer(const TempDir& t, const std::string& name, const std::string& layer) {
  const std::string dir = t / name;
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(layer, dir + "/layer.tar");
  WriteFile(dir + "/config.json", R"({"rootfs":{"type":"layers","diff_ids":[")" +
                                      Digest::OfFile(layer)->str() + R"("]}})");
  WriteFile(dir + "/manifest.json", R"([{"Config":"config.json","Layers":["layer.tar"]}])");
  return dir;
}

// Extraction follows a symbolic link a layer made to the entries below it, while the TOC (what
// COPY --from is keyed on) records each entry's path as written: "z -> out" then "z/app" would
// write out/app behind a TOC saying it is unchanged. Such layers are refused, naming the path.
TEST(ImageImport, RefusesEntriesThroughASymlinkOfTheSameLayer) {
  TempDir t;
  auto layer = [&](const std::string& name, const std::function<void(TarBuilder&)>& rest) {
    TarBuilder tar(t / name);
    tar.Add("out/", AE_IFDIR);
    tar.Add("out/app", AE_IFREG, "good");
    tar.Add("z", AE_IFLNK, "out");
    rest(tar);
    tar.Close();
    return ImageWithLayer(t, "img-" + name, t / name);
  };
  FakeCacheClient cache;
  const std::vector<std::pair<std::string, std::string>> refused = {
      {"file", R"(entry "z/app" goes through "z")"},
      {"whiteout", R"(entry "z/app" goes through "z")"},
      {"hardlink", R"(hard link target "z/app" goes through "z")"},
      {"link-to-link", R"(entry "h/app" goes through "h")"}};
  for (const auto& [name, message] : refused) {
    const std::string image = layer(name, [&, name = name](TarBuilder& tar) {
      if (name == "file") tar.Add("z/app", AE_IFREG, "evil");
      if (name == "whiteout") tar.Add("z/.wh.app", AE_IFREG);
      if (name == "hardlink") tar.AddHardlink("h", "z/app");
      if (name == "link-to-link") {
        tar.AddHardlink("h", "z");
        tar.Add("h/app", AE_IFREG, "evil");
      }
    });
    auto imported = ImportImage(cache, image);
    ASSERT_FALSE(imported.ok()) << name;
    EXPECT_EQ(imported.status().code(), StatusCode::kInvalidArgument) << name;
    EXPECT_NE(imported.status().message().find("layer 0 (layer.tar): " + message +
                                               ", a symbolic link made earlier in the same layer"),
              std::string::npos)
        << name << ": " << imported.status().ToString();
  }

  // A link replaced by a directory before entries go below it is no link any more.
  auto replaced = ImportImage(cache, layer("replaced", [](TarBuilder& tar) {
                                tar.Add("z/", AE_IFDIR);
                                tar.Add("z/app", AE_IFREG, "other");
                              }));
  ASSERT_TRUE(replaced.ok()) << replaced.status().ToString();
  auto image = LoadImage(cache, *replaced);
  ASSERT_TRUE(image.ok()) << image.status().ToString();
  FsIndex fs = IndexOf(cache, *image);
  EXPECT_EQ(fs.Lookup("out/app")->digest, Digest::Of("good").str());
  EXPECT_EQ(fs.Lookup("z/app")->digest, Digest::Of("other").str());
}

TEST(ImageImport, ExportThenReimportKeepsManifestDigest) {
  TempDir t;
  DockerSave save = MakeDockerSave(t);
  FakeCacheClient cache;
  auto digest = ImportImage(cache, save.tar);
  ASSERT_TRUE(digest.ok()) << digest.status().ToString();

  Status s = ExportOciArchive(cache, *digest, {"app:latest"}, t / "out.tar");
  ASSERT_TRUE(s.ok()) << s.ToString();
  FakeCacheClient fresh;
  auto again = ImportImage(fresh, t / "out.tar");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(*again, *digest);

  s = ExportOciLayoutDir(cache, *digest, {"app:latest"}, t / "layout");
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(*ImportImage(fresh, t / "layout"), *digest);
  EXPECT_NE(ReadFile(t / "layout/index.json")
                .find("\"org.opencontainers.image.ref.name\":\"app:latest\""),
            std::string::npos);
}

TEST(ImageImport, SkopeoReadsExportedArchive) {
  ASSERT_EQ(Shell("command -v skopeo > /dev/null"), 0) << "skopeo is missing: run scripts/install-deps";
  TempDir t;
  ASSERT_EQ(Shell(kScript + " " + t / "bb" + " > /dev/null"), 0);
  FakeCacheClient cache;
  auto digest = ImportImage(cache, t / "bb");
  ASSERT_TRUE(digest.ok()) << digest.status().ToString();
  ASSERT_TRUE(ExportOciArchive(cache, *digest, {"busybox"}, t / "bb.tar").ok());
  // By ref name, so the index.json annotation is checked too.
  ASSERT_EQ(
      Shell("skopeo inspect oci-archive:" + t / "bb.tar" + ":busybox > " + t / "inspect.json"), 0);
  std::string inspect = ReadFile(t / "inspect.json");
  EXPECT_NE(inspect.find(digest->str()), std::string::npos) << inspect;
}

}  // namespace
}  // namespace stagefarm
