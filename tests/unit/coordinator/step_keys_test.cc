#include "stagefarm/coordinator/step_keys.h"

#include <gtest/gtest.h>

#include "support/fake_cache_client.h"

namespace stagefarm::coordinator {
namespace {

frontend::ResolvedStep RunStep(std::string cmd) {
  frontend::ResolvedStep s;
  s.kind = frontend::StepKind::kRun;
  s.canonical = "RUN " + cmd;
  s.argv = {"/bin/sh", "-c", cmd};
  s.env = {"PATH=/bin"};
  return s;
}

TEST(StepKeys, EveryInputChangesTheKey) {
  std::string parent = BaseKey(Digest::Of("manifest"), "linux/amd64", "");
  frontend::ResolvedStep base = RunStep("make");
  std::string k = StepKey(parent, base, "");
  EXPECT_EQ(k, StepKey(parent, base, ""));  // deterministic
  EXPECT_EQ(k.size(), 64u);

  EXPECT_NE(k, StepKey(BaseKey(Digest::Of("other"), "linux/amd64", ""), base, ""));
  EXPECT_NE(parent, BaseKey(Digest::Of("manifest"), "linux/arm64", ""));
  EXPECT_NE(parent, BaseKey(Digest::Of("manifest"), "linux/amd64", "salt"));

  frontend::ResolvedStep env = base;
  env.env.push_back("A=1");
  EXPECT_NE(k, StepKey(parent, env, ""));
  frontend::ResolvedStep user = base;
  user.mutable_config().user = "app";
  EXPECT_NE(k, StepKey(parent, user, ""));
  frontend::ResolvedStep wd = base;
  wd.mutable_config().working_dir = "/src";
  EXPECT_NE(k, StepKey(parent, wd, ""));
  frontend::ResolvedStep net = base;
  net.network = "none";
  EXPECT_NE(k, StepKey(parent, net, ""));
  EXPECT_NE(k, StepKey(parent, RunStep("make install"), ""));
}

TEST(StepKeys, WorkdirKeyIncludesPathAndUser) {
  // WORKDIR makes a layer: its directories belong to the USER of the time.
  frontend::ResolvedStep wd;
  wd.kind = frontend::StepKind::kWorkdir;
  wd.canonical = "WORKDIR app";
  wd.mutable_config().working_dir = "/src/app";
  std::string k = StepKey("p", wd, "");
  EXPECT_EQ(k, StepKey("p", wd, ""));
  frontend::ResolvedStep as_app = wd;
  as_app.mutable_config().user = "app";
  EXPECT_NE(k, StepKey("p", as_app, ""));
  // The same text under another previous WORKDIR is another directory.
  frontend::ResolvedStep elsewhere = wd;
  elsewhere.mutable_config().working_dir = "/lib/app";
  EXPECT_NE(k, StepKey("p", elsewhere, ""));
  EXPECT_NE(k, StepKey("q", wd, ""));
}

TEST(StepKeys, CopyKeyFollowsSourceContentNotLayers) {
  // Two different layerings of the same filesystem give the same COPY key.
  auto entry = [](std::string path, TocType type, uint32_t mode, std::string content = "") {
    TocEntry e;
    e.path = std::move(path);
    e.type = type;
    e.mode = mode;
    if (type == TocType::kFile) {
      e.size = content.size();
      e.digest = Digest::Of(content).str();
    }
    return e;
  };
  Toc one;
  one.entries = {entry("app", TocType::kDir, 0755), entry("app/bin", TocType::kFile, 0755, "bin!!")};
  Toc lower, upper;
  lower.entries = {entry("app", TocType::kDir, 0755), entry("app/bin", TocType::kFile, 0644, "old"),
                   entry("tmp", TocType::kDir, 01777)};
  upper.entries = {entry("app/bin", TocType::kFile, 0755, "bin!!")};
  FsIndex a, b;
  a.Apply(one);
  b.Apply(lower);
  b.Apply(upper);
  auto da = FsSourcesDigest(a, {"/app"}, "COPY");
  auto db = FsSourcesDigest(b, {"/app"}, "COPY");
  ASSERT_TRUE(da.ok() && db.ok());
  EXPECT_EQ(*da, *db);
  auto other = FsSourcesDigest(b, {"/tmp"}, "COPY");
  ASSERT_TRUE(other.ok());
  EXPECT_NE(*da, *other);
  EXPECT_EQ(FsSourcesDigest(a, {"/nope"}, "COPY").status().code(), StatusCode::kNotFound);

  frontend::ResolvedStep copy;
  copy.kind = frontend::StepKind::kCopy;
  copy.canonical = "COPY --from=build /app /app";
  EXPECT_EQ(StepKey("p", copy, *da), StepKey("p", copy, *db));
  EXPECT_NE(StepKey("p", copy, *da), StepKey("p", copy, *other));
}

TEST(StepKeys, ContextSourcesMissingFileIsAnError) {
  testing::FakeCacheClient cache;
  TreeNode root;
  TreeEntry f;
  f.name = "a.txt";
  f.mode = 0644;
  f.digest = Digest::Of("hello");
  root.entries.push_back(f);
  Digest root_digest;
  ASSERT_TRUE(cache.PutBytes(root.Serialize(), &root_digest).ok());
  ContextTree tree(cache, root_digest);
  auto d = ContextSourcesDigest(tree, {"a.txt"}, "Dockerfile:2: COPY a.txt /");
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  auto missing = ContextSourcesDigest(tree, {"b.txt"}, "Dockerfile:2: COPY b.txt /");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("Dockerfile:2"), std::string::npos);
  // A wildcard that matches nothing is not an error (BuildKit copies the other sources).
  EXPECT_TRUE(ContextSourcesDigest(tree, {"*.md"}, "COPY").ok());
}

// The key covers what the worker copies (copy_sources.h): a path through a symlinked directory
// is resolved in the context, and what --exclude leaves out does not count.
TEST(StepKeys, ContextSourcesFollowLinkedDirectoriesAndExcludes) {
  testing::FakeCacheClient cache;
  auto tree_with = [&](const std::string& kept, const std::string& excluded) {
    auto file = [](std::string name, const std::string& content) {
      TreeEntry f;
      f.name = std::move(name);
      f.mode = 0644;
      f.digest = Digest::Of(content);
      return f;
    };
    TreeNode d;
    d.entries = {file("f", kept), file("skip.log", excluded)};
    Digest d_digest;
    EXPECT_TRUE(cache.PutBytes(d.Serialize(), &d_digest).ok());
    TreeEntry dir;
    dir.name = "d";
    dir.type = TreeEntry::Type::kDir;
    dir.mode = 0755;
    dir.digest = d_digest;
    TreeEntry link;
    link.name = "dlnk";
    link.type = TreeEntry::Type::kSymlink;
    link.target = "d";
    TreeNode root;
    root.entries = {dir, link};
    Digest root_digest;
    EXPECT_TRUE(cache.PutBytes(root.Serialize(), &root_digest).ok());
    return root_digest;
  };
  ContextTree one(cache, tree_with("1", "a")), two(cache, tree_with("2", "a")),
      three(cache, tree_with("1", "b"));
  auto key = [](ContextTree& t, const std::string& source, const CopySelection& sel = {}) {
    auto d = ContextSourcesDigest(t, {source}, "COPY", sel);
    EXPECT_TRUE(d.ok()) << source << ": " << d.status().ToString();
    return d.ok() ? *d : std::string();
  };
  EXPECT_NE(key(one, "dlnk/f"), key(two, "dlnk/f"));
  EXPECT_EQ(key(one, "dlnk/f"), key(three, "dlnk/f"));
  const CopySelection exclude{false, {"*.log"}};
  EXPECT_EQ(key(one, "dlnk", exclude), key(three, "dlnk", exclude));
  EXPECT_NE(key(one, "dlnk"), key(three, "dlnk"));
  EXPECT_NE(key(one, "dlnk", exclude), key(two, "dlnk", exclude));
}

}  // namespace
}  // namespace stagefarm::coordinator

namespace stagefarm::coordinator {
namespace {

frontend::ResolvedStep AddStep(std::vector<std::string> sources, std::string checksum = "") {
  frontend::ResolvedStep s;
  s.kind = frontend::StepKind::kAdd;
  s.sources = std::move(sources);
  s.checksum = std::move(checksum);
  return s;
}

TEST(StepKeys, RemoteSourcesKeyOnContentAndMtimeNotOnlyTheUrl) {
  const std::string url = "http://127.0.0.1:1/a.txt";
  std::vector<RemoteFile> v1 = {{url, Digest::Of("v1"), 100}};
  StatusOr<std::string> k1 = RemoteSourcesDigest({url}, v1, "", "Dockerfile:2: ADD");
  ASSERT_TRUE(k1.ok()) << k1.status().ToString();
  EXPECT_EQ(*k1, *RemoteSourcesDigest({url}, v1, "", "x"));
  EXPECT_NE(*k1, *RemoteSourcesDigest({url}, {{url, Digest::Of("v2"), 100}}, "", "x"));
  EXPECT_NE(*k1, *RemoteSourcesDigest({url}, {{url, Digest::Of("v1"), 101}}, "", "x"));

  Status missing = RemoteSourcesDigest({url + "?b"}, v1, "", "Dockerfile:2: ADD").status();
  EXPECT_EQ(missing.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(missing.message().rfind("Dockerfile:2: ADD: " + url + "?b was not fetched", 0), 0u)
      << missing.ToString();
  EXPECT_TRUE(RemoteSourcesDigest({url}, v1, Digest::Of("v1").str(), "x").ok());
  Status wrong = RemoteSourcesDigest({url}, v1, Digest::Of("v2").str(), "Dockerfile:2").status();
  EXPECT_EQ(wrong.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(wrong.message().find("Dockerfile:2: checksum mismatch for " + url), std::string::npos);
}

TEST(StepKeys, SplitCopySourcesAppliesDockerfile2llbRules) {
  std::vector<std::string> local, urls;
  ASSERT_TRUE(SplitCopySources(AddStep({"a", "https://h/b", "c/*"}), "w", &local, &urls).ok());
  EXPECT_EQ(local, (std::vector<std::string>{"a", "c/*"}));
  EXPECT_EQ(urls, (std::vector<std::string>{"https://h/b"}));

  frontend::ResolvedStep copy = AddStep({"https://h/b"});
  copy.kind = frontend::StepKind::kCopy;
  auto error = [](const frontend::ResolvedStep& step) {
    std::vector<std::string> l, u;
    return SplitCopySources(step, "Dockerfile:4", &l, &u).message();
  };
  EXPECT_EQ(error(copy), "Dockerfile:4: source can't be a URL for COPY (use ADD)");
  const std::string sum = Digest::Of("x").str();
  EXPECT_EQ(error(AddStep({"a"}, sum)),
            "Dockerfile:4: --checksum can't be specified for non-HTTP(S) sources");
  EXPECT_EQ(error(AddStep({"https://h/a", "https://h/b"}, sum)),
            "Dockerfile:4: --checksum can't be specified for multiple sources");
  EXPECT_NE(error(AddStep({"https://h/a"}, "sha256:12")).find("Dockerfile:4: --checksum="),
            std::string::npos);
  EXPECT_EQ(error(AddStep({"https://h/a"}, sum)), "");
}

}  // namespace
}  // namespace stagefarm::coordinator
