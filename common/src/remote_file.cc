#include "stagefarm/common/remote_file.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <memory>
#include <set>

#include "image_files.h"
#include "registry_http.h"
#include "stagefarm/common/context_tree.h"
#include "stagefarm/common/fd_io.h"
#include "stagefarm/common/git_source.h"
#include "stagefarm/common/unique_fd.h"

namespace stagefarm {
namespace {

struct UrlDeleter {
  void operator()(CURLU* u) const { curl_url_cleanup(u); }
};

// The URL's path, percent-decoded; "" when it does not parse.
std::string DecodedPath(std::string_view url) {
  std::unique_ptr<CURLU, UrlDeleter> u(curl_url());
  if (!u || curl_url_set(u.get(), CURLUPART_URL, std::string(url).c_str(), 0) != CURLUE_OK) {
    return "";
  }
  char* path = nullptr;
  if (curl_url_get(u.get(), CURLUPART_PATH, &path, CURLU_URLDECODE) != CURLUE_OK || !path) {
    return "";
  }
  std::string out = path;
  curl_free(path);
  return out;
}

// A temporary file, removed with the object.
class TempFile {
 public:
  TempFile() = default;
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile() {
    if (!path_.empty()) ::unlink(path_.c_str());  // best effort: only disk space
  }
  Status Make(const std::string& dir) {
    std::string tmpl = (dir.empty() ? std::string("/tmp") : dir) + "/stagefarm-add-XXXXXX";
    int fd = ::mkstemp(tmpl.data());
    if (fd < 0) return ErrnoError("mkstemp " + tmpl, errno);
    fd_ = UniqueFd(fd);
    path_ = tmpl;
    return Status();
  }
  int fd() const { return fd_.get(); }
  const std::string& path() const { return path_; }

 private:
  UniqueFd fd_;
  std::string path_;
};

// Stores the tree of directory `dir` in `cache`: the blobs it lacks. Returns the root digest.
StatusOr<Digest> StoreTree(CacheClient& cache, const std::string& dir) {
  std::vector<ContextBlob> blobs;
  SF_ASSIGN_OR_RETURN(Digest root,
                      HashContextDir(
                          dir, [](const std::string&) { return false; },
                          [&](ContextBlob b) { blobs.push_back(std::move(b)); }));
  std::vector<Digest> digests;
  for (const ContextBlob& b : blobs) digests.push_back(b.digest);
  SF_ASSIGN_OR_RETURN(std::vector<Digest> missing, cache.FindMissing(digests));
  std::set<std::string> want;
  for (const Digest& d : missing) want.insert(d.hex);
  for (const ContextBlob& b : blobs) {
    if (!want.erase(b.digest.hex)) continue;
    Status put = b.path.empty() ? cache.PutBytes(b.bytes) : cache.PutFile(b.path, b.digest);
    SF_RETURN_IF_ERROR(put.Annotate("storing " + (b.path.empty() ? "a directory" : b.path)));
  }
  return root;
}

}  // namespace

bool IsRemoteUrl(std::string_view source) {
  return source.starts_with("http://") || source.starts_with("https://") || IsGitSource(source);
}

std::string RemoteFileName(std::string_view url) {
  std::string path = DecodedPath(url);
  while (!path.empty() && path.back() == '/') path.pop_back();
  if (path.empty()) return "__unnamed__";
  return path.substr(path.rfind('/') + 1);
}

StatusOr<AddChecksum> ParseAddChecksum(std::string_view checksum) {
  const std::string shown = "--checksum=" + std::string(checksum);
  static constexpr std::pair<std::string_view, size_t> kAlgorithms[] = {
      {"sha256", 64}, {"sha384", 96}, {"sha512", 128}};
  const size_t colon = checksum.find(':');
  const std::string_view algorithm = checksum.substr(0, colon);
  const std::string_view hex =
      colon == std::string_view::npos ? std::string_view() : checksum.substr(colon + 1);
  for (const auto& [name, digits] : kAlgorithms) {
    if (algorithm != name || colon == std::string_view::npos) continue;
    bool valid = hex.size() == digits;
    for (char c : hex) valid = valid && ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
    if (!valid) {
      return InvalidArgumentError(shown + ": expected " + std::string(name) + ": and " +
                                  std::to_string(digits) + " lowercase hex digits");
    }
    return AddChecksum{std::string(name), std::string(hex)};
  }
  return InvalidArgumentError(shown + ": expected sha256:, sha384: or sha512: and hex digits");
}

Status CheckAddChecksum(const std::string& checksum, const RemoteFile& file, CacheClient* cache) {
  if (checksum.empty()) return Status();
  if (!file.commit.empty()) {
    // The commit alone would not do: BuildKit takes an annotated tag's own hash in some cases.
    bool hex = std::all_of(checksum.begin(), checksum.end(),
                           [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); });
    if (hex) return Status();
    return InvalidArgumentError("invalid checksum " + checksum +
                                " for Git URL, expected hex commit hash");
  }
  SF_ASSIGN_OR_RETURN(AddChecksum expected, ParseAddChecksum(checksum));
  AddChecksum got{expected.algorithm, file.digest.hex};
  if (expected.algorithm != "sha256") {
    if (cache == nullptr) return Status();
    const EVP_MD* md = EVP_get_digestbyname(expected.algorithm.c_str());
    SF_CHECK(md != nullptr);
    std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
    SF_CHECK(ctx && EVP_DigestInit_ex(ctx.get(), md, nullptr) == 1);
    SF_RETURN_IF_ERROR(
        cache
            ->Read(file.digest, 0, 0,
                   [&](std::string_view bytes) {
                     SF_CHECK(EVP_DigestUpdate(ctx.get(), bytes.data(), bytes.size()) == 1);
                     return Status();
                   })
            .Annotate("read " + file.url + " back to check its " + expected.algorithm));
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    SF_CHECK(EVP_DigestFinal_ex(ctx.get(), out, &len) == 1);
    static constexpr char kHex[] = "0123456789abcdef";
    got.hex.clear();
    for (unsigned int i = 0; i < len; ++i) {
      got.hex.push_back(kHex[out[i] >> 4]);
      got.hex.push_back(kHex[out[i] & 15]);
    }
  }
  if (expected.hex == got.hex) return Status();
  return InvalidArgumentError("checksum mismatch for " + file.url + ": expected " + expected.str() +
                              ", got " + got.str());
}

const RemoteFile* FindRemoteFile(const std::vector<RemoteFile>& files, std::string_view url,
                                 bool keep_git_dir) {
  for (const RemoteFile& f : files) {
    if (f.url == url && (f.commit.empty() || f.keep_git_dir == keep_git_dir)) return &f;
  }
  return nullptr;
}

StatusOr<RemoteFile> FetchRemoteFile(const std::string& url, CacheClient& cache,
                                     const std::string& tmp_dir) {
  TempFile tmp;
  SF_RETURN_IF_ERROR(tmp.Make(tmp_dir));
  Sha256 hash;
  registry_http::Request request;
  request.url = url;
  request.blob = true;  // any size; only a stalled transfer times out
  request.sink = [&](std::string_view bytes) {
    hash.Update(bytes);
    return WriteAll(tmp.fd(), bytes, tmp.path());
  };
  SF_ASSIGN_OR_RETURN(registry_http::Response response, registry_http::Perform(request));
  if (response.status / 100 != 2) {
    std::string message = "GET " + url + ": HTTP " + std::to_string(response.status);
    if (response.status == 404) return NotFoundError(message + " (not found)");
    return FailedPreconditionError(message);
  }
  RemoteFile out;
  out.url = url;
  out.digest = hash.Finish();
  if (std::string modified = response.Header("last-modified"); !modified.empty()) {
    time_t t = curl_getdate(modified.c_str(), nullptr);
    if (t != -1) out.mtime = t;  // an unreadable date counts as none, as in BuildKit
  }
  Status put = cache.PutFile(tmp.path(), out.digest);
  if (!put.ok()) return put.Annotate("storing " + url);
  return out;
}

StatusOr<RemoteFile> FetchGitSource(const std::string& url, const std::string& checksum,
                                    std::optional<bool> keep_git_dir, CacheClient& cache) {
  SF_ASSIGN_OR_RETURN(GitRef ref, ParseGitRef(url));
  SF_ASSIGN_OR_RETURN(ref, WithAddFlags(std::move(ref), checksum, keep_git_dir));
  SF_ASSIGN_OR_RETURN(auto tmp, image_files::ScopedTempDir::Create("stagefarm-git"));
  const std::string scratch = tmp->path() + "/scratch", tree = tmp->path() + "/tree";
  for (const std::string& d : {scratch, tree}) {
    if (::mkdir(d.c_str(), 0700) != 0) return ErrnoError("mkdir " + d, errno);
  }
  SF_ASSIGN_OR_RETURN(GitCheckout checkout, CheckoutGitRef(ref, scratch, tree));
  RemoteFile out;
  out.url = url;
  out.commit = checkout.commit;
  out.mtime = checkout.commit_time;
  out.keep_git_dir = keep_git_dir.value_or(false);
  StatusOr<Digest> root = StoreTree(cache, tree);
  if (!root.ok()) return root.status().Annotate("storing the checkout of " + url);
  out.digest = *root;
  return out;
}

}  // namespace stagefarm
