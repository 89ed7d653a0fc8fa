// The registry client's pure parts: references, WWW-Authenticate challenges, docker config.json.
#include <gtest/gtest.h>

#include "stagefarm/common/image_ref.h"
#include "stagefarm/common/registry.h"

namespace stagefarm {
namespace {

const std::string kDigest = "sha256:" + std::string(64, 'a');

TEST(RegistryRef, SplitsRegistryRepositoryAndTag) {
  StatusOr<RegistryRef> r = ParseRegistryRef("localhost:5000/base:tag");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->registry, "localhost:5000");
  EXPECT_EQ(r->repository, "base");
  EXPECT_EQ(r->tag, "tag");
  EXPECT_EQ(r->digest, "");
  EXPECT_EQ(r->Reference(), "tag");
}

TEST(RegistryRef, DigestReferenceWinsOverTag) {
  StatusOr<RegistryRef> r = ParseRegistryRef("reg.example.com/team/app@" + kDigest);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->registry, "reg.example.com");
  EXPECT_EQ(r->repository, "team/app");
  EXPECT_EQ(r->tag, "");
  EXPECT_EQ(r->Reference(), kDigest);
}

TEST(RegistryRef, DockerHubNamesGetLibraryAndLatest) {
  StatusOr<RegistryRef> r = ParseRegistryRef("busybox");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->registry, "docker.io");
  EXPECT_EQ(r->repository, "library/busybox");
  EXPECT_EQ(r->tag, "latest");
  r = ParseRegistryRef("someone/tool:1.2");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->repository, "someone/tool");
}

TEST(RegistryRef, TextFormMatchesNormalizeImageRef) {
  for (std::string ref : std::vector<std::string>{
           "busybox", "busybox:1.36", "localhost/app", "localhost:5000/a/b:c",
           "127.0.0.1:5000/x@" + kDigest, "reg.io/x:t@" + kDigest, "me/tool"}) {
    StatusOr<RegistryRef> r = ParseRegistryRef(ref);
    ASSERT_TRUE(r.ok()) << ref << ": " << r.status().ToString();
    EXPECT_EQ(r->str(), NormalizeImageRef(ref)) << ref;
  }
}

TEST(RegistryRef, NamesRegistryHostLikeDocker) {
  EXPECT_TRUE(NamesRegistryHost("localhost/base"));
  EXPECT_TRUE(NamesRegistryHost("localhost:5000/base:tag"));
  EXPECT_TRUE(NamesRegistryHost("reg.example.com/x"));
  EXPECT_FALSE(NamesRegistryHost("busybox"));
  EXPECT_FALSE(NamesRegistryHost("someone/tool:1.0"));
  EXPECT_FALSE(NamesRegistryHost("localhost"));
}

TEST(RegistryRef, BadReferencesNameThemselvesAndTheFault) {
  struct Case {
    std::string ref, fault;
  } cases[] = {{"", "empty"},
               {"localhost:5000/Base:tag", "bad repository name component \"Base\""},
               {"localhost:5000/base:t@g", "digest"},
               {"localhost:5000/base@sha256:abc", "64 lowercase hex"},
               {"localhost:5000/", "no repository"},
               {"localhost:5000/base:", "bad tag"},
               {"a//b", "bad repository name component"}};
  for (const Case& c : cases) {
    StatusOr<RegistryRef> r = ParseRegistryRef(c.ref);
    ASSERT_FALSE(r.ok()) << c.ref;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find("\"" + c.ref + "\""), std::string::npos)
        << r.status().message();
    EXPECT_NE(r.status().message().find(c.fault), std::string::npos) << r.status().message();
  }
}

TEST(WwwAuthenticate, BearerWithQuotedCommasAndEscapes) {
  StatusOr<AuthChallenge> c = ParseWwwAuthenticate(
      R"(Bearer realm="https://auth.example.com/token",service="registry.example.com",)"
      R"(scope="repository:a/b:pull,push",error="say \"hi\"")");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->scheme, "bearer");
  EXPECT_EQ(c->params["realm"], "https://auth.example.com/token");
  EXPECT_EQ(c->params["service"], "registry.example.com");
  EXPECT_EQ(c->params["scope"], "repository:a/b:pull,push");
  EXPECT_EQ(c->params["error"], "say \"hi\"");
}

TEST(WwwAuthenticate, BasicAndUnquotedValuesAndSpaces) {
  StatusOr<AuthChallenge> c = ParseWwwAuthenticate("Basic  Realm = basic-realm , charset=UTF-8");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->scheme, "basic");
  EXPECT_EQ(c->params["realm"], "basic-realm");
  EXPECT_EQ(c->params["charset"], "UTF-8");
}

TEST(WwwAuthenticate, MalformedChallengesAreErrors) {
  for (std::string h : {"", "Bearer realm=\"unterminated", "Bearer realm", "Bearer =x"}) {
    StatusOr<AuthChallenge> c = ParseWwwAuthenticate(h);
    EXPECT_FALSE(c.ok()) << h;
    if (!c.ok()) {
      EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument);
    }
  }
}

TEST(DockerConfig, AuthFieldIsBase64UserColonPassword) {
  // "user:pa:ss" — the password may itself hold a colon.
  std::string json = R"({"auths":{"localhost:5000":{"auth":"dXNlcjpwYTpzcw=="},
                                  "other:1":{"auth":"eDp5"}}})";
  auto c = CredentialsFromDockerConfig(json, "localhost:5000", "config.json");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ASSERT_TRUE(c->has_value());
  EXPECT_EQ((*c)->username, "user");
  EXPECT_EQ((*c)->password, "pa:ss");
  c = CredentialsFromDockerConfig(json, "elsewhere:5000", "config.json");
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE(c->has_value());
}

TEST(DockerConfig, KeysWithSchemeAndPathAndDockerHubAliases) {
  std::string json = R"({"auths":{"https://index.docker.io/v1/":{"auth":"aHViOnNlY3JldA"},
                                  "http://reg.local:5000/v2/":{"username":"u","password":"p"}}})";
  auto hub = CredentialsFromDockerConfig(json, "docker.io", "c.json");
  ASSERT_TRUE(hub.ok() && hub->has_value()) << hub.status().ToString();
  EXPECT_EQ((*hub)->username, "hub");
  EXPECT_EQ((*hub)->password, "secret");  // unpadded base64 is accepted
  auto local = CredentialsFromDockerConfig(json, "reg.local:5000", "c.json");
  ASSERT_TRUE(local.ok() && local->has_value());
  EXPECT_EQ(**local, (RegistryCredentials{"u", "p"}));
}

TEST(DockerConfig, NoAuthsOrHelperOnlyEntriesMeanAnonymous) {
  for (std::string json :
       {R"({})", R"({"credsStore":"desktop"})", R"({"auths":{"localhost:5000":{}}})"}) {
    auto c = CredentialsFromDockerConfig(json, "localhost:5000", "config.json");
    ASSERT_TRUE(c.ok()) << json << ": " << c.status().ToString();
    EXPECT_FALSE(c->has_value()) << json;
  }
}

TEST(DockerConfig, MalformedFilesNameTheFileAndEntry) {
  auto c = CredentialsFromDockerConfig("{not json", "h", "/x/config.json");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("/x/config.json"), std::string::npos);
  c = CredentialsFromDockerConfig(R"({"auths":{"h":{"auth":"!!!"}}})", "h", "/x/config.json");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("/x/config.json: auths.h.auth"), std::string::npos)
      << c.status().message();
  c = CredentialsFromDockerConfig(R"({"auths":{"h":{"auth":"bm9jb2xvbg=="}}})", "h", "f");
  ASSERT_FALSE(c.ok());  // "nocolon"
  c = CredentialsFromDockerConfig(R"({"auths":[1]})", "h", "f");
  ASSERT_FALSE(c.ok());
}

}  // namespace
}  // namespace stagefarm
