// ADD from http(s) URLs and git repositories. The client fetches every URL an ADD names when it
// submits the build (as BuildKit fetches on the builder, not in the container), checks
// --checksum, uploads the bytes (or the checked-out tree) to the CAS and sends url -> RemoteFile
// with the build request. The coordinator keys the step on the content digest and mtime (and a
// repository's commit: a changed remote file or branch is never served stale from the cache); the
// worker reads the blob or tree from the CAS as it reads the context.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "stagefarm/common/cache_client.h"
#include "stagefarm/common/digest.h"
#include "stagefarm/common/status.h"

namespace stagefarm {

struct RemoteFile {
  std::string url;    // as the ADD names it, after ARG/ENV expansion
  Digest digest;      // of the content, stored in the CAS
  int64_t mtime = 0;  // seconds: the Last-Modified header, else the Unix epoch (BuildKit's rule)
  // A git repository (IsGitSource): the commit checked out. `digest` is then the root of the
  // checked-out tree in the CAS (context_tree.h) and `mtime` the commit's time, every file's.
  std::string commit = {};
  // git: fetched for an ADD --keep-git-dir=true (the tree has .git); one URL may be fetched both
  // with and without it.
  bool keep_git_dir = false;

  friend bool operator==(const RemoteFile&, const RemoteFile&) = default;
};

// Whether an ADD source names something remote, as BuildKit tells them: an http:// or https://
// file, or a git repository (git_source.h: IsGitSource).
bool IsRemoteUrl(std::string_view source);

// The name ADD gives a remote file (dockerfile2llb): the last component of the URL's path (query
// and fragment left out, percent-decoded), or "__unnamed__" when the path has none.
std::string RemoteFileName(std::string_view url);

// An ADD's --checksum=<algorithm>:<hex>, with the algorithms BuildKit takes (go-digest's):
// sha256 (64 lowercase hex digits), sha384 (96) and sha512 (128).
struct AddChecksum {
  std::string algorithm;
  std::string hex;
  std::string str() const { return algorithm + ":" + hex; }
};
// InvalidArgument for any other form.
StatusOr<AddChecksum> ParseAddChecksum(std::string_view checksum);

// Checks `file` against an ADD's --checksum (none: OK). InvalidArgument for a malformed
// checksum, or "checksum mismatch for <url>: expected sha512:..., got sha512:...". A sha256 is
// the file's digest; another algorithm hashes the file's bytes, read from `cache` (without
// one, only the checksum's form is checked: the client that fetched the file checks the rest).
// For a git repository only the form is checked here (hex digits): the client checked the commit
// against the objects it fetched (CheckoutGitRef).
Status CheckAddChecksum(const std::string& checksum, const RemoteFile& file,
                        CacheClient* cache = nullptr);

// The entry for `url` in `files`, or nullptr. A git repository's entry is the one fetched with
// the ADD's --keep-git-dir=true (`keep_git_dir`) or without it.
const RemoteFile* FindRemoteFile(const std::vector<RemoteFile>& files, std::string_view url,
                                 bool keep_git_dir = false);

// GETs `url` (following redirects, http and https only), hashing the body while it streams to a
// temporary file in `tmp_dir`, and stores it in `cache`. Errors name the URL: Unavailable when
// the server cannot be reached, NotFound for a 404, FailedPrecondition for any other non-2xx
// answer. Memory use does not depend on the file's size.
StatusOr<RemoteFile> FetchRemoteFile(const std::string& url, CacheClient& cache,
                                     const std::string& tmp_dir);

// Clones the git repository `url` names (IsGitSource) for an ADD with `checksum` and
// `keep_git_dir` (its flags; CheckoutGitRef, in a temporary directory under $TMPDIR) and stores
// the checked-out tree in `cache`, every file and node blob the cache lacks. Errors are
// ParseGitRef's, WithAddFlags' and CheckoutGitRef's.
StatusOr<RemoteFile> FetchGitSource(const std::string& url, const std::string& checksum,
                                    std::optional<bool> keep_git_dir, CacheClient& cache);

}  // namespace stagefarm
