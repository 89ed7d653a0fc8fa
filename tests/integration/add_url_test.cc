// ADD from http(s) URLs end to end on the embedded farm, against a real HTTP server on 127.0.0.1:
// the file is named after the URL (or the destination), mode 0600 unless --chmod, owned by
// --chown, mtime from Last-Modified (the Unix epoch without one), never unpacked; --checksum is
// verified; a wrong checksum, a 404 and a refused connection fail naming the Dockerfile line and
// the URL; a file changed on the server reruns the step instead of being served from the cache.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>

#include "stagefarm/common/digest.h"
#include "support/images.h"
#include "support/process.h"

namespace stagefarm::testing {
namespace {

const std::string kBin = STAGEFARM_BINARY;

// http.server serving argv[1], without Last-Modified for paths containing "nolm"; prints its
// port on stderr.
constexpr const char* kServer = R"(
import http.server, os, sys
class Handler(http.server.SimpleHTTPRequestHandler):
    def send_header(self, name, value):
        if name == 'Last-Modified' and 'nolm' in self.path:
            return
        super().send_header(name, value)
    def log_message(self, *args):
        pass
os.chdir(sys.argv[1])
server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
print('port', server.server_address[1], file=sys.stderr, flush=True)
server.serve_forever()
)";

constexpr int64_t kMtime = 1700000000;

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

void SetMtime(const std::string& path, int64_t seconds) {
  struct timespec times[2] = {{seconds, 0}, {seconds, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), times, 0), 0) << path;
}

int Count(const std::string& text, const std::regex& re) {
  return static_cast<int>(
      std::distance(std::sregex_iterator(text.begin(), text.end(), re), std::sregex_iterator()));
}

class AddUrlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(ImportBusybox(Env()));
    std::filesystem::create_directories(D() + "/www/files");
    std::filesystem::create_directories(D() + "/ctx");
    WriteFile(D() + "/www/files/hello.txt", "hello v1\n");
    SetMtime(D() + "/www/files/hello.txt", kMtime);
    WriteFile(D() + "/www/files/nolm.bin", "no last-modified\n");
    WriteFile(D() + "/www/payload", "inside the tarball\n");
    ASSERT_EQ(
        RunCommand({"tar", "-czf", D() + "/www/files/data.tar.gz", "-C", D() + "/www", "payload"}),
        0);
    server_ = std::make_unique<ChildProcess>(
        std::vector<std::string>{"python3", "-c", kServer, D() + "/www"}, D() + "/server");
    std::optional<std::string> port =
        server_->WaitForStderr(std::regex(R"(port (\d+))"), std::chrono::seconds(10));
    ASSERT_TRUE(port) << server_->Stderr();
    base_ = "http://127.0.0.1:" + *port + "/files/";
  }

  std::vector<std::string> Env() const { return {"STAGEFARM_HOME=" + D() + "/home"}; }
  std::string D() const { return dir_.path(); }

  // Builds ctx/<dockerfile> (written from `text`) with the image's filesystem exported to out/.
  int Build(const std::string& dockerfile, const std::string& text, std::string* err) {
    WriteFile(D() + "/ctx/" + dockerfile, text);
    std::filesystem::remove_all(D() + "/out");
    err->clear();
    return RunCommand({kBin, "build", "--progress=plain", "-f", D() + "/ctx/" + dockerfile, "-o",
                       "type=local,dest=" + D() + "/out", D() + "/ctx"},
                      nullptr, err, Env());
  }

  std::string WithUrls(std::string text) const {
    text = std::regex_replace(text, std::regex(R"(\{u\})"), base_);
    return std::regex_replace(text, std::regex(R"(\{root\})"), base_.substr(0, base_.size() - 6));
  }

  TempDir dir_;
  std::unique_ptr<ChildProcess> server_;
  std::string base_;
};

TEST_F(AddUrlTest, FetchesNamesModesMtimesChecksumsAndRebuildsWhenTheServerChanges) {
  SetMtime(D() + "/www/files/data.tar.gz", kMtime - 1000);
  // {u}: the server's /files/ URL; {root}: its / URL.
  const std::string dockerfile = WithUrls(
      "FROM busybox\n"
      "ADD {u}hello.txt /opt/\n"
      "ADD --chmod=644 --chown=1:2 {u}data.tar.gz?download=1 /opt/renamed.tgz\n"
      "ADD --checksum=" +
      Digest::Of("no last-modified\n").str() +
      " {u}nolm.bin /opt/dir/\n"
      "ADD {u}hello.txt {root} /multi/\n"
      "RUN stat -c '%n %a %u:%g %Y %s' /opt/hello.txt /opt/renamed.tgz /opt/dir/nolm.bin"
      " > /stat.txt\n");
  std::string err;
  ASSERT_EQ(Build("Dockerfile", dockerfile, &err), 0) << err;
  EXPECT_EQ(ReadFileOrEmpty(D() + "/out/opt/hello.txt"), "hello v1\n");
  EXPECT_EQ(ReadFileOrEmpty(D() + "/out/opt/dir/nolm.bin"), "no last-modified\n");
  // Never unpacked: the same bytes as on the server.
  const std::string tgz = ReadFileOrEmpty(D() + "/www/files/data.tar.gz");
  EXPECT_EQ(ReadFileOrEmpty(D() + "/out/opt/renamed.tgz"), tgz);
  EXPECT_FALSE(std::filesystem::exists(D() + "/out/opt/payload"));
  // Several URLs into a directory; a URL whose path has no name gives "__unnamed__".
  EXPECT_EQ(ReadFileOrEmpty(D() + "/out/multi/hello.txt"), "hello v1\n");
  EXPECT_NE(ReadFileOrEmpty(D() + "/out/multi/__unnamed__").find("Directory listing"),
            std::string::npos);
  // Named after the URL or the destination; 0600 unless --chmod; --chown; Last-Modified or 0.
  EXPECT_EQ(ReadFileOrEmpty(D() + "/out/stat.txt"),
            "/opt/hello.txt 600 0:0 " + std::to_string(kMtime) + " 9\n" +
                "/opt/renamed.tgz 644 1:2 " + std::to_string(kMtime - 1000) + " " +
                std::to_string(tgz.size()) + "\n" + "/opt/dir/nolm.bin 600 0:0 0 17\n")
      << err;

  // Nothing changed on the server: every step is cached.
  ASSERT_EQ(Build("Dockerfile", dockerfile, &err), 0) << err;
  EXPECT_EQ(Count(err, std::regex(R"(#\d+ CACHED)")), 5) << err;

  // New content under the same URL and the same Last-Modified: that ADD and what follows rerun.
  WriteFile(D() + "/www/files/hello.txt", "hello v2\n");
  SetMtime(D() + "/www/files/hello.txt", kMtime);
  ASSERT_EQ(Build("Dockerfile", dockerfile, &err), 0) << err;
  EXPECT_EQ(ReadFileOrEmpty(D() + "/out/opt/hello.txt"), "hello v2\n") << err;
  EXPECT_EQ(Count(err, std::regex(R"(#\d+ CACHED)")), 0) << err;
}

TEST_F(AddUrlTest, BadChecksumMissingFileRefusedConnectionAndCopyFailNamingTheLine) {
  std::string err;
  const std::string wrong = Digest::Of("something else").str();
  EXPECT_NE(
      Build("Dockerfile.sum",
            "FROM busybox\nRUN true\nADD --checksum=" + wrong + " " + base_ + "hello.txt /x\n",
            &err),
      0);
  EXPECT_TRUE(std::regex_search(
      err, std::regex("Dockerfile.sum:3: ADD --checksum=" + wrong + " .*: checksum mismatch for " +
                      base_ + "hello.txt: expected " + wrong + ", got " +
                      Digest::Of("hello v1\n").str())))
      << err;

  // sha512 (and sha384) as BuildKit takes them: checked on the fetched bytes.
  const std::string sha512 =
      "sha512:"
      "6be5d47cc0ebce523ef2b2e3514ada539dd40c41ec74590e1acb00dfb085d905a3682dffaf453f940da04f"
      "02927e06e48b65798ca0f07d4da5a339cce661cb72";
  ASSERT_EQ(Build("Dockerfile.512",
                  "FROM busybox\nADD --checksum=" + sha512 + " " + base_ + "hello.txt /x\n", &err),
            0)
      << err;
  EXPECT_EQ(ReadFileOrEmpty(D() + "/out/x"), "hello v1\n");
  const std::string wrong512 = "sha512:" + std::string(128, 'e');
  EXPECT_NE(
      Build("Dockerfile.bad512",
            "FROM busybox\nADD --checksum=" + wrong512 + " " + base_ + "hello.txt /x\n", &err),
      0);
  EXPECT_NE(err.find("Dockerfile.bad512:2: ADD --checksum=" + wrong512 + " " + base_ +
                     "hello.txt /x: checksum mismatch for " + base_ + "hello.txt: expected " +
                     wrong512 + ", got " + sha512),
            std::string::npos)
      << err;

  EXPECT_NE(Build("Dockerfile.404", "FROM busybox\nADD " + base_ + "missing /x\n", &err), 0);
  EXPECT_NE(
      err.find("Dockerfile.404:2: ADD " + base_ + "missing /x: GET " + base_ + "missing: HTTP 404"),
      std::string::npos)
      << err;

  // A port nobody listens on (the server's own, once it is gone).
  server_.reset();
  EXPECT_NE(Build("Dockerfile.refused", "FROM busybox\nADD " + base_ + "hello.txt /x\n", &err), 0);
  EXPECT_NE(
      err.find("Dockerfile.refused:2: ADD " + base_ + "hello.txt /x: GET " + base_ + "hello.txt: "),
      std::string::npos)
      << err;

  EXPECT_NE(Build("Dockerfile.copy", "FROM busybox\nCOPY " + base_ + "hello.txt /x\n", &err), 0);
  EXPECT_NE(err.find("Dockerfile.copy:2: COPY " + base_ + "hello.txt /x: source can't be a URL"),
            std::string::npos)
      << err;
}

}  // namespace
}  // namespace stagefarm::testing
