#include "stagefarm/common/toc.h"

#include <gtest/gtest.h>

namespace stagefarm {
namespace {

TocEntry File(std::string path, std::string content, uint32_t mode = 0644) {
  TocEntry e;
  e.path = std::move(path);
  e.type = TocType::kFile;
  e.mode = mode;
  e.size = content.size();
  e.digest = Digest::Of(content).str();
  return e;
}

TocEntry Dir(std::string path, uint32_t mode = 0755) {
  TocEntry e;
  e.path = std::move(path);
  e.type = TocType::kDir;
  e.mode = mode;
  return e;
}

TocEntry Marker(std::string path, TocType type) {
  TocEntry e;
  e.path = std::move(path);
  e.type = type;
  return e;
}

TEST(Toc, SerializeParseRoundTrips) {
  Toc toc;
  toc.entries.push_back(Dir("usr"));
  toc.entries.push_back(File("usr/a", "hello", 04755));
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
  toc.entries.push_back(File(std::string("bin/\xff\xfe-latin1"), "x"));
  toc.entries.push_back(Marker("old", TocType::kWhiteout));
  toc.entries.push_back(Marker("usr", TocType::kOpaque));

  std::string blob = toc.Serialize();
  EXPECT_EQ(std::count(blob.begin(), blob.end(), '\n'), 7);
  auto parsed = Toc::Parse(blob);
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(parsed->entries, toc.entries);
  EXPECT_EQ(parsed->Serialize(), blob);
}

TEST(Toc, SerializedFormIsCanonicalJsonLines) {
  Toc toc;
  toc.entries.push_back(File("a", "x"));
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
  lower.entries = {Dir("etc"), File("etc/a", "1"), Dir("opt"), File("opt/x/y", "2"),
                   File("optional", "3")};
  Toc upper;
  upper.entries = {Marker("opt", TocType::kWhiteout), Marker("etc/a", TocType::kWhiteout)};
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
  lower.entries = {Dir("d"), File("d/old", "1"), File("d/-dash", "2")};
  Toc upper;
  // "d/-dash" sorts before the marker; it belongs to the upper layer and must survive.
  upper.entries = {Dir("d", 0700), File("d/-dash", "new"), Marker("d", TocType::kOpaque),
                   File("d/new", "3")};
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
  lower.entries = {Dir("x"), File("x/y", "1")};
  Toc upper;
  upper.entries = {File("x", "file now")};
  FsIndex fs;
  fs.Apply(lower);
  fs.Apply(upper);
  EXPECT_FALSE(fs.Lookup("x/y"));
  EXPECT_EQ(fs.Lookup("x")->type, TocType::kFile);
}

TEST(FsIndex, SubtreeDigestEqualAcrossLayerings) {
  // One layer with the final tree...
  Toc flat;
  flat.entries = {Dir("app"), Dir("app/bin"), File("app/bin/tool", "v2", 0755),
                  File("app/readme", "hi")};
  FsIndex a;
  a.Apply(flat);

  // ...and three layers that arrive at the same tree through deletions and overwrites.
  Toc l1;
  l1.entries = {Dir("app"), File("app/bin", "not yet a dir"), File("app/junk", "x"),
                File("app/readme", "hi")};
  Toc l2;
  l2.entries = {Dir("app/bin"), File("app/bin/tool", "v1", 0755),
                Marker("app/junk", TocType::kWhiteout)};
  Toc l3;
  l3.entries = {File("app/bin/tool", "v2", 0755), Dir("other")};
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
  moved.entries = {Dir("srv"), Dir("srv/bin"), File("srv/bin/tool", "v2", 0755),
                   File("srv/readme", "hi")};
  FsIndex c;
  c.Apply(moved);
  EXPECT_EQ(*c.SubtreeDigest("srv"), *da);
  // Whole filesystems differ (b has "other").
  EXPECT_NE(*a.SubtreeDigest("/"), *b.SubtreeDigest("/"));
}

TEST(FsIndex, SubtreeDigestSeesModeOwnerAndContent) {
  auto digest_with = [](TocEntry changed) {
    Toc t;
    t.entries = {Dir("d"), std::move(changed)};
    FsIndex fs;
    fs.Apply(t);
    return *fs.SubtreeDigest("d");
  };
  Digest base = digest_with(File("d/f", "x"));
  EXPECT_NE(base, digest_with(File("d/f", "y")));
  EXPECT_NE(base, digest_with(File("d/f", "x", 0600)));
  TocEntry owned = File("d/f", "x");
  owned.uid = 1;
  EXPECT_NE(base, digest_with(owned));
  EXPECT_NE(base, digest_with(File("d/g", "x")));
  EXPECT_EQ(base, digest_with(File("d/f", "x")));
}

TEST(FsIndex, HardlinkCountsAsItsTarget) {
  Toc with_link;
  TocEntry link;
  link.path = "d/b";
  link.type = TocType::kHardlink;
  link.link = "d/a";
  with_link.entries = {Dir("d"), File("d/a", "same"), link};
  Toc with_copy;
  with_copy.entries = {Dir("d"), File("d/a", "same"), File("d/b", "same")};
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
