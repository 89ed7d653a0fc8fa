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
  // Wildcards select their directory as a whole: a match-free pattern is not an error.
  EXPECT_TRUE(ContextSourcesDigest(tree, {"*.md"}, "COPY").ok());
}

}  // namespace
}  // namespace stagefarm::coordinator
