// ADD of a git repository end to end on the embedded farm, against the fixture repositories of
// tests/fixtures/make-git-repos served over dumb http and git:// on 127.0.0.1 (GitServer), with
// what BuildKit v0.24 gives for the same Dockerfiles: the tree of the branch, tag (lightweight or
// annotated), commit or default branch, a subdirectory alone, the query form, submodules, .git
// only with --keep-git-dir (BuildKit's depth-1 clone at a detached HEAD), files owned 0:0 unless
// --chown, directories 0755 and --chmod on everything but links; --checksum as a commit prefix;
// the cache key follows the commit, not the ref's name; errors name the Dockerfile line.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>

#include "support/git_server.h"
#include "support/images.h"
#include "support/process.h"

namespace stagefarm::testing {
namespace {

const std::string kBin = STAGEFARM_BINARY;
namespace fs = std::filesystem;

struct Stat {
  bool exists = false;
  mode_t type = 0;
  unsigned mode = 0;  // permission bits
  uid_t uid = 0;
  gid_t gid = 0;
  int64_t mtime = 0;
};

Stat StatPath(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return {};
  return {true, st.st_mode & S_IFMT, st.st_mode & 07777u, st.st_uid, st.st_gid, st.st_mtim.tv_sec};
}

std::string LinkTarget(const std::string& path) {
  std::error_code ec;
  return fs::read_symlink(path, ec).string();
}

// The paths below `root`, relative to it, sorted.
std::set<std::string> Tree(const std::string& root) {
  std::set<std::string> out;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(root, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    out.insert(it->path().lexically_relative(root).string());
  }
  return out;
}

class AddGitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(git_.ok());
    ASSERT_TRUE(ImportBusybox(Env()));
    fs::create_directories(D() + "/ctx");
  }

  std::vector<std::string> Env() const { return {"STAGEFARM_HOME=" + D() + "/home"}; }
  std::string D() const { return dir_.path(); }

  // Builds `text` (with {http} and {git} replaced by the servers' URLs) into out/, the image's
  // filesystem. Returns the exit code; `err` gets the build's output.
  int Build(const std::string& text, std::string* err) {
    std::string dockerfile = std::regex_replace(text, std::regex(R"(\{http\})"), git_.http_url());
    dockerfile = std::regex_replace(dockerfile, std::regex(R"(\{git\})"), git_.git_url());
    std::ofstream(D() + "/ctx/Dockerfile", std::ios::trunc) << dockerfile;
    fs::remove_all(D() + "/out");
    err->clear();
    return RunCommand(
        {kBin, "build", "--progress=plain", "-o", "type=local,dest=" + D() + "/out", D() + "/ctx"},
        nullptr, err, Env());
  }
  std::string Out(const std::string& path) const { return ReadFileOrEmpty(D() + "/out" + path); }

  GitServer git_;
  TempDir dir_;
};

TEST_F(AddGitTest, BranchTagCommitDefaultBranchSubdirAndQueryFormOverHttpAndGitDaemon) {
  const std::string v1 = git_.Commit("repo:v1");
  ASSERT_EQ(v1.size(), 40u);
  std::string err;
  ASSERT_EQ(Build("FROM busybox\n"
                  "ADD {http}/repo.git#feature /feature\n"
                  "ADD {git}/repo.git /default\n"
                  "ADD {http}/repo.git#v1 /v1\n"
                  "ADD {git}/repo.git#v2 /v2\n"
                  "ADD {http}/repo.git#" +
                      v1 +
                      " /commit/\n"
                      "ADD {http}/repo.git#v1:docs /docs\n"
                      "ADD {git}/repo.git?branch=feature&subdir=docs /q-docs\n"
                      "ADD {http}/repo.git?tag=v2 /q-tag\n"
                      "ADD {http}/repo.git?ref=" +
                      v1 +
                      " /q-ref\n"
                      "ADD --chown=1:2 --chmod=0700 {http}/repo.git#v1 /owned\n"
                      "RUN mkdir -m 1777 /exists\n"
                      "ADD {http}/repo.git#v1 /exists\n",
                  &err),
            0)
      << err;
  // The branch's tree, files 0644 or 0755 as git records them, links as links, no .git.
  EXPECT_EQ(Out("/feature/feature.txt"), "feature branch\n");
  EXPECT_EQ(Out("/feature/docs/guide.txt"), "guide feature\n");
  EXPECT_EQ(Tree(D() + "/out/feature"),
            (std::set<std::string>{"README.md", "bin", "bin/hello.sh", "docs", "docs/guide.txt",
                                   "docs/nested", "docs/nested/deep.txt", "docs/up", "feature.txt",
                                   "link-to-readme"}));
  for (const auto& [path, mode] : std::map<std::string, unsigned>{{"/feature", 0755},
                                                                  {"/feature/README.md", 0644},
                                                                  {"/feature/bin", 0755},
                                                                  {"/feature/bin/hello.sh", 0755},
                                                                  {"/feature/docs/nested", 0755}}) {
    Stat st = StatPath(D() + "/out" + path);
    EXPECT_EQ(st.mode, mode) << path;
    EXPECT_EQ(st.uid, 0u) << path;
    EXPECT_EQ(st.gid, 0u) << path;
  }
  EXPECT_EQ(StatPath(D() + "/out/feature/link-to-readme").type, S_IFLNK);
  EXPECT_EQ(LinkTarget(D() + "/out/feature/link-to-readme"), "README.md");
  EXPECT_EQ(LinkTarget(D() + "/out/feature/docs/up"), "../README.md");
  // Every file has the commit's time (2021-01-02 for feature).
  EXPECT_EQ(StatPath(D() + "/out/feature/feature.txt").mtime, 1609545600);
  // The remote's default branch (main), a lightweight and an annotated tag, a commit.
  EXPECT_EQ(Out("/default/README.md"), "repo v3\n");
  EXPECT_EQ(Out("/v1/README.md"), "repo v1\n");
  EXPECT_FALSE(fs::exists(D() + "/out/v1/docs/new.txt"));
  EXPECT_EQ(Out("/v2/README.md"), "repo v2\n");
  EXPECT_EQ(Out("/v2/docs/new.txt"), "new in v2\n");
  EXPECT_EQ(Out("/commit/README.md"), "repo v1\n");
  // A subdirectory alone, its links kept as they are.
  EXPECT_EQ(Tree(D() + "/out/docs"),
            (std::set<std::string>{"guide.txt", "nested", "nested/deep.txt", "up"}));
  EXPECT_EQ(LinkTarget(D() + "/out/docs/up"), "../README.md");
  EXPECT_EQ(Out("/q-docs/guide.txt"), "guide feature\n");
  EXPECT_FALSE(fs::exists(D() + "/out/q-docs/README.md"));
  EXPECT_EQ(Out("/q-tag/README.md"), "repo v2\n");
  EXPECT_EQ(Out("/q-ref/README.md"), "repo v1\n");
  // --chown on everything, --chmod on everything but links (the new destination too).
  for (const std::string path : {"/owned", "/owned/README.md", "/owned/bin", "/owned/docs/up"}) {
    Stat st = StatPath(D() + "/out" + path);
    EXPECT_EQ(st.uid, 1u) << path;
    EXPECT_EQ(st.gid, 2u) << path;
    if (st.type != S_IFLNK) {
      EXPECT_EQ(st.mode, 0700u) << path;
    }
  }
  // An existing destination keeps its own mode.
  EXPECT_EQ(StatPath(D() + "/out/exists").mode, 01777u);
  EXPECT_EQ(Out("/exists/README.md"), "repo v1\n");
  for (const std::string dir : {"feature", "default", "v1", "v2", "docs", "q-tag"}) {
    EXPECT_FALSE(fs::exists(D() + "/out/" + dir + "/.git")) << dir;
  }
}

TEST_F(AddGitTest, KeepGitDirGivesBuildKitsShallowCloneAtADetachedHead) {
  std::string err;
  ASSERT_EQ(Build("FROM busybox\n"
                  "ADD --keep-git-dir=true {http}/repo.git#feature /k\n"
                  "ADD {git}/repo.git?tag=v2&keep-git-dir=true /q\n"
                  "ADD {http}/repo.git?keep-git-dir=true&subdir=docs /sub\n",
                  &err),
            0)
      << err;
  const std::string feature = git_.Commit("repo:feature");
  EXPECT_EQ(Out("/k/.git/HEAD"), feature + "\n");
  EXPECT_EQ(Out("/k/.git/shallow"), feature + "\n");
  EXPECT_EQ(Out("/k/.git/refs/heads/feature"), feature + "\n");
  EXPECT_EQ(Out("/k/.git/refs/tags/feature"), feature + "\n");
  EXPECT_EQ(Out("/k/.git/config"),
            "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n"
            "\tlogallrefupdates = true\n[remote \"origin\"]\n\turl = " +
                git_.http_url() + "/repo.git\n\tfetch = +refs/heads/*:refs/remotes/origin/*\n");
  EXPECT_FALSE(fs::exists(D() + "/out/k/.git/FETCH_HEAD"));
  // What BuildKit's .git holds besides the hook samples, the index and the loose objects.
  std::set<std::string> git_dir;
  for (const std::string& p : Tree(D() + "/out/k/.git")) {
    if (!p.starts_with("hooks/") && !p.starts_with("objects/")) git_dir.insert(p);
  }
  EXPECT_EQ(git_dir, (std::set<std::string>{"HEAD",
                                            "branches",
                                            "config",
                                            "description",
                                            "hooks",
                                            "index",
                                            "info",
                                            "info/exclude",
                                            "logs",
                                            "logs/HEAD",
                                            "logs/refs",
                                            "logs/refs/heads",
                                            "logs/refs/heads/feature",
                                            "objects",
                                            "refs",
                                            "refs/heads",
                                            "refs/heads/feature",
                                            "refs/tags",
                                            "refs/tags/feature",
                                            "shallow"}));
  // Objects as git writes them, read-only.
  EXPECT_EQ(
      StatPath(D() + "/out/k/.git/objects/" + feature.substr(0, 2) + "/" + feature.substr(2)).mode,
      0444u);
  // An annotated tag from the query: HEAD at its commit, the tag under the name asked for.
  const std::string v2 = git_.Commit("repo:v2");
  EXPECT_EQ(Out("/q/.git/HEAD"), v2 + "\n");
  EXPECT_EQ(Out("/q/.git/refs/tags/refs/tags/v2"), git_.Commit("repo:v2-tag-object") + "\n");
  EXPECT_NE(Out("/q/.git/config").find("url = " + git_.git_url() + "/repo.git\n"),
            std::string::npos);
  // With a subdir there is no .git (BuildKit keeps it only for the whole repository).
  EXPECT_EQ(Out("/sub/guide.txt"), "guide v1\n");
  EXPECT_FALSE(fs::exists(D() + "/out/sub/.git"));
}

TEST_F(AddGitTest, SubmodulesAreCheckedOutUnlessTheQueryTurnsThemOff) {
  std::string err;
  ASSERT_EQ(Build("FROM busybox\n"
                  "ADD {git}/super.git /with\n"
                  "ADD {http}/super.git?submodules=false /without\n",
                  &err),
            0)
      << err;
  // lib at the commit super.git records, from ../lib.git next to it on the same server.
  EXPECT_EQ(Out("/with/lib/lib.txt"), "library\n");
  EXPECT_EQ(Out("/with/README.md"), "super\n");
  EXPECT_EQ(StatPath(D() + "/out/without/lib").type, S_IFDIR);
  EXPECT_TRUE(Tree(D() + "/out/without/lib").empty());
}

TEST_F(AddGitTest, ChecksumIsACommitPrefixAndAMismatchNamesTheLine) {
  const std::string main = git_.Commit("repo:main"), v1 = git_.Commit("repo:v1");
  std::string err;
  ASSERT_EQ(Build("FROM busybox\n"
                  "ADD --checksum=" +
                      main.substr(0, 8) +
                      " {http}/repo.git#main /short\n"
                      "ADD --checksum=" +
                      v1 +
                      " {git}/repo.git#v1 /full\n"
                      "ADD {http}/repo.git?commit=" +
                      main.substr(0, 12) + " /query\n",
                  &err),
            0)
      << err;
  EXPECT_EQ(Out("/short/README.md"), "repo v3\n");
  EXPECT_EQ(Out("/full/README.md"), "repo v1\n");
  EXPECT_EQ(Out("/query/README.md"), "repo v3\n");

  EXPECT_NE(
      Build("FROM busybox\nRUN true\nADD --checksum=" + v1 + " {http}/repo.git#main /x\n", &err),
      0);
  EXPECT_TRUE(std::regex_search(err, std::regex("Dockerfile:3: ADD --checksum=" + v1 +
                                                " http://127.0.0.1:\\d+/repo.git#main "
                                                "/x: expected checksum to match " +
                                                v1 + ", got " + main)))
      << err;
  // Case matters, as in BuildKit.
  std::string upper = main.substr(0, 8);
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  EXPECT_NE(Build("FROM busybox\nADD --checksum=" + upper + " {git}/repo.git /x\n", &err), 0);
  EXPECT_NE(err.find("expected checksum to match " + upper + ", got " + main), std::string::npos)
      << err;
  EXPECT_NE(Build("FROM busybox\nADD --checksum=sha256:abc {http}/repo.git /x\n", &err), 0);
  EXPECT_TRUE(
      std::regex_search(err, std::regex("Dockerfile:2: ADD .*: invalid checksum "
                                        "sha256:abc for Git URL, expected hex commit hash")))
      << err;
  EXPECT_NE(Build("FROM busybox\nADD --checksum=abc {http}/repo.git?commit=abd /x\n", &err), 0);
  EXPECT_NE(err.find("Dockerfile:2: ADD --checksum=abc "), std::string::npos) << err;
  EXPECT_NE(err.find(": checksum mismatch \"abc\" != \"abd\""), std::string::npos) << err;
}

TEST_F(AddGitTest, BadRefsAndQueriesFailNamingTheLine) {
  std::string err;
  EXPECT_NE(Build("FROM busybox\nADD {http}/repo.git#nosuch /x\n", &err), 0);
  EXPECT_TRUE(std::regex_search(err, std::regex("Dockerfile:2: ADD http://127.0.0.1:\\d+/repo.git#"
                                                "nosuch /x: repository does not contain ref "
                                                "nosuch")))
      << err;
  EXPECT_NE(Build("FROM busybox\nADD {git}/repo.git#v1:nosuchdir /x\n", &err), 0);
  EXPECT_NE(err.find("Dockerfile:2: ADD "), std::string::npos) << err;
  EXPECT_NE(err.find("failed to open subdir nosuchdir"), std::string::npos) << err;
  EXPECT_NE(Build("FROM busybox\nADD {git}/repo.git#v1:README.md /x\n", &err), 0);
  EXPECT_NE(err.find("failed to open subdir README.md: not a directory"), std::string::npos) << err;
  EXPECT_NE(Build("FROM busybox\nADD {git}/repo.git#v1:../../etc /x\n", &err), 0);
  EXPECT_NE(err.find("failed to open subdir ../../etc"), std::string::npos) << err;
  EXPECT_NE(Build("FROM busybox\nADD {http}/repo.git?foo=bar /x\n", &err), 0);
  EXPECT_NE(err.find("Dockerfile:2: ADD "), std::string::npos) << err;
  EXPECT_NE(err.find(": unexpected query \"foo\""), std::string::npos) << err;
  EXPECT_NE(Build("FROM busybox\nADD {http}/repo.git?tag=v1&branch=main /x\n", &err), 0);
  EXPECT_NE(err.find(": branch conflicts with tag"), std::string::npos) << err;
  EXPECT_NE(Build("FROM busybox\nADD --keep-git-dir=false {http}/repo.git?keep-git-dir /x\n", &err),
            0);
  EXPECT_NE(err.find(": inconsistent keep-git-dir configuration"), std::string::npos) << err;
  EXPECT_NE(Build("FROM busybox\nCOPY {http}/repo.git /x\n", &err), 0);
  EXPECT_NE(err.find("Dockerfile:2: COPY "), std::string::npos) << err;
  EXPECT_NE(err.find("source can't be a git ref for COPY"), std::string::npos) << err;
  EXPECT_NE(Build("FROM busybox\nADD http://127.0.0.1:1/repo.git /x\n", &err), 0);
  EXPECT_NE(err.find("Dockerfile:2: ADD http://127.0.0.1:1/repo.git /x: error fetching default "
                     "branch for repository http://127.0.0.1:1/repo.git: "),
            std::string::npos)
      << err;
}

TEST_F(AddGitTest, AUrlThatIsNoRepositoryIsStillFetchedAsAFile) {
  std::string err;
  // Not ending in .git: a file of the server's, mode 0600 as BuildKit's http source gives it.
  ASSERT_EQ(Build("FROM busybox\nADD {http}/repo.git/HEAD /head\n", &err), 0) << err;
  EXPECT_EQ(Out("/head"), "ref: refs/heads/main\n");
  EXPECT_EQ(StatPath(D() + "/out/head").mode, 0600u);
}

TEST_F(AddGitTest, TheCacheFollowsTheCommitNotTheRefName) {
  const std::string dockerfile = "FROM busybox\nADD {http}/repo.git#feature /src\n";
  std::string err;
  ASSERT_EQ(Build(dockerfile, &err), 0) << err;
  ASSERT_EQ(Build(dockerfile, &err), 0) << err;
  EXPECT_TRUE(std::regex_search(err, std::regex(R"(#\d+ CACHED)"))) << err;

  // Move the branch: a new commit on feature, pushed to the served repository.
  const std::string work = D() + "/work";
  std::string out;
  const std::vector<std::string> git_env = {
      "GIT_AUTHOR_NAME=t",       "GIT_AUTHOR_EMAIL=t@t",        "GIT_COMMITTER_NAME=t",
      "GIT_COMMITTER_EMAIL=t@t", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1"};
  ASSERT_EQ(RunCommand({"git", "clone", "-q", "-b", "feature", git_.repos() + "/repo.git", work},
                       &out, &err, git_env),
            0)
      << err;
  std::ofstream(work + "/feature.txt", std::ios::trunc) << "moved\n";
  ASSERT_EQ(RunCommand({"git", "-C", work, "commit", "-qam", "move"}, &out, &err, git_env), 0)
      << err;
  ASSERT_EQ(RunCommand({"git", "-C", work, "push", "-q", "origin", "feature"}, &out, &err, git_env),
            0)
      << err;
  ASSERT_EQ(RunCommand({"git", "--git-dir=" + git_.repos() + "/repo.git", "update-server-info"}),
            0);

  ASSERT_EQ(Build(dockerfile, &err), 0) << err;
  EXPECT_FALSE(std::regex_search(err, std::regex(R"(#\d+ CACHED)"))) << err;
  EXPECT_EQ(Out("/src/feature.txt"), "moved\n");
}

}  // namespace
}  // namespace stagefarm::testing
