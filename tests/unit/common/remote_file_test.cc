#include "stagefarm/common/remote_file.h"

#include <gtest/gtest.h>

namespace stagefarm {
namespace {

TEST(RemoteFile, TellsUrlsFromContextPaths) {
  for (const char* url : {"http://example.com/a", "https://example.com/a"}) {
    EXPECT_TRUE(IsRemoteUrl(url)) << url;
  }
  for (const char* path : {"httpd.conf", "ftp://example.com/a", "git@github.com:a/b.git"}) {
    EXPECT_FALSE(IsRemoteUrl(path)) << path;
  }
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

TEST(RemoteFile, ChecksumIsSha256WithSixtyFourHexDigits) {
  const std::string hex(64, 'a');
  StatusOr<Digest> d = ParseAddChecksum("sha256:" + hex);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->hex, hex);
  for (const std::string& bad :
       std::vector<std::string>{"", "sha256:", "sha256:abc", "md5:" + hex, "sha512:" + hex,
                                "sha256:" + std::string(64, 'A'), hex}) {
    EXPECT_EQ(ParseAddChecksum(bad).status().code(), StatusCode::kInvalidArgument) << bad;
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

}  // namespace
}  // namespace stagefarm
