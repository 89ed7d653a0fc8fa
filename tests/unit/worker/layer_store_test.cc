// The worker's layer store on a real directory: layers extracted from real tars, sizes measured on
// disk, least recently used layers evicted past the budget, pinned ones kept, state kept across a
// restart.
#include "stagefarm/worker/layer_store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "stagefarm/common/layer_tar.h"
#include "worker_fixture.h"

namespace stagefarm::worker {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kMiB = 1 << 20;

class LayerStoreTest : public WorkerFixture {
 protected:
  // A layer holding one file of `bytes` random-ish bytes (distinct for each `name`).
  LayerRef MakeLayer(const std::string& name, uint64_t bytes) {
    const std::string dir = tmp_.path() + "/src-" + name;
    fs::create_directories(dir);
    std::string content(bytes, '\0');
    for (uint64_t i = 0; i < bytes; ++i) content[i] = static_cast<char>((i * 31 + name[0]) & 0xff);
    content.replace(0, name.size(), name);
    std::ofstream(dir + "/data") << content;
    return PutLayer(dir, name);
  }
  // Pins `l` and brings it into `store`, as a step does; the layer stays pinned while the
  // returned Pin lives.
  LayerStore::Pin Use(LayerStore& store, const LayerRef& l) {
    LayerStore::Pin pin = store.MakePin();
    pin.Add(l.diff_id);
    auto dir = store.Ensure(l.diff_id, cache_);
    EXPECT_TRUE(dir.ok()) << dir.status().ToString();
    if (dir.ok()) {
      EXPECT_TRUE(fs::exists(*dir + "/data"));
    }
    return pin;
  }
  std::string LayersDir() const { return options_.root + "/layers"; }
  bool Present(const LayerRef& l) const { return fs::is_directory(LayersDir() + "/" + l.diff_id.hex); }
};

TEST_F(LayerStoreTest, EnsureWithoutAPinIsRefused) {
  LayerStore store(LayersDir());
  LayerRef a = MakeLayer("a", 4096);
  auto dir = store.Ensure(a.diff_id, cache_);
  ASSERT_FALSE(dir.ok());
  EXPECT_EQ(dir.status().code(), StatusCode::kFailedPrecondition) << dir.status().ToString();
  EXPECT_NE(dir.status().ToString().find("without a pin"), std::string::npos);
}

// A fresh worker's first layer can be made before any was extracted (FROM scratch, then COPY):
// the store's directory does not exist yet.
TEST_F(LayerStoreTest, AdoptsAnUpperDirIntoAStoreNotYetCreated) {
  LayerStore store(LayersDir());
  // The store makes its directory to hold its lock; it may be gone since (a new disk mounted).
  fs::remove_all(LayersDir());
  LayerRef a = MakeLayer("a", 4096);
  const std::string upper = tmp_.path() + "/upper";
  fs::create_directories(upper);
  std::ofstream(upper + "/data") << "from a step";
  ASSERT_TRUE(store.Adopt(a.diff_id, upper).ok());
  EXPECT_TRUE(Present(a));
  EXPECT_FALSE(fs::exists(upper));
}

// A step's layer is adopted with the size its writing measured: it must be what a walk of the
// directory (DiskUsage, du's count) finds, or --max-disk would count wrong.
TEST_F(LayerStoreTest, WrittenLayerMeasuresItsDirectoryAsDiskUsageDoes) {
  const std::string dir = tmp_.path() + "/upper";
  fs::create_directories(dir + "/a/b/c");
  for (int i = 0; i < 50; ++i) {
    std::ofstream(dir + "/a/f" + std::to_string(i)) << std::string(i * 997, 'x');
  }
  std::ofstream(dir + "/a/b/c/big") << std::string(3 * kMiB + 5, 'y');
  std::ofstream(dir + "/empty");
  ASSERT_EQ(::link((dir + "/a/b/c/big").c_str(), (dir + "/hardlink").c_str()), 0);
  fs::create_symlink("a/f3", dir + "/symlink");
  auto written = WriteLayer(dir, tmp_.path() + "/layer.tar");
  ASSERT_TRUE(written.ok()) << written.status().ToString();
  auto walked = DiskUsage(dir);
  ASSERT_TRUE(walked.ok()) << walked.status().ToString();
  EXPECT_EQ(written->disk_bytes, *walked);
  EXPECT_GT(written->disk_bytes, 3 * kMiB);  // the hard-linked file once
  EXPECT_LT(written->disk_bytes, 5 * kMiB);  // twice would be over 7 MiB

  LayerStore store(LayersDir());
  ASSERT_TRUE(store.Adopt(written->diff_id, dir, written->disk_bytes).ok());
  EXPECT_EQ(store.bytes(), *walked);
}

TEST_F(LayerStoreTest, EvictsLeastRecentlyUsedUnpinnedLayersPastTheBudget) {
  // Budget: 3.5 layers of ~1 MiB; low watermark 90% (3.15 MiB).
  LayerStore store(LayersDir(), 3 * kMiB + kMiB / 2);
  std::vector<LayerRef> layers;
  for (const char* name : {"a", "b", "c", "d", "e"}) layers.push_back(MakeLayer(name, kMiB));

  // a is in use by a running step for the whole test; b, c were used and released.
  LayerStore::Pin running = Use(store, layers[0]);
  Use(store, layers[1]);
  Use(store, layers[2]);
  // b is used again: now c is the least recently used unpinned layer.
  Use(store, layers[1]);
  EXPECT_EQ(store.evicted_layers(), 0u);
  EXPECT_GE(store.bytes(), 3 * kMiB);

  // d passes the budget: c goes (oldest unpinned), a stays though older (pinned).
  {
    LayerStore::Pin step = Use(store, layers[3]);
  }
  EXPECT_TRUE(Present(layers[0]));
  EXPECT_TRUE(Present(layers[1]));
  EXPECT_FALSE(Present(layers[2]));
  EXPECT_FALSE(fs::exists(LayersDir() + "/" + layers[2].diff_id.hex + ".use"));
  EXPECT_TRUE(Present(layers[3]));
  EXPECT_EQ(store.evicted_layers(), 1u);
  EXPECT_LE(store.bytes(), 3 * kMiB + kMiB / 2);

  // e, added by a step (Insert of a tar it wrote), pushes out b; d (held by a step) stays.
  LayerStore::Pin holding_d = store.MakePin();
  holding_d.Add(layers[3].diff_id);
  ASSERT_TRUE(store.Insert(layers[4].diff_id, tmp_.path() + "/e.tar").ok());
  EXPECT_TRUE(Present(layers[0]));
  EXPECT_FALSE(Present(layers[1]));
  EXPECT_TRUE(Present(layers[3]));
  EXPECT_TRUE(Present(layers[4]));
  EXPECT_EQ(store.evicted_layers(), 2u);
  // Nothing half-removed stays behind.
  for (const auto& e : fs::directory_iterator(LayersDir() + "/.tmp")) {
    ADD_FAILURE() << "left in .tmp: " << e.path();
  }

  // An evicted layer needed again is fetched again.
  LayerStore::Pin again = store.MakePin();
  again.Add(layers[2].diff_id);
  auto c = store.Ensure(layers[2].diff_id, cache_);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  std::ifstream in(*c + "/data");
  std::string first(1, '\0');
  in.read(first.data(), 1);
  EXPECT_EQ(first, "c");
}

TEST_F(LayerStoreTest, PinnedLayersStayEvenWhenTheyAloneExceedTheBudget) {
  LayerStore store(LayersDir(), kMiB);
  LayerRef a = MakeLayer("a", kMiB), b = MakeLayer("b", kMiB);
  LayerStore::Pin pin_a = Use(store, a), pin_b = Use(store, b);
  EXPECT_TRUE(Present(a));
  EXPECT_TRUE(Present(b));
  EXPECT_EQ(store.evicted_layers(), 0u);
  EXPECT_GT(store.bytes(), kMiB);
  // Once released, the next layer added brings the store back under the budget.
  pin_a.Reset();
  pin_b.Reset();
  LayerRef c = MakeLayer("c", kMiB / 2);
  LayerStore::Pin next = Use(store, c);
  EXPECT_FALSE(Present(a));
  EXPECT_FALSE(Present(b));
  EXPECT_TRUE(Present(c));
  EXPECT_LE(store.bytes(), kMiB);
}

TEST_F(LayerStoreTest, UnboundedStoreNeverEvicts) {
  LayerStore store(LayersDir());
  std::vector<LayerRef> layers;
  for (const char* name : {"a", "b", "c"}) {
    layers.push_back(MakeLayer(name, kMiB));
    Use(store, layers.back());
  }
  for (const auto& l : layers) EXPECT_TRUE(Present(l));
  EXPECT_EQ(store.evicted_layers(), 0u);
}

TEST_F(LayerStoreTest, RestartKnowsSizesAndLastUseWithoutMeasuringAgain) {
  LayerRef a = MakeLayer("a", kMiB), b = MakeLayer("b", kMiB), c = MakeLayer("c", kMiB);
  uint64_t before = 0;
  {
    LayerStore store(LayersDir(), 10 * kMiB);
    for (const LayerRef& l : {b, a}) {  // a used last
      LayerStore::Pin pin = Use(store, l);
    }
    before = store.bytes();
  }
  EXPECT_GE(before, 2 * kMiB);
  // The recorded sizes are what the restarted store counts (a's is changed by hand to tell it
  // from a measurement).
  const std::string a_use = LayersDir() + "/" + a.diff_id.hex + ".use";
  uint64_t b_bytes = 0;
  std::ifstream(LayersDir() + "/" + b.diff_id.hex + ".use") >> b_bytes;
  EXPECT_GE(b_bytes, kMiB);
  EXPECT_LT(b_bytes, before);
  std::ofstream(a_use) << (kMiB / 2) << "\n";
  struct timespec times[2] = {{1000, 0}, {1000, 0}};  // b: used long ago
  ASSERT_EQ(::utimensat(AT_FDCWD, (LayersDir() + "/" + b.diff_id.hex + ".use").c_str(), times, 0), 0);
  {
    LayerStore store(LayersDir(), 2 * kMiB);
    EXPECT_EQ(store.bytes(), b_bytes + kMiB / 2)
        << "restart must read the recorded sizes";
    // c passes the budget: b (older by its .use mtime) goes, a stays.
    LayerStore::Pin pin = Use(store, c);
    EXPECT_FALSE(Present(b));
    EXPECT_TRUE(Present(a));
    EXPECT_TRUE(Present(c));
  }
}

TEST_F(LayerStoreTest, LayerWithoutItsUseFileIsMeasuredAtStart) {
  LayerRef a = MakeLayer("a", kMiB);
  uint64_t measured = 0;
  {
    LayerStore store(LayersDir());
    LayerStore::Pin pin = Use(store, a);
    measured = store.bytes();
  }
  const std::string use = LayersDir() + "/" + a.diff_id.hex + ".use";
  ASSERT_TRUE(fs::remove(use));
  // A .use file whose layer is gone (a crash while evicting) is removed.
  const std::string orphan = LayersDir() + "/" + std::string(64, 'f') + ".use";
  std::ofstream(orphan) << "123\n";
  LayerStore store(LayersDir());
  EXPECT_EQ(store.bytes(), measured);
  EXPECT_TRUE(fs::exists(use));
  EXPECT_FALSE(fs::exists(orphan));
}

// A worker killed while it fetched, extracted or evicted a layer leaves its work under .tmp,
// which no budget counts: the store removes it when it opens, and keeps the layers.
TEST_F(LayerStoreTest, LeftoversUnderTmpAreRemovedAtStart) {
  LayerRef a = MakeLayer("a", kMiB);
  {
    LayerStore store(LayersDir());
    LayerStore::Pin pin = Use(store, a);
  }
  const std::string tmp = LayersDir() + "/.tmp";
  for (const char* debris : {"fetch-Xy12ab/layer.tar", "extract-Qw34cd/fs/usr/lib/data",
                             "evict-0123abcd-0/etc/passwd"}) {
    const std::string path = tmp + "/" + debris;
    fs::create_directories(fs::path(path).parent_path());
    std::ofstream(path) << std::string(64 << 10, 'x');
  }
  // A directory a layer left unreadable and unwritable is removed too.
  ASSERT_EQ(::chmod((tmp + "/extract-Qw34cd/fs/usr").c_str(), 0), 0);
  LayerStore store(LayersDir());
  EXPECT_TRUE(fs::is_empty(tmp)) << fs::begin(fs::directory_iterator(tmp))->path();
  EXPECT_TRUE(Present(a));
  LayerStore::Pin pin = Use(store, a);
}

// Two stores given one root (two workers started with the same --root): the second must not
// take the first's work in progress for a stopped worker's leftovers.
TEST_F(LayerStoreTest, LeftoversAreLeftAloneWhileAnotherStoreHasTheRoot) {
  LayerStore first(LayersDir());
  const std::string work = LayersDir() + "/.tmp/extract-Ab12cd/fs/file";
  fs::create_directories(fs::path(work).parent_path());
  std::ofstream(work) << "in progress";
  {
    LayerStore second(LayersDir());
    EXPECT_TRUE(fs::exists(work));
  }
  EXPECT_TRUE(fs::exists(work));
}

TEST(DiskUsage, CountsHardLinksOnceAndFailsOnAMissingPath) {
  auto dir = TempDir::Make("/tmp", "sf-du-test-");
  ASSERT_TRUE(dir.ok());
  const std::string d = dir->path();
  std::ofstream(d + "/f") << std::string(64 << 10, 'x');
  auto one = DiskUsage(d);
  ASSERT_TRUE(one.ok()) << one.status().ToString();
  EXPECT_GE(*one, 64u << 10);
  ASSERT_EQ(::link((d + "/f").c_str(), (d + "/g").c_str()), 0);
  ASSERT_EQ(::symlink("f", (d + "/s").c_str()), 0);
  auto linked = DiskUsage(d);
  ASSERT_TRUE(linked.ok());
  EXPECT_LT(*linked, *one + (8u << 10));  // not twice the file
  auto missing = DiskUsage(d + "/nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().ToString().find(d + "/nope"), std::string::npos)
      << missing.status().ToString();
}

}  // namespace
}  // namespace stagefarm::worker
