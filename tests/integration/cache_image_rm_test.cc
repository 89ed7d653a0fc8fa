// `stagefarm image rm` against a real cache server: it removes names (like docker image rm), goes
// on past a name that is not there and then fails, and leaves the blobs for prune.
#include <gtest/gtest.h>

#include "stagefarm/common/cache_client.h"
#include "stagefarm/common/digest.h"
#include "stagefarm/common/transport.h"
#include "support/cache_server.h"
#include "support/process.h"

namespace stagefarm::testing {
namespace {

const std::string kBin = STAGEFARM_BINARY;  // the CLI under test

TEST(ImageRm, RemovesNamesKeepsBlobsAndReportsUnknownNames) {
  TempDir dir;
  CacheServerProcess server = StartCacheServer(dir.path() + "/data");
  ASSERT_FALSE(server.endpoint.empty()) << server.process->Stderr();
  const std::string* endpoint = &server.endpoint;
  Transport transport;
  auto cache = ConnectCache(transport, *endpoint);
  Digest manifest;
  ASSERT_TRUE(cache->PutBytes("{\"schemaVersion\":2}", &manifest).ok());
  ASSERT_TRUE(cache->PutRef("docker.io/library/app:latest", manifest).ok());
  ASSERT_TRUE(cache->PutRef("docker.io/library/app:1", manifest).ok());

  std::string out, err;
  EXPECT_EQ(RunCommand({kBin, "image", "rm", "--cache", *endpoint, "app"}, &out, &err), 0) << err;
  EXPECT_NE(out.find("Untagged: app:latest"), std::string::npos) << out;
  auto refs = cache->ListRefs();
  ASSERT_TRUE(refs.ok());
  EXPECT_EQ(*refs, (std::vector<std::pair<std::string, Digest>>{
                       {"docker.io/library/app:1", manifest}}));

  // An unknown name fails the command, after the others are removed.
  EXPECT_EQ(RunCommand({kBin, "image", "rm", "--cache", *endpoint, "nope", "app:1"}, &out, &err),
            1);
  EXPECT_NE(err.find("no such image: nope"), std::string::npos) << err;
  EXPECT_NE(out.find("Untagged: app:1"), std::string::npos) << out;
  refs = cache->ListRefs();
  ASSERT_TRUE(refs.ok());
  EXPECT_TRUE(refs->empty());
  // The blob stays until pruned.
  auto missing = cache->FindMissing({manifest});
  ASSERT_TRUE(missing.ok());
  EXPECT_TRUE(missing->empty());
}

}  // namespace
}  // namespace stagefarm::testing
