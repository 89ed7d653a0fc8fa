// ADD from http(s) URLs. The client fetches every URL an ADD names when it submits the build (as
// BuildKit fetches on the builder, not in the container), checks --checksum, uploads the bytes to
// the CAS and sends url -> RemoteFile with the build request. The coordinator keys the step on the
// content digest and mtime (a changed remote file is never served stale from the cache); the
// worker reads the blob from the CAS as it reads a context file.
#pragma once

#include <cstdint>
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

  friend bool operator==(const RemoteFile&, const RemoteFile&) = default;
};

// Whether an ADD source names a remote file (http:// or https://), as docker build tells them.
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
Status CheckAddChecksum(const std::string& checksum, const RemoteFile& file,
                        CacheClient* cache = nullptr);

// The entry for `url` in `files`, or nullptr.
const RemoteFile* FindRemoteFile(const std::vector<RemoteFile>& files, std::string_view url);

// GETs `url` (following redirects, http and https only), hashing the body while it streams to a
// temporary file in `tmp_dir`, and stores it in `cache`. Errors name the URL: Unavailable when
// the server cannot be reached, NotFound for a 404, FailedPrecondition for any other non-2xx
// answer. Memory use does not depend on the file's size.
StatusOr<RemoteFile> FetchRemoteFile(const std::string& url, CacheClient& cache,
                                     const std::string& tmp_dir);

}  // namespace stagefarm
