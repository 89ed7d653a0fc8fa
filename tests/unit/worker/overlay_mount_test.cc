// MountOverlay against the real overlayfs (needs root): any stack of layer directories mounts and
// shows what applying the layers in order gives, whatever repeats and however deep.
#include "stagefarm/worker/overlay_mount.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "stagefarm/worker/fs_util.h"
#include "worker_fixture.h"

namespace stagefarm::worker {
namespace {

namespace fs = std::filesystem;

class OverlayMountTest : public WorkerFixture {
 protected:
  void SetUp() override {
    WorkerFixture::SetUp();
    if (HasFatalFailure()) return;
    // Long directory names, as a worker root deep in a filesystem has: the option string of a
    // stack of them passes the kernel's one-page limit long before overlayfs's 500 layers.
    root_ = tmp_.path() + "/" + std::string(100, 'r') + "/" + std::string(100, 's');
    fs::create_directories(root_);
  }

  std::string Dir(const std::string& name) {
    std::string d = root_ + "/" + name;
    fs::create_directories(d);
    return d;
  }
  static void File(const std::string& path, const std::string& text) {
    fs::create_directories(fs::path(path).parent_path());
    std::ofstream(path) << text;
  }
  // An overlay whiteout (a 0/0 character device) and an opaque directory, as the layer store
  // extracts OCI ".wh." entries.
  static void Whiteout(const std::string& path) {
    ASSERT_EQ(::mknod(path.c_str(), S_IFCHR | 0, makedev(0, 0)), 0) << path;
  }
  static void Opaque(const std::string& dir) {
    fs::create_directories(dir);
    ASSERT_EQ(::setxattr(dir.c_str(), "trusted.overlay.opaque", "y", 1, 0), 0) << dir;
  }

  // Every entry under `dir`: "d" for a directory, "f:<content>" for a file, "l:<target>".
  static std::map<std::string, std::string> Listing(const std::string& dir) {
    std::map<std::string, std::string> out;
    for (const auto& e : fs::recursive_directory_iterator(dir)) {
      std::string rel = fs::relative(e.path(), dir).string();
      if (e.is_symlink()) {
        out[rel] = "l:" + fs::read_symlink(e.path()).string();
      } else if (e.is_directory()) {
        out[rel] = "d";
      } else {
        std::ifstream in(e.path());
        std::stringstream text;
        text << in.rdbuf();
        out[rel] = "f:" + text.str();
      }
    }
    return out;
  }

  std::map<std::string, std::string> MountedListing(const std::vector<std::string>& lowers,
                                                    bool writable = false) {
    const std::string n = std::to_string(++mounts_);
    OverlaySpec spec{lowers, Dir("empty"), writable ? Dir("upper" + n) : "",
                     writable ? Dir("work" + n) : ""};
    auto m = MountOverlay(spec, Dir("merged" + n));
    EXPECT_TRUE(m.ok()) << m.status().ToString();
    if (!m.ok()) return {};
    auto listing = Listing(m->target());
    EXPECT_TRUE(m->Unmount().ok());
    return listing;
  }

  std::string root_;
  int mounts_ = 0;
};

// A: files f, g and d/x. B: deletes f, makes d opaque with d/y in it, adds h.
TEST_F(OverlayMountTest, ARepeatedLayerCountsAtItsTopmostPlace) {
  const std::string a = Dir("A"), b = Dir("B");
  File(a + "/f", "a");
  File(a + "/g", "g");
  File(a + "/d/x", "x");
  Whiteout(b + "/f");
  Opaque(b + "/d");
  File(b + "/d/y", "y");
  File(b + "/h", "h");
  // What applying the layers in order gives (the layer store's own semantics).
  const std::map<std::string, std::string> aba = {{"d", "d"},   {"d/x", "f:x"}, {"d/y", "f:y"},
                                                  {"f", "f:a"}, {"g", "f:g"},   {"h", "f:h"}};
  const std::map<std::string, std::string> bab = {
      {"d", "d"}, {"d/y", "f:y"}, {"g", "f:g"}, {"h", "f:h"}};
  const std::map<std::string, std::string> only_a = {
      {"d", "d"}, {"d/x", "f:x"}, {"f", "f:a"}, {"g", "f:g"}};
  EXPECT_EQ(MountedListing({a, a}), only_a) << "adjacent repeat, read-only";
  EXPECT_EQ(MountedListing({a, a}, /*writable=*/true), only_a) << "adjacent repeat, writable";
  EXPECT_EQ(MountedListing({a, b, a}), aba);
  EXPECT_EQ(MountedListing({a, b, a}, true), aba);
  EXPECT_EQ(MountedListing({b, a, b}), bab);
  EXPECT_EQ(MountedListing({a, b, a, b, b, a}, true), aba);
  // Another name of the same directory is the same layer.
  fs::create_directory_symlink(a, root_ + "/A-link");
  EXPECT_EQ(MountedListing({a, b, root_ + "/A-link"}), aba);
}

// More layers than one mount takes (overlayfs: 500; one page of options: about 290 names): the
// view is still the one stack's, with every layer's whiteouts applied to all layers below it.
TEST_F(OverlayMountTest, StacksDeeperThanOneMountShowEveryLayerInOrder) {
  for (size_t depth : {130u, 600u}) {
    SCOPED_TRACE(depth);
    std::vector<std::string> lowers;
    std::map<std::string, std::string> expected;
    for (size_t i = 0; i < depth; ++i) {
      const std::string d = Dir(std::to_string(depth) + "-layer-" + std::to_string(i));
      File(d + "/only-" + std::to_string(i), std::to_string(i));
      expected["only-" + std::to_string(i)] = "f:" + std::to_string(i);
      File(d + "/top", std::to_string(i));  // each layer hides the one below
      lowers.push_back(d);
    }
    expected["top"] = "f:" + std::to_string(depth - 1);
    // Whiteouts and opaque directories at every eighth of the stack delete, and hide, what the
    // lowest layer made: wherever the stack is split across mounts, they still apply below.
    for (size_t k = 1; k < 8; ++k) {
      const std::string n = std::to_string(k);
      File(lowers[0] + "/gone-" + n, "0");
      Whiteout(lowers[depth * k / 8] + "/gone-" + n);
      File(lowers[0] + "/dir-" + n + "/low", "0");
      Opaque(lowers[depth * k / 8] + "/dir-" + n);
      File(lowers[depth * k / 8] + "/dir-" + n + "/mid", n);
      expected["dir-" + n] = "d";
      expected["dir-" + n + "/mid"] = "f:" + n;
    }
    // Every layer a second time, lower down: the topmost copies count.
    std::vector<std::string> repeated = lowers;
    repeated.insert(repeated.begin(), lowers.begin(), lowers.end());

    EXPECT_EQ(MountedListing(lowers), expected);
    EXPECT_EQ(MountedListing(repeated, /*writable=*/true), expected);

    // A writable rootfs of the deep stack takes changes into its upper dir, and leaves no group
    // mount or mount point behind.
    OverlaySpec spec{lowers, Dir("empty"), Dir("deep-upper"), Dir("deep-work")};
    const std::string merged = Dir("deep-merged");
    {
      auto m = MountOverlay(spec, merged);
      ASSERT_TRUE(m.ok()) << m.status().ToString();
      File(merged + "/only-0", "changed");
      std::ifstream in(spec.upper_dir + "/only-0");
      std::string text;
      in >> text;
      EXPECT_EQ(text, "changed");
    }
    for (const auto& e : fs::directory_iterator(root_)) {
      EXPECT_EQ(e.path().string().find(".lower"), std::string::npos) << e.path();
    }
    fs::remove_all(spec.upper_dir);
    fs::remove_all(spec.work_dir);
    fs::remove(merged);
  }
}

TEST_F(OverlayMountTest, AStackDeeperThanTwoMountsIsRefusedWithTheCount) {
  std::vector<std::string> lowers;
  for (int i = 0; i < 1200; ++i) lowers.push_back(Dir("layer-" + std::to_string(i)));
  auto m = MountOverlay({lowers, Dir("empty"), "", ""}, Dir("merged"));
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(m.status().message().find("1200 layers"), std::string::npos) << m.status().ToString();
  EXPECT_FALSE(fs::exists(root_ + "/merged.lower"));
}

TEST_F(OverlayMountTest, ALayerThatIsNotThereNamesIt) {
  auto m = MountOverlay({{root_ + "/missing"}, Dir("empty"), "", ""}, Dir("merged"));
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find(root_ + "/missing"), std::string::npos)
      << m.status().ToString();
}

}  // namespace
}  // namespace stagefarm::worker
