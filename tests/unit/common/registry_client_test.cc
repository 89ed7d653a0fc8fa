// The registry client against a tiny local HTTP server (tests/support/token_registry.py): bearer
// tokens with and without credentials, basic auth, retries, and the errors for 401/404/429 and
// corrupt blobs.
#include <curl/curl.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>

#include "stagefarm/common/registry.h"
#include "support/process.h"

namespace stagefarm {
namespace {

using testing::ChildProcess;
using testing::TempDir;

size_t Collect(char* data, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

class RegistryClientTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    const std::string port_file = dir_->path() + "/port";
    // Debian's python3 when there is one: a version manager's shim on PATH costs a second.
    const std::string python =
        std::filesystem::exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
    server_ = new ChildProcess(
        {python, std::string(STAGEFARM_SOURCE_DIR) + "/tests/support/token_registry.py", port_file},
        dir_->path() + "/server");
    for (int i = 0; i < 500 && !std::filesystem::exists(port_file); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    host_ = "127.0.0.1:" + testing::ReadFileOrEmpty(port_file);
  }
  static void TearDownTestSuite() {
    delete server_;
    delete dir_;
  }
  void SetUp() override {
    ASSERT_NE(host_, "127.0.0.1:") << "the test server did not start: " << server_->Stderr();
    Admin("POST", "/_reset");
  }

  // A GET or POST to the test server's own endpoints.
  static std::string Admin(const std::string& method, const std::string& path) {
    std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> c(curl_easy_init(), curl_easy_cleanup);
    std::string body;
    std::string url = "http://" + host_ + path;
    curl_easy_setopt(c.get(), CURLOPT_URL, url.c_str());
    if (method == "POST") curl_easy_setopt(c.get(), CURLOPT_POSTFIELDS, "");
    curl_easy_setopt(c.get(), CURLOPT_WRITEFUNCTION, Collect);
    curl_easy_setopt(c.get(), CURLOPT_WRITEDATA, &body);
    EXPECT_EQ(curl_easy_perform(c.get()), CURLE_OK) << url;
    return body;
  }
  // The requests the server saw whose path starts with `prefix`.
  static std::vector<nlohmann::json> Seen(const std::string& prefix) {
    std::vector<nlohmann::json> out;
    for (const auto& e : nlohmann::json::parse(Admin("GET", "/_log"))) {
      if (e["path"].get<std::string>().starts_with(prefix)) out.push_back(e);
    }
    return out;
  }

  // A client whose docker config holds `auth` (base64 user:pass) for the server, if not empty.
  std::unique_ptr<RegistryClient> Client(const std::string& auth = "") {
    RegistryOptions o;
    o.docker_config_dir = config_.path();
    o.initial_backoff = std::chrono::milliseconds(1);
    o.max_attempts = 4;
    nlohmann::json config = nlohmann::json::object();
    if (!auth.empty()) config["auths"][host_]["auth"] = auth;
    std::ofstream(config_.path() + "/config.json") << config.dump();
    return std::make_unique<RegistryClient>(o);
  }
  static RegistryRef Ref(const std::string& repo) {
    StatusOr<RegistryRef> r = ParseRegistryRef(host_ + "/" + repo + ":v1");
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return *r;
  }

  static TempDir* dir_;
  static ChildProcess* server_;
  static std::string host_;
  TempDir config_;
};

TempDir* RegistryClientTest::dir_ = nullptr;
ChildProcess* RegistryClientTest::server_ = nullptr;
std::string RegistryClientTest::host_;

const std::string kUserPass = "dXNlcjpwYXNz";  // user:pass

TEST_F(RegistryClientTest, BearerTokenFetchedWithBasicCredentialsOnceAndReused) {
  auto client = Client(kUserPass);
  StatusOr<FetchedManifest> m = client->GetManifest(Ref("private"), "v1");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->media_type, "application/vnd.oci.image.manifest.v1+json");
  StatusOr<Digest> d = client->Resolve(Ref("private"));
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->hex, m->digest.hex);
  EXPECT_EQ(d->size, m->bytes.size());

  std::vector<nlohmann::json> tokens = Seen("/token");
  ASSERT_EQ(tokens.size(), 1u);
  EXPECT_EQ(tokens[0]["auth"], "Basic " + kUserPass);
  EXPECT_NE(tokens[0]["path"].get<std::string>().find("scope=repository%3Aprivate%3Apull"),
            std::string::npos)
      << tokens[0]["path"];
  EXPECT_NE(tokens[0]["path"].get<std::string>().find("service=fake"), std::string::npos);
  // The first manifest request was challenged; the rest carried the token.
  std::vector<nlohmann::json> manifests = Seen("/v2/private/");
  ASSERT_EQ(manifests.size(), 3u);
  EXPECT_EQ(manifests[0]["auth"], "");
  EXPECT_EQ(manifests[1]["auth"], "Bearer good-token");
  EXPECT_EQ(manifests[2]["auth"], "Bearer good-token");
}

TEST_F(RegistryClientTest, AnonymousBearerTokenWithoutCredentials) {
  auto client = Client();
  StatusOr<FetchedManifest> m = client->GetManifest(Ref("public"), "v1");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  std::vector<nlohmann::json> tokens = Seen("/token");
  ASSERT_EQ(tokens.size(), 1u);
  EXPECT_EQ(tokens[0]["auth"], "");
}

TEST_F(RegistryClientTest, WrongCredentialsSayHowToLogIn) {
  auto client = Client("dXNlcjp3cm9uZw==");  // user:wrong
  StatusOr<FetchedManifest> m = client->GetManifest(Ref("private"), "v1");
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(
      m.status().message().find("unauthorized: log in with docker login or put credentials in "
                                "~/.docker/config.json"),
      std::string::npos)
      << m.status().message();
}

TEST_F(RegistryClientTest, PrivateRepositoryWithoutCredentialsIsUnauthorized) {
  auto client = Client();
  StatusOr<FetchedManifest> m = client->GetManifest(Ref("private"), "v1");
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kPermissionDenied) << m.status().ToString();
}

TEST_F(RegistryClientTest, BasicAuthChallengeUsesConfigCredentials) {
  StatusOr<FetchedManifest> m = Client(kUserPass)->GetManifest(Ref("basic"), "v1");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  m = Client()->GetManifest(Ref("basic"), "v1");
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kPermissionDenied);
}

TEST_F(RegistryClientTest, ServerErrorsAreRetriedWithBackoff) {
  StatusOr<FetchedManifest> m = Client()->GetManifest(Ref("flaky"), "v1");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(Seen("/v2/flaky/").size(), 3u);
}

TEST_F(RegistryClientTest, TooManyRequestsAfterRetriesIsResourceExhausted) {
  StatusOr<FetchedManifest> m = Client()->GetManifest(Ref("busy"), "v1");
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(m.status().message().find("429"), std::string::npos) << m.status().message();
  EXPECT_EQ(Seen("/v2/busy/").size(), 4u);
}

TEST_F(RegistryClientTest, NotFoundNamesTheReference) {
  StatusOr<Digest> d = Client()->Resolve(Ref("missing"));
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), StatusCode::kNotFound);
  EXPECT_NE(d.status().message().find(host_ + "/missing:v1"), std::string::npos)
      << d.status().message();
  StatusOr<FetchedManifest> m = Client()->GetManifest(Ref("missing"), "v1");
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("MANIFEST_UNKNOWN"), std::string::npos)
      << m.status().message();
}

TEST_F(RegistryClientTest, BlobsAreVerifiedWhileStreaming) {
  const std::string blob = "hello blob\n";
  Digest d = Digest::Of(blob);
  TempDir out;
  auto client = Client();
  ASSERT_TRUE(client->FetchBlobToFile(Ref("plain"), d, out.path() + "/b").ok());
  EXPECT_EQ(testing::ReadFileOrEmpty(out.path() + "/b"), blob);
  Status s = client->FetchBlobToFile(Ref("corrupt"), d, out.path() + "/c");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kDataLoss) << s.ToString();
}

TEST_F(RegistryClientTest, UploadUrlOnAnotherHostGetsNoCredentials) {
  const std::string blob = "hello blob\n";
  auto read = [&](uint64_t offset, uint64_t length, const ByteSink& sink) {
    return sink(std::string_view(blob).substr(offset, length));
  };
  StatusOr<BlobPush> how = Client(kUserPass)->PushBlob(Ref("upload"), Digest::Of(blob), read);
  ASSERT_TRUE(how.ok()) << how.status().ToString();
  EXPECT_EQ(*how, BlobPush::kUploaded);
  std::vector<nlohmann::json> starts = Seen("/v2/upload/blobs/uploads/");
  ASSERT_FALSE(starts.empty());
  EXPECT_EQ(starts.back()["auth"], "Bearer good-token");
  // The POST's Location named http://localhost:<port>, not the registry's 127.0.0.1:<port>.
  std::vector<nlohmann::json> puts = Seen("/elsewhere/");
  ASSERT_EQ(puts.size(), 1u);
  EXPECT_EQ(puts[0]["method"], "PUT");
  EXPECT_TRUE(puts[0]["host"].get<std::string>().starts_with("localhost:")) << puts[0];
  EXPECT_EQ(puts[0]["auth"], "");
}

TEST_F(RegistryClientTest, ChallengeAfterRedirectToAnotherHostIsNotAnswered) {
  const std::string blob = "hello blob\n";
  TempDir out;
  Status s =
      Client(kUserPass)->FetchBlobToFile(Ref("redirect"), Digest::Of(blob), out.path() + "/b");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kPermissionDenied) << s.ToString();
  EXPECT_TRUE(Seen("/token").empty()) << "credentials were sent to the redirect's token server";
}

TEST_F(RegistryClientTest, TokenRealmMustBeHttp) {
  StatusOr<FetchedManifest> m = Client(kUserPass)->GetManifest(Ref("filerealm"), "v1");
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument) << m.status().ToString();
  EXPECT_NE(m.status().message().find("file:///etc/hostname"), std::string::npos)
      << m.status().message();
}

TEST_F(RegistryClientTest, EndlessErrorBodyIsCutAtTheCap) {
  StatusOr<FetchedManifest> m = Client()->GetManifest(Ref("endless"), "v1");
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kNotFound) << m.status().ToString();
}

TEST_F(RegistryClientTest, SlowManifestTimesOut) {
  RegistryOptions o;
  o.max_attempts = 1;
  o.request_timeout = std::chrono::seconds(1);
  RegistryClient client(o);
  auto start = std::chrono::steady_clock::now();
  StatusOr<FetchedManifest> m = client.GetManifest(Ref("slow"), "v1");
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kUnavailable) << m.status().ToString();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(4));
}

TEST_F(RegistryClientTest, HugeContentLengthFallsBackToGet) {
  StatusOr<Digest> d = Client()->Resolve(Ref("hugelen"));
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  std::vector<nlohmann::json> seen = Seen("/v2/hugelen/");
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0]["method"], "HEAD");
  EXPECT_EQ(seen[1]["method"], "GET");
  StatusOr<FetchedManifest> m = Client()->GetManifest(Ref("hugelen"), "v1");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(*d, m->digest);
}

TEST_F(RegistryClientTest, DescriptorSizeZeroIsExact) {
  Digest d = Digest::Of("hello blob\n");
  d.size = 0;  // a descriptor claiming the blob is empty
  TempDir out;
  Status s = Client()->FetchBlobToFile(Ref("plain"), d, out.path() + "/b");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kDataLoss) << s.ToString();
  d.size = 5;  // too small
  s = Client()->FetchBlobToFile(Ref("plain"), d, out.path() + "/b");
  EXPECT_EQ(s.code(), StatusCode::kDataLoss) << s.ToString();
}

TEST_F(RegistryClientTest, UnreachableRegistryIsUnavailable) {
  RegistryOptions o;
  o.max_attempts = 2;
  o.initial_backoff = std::chrono::milliseconds(1);
  RegistryClient client(o);
  // Port 1 on loopback: nothing listens there.
  StatusOr<Digest> d = client.Resolve(*ParseRegistryRef("127.0.0.1:1/x:y"));
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), StatusCode::kUnavailable) << d.status().ToString();
  EXPECT_NE(d.status().message().find("127.0.0.1:1"), std::string::npos);
}

}  // namespace
}  // namespace stagefarm
