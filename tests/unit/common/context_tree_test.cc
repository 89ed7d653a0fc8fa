#include "stagefarm/common/context_tree.h"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "stagefarm/common/dockerignore.h"
#include "support/fake_cache_client.h"

namespace stagefarm {
namespace {

namespace fs = std::filesystem;

class ContextTreeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = ::testing::TempDir() + "/ctx-" + std::to_string(getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::remove_all(root_);
    fs::create_directories(root_ + "/src/sub");
    Write("Dockerfile", "FROM scratch\n");
    Write("src/a.c", "int main() {}\n");
    Write("src/sub/b.txt", "bee\n");
    Write("build.log", "noise\n");
    symlink("src/a.c", (root_ + "/link").c_str());
  }
  void TearDown() override { fs::remove_all(root_); }
  void Write(const std::string& rel, const std::string& content) {
    std::ofstream(root_ + "/" + rel) << content;
  }
  StatusOr<Digest> Hash(std::function<bool(const std::string&)> ignore = nullptr) {
    return HashContextDir(root_, ignore, [&](ContextBlob b) {
      if (!b.path.empty()) {
        ASSERT_TRUE(cache_.PutFile(b.path, b.digest).ok());
      } else {
        ASSERT_TRUE(cache_.PutBytes(b.bytes).ok());
      }
    });
  }

  std::string root_;
  testing::FakeCacheClient cache_;
};

TEST_F(ContextTreeTest, SameTreeSameDigestWhateverTheMtimes) {
  StatusOr<Digest> a = Hash();
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  struct timespec times[2] = {{1, 0}, {1, 0}};
  utimensat(AT_FDCWD, (root_ + "/src/a.c").c_str(), times, 0);
  StatusOr<Digest> b = Hash();
  EXPECT_EQ(*a, *b);
}

TEST_F(ContextTreeTest, ContentAndModeChangesChangeTheDigest) {
  Digest a = *Hash();
  Write("src/sub/b.txt", "bee2\n");
  Digest b = *Hash();
  EXPECT_NE(a, b);
  chmod((root_ + "/src/sub/b.txt").c_str(), 0700);
  Digest c = *Hash();
  EXPECT_NE(b, c);
}

TEST_F(ContextTreeTest, LookupWalksTheTreeInTheStore) {
  Digest root = *Hash();
  ContextTree tree(cache_, root);
  auto f = tree.Lookup("src/sub/b.txt");
  ASSERT_TRUE(f.ok() && f->has_value());
  EXPECT_EQ((*f)->type, TreeEntry::Type::kFile);
  EXPECT_EQ((*f)->digest, Digest::Of("bee\n"));
  auto d = tree.Lookup("/src/");
  ASSERT_TRUE(d.ok() && d->has_value());
  EXPECT_EQ((*d)->type, TreeEntry::Type::kDir);
  auto l = tree.Lookup("link");
  ASSERT_TRUE(l.ok() && l->has_value());
  EXPECT_EQ((*l)->type, TreeEntry::Type::kSymlink);
  EXPECT_EQ((*l)->target, "src/a.c");
  auto missing = tree.Lookup("src/nope");
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->has_value());
  // ".." stops at the context's root, as BuildKit cleans a source path: never outside the tree.
  auto clamped = tree.Lookup("../src/../../src/sub/b.txt");
  ASSERT_TRUE(clamped.ok() && clamped->has_value()) << clamped.status().ToString();
  EXPECT_EQ((*clamped)->digest, Digest::Of("bee\n"));
  auto escape = tree.Lookup("../../etc/passwd");
  ASSERT_TRUE(escape.ok());
  EXPECT_FALSE(escape->has_value());
  auto above_root = tree.Lookup("src/../..");
  ASSERT_TRUE(above_root.ok() && above_root->has_value());
  EXPECT_EQ((*above_root)->digest, root);
  auto self = tree.Lookup(".");
  ASSERT_TRUE(self.ok() && self->has_value());
  EXPECT_EQ((*self)->digest, root);
}

TEST_F(ContextTreeTest, IgnoredPathsAreLeftOut) {
  StatusOr<DockerIgnore> di = DockerIgnore::Parse("*.log\nsrc/sub\n");
  ASSERT_TRUE(di.ok());
  Digest root = *Hash([&](const std::string& p) { return di->Excluded(p); });
  ContextTree tree(cache_, root);
  EXPECT_FALSE(tree.Lookup("build.log")->has_value());
  EXPECT_FALSE(tree.Lookup("src/sub/b.txt")->has_value());
  EXPECT_TRUE(tree.Lookup("src/a.c")->has_value());
}

TEST(TreeNode, ParseRejectsHostileNodes) {
  EXPECT_FALSE(TreeNode::Parse("{}").ok());
  EXPECT_FALSE(TreeNode::Parse("not json").ok());
  EXPECT_FALSE(TreeNode::Parse(R"([{"n":"../x","t":"f","m":420,"d":"sha256:)" +
                               std::string(64, 'a') + R"(","s":1}])")
                   .ok());
  EXPECT_FALSE(TreeNode::Parse(R"([{"n":"x","t":"q","m":420}])").ok());
  // unsorted
  std::string e = R"(,"t":"l","m":511,"l":"t"})";
  EXPECT_FALSE(TreeNode::Parse(R"([{"n":"b")" + e + R"(,{"n":"a")" + e + "]").ok());
  EXPECT_TRUE(TreeNode::Parse(R"([{"n":"a")" + e + R"(,{"n":"b")" + e + "]").ok());
}

// JSON's "\u0000" decodes to a NUL byte, and every system call reads a name up to its first NUL:
// "..\u0000" would be "..", and "a\u0000b" would be "a".
TEST(TreeNode, ParseRejectsNamesWithANulByte) {
  const std::string e = R"(,"t":"d","m":493,"d":"sha256:)" + std::string(64, 'a') + R"(","s":2})";
  for (const char* name : {R"(..\u0000)", R"(.\u0000)", R"(a\u0000b)", R"(\u0000)"}) {
    auto node = TreeNode::Parse(R"([{"n":")" + std::string(name) + "\"" + e + "]");
    ASSERT_FALSE(node.ok()) << name;
    EXPECT_NE(node.status().message().find("bad name"), std::string::npos)
        << node.status().ToString();
  }
  EXPECT_TRUE(TreeNode::Parse(R"([{"n":"a\u0001b")" + e + "]").ok()) << "other bytes are names";
}

TEST(DockerIgnore, DockerSemantics) {
  StatusOr<DockerIgnore> di = DockerIgnore::Parse(
      "# comment\n"
      "**/*.o\n"
      "docs\n"
      "!docs/keep.md\n"
      "/tmp?\n");
  ASSERT_TRUE(di.ok()) << di.status().ToString();
  EXPECT_TRUE(di->Excluded("a.o"));
  EXPECT_TRUE(di->Excluded("x/y/z.o"));
  EXPECT_FALSE(di->Excluded("x/y/z.c"));
  EXPECT_TRUE(di->Excluded("docs"));
  EXPECT_TRUE(di->Excluded("docs/a.md"));
  EXPECT_FALSE(di->Excluded("docs/keep.md"));
  EXPECT_TRUE(di->Excluded("tmp1"));
  EXPECT_FALSE(di->Excluded("tmp12"));
  EXPECT_FALSE(DockerIgnore::Parse("[unterminated\n").ok());
}

}  // namespace
}  // namespace stagefarm

namespace stagefarm {
namespace {

// BuildKit's context keeps FIFOs and device nodes (COPY makes them) and sends a socket as an
// empty file; they are only lstat'ed, never opened.
TEST(ContextTreeSpecialFiles, FifosDevicesAndSocketsAreEntries) {
  const std::string root = ::testing::TempDir() + "/ctx-special-" + std::to_string(getpid());
  fs::remove_all(root);
  fs::create_directories(root);
  ASSERT_EQ(::mkfifo((root + "/fifo").c_str(), 0640), 0);
  ASSERT_EQ(::mknod((root + "/null").c_str(), S_IFCHR | 0666, makedev(1, 3)), 0);
  int sock = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(sock, 0);
  struct sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s/sock", root.c_str());
  ASSERT_EQ(::bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ::close(sock);
  testing::FakeCacheClient cache;
  auto digest = HashContextDir(root, nullptr, [&](ContextBlob b) {
    ASSERT_TRUE((b.path.empty() ? cache.PutBytes(b.bytes) : cache.PutFile(b.path, b.digest)).ok());
  });
  ASSERT_TRUE(digest.ok()) << digest.status().ToString();
  ContextTree tree(cache, *digest);
  auto fifo = tree.Lookup("fifo");
  ASSERT_TRUE(fifo.ok() && fifo->has_value());
  EXPECT_EQ((*fifo)->type, TreeEntry::Type::kFifo);
  EXPECT_EQ((*fifo)->mode, 0640u);
  auto null = tree.Lookup("null");
  ASSERT_TRUE(null.ok() && null->has_value());
  EXPECT_EQ((*null)->type, TreeEntry::Type::kCharDevice);
  EXPECT_EQ((*null)->dev_major, 1u);
  EXPECT_EQ((*null)->dev_minor, 3u);
  auto s = tree.Lookup("sock");
  ASSERT_TRUE(s.ok() && s->has_value());
  EXPECT_EQ((*s)->type, TreeEntry::Type::kFile);
  EXPECT_EQ((*s)->digest, Digest::Of(""));
  EXPECT_TRUE(cache.ReadBytes((*s)->digest).ok()) << "the empty blob is put";
  // The node form round-trips.
  auto node = tree.ReadNode(*digest);
  ASSERT_TRUE(node.ok());
  auto again = TreeNode::Parse(node->Serialize());
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->entries, node->entries);
  fs::remove_all(root);
}

}  // namespace
}  // namespace stagefarm
