#include "stagefarm/common/toc.h"

#include <gtest/gtest.h>

#include "support/toc_entries.h"

namespace stagefarm {
namespace {

using testing::TocDir;
using testing::TocFile;
using testing::TocMarker;

TEST(Toc, SerializeParseRoundTrips) {
  Toc toc;
  toc.entries.push_back(TocDir("usr"));
  toc.entries.push_back(TocFile("usr/a", "hello", 04755));
  TocEntry link;
  link.path = "usr/l";
  link.type = TocType::kSymlink;
  link.mode = 0777;
  link.link = "../etc/x";
  link.uid = 1000;
  link.gid = 70000;
  toc.entries.push_back(link);
  TocEntry dev;
  dev.path = "dev/null";
  dev.type = TocType::kChar;
  dev.devmajor = 1;
  dev.devminor = 3;
  toc.entries.push_back(dev);
  toc.entries.push_back(TocFile(std::string("bin/\xff\xfe-latin1"), "x"));
  toc.entries.push_back(TocMarker("old", TocType::kWhiteout));
  toc.entries.push_back(TocMarker("usr", TocType::kOpaque));

  std::string blob = toc.Serialize();
  EXPECT_EQ(std::count(blob.begin(), blob.end(), '\n'), 7);
  auto parsed = Toc::Parse(blob);
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(parsed->entries, toc.entries);
  EXPECT_EQ(parsed->Serialize(), blob);
}

TEST(Toc, SerializedFormIsCanonicalJsonLines) {
  Toc toc;
  toc.entries.push_back(TocFile("a", "x"));
  EXPECT_EQ(toc.Serialize(),
            "{\"digest\":\"" + Digest::Of("x").str() +
                "\",\"gid\":0,\"mode\":420,\"path\":\"a\",\"size\":1,\"type\":\"f\",\"uid\":0}\n");
}

TEST(Toc, ParseRefusesGarbageWithoutCrashing) {
  for (std::string bad : std::vector<std::string>{
           "{", "[1]", "{\"path\":\"a\",\"type\":\"z\"}", "{\"type\":\"f\"}",
           "{\"path\":\"a\",\"type\":\"f\",\"mode\":-1}",
           "{\"path\":\"a\",\"type\":\"f\",\"uid\":99999999999}", "{\"path\":7,\"type\":\"f\"}",
           "{\"path_hex\":\"zz\",\"type\":\"f\"}", std::string("\xff\x00\x01", 3)}) {
    auto parsed = Toc::Parse(bad);
    ASSERT_FALSE(parsed.ok()) << bad;
    EXPECT_EQ(parsed.status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

TEST(FsIndex, WhiteoutRemovesPathAndChildren) {
  Toc lower;
  lower.entries = {TocDir("etc"), TocFile("etc/a", "1"), TocDir("opt"), TocFile("opt/x/y", "2"),
                   TocFile("optional", "3")};
  Toc upper;
  upper.entries = {TocMarker("opt", TocType::kWhiteout), TocMarker("etc/a", TocType::kWhiteout)};
  FsIndex fs;
  fs.Apply(lower);
  fs.Apply(upper);
  EXPECT_FALSE(fs.Lookup("opt"));
  EXPECT_FALSE(fs.Lookup("/opt/x/y"));
  EXPECT_FALSE(fs.Lookup("etc/a"));
  EXPECT_TRUE(fs.Lookup("etc"));
  ASSERT_TRUE(fs.Lookup("optional"));
  EXPECT_EQ(fs.Lookup("./optional/")->digest, Digest::Of("3").str());
}

TEST(FsIndex, OpaqueDirHidesLowerButKeepsSameLayerEntries) {
  Toc lower;
  lower.entries = {TocDir("d"), TocFile("d/old", "1"), TocFile("d/-dash", "2")};
  Toc upper;
  // "d/-dash" sorts before the marker; it belongs to the upper layer and must survive.
  upper.entries = {TocDir("d", 0700), TocFile("d/-dash", "new"), TocMarker("d", TocType::kOpaque),
                   TocFile("d/new", "3")};
  FsIndex fs;
  fs.Apply(lower);
  fs.Apply(upper);
  EXPECT_FALSE(fs.Lookup("d/old"));
  ASSERT_TRUE(fs.Lookup("d/-dash"));
  EXPECT_EQ(fs.Lookup("d/-dash")->digest, Digest::Of("new").str());
  EXPECT_TRUE(fs.Lookup("d/new"));
  EXPECT_EQ(fs.Lookup("d")->mode, 0700u);
}

TEST(FsIndex, FileOverDirectoryReplacesSubtree) {
  Toc lower;
  lower.entries = {TocDir("x"), TocFile("x/y", "1")};
  Toc upper;
  upper.entries = {TocFile("x", "file now")};
  FsIndex fs;
  fs.Apply(lower);
  fs.Apply(upper);
  EXPECT_FALSE(fs.Lookup("x/y"));
  EXPECT_EQ(fs.Lookup("x")->type, TocType::kFile);
}

TEST(FsIndex, SubtreeDigestEqualAcrossLayerings) {
  // One layer with the final tree...
  Toc flat;
  flat.entries = {TocDir("app"), TocDir("app/bin"), TocFile("app/bin/tool", "v2", 0755),
                  TocFile("app/readme", "hi")};
  FsIndex a;
  a.Apply(flat);

  // ...and three layers that arrive at the same tree through deletions and overwrites.
  Toc l1;
  l1.entries = {TocDir("app"), TocFile("app/bin", "not yet a dir"), TocFile("app/junk", "x"),
                TocFile("app/readme", "hi")};
  Toc l2;
  l2.entries = {TocDir("app/bin"), TocFile("app/bin/tool", "v1", 0755),
                TocMarker("app/junk", TocType::kWhiteout)};
  Toc l3;
  l3.entries = {TocFile("app/bin/tool", "v2", 0755), TocDir("other")};
  FsIndex b;
  b.Apply(l1);
  b.Apply(l2);
  b.Apply(l3);

  auto da = a.SubtreeDigest("/app");
  auto db = b.SubtreeDigest("app/");
  ASSERT_TRUE(da.ok() && db.ok());
  EXPECT_EQ(*da, *db);
  // The same content under another name gives the same digest: paths are relative.
  Toc moved;
  moved.entries = {TocDir("srv"), TocDir("srv/bin"), TocFile("srv/bin/tool", "v2", 0755),
                   TocFile("srv/readme", "hi")};
  FsIndex c;
  c.Apply(moved);
  EXPECT_EQ(*c.SubtreeDigest("srv"), *da);
  // Whole filesystems differ (b has "other").
  EXPECT_NE(*a.SubtreeDigest("/"), *b.SubtreeDigest("/"));
}

TEST(FsIndex, SubtreeDigestSeesModeOwnerAndContent) {
  auto digest_with = [](TocEntry changed) {
    Toc t;
    t.entries = {TocDir("d"), std::move(changed)};
    FsIndex fs;
    fs.Apply(t);
    return *fs.SubtreeDigest("d");
  };
  Digest base = digest_with(TocFile("d/f", "x"));
  EXPECT_NE(base, digest_with(TocFile("d/f", "y")));
  EXPECT_NE(base, digest_with(TocFile("d/f", "x", 0600)));
  TocEntry owned = TocFile("d/f", "x");
  owned.uid = 1;
  EXPECT_NE(base, digest_with(owned));
  EXPECT_NE(base, digest_with(TocFile("d/g", "x")));
  EXPECT_EQ(base, digest_with(TocFile("d/f", "x")));
}

TEST(FsIndex, HardlinkCountsAsItsTarget) {
  Toc with_link;
  TocEntry link;
  link.path = "d/b";
  link.type = TocType::kHardlink;
  link.link = "d/a";
  with_link.entries = {TocDir("d"), TocFile("d/a", "same"), link};
  Toc with_copy;
  with_copy.entries = {TocDir("d"), TocFile("d/a", "same"), TocFile("d/b", "same")};
  FsIndex a, b;
  a.Apply(with_link);
  b.Apply(with_copy);
  EXPECT_EQ(*a.SubtreeDigest("d"), *b.SubtreeDigest("d"));
}

TEST(FsIndex, SubtreeDigestOfMissingPathIsNotFound) {
  FsIndex fs;
  EXPECT_EQ(fs.SubtreeDigest("nope").status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(fs.SubtreeDigest("/").ok());
}

}  // namespace
}  // namespace stagefarm
