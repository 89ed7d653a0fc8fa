// A base fixture for worker tests that run real steps (overlayfs, crun; needs root): a temp dir
// holding the worker root, an in-memory cache, and the check at the end that no step left a
// mount or a step dir behind.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <initializer_list>
#include <string>

#include "stagefarm/common/context_tree.h"
#include "stagefarm/common/layer_tar.h"
#include "stagefarm/worker/fs_util.h"
#include "stagefarm/worker/overlay_mount.h"
#include "stagefarm/worker/worker_options.h"
#include "support/fake_cache_client.h"

namespace stagefarm::worker {

// Hashes the directory `dir` as a build context and puts its blobs into `cache`, as the CLI
// uploads a context. Returns the tree's root.
inline Digest PutContextDir(const std::string& dir, testing::FakeCacheClient& cache) {
  auto root = HashContextDir(
      dir, [](const std::string&) { return false; },
      [&](ContextBlob blob) {
        Status s =
            blob.path.empty() ? cache.PutBytes(blob.bytes) : cache.PutFile(blob.path, blob.digest);
        EXPECT_TRUE(s.ok()) << s.ToString();
      });
  EXPECT_TRUE(root.ok()) << root.status().ToString();
  return root.ok() ? *root : Digest{};
}

// /bin/busybox (the host's static one) in `rootfs`, with the `applets` as symlinks to it.
inline void InstallBusybox(const std::string& rootfs, std::initializer_list<const char*> applets) {
  std::filesystem::create_directories(rootfs + "/bin");
  std::filesystem::copy_file("/bin/busybox", rootfs + "/bin/busybox");
  for (const char* applet : applets) {
    std::filesystem::create_symlink("busybox", rootfs + "/bin/" + applet);
  }
}

class WorkerFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    // CI runs as root, so this is a real failure, never a skip.
    ASSERT_EQ(::geteuid(), 0u) << "the worker tests need root (overlayfs, crun)";
    auto dir = TempDir::Make("/tmp", "sf-worker-test-");
    ASSERT_TRUE(dir.ok()) << dir.status().ToString();
    tmp_ = std::move(*dir);
    options_.root = tmp_.path() + "/root";
  }
  void TearDown() override {
    if (tmp_.path().empty()) return;
    auto mounts = MountsUnder(tmp_.path());
    ASSERT_TRUE(mounts.ok());
    EXPECT_TRUE(mounts->empty()) << "left mounted: " << mounts->front();
    // Every step's temp dir is gone.
    if (std::filesystem::exists(options_.root + "/steps")) {
      EXPECT_TRUE(std::filesystem::is_empty(options_.root + "/steps"));
    }
  }

  // The directory `rootfs` as a layer in the cache (written to <tmp>/<name>.tar first).
  LayerRef PutLayer(const std::string& rootfs, const std::string& name) {
    const std::string tar = tmp_.path() + "/" + name + ".tar";
    auto layer = WriteLayer(rootfs, tar);
    EXPECT_TRUE(layer.ok()) << layer.status().ToString();
    EXPECT_TRUE(cache_.PutFile(tar, layer->diff_id).ok());
    Digest toc;
    EXPECT_TRUE(cache_.PutBytes(layer->toc_blob, &toc).ok());
    return LayerRef{layer->diff_id, toc};
  }

  TempDir tmp_;
  WorkerOptions options_;
  testing::FakeCacheClient cache_;
};

}  // namespace stagefarm::worker
