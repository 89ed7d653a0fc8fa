#include "stagefarm/common/layer_tar.h"

#include <archive.h>
#include <archive_entry.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <filesystem>

#include "unit/formats/format_test_util.h"

namespace stagefarm {
namespace {

using testing::ReadFile;
using testing::SetAllMtimes;
using testing::SetMtime;
using testing::Shell;
using testing::TarBuilder;
using testing::TempDir;
using testing::WriteFile;

const TocEntry* FindEntry(const Toc& toc, std::string_view path, TocType type) {
  for (const auto& e : toc.entries) {
    if (e.path == path && e.type == type) return &e;
  }
  return nullptr;
}

void MakeTree(const std::string& root, bool reverse) {
  std::vector<std::pair<std::string, std::string>> files = {
      {"a/b/c.txt", "c"}, {"a/z", "zz"}, {"a-b", "dash"}, {"b", "bee"}, {"a/b/d", "d"}};
  if (reverse) std::reverse(files.begin(), files.end());
  for (const auto& [p, c] : files) WriteFile(root + "/" + p, c);
  ASSERT_EQ(::symlink("../b", (root + "/a/link").c_str()), 0);
  SetAllMtimes(root, 1000);
}

TEST(LayerTar, SameTreeGivesSameDigestWhateverCreationOrder) {
  TempDir d1, d2, out;
  MakeTree(d1.path(), false);
  MakeTree(d2.path(), true);
  auto w1 = WriteLayer(d1.path(), out / "1.tar");
  auto w2 = WriteLayer(d2.path(), out / "2.tar");
  auto w1b = WriteLayer(d1.path(), out / "1b.tar");
  ASSERT_TRUE(w1.ok()) << w1.status().ToString();
  ASSERT_TRUE(w2.ok()) << w2.status().ToString();
  ASSERT_TRUE(w1b.ok());
  EXPECT_EQ(w1->diff_id, w2->diff_id);
  EXPECT_EQ(w1->diff_id, w1b->diff_id);
  EXPECT_EQ(w1->toc_digest, w2->toc_digest);
  EXPECT_EQ(*Digest::OfFile(out / "1.tar"), w1->diff_id);
  EXPECT_EQ(w1->toc_digest, Digest::Of(w1->toc.Serialize()));
}

TEST(LayerTar, AtimeCtimeAndSubsecondMtimeDoNotChangeDigest) {
  TempDir d, out;
  MakeTree(d.path(), false);
  auto before = WriteLayer(d.path(), out / "1.tar");
  ASSERT_TRUE(before.ok());
  // A new atime, a new ctime (chmod there and back) and a sub-second mtime change.
  timespec times[2] = {{5555, 0}, {1000, 999}};
  ASSERT_EQ(::utimensat(AT_FDCWD, (d / "a/z").c_str(), times, 0), 0);
  ASSERT_EQ(::chmod((d / "b").c_str(), 0600), 0);
  ASSERT_EQ(::chmod((d / "b").c_str(), 0644), 0);
  auto after = WriteLayer(d.path(), out / "2.tar");
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(before->diff_id, after->diff_id);
}

TEST(LayerTar, LongNamesAndLargeIdsRoundTrip) {
  TempDir d, out, x;
  std::string deep = std::string(120, 'd') + "/" + std::string(150, 'e');
  WriteFile(d / (deep + "/" + std::string(200, 'f')), "long");
  WriteFile(d / "big-ids", "ids");
  ASSERT_EQ(::chown((d / "big-ids").c_str(), 3000000, 4000000), 0);
  SetAllMtimes(d.path(), 77);
  auto w = WriteLayer(d.path(), out / "1.tar");
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  Status s = ExtractLayer(out / "1.tar", x.path());
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(ReadFile(x / (deep + "/" + std::string(200, 'f'))), "long");
  struct stat st;
  ASSERT_EQ(::stat((x / "big-ids").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 3000000u);
  EXPECT_EQ(st.st_gid, 4000000u);
  auto again = WriteLayer(x.path(), out / "2.tar");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->diff_id, w->diff_id);
}

// Names are bytes: UTF-8 (Debian's ca-certificates links have such names) and names that are
// not UTF-8 at all round-trip whatever the locale, as in Docker's layers.
TEST(LayerTar, NonAsciiAndNonUtf8NamesRoundTrip) {
  TempDir d, out, x;
  const std::string utf8 = "F\xc5\x91tan\xc3\xbas\xc3\xadtv\xc3\xa1ny.pem";
  const std::string raw = "raw-\xff\xfe";
  WriteFile(d / utf8, "cert");
  WriteFile(d / raw, "bytes");
  ASSERT_EQ(::symlink(utf8.c_str(), (d / "link").c_str()), 0);
  ASSERT_EQ(::link((d / raw).c_str(), (d / "hard").c_str()), 0);
  SetAllMtimes(d.path(), 77);
  auto w = WriteLayer(d.path(), out / "1.tar");
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  Status s = ExtractLayer(out / "1.tar", x.path());
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(ReadFile(x / utf8), "cert");
  EXPECT_EQ(ReadFile(x / raw), "bytes");
  EXPECT_EQ(ReadFile(x / "hard"), "bytes");
  char target[256] = {};
  ASSERT_GT(::readlink((x / "link").c_str(), target, sizeof target - 1), 0);
  EXPECT_EQ(std::string(target), utf8);
  auto again = WriteLayer(x.path(), out / "2.tar");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->diff_id, w->diff_id);
}

TEST(LayerTar, EntriesSortedDirectoriesFirstWithoutDotSlash) {
  TempDir d, out;
  MakeTree(d.path(), false);
  auto w = WriteLayer(d.path(), out / "l.tar");
  ASSERT_TRUE(w.ok());
  std::vector<std::string> paths;
  for (const auto& e : w->toc.entries) paths.push_back(e.path);
  EXPECT_EQ(paths, (std::vector<std::string>{"a", "a-b", "a/b", "a/b/c.txt", "a/b/d", "a/link",
                                             "a/z", "b"}));
  // The tar itself: names as listed by GNU tar, directories with a trailing slash, no owner names.
  ASSERT_EQ(Shell("tar -tvf " + out / "l.tar" + " > " + out / "list"), 0);
  std::string list = ReadFile(out / "list");
  EXPECT_NE(list.find(" a/b/\n"), std::string::npos) << list;
  EXPECT_EQ(list.find(" ./"), std::string::npos) << list;
  EXPECT_NE(list.find(" 0/0 "), std::string::npos) << list;
  EXPECT_EQ(list.find("root"), std::string::npos) << list;
}

TEST(LayerTar, TocDescribesEntries) {
  TempDir d, out;
  WriteFile(d / "bin/tool", "#!/bin/sh\n", 04755);
  ASSERT_EQ(::chown((d / "bin/tool").c_str(), 1234, 5678), 0);
  ASSERT_EQ(::chmod((d / "bin/tool").c_str(), 04755), 0);
  ASSERT_EQ(::symlink("tool", (d / "bin/alias").c_str()), 0);
  ASSERT_EQ(::mkfifo((d / "fifo").c_str(), 0600), 0);
  ASSERT_EQ(::mknod((d / "null").c_str(), S_IFCHR | 0666, makedev(1, 3)), 0);
  auto w = WriteLayer(d.path(), out / "l.tar");
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  const TocEntry* tool = FindEntry(w->toc, "bin/tool", TocType::kFile);
  ASSERT_NE(tool, nullptr);
  EXPECT_EQ(tool->mode, 04755u);
  EXPECT_EQ(tool->uid, 1234u);
  EXPECT_EQ(tool->gid, 5678u);
  EXPECT_EQ(tool->size, 10u);
  EXPECT_EQ(tool->digest, Digest::Of("#!/bin/sh\n").str());
  const TocEntry* alias = FindEntry(w->toc, "bin/alias", TocType::kSymlink);
  ASSERT_NE(alias, nullptr);
  EXPECT_EQ(alias->link, "tool");
  EXPECT_NE(FindEntry(w->toc, "bin", TocType::kDir), nullptr);
  EXPECT_NE(FindEntry(w->toc, "fifo", TocType::kFifo), nullptr);
  const TocEntry* null = FindEntry(w->toc, "null", TocType::kChar);
  ASSERT_NE(null, nullptr);
  EXPECT_EQ(null->devmajor, 1u);
  EXPECT_EQ(null->devminor, 3u);
}

TEST(LayerTar, MtimesClampedToSourceDateEpoch) {
  TempDir d1, d2, out;
  WriteFile(d1 / "f", "x");
  WriteFile(d2 / "f", "x");
  SetMtime(d1 / "f", 2000000000);
  SetMtime(d2 / "f", 1900000000);
  LayerWriteOptions opts;
  opts.source_date_epoch = 1700000000;
  auto w1 = WriteLayer(d1.path(), out / "1.tar", opts);
  auto w2 = WriteLayer(d2.path(), out / "2.tar", opts);
  ASSERT_TRUE(w1.ok() && w2.ok());
  EXPECT_EQ(w1->diff_id, w2->diff_id);
  // Older files keep their own time.
  SetMtime(d2 / "f", 1600000000);
  auto w3 = WriteLayer(d2.path(), out / "3.tar", opts);
  EXPECT_NE(w3->diff_id, w1->diff_id);
  TempDir x;
  ASSERT_TRUE(ExtractLayer(out / "1.tar", x.path()).ok());
  struct stat st;
  ASSERT_EQ(::stat((x / "f").c_str(), &st), 0);
  EXPECT_EQ(st.st_mtime, 1700000000);
}

TEST(LayerTar, ExcludedPathsLeftOut) {
  TempDir d, out;
  WriteFile(d / "etc/hosts", "127.0.0.1 x");
  WriteFile(d / "etc/keep", "k");
  WriteFile(d / "run/secrets/s", "s");
  LayerWriteOptions opts;
  opts.exclude = {"etc/hosts", "/run/secrets/"};
  auto w = WriteLayer(d.path(), out / "l.tar", opts);
  ASSERT_TRUE(w.ok());
  std::vector<std::string> paths;
  for (const auto& e : w->toc.entries) paths.push_back(e.path);
  EXPECT_EQ(paths, (std::vector<std::string>{"etc", "etc/keep", "run"}));
}

TEST(LayerTar, HardlinksWrittenAsLinksAndRestored) {
  TempDir d, out, x;
  WriteFile(d / "a/first", "shared content");
  ASSERT_EQ(::link((d / "a/first").c_str(), (d / "z-second").c_str()), 0);
  auto w = WriteLayer(d.path(), out / "l.tar");
  ASSERT_TRUE(w.ok());
  const TocEntry* link = FindEntry(w->toc, "z-second", TocType::kHardlink);
  ASSERT_NE(link, nullptr);
  EXPECT_EQ(link->link, "a/first");
  ASSERT_TRUE(ExtractLayer(out / "l.tar", x.path()).ok());
  struct stat s1, s2;
  ASSERT_EQ(::stat((x / "a/first").c_str(), &s1), 0);
  ASSERT_EQ(::stat((x / "z-second").c_str(), &s2), 0);
  EXPECT_EQ(s1.st_ino, s2.st_ino);
  EXPECT_EQ(ReadFile(x / "z-second"), "shared content");
}

// A user's tar (ADD) is not a layer: entries named like whiteouts are plain files, as BuildKit
// extracts them; bzip2 and xz are detected like gzip and zstd.
TEST(LayerTar, WhiteoutNamesInAUsersTarAreFiles) {
  // The tars of the golden ADD case: dir/.wh.hidden and dir/sub/.wh..wh..opq are files there.
  const std::string fixtures = std::string(STAGEFARM_SOURCE_DIR) + "/tests/golden/fs-cases/add-tar";
  for (const char* name : {"plain.tar", "b.tar.bz2", "x.tar.xz"}) {
    TempDir x;
    Status s = ExtractLayer(
        fixtures + "/" + name, x.path(),
        ExtractOptions{.whiteouts = false, .rooted_names = false, .owner = std::nullopt});
    ASSERT_TRUE(s.ok()) << name << ": " << s.ToString();
    EXPECT_EQ(ReadFile(x / "dir/.wh.hidden"), "w\n") << name;
    EXPECT_EQ(ReadFile(x / "dir/sub/.wh..wh..opq"), "o\n") << name;
    EXPECT_EQ(ReadFile(x / "dir/sub/kept"), "keep\n") << name;
    char v[4];
    EXPECT_LT(::getxattr((x / "dir/sub").c_str(), "trusted.overlay.opaque", v, sizeof v), 0);
  }
}

TEST(LayerTar, WhiteoutsAndOpaqueDirsRoundTrip) {
  TempDir d, out, x;
  WriteFile(d / "keep/file", "k", 0600);
  ASSERT_EQ(::mknod((d / "keep/gone").c_str(), S_IFCHR | 0, makedev(0, 0)), 0);
  ASSERT_EQ(::mkdir((d / "opq").c_str(), 0750), 0);
  ASSERT_EQ(::setxattr((d / "opq").c_str(), "trusted.overlay.opaque", "y", 1, 0), 0);
  WriteFile(d / "opq/new", "n");
  ASSERT_EQ(::setxattr((d / "keep/file").c_str(), "user.b", "2", 1, 0), 0);
  ASSERT_EQ(::setxattr((d / "keep/file").c_str(), "user.a", "1", 1, 0), 0);
  SetAllMtimes(d.path(), 12345);

  auto w = WriteLayer(d.path(), out / "1.tar");
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_NE(FindEntry(w->toc, "keep/gone", TocType::kWhiteout), nullptr);
  EXPECT_NE(FindEntry(w->toc, "opq", TocType::kOpaque), nullptr);
  ASSERT_EQ(Shell("tar -tf " + out / "1.tar" + " > " + out / "list"), 0);
  std::string list = ReadFile(out / "list");
  EXPECT_EQ(list, "keep/\nkeep/.wh.gone\nkeep/file\nopq/\nopq/.wh..wh..opq\nopq/new\n");

  auto x_status = ExtractLayer(out / "1.tar", x.path());
  ASSERT_TRUE(x_status.ok()) << x_status.ToString();
  struct stat st;
  ASSERT_EQ(::lstat((x / "keep/gone").c_str(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  EXPECT_EQ(st.st_rdev, makedev(0, 0));
  char v[4];
  ASSERT_EQ(::getxattr((x / "opq").c_str(), "trusted.overlay.opaque", v, sizeof v), 1);
  EXPECT_EQ(v[0], 'y');
  ASSERT_EQ(::getxattr((x / "keep/file").c_str(), "user.a", v, sizeof v), 1);
  EXPECT_EQ(v[0], '1');
  ASSERT_EQ(::lstat((x / "opq").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0750u);
  EXPECT_EQ(st.st_mtime, 12345);
  EXPECT_FALSE(std::filesystem::exists(x / "opq/.wh..wh..opq"));

  auto w2 = WriteLayer(x.path(), out / "2.tar");
  ASSERT_TRUE(w2.ok());
  EXPECT_EQ(w2->diff_id, w->diff_id);
  EXPECT_EQ(w2->toc_blob, w->toc_blob);
}

// A step can leave files named like whiteouts (RUN touch /etc/.wh.passwd, ADD of a tar holding
// them). Every reader of the layer, docker's too, takes such an entry as a whiteout or an opaque
// marker: the layer holds them as exactly that, so its TOC, the tree any worker extracts and
// that tree written again all agree.
TEST(LayerTar, FilesNamedLikeWhiteoutsAreWrittenAsTheWhiteoutsTheyReadAs) {
  TempDir d, out, x;
  WriteFile(d / "etc/.wh.passwd", "not a whiteout");
  WriteFile(d / "etc/group", "g");
  WriteFile(d / "opq/.wh..wh..opq", "not a marker");
  WriteFile(d / "opq/new", "n");
  WriteFile(d / "dir/.wh.sub/inside", "left out");
  // The same whiteout made by overlay and named by a file is written once.
  WriteFile(d / "keep/.wh.gone", "");
  ASSERT_EQ(::mknod((d / "keep/gone").c_str(), S_IFCHR | 0, makedev(0, 0)), 0);
  SetAllMtimes(d.path(), 4242);

  auto w = WriteLayer(d.path(), out / "1.tar");
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_TRUE(w->whiteout_named);
  EXPECT_NE(FindEntry(w->toc, "etc/passwd", TocType::kWhiteout), nullptr);
  EXPECT_NE(FindEntry(w->toc, "opq", TocType::kOpaque), nullptr);
  EXPECT_NE(FindEntry(w->toc, "dir/sub", TocType::kWhiteout), nullptr);
  EXPECT_NE(FindEntry(w->toc, "keep/gone", TocType::kWhiteout), nullptr);
  for (const auto& e : w->toc.entries) {
    EXPECT_EQ(e.path.find(".wh."), std::string::npos) << e.path << " is in the TOC as a file";
  }
  ASSERT_EQ(Shell("tar -tf " + out / "1.tar" + " > " + out / "list"), 0);
  EXPECT_EQ(ReadFile(out / "list"),
            "dir/\ndir/.wh.sub\netc/\netc/.wh.passwd\netc/group\nkeep/\nkeep/.wh.gone\nopq/\n"
            "opq/.wh..wh..opq\nopq/new\n");

  ASSERT_TRUE(ExtractLayer(out / "1.tar", x.path()).ok());
  struct stat st;
  ASSERT_EQ(::lstat((x / "etc/passwd").c_str(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0));
  EXPECT_FALSE(std::filesystem::exists(x / "etc/.wh.passwd"));
  EXPECT_FALSE(std::filesystem::exists(x / "dir/.wh.sub"));
  char v[4];
  ASSERT_EQ(::getxattr((x / "opq").c_str(), "trusted.overlay.opaque", v, sizeof v), 1);
  auto again = WriteLayer(x.path(), out / "2.tar");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_FALSE(again->whiteout_named);
  EXPECT_EQ(again->diff_id, w->diff_id);
  EXPECT_EQ(again->toc_blob, w->toc_blob);
}

// ".wh." alone (or ".wh.." or ".wh...") reads as no whiteout at all: no worker could extract it.
TEST(LayerTar, NamesNoWhiteoutCanHoldAreRefusedNamingThePath) {
  for (const char* name : {".wh.", ".wh..", ".wh..."}) {
    TempDir d, out;
    WriteFile(d / (std::string("etc/") + name), "x");
    auto w = WriteLayer(d.path(), out / "1.tar");
    ASSERT_FALSE(w.ok()) << name;
    EXPECT_EQ(w.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(w.status().message().find(std::string("/etc/") + name + ":"), std::string::npos)
        << w.status().ToString();
  }
}

// OCI: a whiteout hides what the layers below hold, never what its own layer adds, wherever it is
// in the tar (the TOC applies a layer's whiteouts first). Extraction agrees: the layer's own entry
// stays, and a directory of the layer that a whiteout names hides the lower ones (opaque).
TEST(LayerTar, AWhiteoutLeavesTheEntriesOfItsOwnLayer) {
  TempDir out, x;
  {
    TarBuilder t(out / "l.tar");
    t.Add("x", AE_IFREG, "kept");
    t.Add(".wh.x", AE_IFREG);
    t.Add("d/", AE_IFDIR);
    t.Add("d/f", AE_IFREG, "f");
    t.Add(".wh.d", AE_IFREG);
    t.Add(".wh.y", AE_IFREG);
    t.Add("y/", AE_IFDIR);
    t.Add(".wh.gone", AE_IFREG);
    t.Close();
  }
  Status s = ExtractLayer(out / "l.tar", x.path());
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(ReadFile(x / "x"), "kept");
  EXPECT_EQ(ReadFile(x / "d/f"), "f");
  char v[4];
  for (const char* dir : {"d", "y"}) {
    struct stat st;
    ASSERT_EQ(::lstat((x / dir).c_str(), &st), 0) << dir;
    EXPECT_TRUE(S_ISDIR(st.st_mode)) << dir;
    ASSERT_EQ(::getxattr((x / dir).c_str(), "trusted.overlay.opaque", v, sizeof v), 1) << dir;
    EXPECT_EQ(v[0], 'y');
  }
  struct stat st;
  ASSERT_EQ(::lstat((x / "gone").c_str(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0));
}

TEST(LayerTar, ExtractRefusesPathTraversal) {
  TempDir out, outside;
  struct Case {
    std::string name;
    std::function<void(TarBuilder&)> fill;
  };
  std::vector<Case> cases = {
      {"dotdot", [](TarBuilder& t) { t.Add("a/../../evil", AE_IFREG, "x"); }},
      {"absolute", [](TarBuilder& t) { t.Add("/tmp/evil", AE_IFREG, "x"); }},
      {"symlink-out",
       [&](TarBuilder& t) {
         t.Add("link", AE_IFLNK, outside.path());
         t.Add("link/evil", AE_IFREG, "x");
       }},
      {"symlink-up",
       [](TarBuilder& t) {
         t.Add("d/", AE_IFDIR);
         t.Add("d/up", AE_IFLNK, "../..");
         t.Add("d/up/evil", AE_IFREG, "x");
       }},
      {"hardlink-out", [](TarBuilder& t) { t.AddHardlink("h", "../../etc/passwd"); }},
  };
  for (const auto& c : cases) {
    std::string tar = out / (c.name + ".tar");
    {
      TarBuilder t(tar);
      c.fill(t);
      t.Close();
    }
    TempDir x;
    Status s = ExtractLayer(tar, x.path());
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << c.name << ": " << s.ToString();
  }
  EXPECT_TRUE(std::filesystem::is_empty(outside.path()));
}

TEST(LayerTar, ExtractFollowsSymlinksThatStayInside) {
  TempDir out, x;
  {
    TarBuilder t(out / "l.tar");
    t.Add("usr/lib/", AE_IFDIR);
    t.Add("lib", AE_IFLNK, "usr/lib");
    t.Add("lib/libc.so", AE_IFREG, "elf");
    t.Close();
  }
  Status s = ExtractLayer(out / "l.tar", x.path());
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(ReadFile(x / "usr/lib/libc.so"), "elf");
}

TEST(LayerTar, ExtractsGzipAndZstdInputAndMissingParents) {
  for (auto c : {TarBuilder::kGzip, TarBuilder::kZstd}) {
    TempDir out, x;
    {
      TarBuilder t(out / "l.tar.z", c);
      t.Add("./deep/er/file", AE_IFREG, "compressed content");
      t.Close();
    }
    Status s = ExtractLayer(out / "l.tar.z", x.path());
    ASSERT_TRUE(s.ok()) << s.ToString();
    EXPECT_EQ(ReadFile(x / "deep/er/file"), "compressed content");
  }
}

TEST(LayerTar, ExtractRefusesGarbage) {
  TempDir out, x;
  WriteFile(out / "junk", std::string(5000, 'j'));
  EXPECT_EQ(ExtractLayer(out / "junk", x.path()).code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(ExtractLayer(out / "missing", x.path()).ok());
}

TEST(LayerTar, ExtractNeverSetsOverlayXattrsFromTheTar) {
  TempDir out, x;
  {
    struct archive* a = archive_write_new();
    archive_write_set_format_pax(a);
    ASSERT_EQ(archive_write_open_filename(a, (out / "l.tar").c_str()), ARCHIVE_OK);
    archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, "d/");
    archive_entry_set_filetype(e, AE_IFDIR);
    archive_entry_set_perm(e, 0755);
    archive_entry_xattr_add_entry(e, "trusted.overlay.redirect", "/etc", 4);
    archive_entry_xattr_add_entry(e, "user.ok", "1", 1);
    ASSERT_EQ(archive_write_header(a, e), ARCHIVE_OK);
    archive_entry_free(e);
    archive_write_close(a);
    archive_write_free(a);
  }
  ASSERT_TRUE(ExtractLayer(out / "l.tar", x.path()).ok());
  char v[16];
  EXPECT_LT(::getxattr((x / "d").c_str(), "trusted.overlay.redirect", v, sizeof v), 0);
  EXPECT_EQ(::getxattr((x / "d").c_str(), "user.ok", v, sizeof v), 1);
}

}  // namespace
}  // namespace stagefarm
