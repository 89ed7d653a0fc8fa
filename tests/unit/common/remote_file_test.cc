#include "stagefarm/common/remote_file.h"

#include <gtest/gtest.h>

#include "support/fake_cache_client.h"

namespace stagefarm {
namespace {

TEST(RemoteFile, TellsUrlsFromContextPaths) {
  // Git repositories too (git_source_test.cc has the details).
  for (const char* url : {"http://example.com/a", "https://example.com/a",
                          "git@github.com:a/b.git", "git://example.com/a"}) {
    EXPECT_TRUE(IsRemoteUrl(url)) << url;
  }
  for (const char* path : {"httpd.conf", "ftp://example.com/a", "a/git@b"}) {
    EXPECT_FALSE(IsRemoteUrl(path)) << path;
  }
}

TEST(RemoteFile, AGitChecksumIsHexAndARepositoryIsFoundByItsKeepGitDir) {
  RemoteFile tree{"git://h/r", Digest::Of("tree"), 1, "e0b5ce6fe5308b793cfd6b388255fb3d93322cd6"};
  // The client checked the commit (an annotated tag's checksum may be the tag's own hash).
  EXPECT_TRUE(CheckAddChecksum("abc123", tree).ok());
  EXPECT_EQ(CheckAddChecksum("sha256:abc", tree).message(),
            "invalid checksum sha256:abc for Git URL, expected hex commit hash");
  RemoteFile kept = tree;
  kept.keep_git_dir = true;
  kept.digest = Digest::Of("tree with .git");
  std::vector<RemoteFile> files = {tree, kept, {"http://h/f", Digest::Of("f"), 0}};
  EXPECT_EQ(FindRemoteFile(files, "git://h/r"), &files[0]);
  EXPECT_EQ(FindRemoteFile(files, "git://h/r", true), &files[1]);
  EXPECT_EQ(FindRemoteFile(files, "http://h/f", true), &files[2]);
  EXPECT_EQ(FindRemoteFile(files, "git://h/other"), nullptr);
}

TEST(RemoteFile, NameIsTheLastPathComponentAsDockerfile2llbGivesIt) {
  const std::pair<const char*, const char*> cases[] = {
      {"https://example.com/dl/tool-1.2.tar.gz", "tool-1.2.tar.gz"},
      {"https://example.com/dl/file?version=2#top", "file"},
      {"https://example.com/dl/dir/", "dir"},
      {"https://example.com/a%20b", "a b"},
      {"https://example.com/", "__unnamed__"},
      {"https://example.com", "__unnamed__"},
      {"http://127.0.0.1:8080/x?y=/z", "x"},
  };
  for (const auto& [url, name] : cases) EXPECT_EQ(RemoteFileName(url), name) << url;
}

TEST(RemoteFile, ChecksumIsAnAlgorithmAndItsHexDigits) {
  for (const auto& [algorithm, digits] :
       {std::pair{"sha256", 64}, std::pair{"sha384", 96}, std::pair{"sha512", 128}}) {
    const std::string hex(digits, 'a');
    StatusOr<AddChecksum> c = ParseAddChecksum(std::string(algorithm) + ":" + hex);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    EXPECT_EQ(c->algorithm, algorithm);
    EXPECT_EQ(c->hex, hex);
  }
  const std::string hex(64, 'a');
  for (const std::string& bad : std::vector<std::string>{
           "", "sha256:", "sha256:abc", "md5:" + hex, "sha512:" + hex, "sha384:" + hex,
           "sha256:" + std::string(64, 'A'), "sha256:" + hex + "a", hex, "sha256" + hex}) {
    StatusOr<AddChecksum> c = ParseAddChecksum(bad);
    EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(c.status().message().find("--checksum=" + bad + ": expected"), std::string::npos)
        << c.status().message();
  }
}

TEST(RemoteFile, ChecksumMismatchNamesTheUrlAndBothDigests) {
  RemoteFile f{"http://h/x", Digest::Of("content"), 0};
  EXPECT_TRUE(CheckAddChecksum("", f).ok());
  EXPECT_TRUE(CheckAddChecksum(f.digest.str(), f).ok());
  Status s = CheckAddChecksum(Digest::Of("other").str(), f);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "checksum mismatch for http://h/x: expected " + Digest::Of("other").str() +
                             ", got " + f.digest.str());
}

// sha384 and sha512 are checked on the bytes, read back from the cache.
TEST(RemoteFile, Sha384AndSha512ChecksumsAreCheckedOnTheBytes) {
  testing::FakeCacheClient cache;
  Digest d;
  ASSERT_TRUE(cache.PutBytes("abc", &d).ok());
  RemoteFile f{"http://h/abc", d, 0};
  // The FIPS 180-2 test vectors of "abc".
  const std::string sha384 =
      "sha384:cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358ba"
      "eca134c825a7";
  const std::string sha512 =
      "sha512:"
      "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c"
      "23a3feebbd454d4423643ce80e2a9ac94fa54ca49f";
  for (const std::string& good : {sha384, sha512}) {
    Status s = CheckAddChecksum(good, f, &cache);
    EXPECT_TRUE(s.ok()) << good << ": " << s.ToString();
  }
  const std::string wrong = "sha512:" + std::string(128, '0');
  Status s = CheckAddChecksum(wrong, f, &cache);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(),
            "checksum mismatch for http://h/abc: expected " + wrong + ", got " + sha512);
  // Without the bytes, only the form: the client that fetched the file checked them.
  EXPECT_TRUE(CheckAddChecksum(wrong, f).ok());
  RemoteFile gone{"http://h/gone", Digest::Of("gone"), 0};
  EXPECT_EQ(CheckAddChecksum(sha512, gone, &cache).code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace stagefarm
