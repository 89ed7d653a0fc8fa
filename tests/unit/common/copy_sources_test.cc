// What a COPY source selects (copy_sources.h), over a stage's filesystem made from TOC entries and
// over a context tree: the same rules the worker copies by and the coordinator keys on.
#include "stagefarm/common/copy_sources.h"

#include <gtest/gtest.h>

#include "support/fake_cache_client.h"

namespace stagefarm {
namespace {

TocEntry Entry(std::string path, TocType type, std::string link_or_content = "",
               uint32_t mode = 0644) {
  TocEntry e;
  e.path = std::move(path);
  e.type = type;
  e.mode = type == TocType::kDir ? 0755 : mode;
  if (type == TocType::kSymlink) e.link = link_or_content;
  if (type == TocType::kFile) {
    e.size = link_or_content.size();
    e.digest = Digest::Of(link_or_content).str();
  }
  return e;
}

// /etc/group, /etclink -> /etc, /rel -> ../../etc, /esc -> /nonexist/../../etc,
// /w/up -> ../etc, /loop -> /loop, /d/{f,sub/s}, /dl -> d.
FsIndex Stage() {
  Toc toc;
  toc.entries = {Entry("etc", TocType::kDir),
                 Entry("etc/group", TocType::kFile, "root:x:0:\n"),
                 Entry("etclink", TocType::kSymlink, "/etc"),
                 Entry("rel", TocType::kSymlink, "../../etc"),
                 Entry("esc", TocType::kSymlink, "/nonexist/../../etc"),
                 Entry("w/up", TocType::kSymlink, "../etc"),
                 Entry("loop", TocType::kSymlink, "/loop"),
                 Entry("d/f", TocType::kFile, "f"),
                 Entry("d/sub/s", TocType::kFile, "s"),
                 Entry("dl", TocType::kSymlink, "d")};
  FsIndex fs;
  fs.Apply(toc);
  return fs;
}

TEST(CopySources, ResolveInRootFollowsLinksAndClampsAtTheRoot) {
  FsIndex fs = Stage();
  auto view = MakeFsIndexView(fs);
  for (const char* p : {"/etclink/group", "rel/group", "/esc/group", "w/up/group",
                        "../../etclink/./group", "/d/../etclink/group"}) {
    auto r = ResolveInRoot(p, true, *view);
    ASSERT_TRUE(r.ok()) << p;
    EXPECT_EQ(*r, "etc/group") << p;
  }
  EXPECT_EQ(*ResolveInRoot("/etclink", false, *view), "etclink") << "the last one kept";
  EXPECT_EQ(*ResolveInRoot("/etclink", true, *view), "etc");
  EXPECT_EQ(*ResolveInRoot("/missing/x/../y", true, *view), "missing/y");
  EXPECT_EQ(*ResolveInRoot("/", true, *view), "");
  EXPECT_EQ(ResolveInRoot("/loop/x", true, *view).status().code(), StatusCode::kInvalidArgument);
}

TEST(CopySources, WildcardsResolveTheirPrefixButWalkBelowItWithoutFollowing) {
  FsIndex fs = Stage();
  auto view = MakeFsIndexView(fs);
  auto paths = [&](const std::string& source) {
    std::string out;
    auto m = MatchSource(source, *view);
    EXPECT_TRUE(m.ok()) << source;
    for (const SourceMatch& s : *m) out += s.path + "=" + s.resolved + " ";
    return out;
  };
  EXPECT_EQ(paths("/dl/*"), "d/f=d/f d/sub=d/sub ");
  EXPECT_EQ(paths("/d*/f"), "d/f=d/f ") << "dl is a link: not walked through";
  EXPECT_EQ(paths("/e*"), "esc=etc etc=etc etclink=etc ");
  EXPECT_EQ(paths("/nothing*"), "");
  EXPECT_EQ(paths("/dl"), "dl=d ");
  EXPECT_EQ(paths("/etc\\*"), "etc\\*=etc\\* ") << "an escaped star is no wildcard";
  EXPECT_FALSE(HasWildcards("a\\*b"));
  EXPECT_TRUE(HasWildcards("a/[bc]"));
}

TEST(CopySources, ParentsSplitAtTheFirstPivot) {
  auto split = [](const std::string& s) {
    ParentsSource p = SplitParents(s);
    return p.root + "|" + p.pattern;
  };
  EXPECT_EQ(split("foo1/foo2/bar"), "/|foo1/foo2/bar");
  EXPECT_EQ(split("./foo1/foo2"), "/|foo1/foo2");
  EXPECT_EQ(split("foo1/./foo2/bar"), "foo1|foo2/bar");
  EXPECT_EQ(split("/test/a/./b/./c"), "/test/a|b/c");
  EXPECT_EQ(split("/test/a/b*/./c/**/e"), "/test/a/b*|c/**/e");
  EXPECT_EQ(split("/test/a/b/c/d/."), "/|test/a/b/c/d");
  EXPECT_EQ(split("."), "/|");
}

TEST(CopySources, FilterExcludesBelowAndIncludesWithParents) {
  auto f = CopyFilter::Make(std::nullopt, {"*.md", "sub", "!sub/keep/x", "/abs"});
  ASSERT_TRUE(f.ok());
  EXPECT_FALSE(f->Selected("a.md"));
  EXPECT_TRUE(f->Selected("dir/a.md")) << "\"*\" does not match \"/\"";
  EXPECT_FALSE(f->Selected("sub"));
  EXPECT_FALSE(f->Selected("sub/other"));
  EXPECT_TRUE(f->Selected("sub/keep/x"));
  EXPECT_TRUE(f->MayHaveSelectedBelow("sub"));
  EXPECT_TRUE(f->Selected("abs")) << "a leading / is kept, as patternmatcher does";
  auto parents = CopyFilter::Make(std::string("a/*/c"), {});
  ASSERT_TRUE(parents.ok());
  EXPECT_TRUE(parents->Selected("a/b/c"));
  EXPECT_TRUE(parents->Selected("a/b/c/deep"));
  EXPECT_FALSE(parents->Selected("a/b"));
  EXPECT_TRUE(parents->MayHaveSelectedBelow("a/b"));
  EXPECT_FALSE(parents->MayHaveSelectedBelow("x"));
  auto none = CopyFilter::Make(std::string(""), {});
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->Selected("a")) << "--parents . copies nothing in BuildKit";
  EXPECT_FALSE(CopyFilter::Make(std::nullopt, {"[x"}).ok());
}

// The key covers what is copied: resolved links, the filtered subtree, --parents' directories.
TEST(CopySources, SelectionDigestCoversExactlyWhatIsCopied) {
  auto digest = [](const FsIndex& fs, const std::string& source, CopySelection sel = {}) {
    auto view = MakeFsIndexView(fs);
    auto d = SourceSelectionDigest(*view, source, sel);
    EXPECT_TRUE(d.ok()) << source << ": " << d.status().ToString();
    return d.ok() ? *d : std::string();
  };
  FsIndex base = Stage();
  Toc change_s;
  change_s.entries = {Entry("d/sub/s", TocType::kFile, "s2")};
  FsIndex changed = Stage();
  changed.Apply(change_s);
  // Through a symlinked directory: the group file's content, not the link.
  Toc change_group;
  change_group.entries = {Entry("etc/group", TocType::kFile, "root:x:0:app\n")};
  FsIndex group = Stage();
  group.Apply(change_group);
  EXPECT_NE(digest(base, "/etclink/group"), digest(group, "/etclink/group"));
  EXPECT_NE(digest(base, "/etclink"), digest(group, "/etclink"));
  // --exclude: a change to what is left out keeps the key, to what is copied changes it.
  CopySelection ex{false, {"sub"}};
  EXPECT_EQ(digest(base, "/d", ex), digest(changed, "/d", ex));
  EXPECT_NE(digest(base, "/d"), digest(changed, "/d"));
  EXPECT_NE(digest(base, "/d", ex), digest(base, "/d")) << "the flag itself";
  // --parents: the parent directories' modes are part of the copy.
  Toc chmod_d;
  TocEntry d = Entry("d", TocType::kDir);
  d.mode = 0700;
  chmod_d.entries = {d};
  FsIndex modes = Stage();
  modes.Apply(chmod_d);
  CopySelection parents{true, {}};
  EXPECT_NE(digest(base, "d/sub/s", parents), digest(modes, "d/sub/s", parents));
  EXPECT_EQ(digest(base, "d/f", parents), digest(changed, "d/f", parents)) << "d/sub is not copied";
  EXPECT_NE(digest(base, "d/sub/s", parents), digest(changed, "d/sub/s", parents));
  // Wildcards: only what they match.
  EXPECT_EQ(digest(base, "/d/f*"), digest(changed, "/d/f*"));
  EXPECT_NE(digest(base, "/d/*"), digest(changed, "/d/*"));
  EXPECT_FALSE(digest(base, "/nomatch*").empty());
  auto view = MakeFsIndexView(base);
  EXPECT_EQ(SourceSelectionDigest(*view, "/nope", {}).status().code(), StatusCode::kNotFound);
}

TEST(CopySources, ContextViewResolvesLinksInTheContextTree) {
  testing::FakeCacheClient cache;
  auto put = [&](const TreeNode& n) {
    Digest d;
    EXPECT_TRUE(cache.PutBytes(n.Serialize(), &d).ok());
    return d;
  };
  TreeEntry f;
  f.name = "f";
  f.mode = 0644;
  f.digest = Digest::Of("f\n");
  TreeNode d_node;
  d_node.entries = {f};
  TreeEntry d;
  d.name = "d";
  d.type = TreeEntry::Type::kDir;
  d.mode = 0755;
  d.digest = put(d_node);
  TreeEntry lnk;
  lnk.name = "dlnk";
  lnk.type = TreeEntry::Type::kSymlink;
  lnk.target = "d";
  TreeNode root;
  root.entries = {d, lnk};
  ContextTree tree(cache, put(root));
  auto view = MakeContextView(tree);
  auto r = ResolveInRoot("dlnk/f", true, *view);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, "d/f");
  auto a = SourceSelectionDigest(*view, "dlnk/f", {});
  auto b = SourceSelectionDigest(*view, "d/f", {});
  ASSERT_TRUE(a.ok() && b.ok()) << a.status().ToString();
  EXPECT_NE(*a, *b) << "the source as written is part of it";
}

}  // namespace
}  // namespace stagefarm
