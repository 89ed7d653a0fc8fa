// .dockerignore semantics, table-driven from Docker's documentation ("Dockerignore file" in the
// Dockerfile reference) and moby/patternmatcher's behaviour.
#include "stagefarm/common/dockerignore.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "stagefarm/common/context_tree.h"
#include "support/fake_cache_client.h"

namespace stagefarm {
namespace {

namespace fs = std::filesystem;

struct Case {
  const char* patterns;
  const char* path;
  bool excluded;
};

TEST(DockerIgnore, MatchesAsDockerDocumentsIt) {
  const Case cases[] = {
      // The documentation's example file.
      {"# comment\n*/temp*\n*/*/temp*\ntemp?\n", "somedir/temporary.txt", true},
      {"# comment\n*/temp*\n*/*/temp*\ntemp?\n", "somedir/temp", true},
      {"# comment\n*/temp*\n*/*/temp*\ntemp?\n", "temp.txt", false},
      {"# comment\n*/temp*\n*/*/temp*\ntemp?\n", "somedir/subdir/temporary.txt", true},
      {"# comment\n*/temp*\n*/*/temp*\ntemp?\n", "a/b/c/temporary.txt", false},
      {"# comment\n*/temp*\n*/*/temp*\ntemp?\n", "tempa", true},
      {"# comment\n*/temp*\n*/*/temp*\ntemp?\n", "tempab", false},
      {"# comment\n*/temp*\n*/*/temp*\ntemp?\n", "comment", false},
      // "**" matches any number of directories, including none.
      {"**/*.go\n", "main.go", true},
      {"**/*.go\n", "cmd/tool/main.go", true},
      {"**/*.go\n", "cmd/tool/main.c", false},
      {"a/**/b\n", "a/b", true},
      {"a/**/b\n", "a/x/y/b", true},
      {"a/**/b\n", "a/xb", false},
      {"a/**\n", "a/b/c", true},
      {"a/**\n", "ab", false},
      {"**\n", "anything/at/all", true},
      {"**/foo\n", "foo", true},
      {"**/foo\n", "x/y/foo", true},
      {"**/foo\n", "xfoo", false},
      // Exceptions: the last matching line wins.
      {"*.md\n!README.md\n", "README.md", false},
      {"*.md\n!README.md\n", "CHANGES.md", true},
      {"*.md\n!README*.md\nREADME-secret.md\n", "README-secret.md", true},
      {"*.md\n!README*.md\nREADME-secret.md\n", "README-public.md", false},
      {"*.md\nREADME-secret.md\n!README*.md\n", "README-secret.md", false},
      {"docs\n!docs/keep.md\n", "docs/keep.md", false},
      {"docs\n!docs/keep.md\n", "docs/other.md", true},
      {"!a\n", "a", false},
      // A parent directory's match covers everything below it.
      {"build\n", "build/out/app.o", true},
      {"build\n", "builder/x", false},
      {"*/node_modules\n", "web/node_modules/left-pad/index.js", true},
      // Cleaned like filepath.Clean; a leading "/" is dropped; white space trimmed.
      {"/secret\n", "secret", true},
      {"./secret\n", "secret", true},
      {"a/../secret\n", "secret", true},
      {"dir//sub/\n", "dir/sub/x", true},
      {"  spaced.txt  \r\n", "spaced.txt", true},
      {"!  /keep\n*\n!  /keep\n", "keep", false},
      // Comments only at the very start of a line.
      {"#x\n", "#x", false},
      {" #x\n", "#x", true},
      // filepath.Match syntax: "*" and "?" stop at "/", classes, ranges, escapes.
      {"a?c\n", "abc", true},
      {"a?c\n", "a/c", false},
      {"a*\n", "a/b", true},  // via the parent "a"
      {"*.txt\n", "dir/a.txt", false},
      {"[a-c]x\n", "bx", true},
      {"[a-c]x\n", "dx", false},
      {"[^a-c]x\n", "dx", true},
      {"[^a-c]x\n", "ax", false},
      {"[\\]]x\n", "]x", true},
      {"\\*x\n", "*x", true},
      {"\\*x\n", "ax", false},
      {"caf?\n", "caf\xC3\xA9", true},  // "?" is one character, not one byte
      {"file.(1)+$\n", "file.(1)+$", true},
      {"file.(1)+$\n", "fileX(1)+$", false},
      // Byte order mark and CRLF.
      {"\xEF\xBB\xBF" "bom\r\n", "bom", true},
      // Paths are cleaned too.
      {"a/b\n", "./a//b/", true},
  };
  for (const Case& c : cases) {
    StatusOr<DockerIgnore> di = DockerIgnore::Parse(c.patterns);
    ASSERT_TRUE(di.ok()) << c.patterns << ": " << di.status().ToString();
    EXPECT_EQ(di->Excluded(c.path), c.excluded) << "patterns:\n" << c.patterns << "path: " << c.path;
  }
}

TEST(DockerIgnore, BadPatternsNameFileAndLine) {
  const char* bad[] = {"ok\n[unterminated\n", "ok\n[]\n", "ok\ntrailing\\\n", "ok\n!\n",
                       "ok\n[a-]\n"};
  for (const char* text : bad) {
    StatusOr<DockerIgnore> di = DockerIgnore::Parse(text, "ctx/.dockerignore");
    ASSERT_FALSE(di.ok()) << text;
    EXPECT_EQ(di.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(di.status().message().rfind("ctx/.dockerignore:2: ", 0), 0u)
        << di.status().message();
  }
  EXPECT_TRUE(DockerIgnore::Parse("").ok());
  EXPECT_TRUE(DockerIgnore::Parse("# only\n\n")->empty());
}

TEST(DockerIgnore, MayReincludeUnderOnlyWhereAnExceptionReaches) {
  struct R {
    const char* patterns;
    const char* dir;
    bool descend;
  } cases[] = {
      {"dir\n!dir/keep\n", "dir", true},
      {"dir\n!dir/keep\n", "other", false},
      {"dir\n!dir/keep\n", "dir/sub", false},
      {"dir\n!dir/*/keep\n", "dir/sub", true},
      {"dir\n!dir/*/keep\n", "dir/sub/deeper", false},
      {"dir\n!**/keep\n", "dir/a/b", true},
      {"dir\n!d[a-j]r/x\n", "dir", true},
      {"dir\n!d[k-z]r/x\n", "dir", false},
      {"dir\n", "dir", false},
      {"*\n!src/**/*.c\n", "src/lib/deep", true},
      {"*\n!src/**/*.c\n", "docs", false},
  };
  for (const R& c : cases) {
    StatusOr<DockerIgnore> di = DockerIgnore::Parse(c.patterns);
    ASSERT_TRUE(di.ok());
    EXPECT_EQ(di->MayReincludeUnder(c.dir), c.descend) << c.patterns << " under " << c.dir;
  }
}

class IgnoreFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = ::testing::TempDir() + "/ignore-" + std::to_string(getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::remove_all(root_);
    fs::create_directories(root_ + "/dir/sub");
    fs::create_directories(root_ + "/build");
    Write("Dockerfile", "FROM scratch\n");
    Write("dir/a.txt", "a\n");
    Write("dir/keep.txt", "keep\n");
    Write("dir/sub/b.txt", "b\n");
    Write("dir/sub/keep.txt", "deep keep\n");
    Write("top.txt", "top\n");
  }
  void TearDown() override { fs::remove_all(root_); }
  void Write(const std::string& rel, const std::string& content) {
    std::ofstream(root_ + "/" + rel) << content;
  }
  // Hashes the context with `di` as docker build's client applies it; returns the tree.
  ContextTree Hash(const DockerIgnore& di) {
    StatusOr<Digest> root = HashContextDir(
        root_, [&](const std::string& p) { return di.Excluded(p); },
        [&](ContextBlob b) {
          if (!b.path.empty()) {
            EXPECT_TRUE(cache_.PutFile(b.path, b.digest).ok());
          } else {
            EXPECT_TRUE(cache_.PutBytes(b.bytes).ok());
          }
        },
        [&](const std::string& p) { return di.MayReincludeUnder(p); });
    EXPECT_TRUE(root.ok()) << root.status().ToString();
    return ContextTree(cache_, *root);
  }
  bool Has(ContextTree& tree, const std::string& path) {
    auto e = tree.Lookup(path);
    EXPECT_TRUE(e.ok()) << e.status().ToString();
    return e.ok() && e->has_value();
  }

  std::string root_;
  testing::FakeCacheClient cache_;
};

TEST_F(IgnoreFilesTest, ExceptionUnderAnExcludedDirectoryIsReincluded) {
  StatusOr<DockerIgnore> di = DockerIgnore::Parse("dir\n!dir/keep.txt\n!dir/*/keep.txt\n");
  ASSERT_TRUE(di.ok());
  ContextTree tree = Hash(*di);
  EXPECT_TRUE(Has(tree, "dir/keep.txt"));
  EXPECT_TRUE(Has(tree, "dir/sub/keep.txt"));
  EXPECT_FALSE(Has(tree, "dir/a.txt"));
  EXPECT_FALSE(Has(tree, "dir/sub/b.txt"));
  EXPECT_TRUE(Has(tree, "top.txt"));
}

TEST_F(IgnoreFilesTest, ExcludedDirectoryWithNoMatchingExceptionIsLeftOutWhole) {
  StatusOr<DockerIgnore> di = DockerIgnore::Parse("dir\n!dir/nothing-here\n");
  ASSERT_TRUE(di.ok());
  ContextTree tree = Hash(*di);
  EXPECT_FALSE(Has(tree, "dir"));
  EXPECT_TRUE(Has(tree, "top.txt"));
  // And the same tree as if there were no exception at all.
  StatusOr<DockerIgnore> plain = DockerIgnore::Parse("dir\n");
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(tree.root(), Hash(*plain).root());
}

TEST_F(IgnoreFilesTest, DockerfileSpecificIgnoreFileTakesPrecedence) {
  // No ignore file at all.
  StatusOr<DockerIgnore> none = LoadDockerIgnore(root_, "");
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());

  Write(".dockerignore", "top.txt\n");
  StatusOr<DockerIgnore> plain = LoadDockerIgnore(root_, "");
  ASSERT_TRUE(plain.ok());
  EXPECT_TRUE(plain->Excluded("top.txt"));

  // <context>/Dockerfile.dockerignore wins for the default Dockerfile.
  Write("Dockerfile.dockerignore", "dir\n");
  StatusOr<DockerIgnore> specific = LoadDockerIgnore(root_, "");
  ASSERT_TRUE(specific.ok());
  EXPECT_TRUE(specific->Excluded("dir/a.txt"));
  EXPECT_FALSE(specific->Excluded("top.txt"));

  // -f build/app.Dockerfile: build/app.Dockerfile.dockerignore, next to the Dockerfile.
  Write("build/app.Dockerfile", "FROM scratch\n");
  StatusOr<DockerIgnore> other = LoadDockerIgnore(root_, root_ + "/build/app.Dockerfile");
  ASSERT_TRUE(other.ok());
  EXPECT_TRUE(other->Excluded("top.txt"));  // falls back to the context's .dockerignore
  Write("build/app.Dockerfile.dockerignore", "*.txt\n");
  other = LoadDockerIgnore(root_, root_ + "/build/app.Dockerfile");
  ASSERT_TRUE(other.ok());
  EXPECT_TRUE(other->Excluded("top.txt"));
  EXPECT_FALSE(other->Excluded("dir/a.txt"));

  // A Dockerfile from stdin has only the context's file.
  StatusOr<DockerIgnore> stdin_df = LoadDockerIgnore(root_, "-");
  ASSERT_TRUE(stdin_df.ok());
  EXPECT_FALSE(stdin_df->Excluded("dir/a.txt"));
  EXPECT_TRUE(stdin_df->Excluded("top.txt"));

  // A malformed file is an error naming it.
  Write("Dockerfile.dockerignore", "ok\n[bad\n");
  StatusOr<DockerIgnore> bad = LoadDockerIgnore(root_, "");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("Dockerfile.dockerignore:2: "), std::string::npos)
      << bad.status().message();
}

}  // namespace
}  // namespace stagefarm
