#include "stagefarm/common/git_source.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <set>
#include <sstream>

#include "stagefarm/common/remote_file.h"
#include "support/process.h"

namespace stagefarm {
namespace {

// Which sources BuildKit's dfgitutil.ParseGitRef reads as git repositories.
TEST(GitSource, TellsRepositoriesFromFilesAndPathsAsBuildKitDoes) {
  for (const char* source :
       {"https://example.com/foo.git", "http://127.0.0.1:8080/repo.git#main:docs",
        "https://h/r.git?ref=v1", "HTTPS://h/r.git", "git://example.com/foo", "git://h:9418/x",
        "ssh://git@github.com/moby/buildkit", "git@github.com:moby/buildkit",
        "git@bitbucket.org:team/repo.git?subdir=x#v1", "my-user_1@host.example-1:path"}) {
    EXPECT_TRUE(IsGitSource(source)) << source;
    EXPECT_TRUE(IsRemoteUrl(source)) << source;
  }
  for (const char* source :
       {"https://example.com/", "https://example.com/foo", "https://example.com/foo.git/",
        "https://example.com/foo.git.bar", "http://github.com/docker/docker.git:#branch",
        "github.com/moby/buildkit", "./x.git", "../x.git", ".git", "repo.git", "ftp://h/r.git",
        "file:///tmp/r.git", "git@:path", "us er@host:path", "git://h:port/x"}) {
    EXPECT_FALSE(IsGitSource(source)) << source;
  }
  // Still a file: an http(s) URL whose path does not end in .git.
  EXPECT_TRUE(IsRemoteUrl("https://example.com/foo.git/"));
}

TEST(GitSource, ParsesFragmentsAndTheQueryForm) {
  struct Case {
    const char* source;
    GitRef want;
  };
  const Case cases[] = {
      {"https://h/foo.git", {.remote = "https://h/foo.git"}},
      {"https://h/foo.git#release/1.2", {.remote = "https://h/foo.git", .ref = "release/1.2"}},
      {"https://h/bar.git#baz/qux:quux/quuz",
       {.remote = "https://h/bar.git", .ref = "baz/qux", .subdir = "quux/quuz"}},
      {"https://h/d.git#:myfolder", {.remote = "https://h/d.git", .subdir = "myfolder"}},
      {"https://u:p@h/d.git", {.remote = "https://u:p@h/d.git"}},
      {"https://h/d.git?ref=v1.0.0&subdir=/sub",
       {.remote = "https://h/d.git", .ref = "v1.0.0", .subdir = "/sub"}},
      {"https://h/d.git?subdir=/sub#v1.0.0",
       {.remote = "https://h/d.git", .ref = "v1.0.0", .subdir = "/sub"}},
      {"https://h/d.git?tag=v1", {.remote = "https://h/d.git", .ref = "refs/tags/v1"}},
      {"https://h/d.git?tag=refs/tags/v1", {.remote = "https://h/d.git", .ref = "refs/tags/v1"}},
      {"https://h/d.git?branch=v1.0", {.remote = "https://h/d.git", .ref = "refs/heads/v1.0"}},
      {"https://h/d.git?tag=v1#refs/tags/v1", {.remote = "https://h/d.git", .ref = "refs/tags/v1"}},
      {"https://h/d.git?commit=abc", {.remote = "https://h/d.git", .checksum = "abc"}},
      {"https://h/d.git?checksum=abc&ref=main",
       {.remote = "https://h/d.git", .ref = "main", .checksum = "abc"}},
      {"https://h/d.git?keep-git-dir&submodules",
       {.remote = "https://h/d.git", .keep_git_dir = true, .submodules = true}},
      {"https://h/d.git?keep-git-dir=false&submodules=0",
       {.remote = "https://h/d.git", .keep_git_dir = false, .submodules = false}},
      {"https://h/d.git?subdir=a%20b+c", {.remote = "https://h/d.git", .subdir = "a b c"}},
      {"https://h/d.git#a%2Fb", {.remote = "https://h/d.git", .ref = "a/b"}},
      {"git://h/foo#v1:docs", {.remote = "git://h/foo", .ref = "v1", .subdir = "docs"}},
      {"git@github.com:moby/buildkit.git?subdir=/sub#v1",
       {.remote = "git@github.com:moby/buildkit.git", .ref = "v1", .subdir = "/sub"}},
      {"git@h:p#frag?x", {.remote = "git@h:p", .ref = "frag?x"}},
  };
  for (const Case& c : cases) {
    StatusOr<GitRef> got = ParseGitRef(c.source);
    ASSERT_TRUE(got.ok()) << c.source << ": " << got.status().ToString();
    EXPECT_EQ(*got, c.want) << c.source;
  }
}

TEST(GitSource, RefusesTheQueriesBuildKitRefuses) {
  const std::pair<const char*, const char*> cases[] = {
      {"https://h/d.git?ref=v1.0.0#v1.2.3", "ref conflicts: \"v1.2.3\" vs \"v1.0.0\""},
      {"https://h/d.git?ref=v1&tag=v2", "ref conflicts: \"v1\" vs \"refs/tags/v2\""},
      {"https://h/d.git?tag=v1&branch=main", "branch conflicts with tag"},
      {"https://h/d.git?invalid=123", "unexpected query \"invalid\""},
      {"https://h/d.git?ref=", "query \"ref\" has no value"},
      {"https://h/d.git?ref=a&ref=b", "query \"ref\" has multiple values"},
      {"https://h/d.git?subdir=a#:b", "subdir conflicts: \"b\" vs \"a\""},
      {"https://h/d.git?keep-git-dir=maybe", "invalid keep-git-dir value: \"maybe\""},
      {"git@h:r?submodules=2", "invalid submodules value: \"2\""},
  };
  for (const auto& [source, message] : cases) {
    EXPECT_TRUE(IsGitSource(source)) << source;
    StatusOr<GitRef> got = ParseGitRef(source);
    ASSERT_FALSE(got.ok()) << source;
    EXPECT_EQ(got.status().code(), StatusCode::kInvalidArgument) << source;
    EXPECT_EQ(got.status().message(), message) << source;
  }
}

TEST(GitSource, AddFlagsMustAgreeWithTheQuery) {
  GitRef plain{.remote = "git://h/r"};
  GitRef with_query{.remote = "git://h/r", .checksum = "abc", .keep_git_dir = true};
  auto ok = WithAddFlags(plain, "abc", true);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(*ok, with_query);
  EXPECT_EQ(*WithAddFlags(with_query, "abc", true), with_query);
  EXPECT_EQ(*WithAddFlags(with_query, "", std::nullopt), with_query);
  EXPECT_EQ(WithAddFlags(with_query, "abd", std::nullopt).status().message(),
            "checksum mismatch \"abd\" != \"abc\"");
  EXPECT_EQ(WithAddFlags(with_query, "", false).status().message(),
            "inconsistent keep-git-dir configuration");
  EXPECT_TRUE(CheckGitChecksum("e0b5ce6f", "e0b5ce6fe5308b793cfd6b388255fb3d93322cd6").ok());
  EXPECT_EQ(CheckGitChecksum("E0B5", "e0b5ce6fe5308b793cfd6b388255fb3d93322cd6").message(),
            "expected checksum to match E0B5, got e0b5ce6fe5308b793cfd6b388255fb3d93322cd6");
}

// Checkouts of the fixture repositories, by their paths (git's file transport).
class GitCheckoutTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    repos_ = new testing::TempDir();
    std::string out, err;
    ASSERT_EQ(
        testing::RunCommand(
            {std::string(STAGEFARM_SOURCE_DIR) + "/tests/fixtures/make-git-repos", repos_->path()},
            &out, &err),
        0)
        << err;
    std::istringstream lines(out);
    for (std::string name, sha; lines >> name >> sha;) (*commits_)[name] = sha;
  }
  static void TearDownTestSuite() {
    delete repos_;
    repos_ = nullptr;
  }

  // Checks `ref` of repo.git out into a fresh directory, returned in *dir.
  StatusOr<GitCheckout> Checkout(GitRef ref, std::string* dir) {
    ref.remote = repos_->path() + "/repo.git";
    const std::string base = tmp_.path() + "/" + std::to_string(n_++);
    *dir = base + "/tree";
    std::filesystem::create_directories(base + "/scratch");
    std::filesystem::create_directories(*dir);
    return CheckoutGitRef(ref, base + "/scratch", *dir);
  }
  static std::set<std::string> Tree(const std::string& root) {
    std::set<std::string> out;
    for (const auto& e : std::filesystem::recursive_directory_iterator(root)) {
      out.insert(e.path().lexically_relative(root).string());
    }
    return out;
  }
  static std::string Commit(const std::string& name) { return commits_->at(name); }

  static testing::TempDir* repos_;
  static std::map<std::string, std::string>* commits_;
  testing::TempDir tmp_;
  int n_ = 0;
};

testing::TempDir* GitCheckoutTest::repos_ = nullptr;
std::map<std::string, std::string>* GitCheckoutTest::commits_ =
    new std::map<std::string, std::string>();

TEST_F(GitCheckoutTest, ChecksOutTheDefaultBranchABranchTagsAndACommit) {
  const std::pair<std::string, std::string> cases[] = {{"", "repo:main"},
                                                       {"feature", "repo:feature"},
                                                       {"v1", "repo:v1"},
                                                       {"v2", "repo:v2"},
                                                       {"refs/tags/v2", "repo:v2"},
                                                       {"refs/heads/main", "repo:main"},
                                                       {Commit("repo:v1"), "repo:v1"}};
  for (const auto& [ref, want] : cases) {
    std::string dir;
    StatusOr<GitCheckout> got = Checkout({.ref = ref}, &dir);
    ASSERT_TRUE(got.ok()) << ref << ": " << got.status().ToString();
    EXPECT_EQ(got->commit, Commit(want)) << ref;
    EXPECT_FALSE(std::filesystem::exists(dir + "/.git")) << ref;
    EXPECT_TRUE(std::filesystem::exists(dir + "/bin/hello.sh")) << ref;
  }
  std::string dir;
  StatusOr<GitCheckout> v1 = Checkout({.ref = "v1"}, &dir);
  ASSERT_TRUE(v1.ok());
  EXPECT_EQ(v1->commit_time, 1609459200);  // 2021-01-01T00:00:00Z
  EXPECT_EQ(Tree(dir), (std::set<std::string>{
                           "README.md", "bin", "bin/hello.sh", "docs", "docs/guide.txt",
                           "docs/nested", "docs/nested/deep.txt", "docs/up", "link-to-readme"}));
  EXPECT_EQ(
      std::filesystem::status(dir + "/bin/hello.sh").permissions() & std::filesystem::perms::all,
      std::filesystem::perms(0755));
  EXPECT_EQ(std::filesystem::read_symlink(dir + "/docs/up"), "../README.md");
}

TEST_F(GitCheckoutTest, KeepsASubdirectoryAlone) {
  for (const std::string subdir : {"docs", "/docs", "docs/", "./docs/../docs"}) {
    std::string dir;
    StatusOr<GitCheckout> got = Checkout({.ref = "v1", .subdir = subdir}, &dir);
    ASSERT_TRUE(got.ok()) << subdir << ": " << got.status().ToString();
    EXPECT_EQ(Tree(dir), (std::set<std::string>{"guide.txt", "nested", "nested/deep.txt", "up"}))
        << subdir;
  }
  for (const std::string subdir : {"/", "."}) {
    std::string dir;
    ASSERT_TRUE(Checkout({.ref = "v1", .subdir = subdir}, &dir).ok()) << subdir;
    EXPECT_TRUE(std::filesystem::exists(dir + "/README.md")) << subdir;
  }
  std::string dir;
  EXPECT_EQ(Checkout({.ref = "v1", .subdir = "nope"}, &dir).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(Checkout({.ref = "v1", .subdir = "README.md"}, &dir).status().message(),
            "failed to open subdir README.md: not a directory");
  // Neither ".." nor a link leads out of the checkout.
  EXPECT_EQ(Checkout({.ref = "v1", .subdir = "../../.."}, &dir).status().message(),
            "failed to open subdir ../../..: it is outside the repository");
  EXPECT_EQ(Checkout({.ref = "v1", .subdir = "docs/up"}, &dir).status().message(),
            "failed to open subdir docs/up: not a directory");
}

TEST_F(GitCheckoutTest, ChecksumIsACommitPrefixCheckedAsBuildKitDoes) {
  const std::string main = Commit("repo:main");
  std::string dir;
  EXPECT_TRUE(Checkout({.ref = "main", .checksum = main.substr(0, 7)}, &dir).ok());
  EXPECT_TRUE(Checkout({.checksum = main}, &dir).ok());
  EXPECT_EQ(Checkout({.ref = "main", .checksum = Commit("repo:v1")}, &dir).status().message(),
            "expected checksum to match " + Commit("repo:v1") + ", got " + main);
  EXPECT_EQ(Checkout({.ref = "main", .checksum = "sha256:ab"}, &dir).status().message(),
            "invalid checksum sha256:ab for Git URL, expected hex commit hash");
  // An annotated tag: a commit prefix passes ls-remote's check, but then BuildKit checks what the
  // fetched tag names (the tag object), and a full hash skips the first check.
  const std::string v2 = Commit("repo:v2"), tag = Commit("repo:v2-tag-object");
  EXPECT_EQ(Checkout({.ref = "v2", .checksum = v2.substr(0, 8)}, &dir).status().message(),
            "expected checksum to match " + v2.substr(0, 8) + ", got " + tag);
  EXPECT_EQ(Checkout({.ref = "v2", .checksum = v2}, &dir).status().message(),
            "expected checksum to match " + v2 + ", got " + tag);
  StatusOr<GitCheckout> by_tag = Checkout({.ref = "v2", .checksum = tag}, &dir);
  ASSERT_TRUE(by_tag.ok()) << by_tag.status().ToString();
  EXPECT_EQ(by_tag->commit, v2);
  EXPECT_EQ(Checkout({.ref = "v2", .checksum = tag, .keep_git_dir = true}, &dir).status().message(),
            "expected checksum to match " + tag + ", got " + v2);
}

TEST_F(GitCheckoutTest, KeepGitDirIsADepthOneCloneAtADetachedHead) {
  std::string dir;
  StatusOr<GitCheckout> got = Checkout({.ref = "feature", .keep_git_dir = true}, &dir);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  const std::string feature = Commit("repo:feature");
  EXPECT_EQ(testing::ReadFileOrEmpty(dir + "/.git/HEAD"), feature + "\n");
  EXPECT_EQ(testing::ReadFileOrEmpty(dir + "/.git/shallow"), feature + "\n");
  EXPECT_EQ(testing::ReadFileOrEmpty(dir + "/.git/refs/heads/feature"), feature + "\n");
  EXPECT_NE(testing::ReadFileOrEmpty(dir + "/.git/config")
                .find("url = " + repos_->path() + "/repo.git\n"),
            std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(dir + "/.git/FETCH_HEAD"));
  EXPECT_EQ(testing::ReadFileOrEmpty(dir + "/feature.txt"), "feature branch\n");
  // A commit: no ref at all, only HEAD.
  got = Checkout({.ref = Commit("repo:v1"), .keep_git_dir = true}, &dir);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(testing::ReadFileOrEmpty(dir + "/.git/HEAD"), Commit("repo:v1") + "\n");
  EXPECT_TRUE(std::filesystem::is_empty(dir + "/.git/refs/heads"));
  EXPECT_TRUE(std::filesystem::is_empty(dir + "/.git/refs/tags"));
  // With a subdirectory there is no .git.
  got = Checkout({.ref = "v1", .subdir = "docs", .keep_git_dir = true}, &dir);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_FALSE(std::filesystem::exists(dir + "/.git"));
}

TEST_F(GitCheckoutTest, AMissingRefOrRepositoryIsAnErrorNamingIt) {
  std::string dir;
  Status s = Checkout({.ref = "nosuch"}, &dir).status();
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(s.message(), "repository does not contain ref nosuch, output: \"\"");
  // A ref git would read as an option, even where ls-remote does not check it first.
  s = Checkout({.ref = "--upload-pack=touch /tmp/x", .checksum = Commit("repo:v1")}, &dir).status();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("invalid git ref \"--upload-pack=touch /tmp/x\""), std::string::npos);
  // A short hash is no ref to ls-remote (BuildKit's "v2 ref by commit (short)").
  s = Checkout({.ref = Commit("repo:v1").substr(0, 8)}, &dir).status();
  EXPECT_NE(s.message().find("repository does not contain ref "), std::string::npos);
  GitRef missing{.remote = tmp_.path() + "/nowhere.git"};
  std::filesystem::create_directories(tmp_.path() + "/m/scratch");
  std::filesystem::create_directories(tmp_.path() + "/m/tree");
  s = CheckoutGitRef(missing, tmp_.path() + "/m/scratch", tmp_.path() + "/m/tree").status();
  EXPECT_NE(s.message().find("error fetching default branch for repository " + tmp_.path() +
                             "/nowhere.git: git ls-remote: "),
            std::string::npos)
      << s.ToString();
}

}  // namespace
}  // namespace stagefarm
