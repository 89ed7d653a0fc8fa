// A client of the OCI distribution API (registry v2) over libcurl: resolving references to
// manifest digests, fetching manifests and blobs, pushing blobs and manifests.
//
// Auth: anonymous, basic, and bearer tokens (the WWW-Authenticate challenge's realm, service and
// scope), with credentials from the docker config (`$DOCKER_CONFIG/config.json`, else
// `~/.docker/config.json`, `auths.<host>.auth` = base64 "user:pass"). Registries on localhost,
// 127.0.0.1, ::1 and the hosts given as insecure are spoken to over http, the rest over https.
// Connection errors, 5xx and 429 answers are retried with exponential backoff.
//
// Errors: PermissionDenied for 401/403 (the message says how to log in), NotFound for 404 (naming
// the reference), ResourceExhausted for 429 after the retries, Unavailable when the registry
// cannot be reached, DataLoss when bytes do not match their digest.
//
// Thread-safety: a RegistryClient is used by one thread at a time.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "stagefarm/common/cache_client.h"
#include "stagefarm/common/digest.h"
#include "stagefarm/common/status.h"

namespace stagefarm {

// A reference to an image in a registry, split. "localhost:5000/base:tag" -> registry
// "localhost:5000", repository "base", tag "tag"; "busybox" -> "docker.io", "library/busybox",
// "latest".
struct RegistryRef {
  std::string registry;    // host[:port] as written ("docker.io" for Docker Hub)
  std::string repository;  // path inside the registry
  std::string tag;         // empty when only a digest is given
  std::string digest;      // "sha256:<hex>", or empty

  // "tag" or the digest: what /v2/<repo>/manifests/<reference> takes (the digest wins).
  std::string Reference() const { return digest.empty() ? tag : digest; }
  // The normalized text form, as NormalizeImageRef writes it.
  std::string str() const;
};

// True when the first path component of `ref` names a registry host (has a '.' or ':' or is
// "localhost"), as docker decides it.
bool NamesRegistryHost(std::string_view ref);

// Parses a docker image reference. InvalidArgument names the reference and what is wrong.
StatusOr<RegistryRef> ParseRegistryRef(std::string_view ref);

// A parsed WWW-Authenticate challenge: `Bearer realm="...",service="...",scope="..."`.
struct AuthChallenge {
  std::string scheme;                         // lowercase: "bearer", "basic"
  std::map<std::string, std::string> params;  // lowercase keys, unquoted values
};
StatusOr<AuthChallenge> ParseWwwAuthenticate(std::string_view header);

struct RegistryCredentials {
  std::string username, password;
  friend bool operator==(const RegistryCredentials&, const RegistryCredentials&) = default;
};

// The credentials for `host` in the text of a docker config.json (`auths.<host>.auth`, or
// `auths.<host>.username`/`password`; keys may carry a scheme and path, as
// "https://index.docker.io/v1/" does). nullopt: none for this host. `what` names the file.
StatusOr<std::optional<RegistryCredentials>> CredentialsFromDockerConfig(std::string_view json,
                                                                         std::string_view host,
                                                                         std::string_view what);

// The docker config directory: `$DOCKER_CONFIG`, else `$HOME/.docker`.
std::string DefaultDockerConfigDir();

struct RegistryOptions {
  std::set<std::string> insecure_registries;       // host[:port] spoken to over plain http
  std::string docker_config_dir;                   // empty: DefaultDockerConfigDir()
  int max_attempts = 5;                            // per request, for retryable failures
  std::chrono::milliseconds initial_backoff{250};  // doubled after each retry
  uint64_t chunk_size = 16 << 20;                  // blobs larger than this are PATCHed in chunks
  // Limit of one manifest, token or HEAD exchange (blob transfers only have a low-speed cutoff).
  std::chrono::seconds request_timeout{60};
};

// A manifest as fetched: its bytes, media type (from the document or Content-Type) and digest.
struct FetchedManifest {
  std::string bytes;
  std::string media_type;
  Digest digest;
};

// How a pushed blob reached the registry.
enum class BlobPush { kExisted, kMounted, kUploaded };

// Reads bytes [offset, offset+length) of the blob being pushed into `sink`.
using BlobReader = std::function<Status(uint64_t offset, uint64_t length, const ByteSink& sink)>;

class RegistryClient {
 public:
  explicit RegistryClient(RegistryOptions options = {});
  ~RegistryClient();
  RegistryClient(const RegistryClient&) = delete;
  RegistryClient& operator=(const RegistryClient&) = delete;

  // The manifest digest `ref` names now (HEAD, falling back to GET). For a multi-platform image
  // this is the index's digest. A digest reference is returned as given, without a request.
  StatusOr<Digest> Resolve(const RegistryRef& ref);
  // The manifest `reference` (a tag or digest) of ref's repository; a digest reference is
  // verified against the bytes.
  StatusOr<FetchedManifest> GetManifest(const RegistryRef& ref, const std::string& reference);
  // Streams blob `digest` of ref's repository into `path` (created or truncated), verifying its
  // digest and size while it streams; nothing is held in memory.
  Status FetchBlobToFile(const RegistryRef& ref, const Digest& digest, const std::string& path);

  // Pushes blob `digest` to ref's repository unless it is there: an existence check, then a
  // cross-repository mount from the first of `mount_from` (repositories of the same registry)
  // if any, then a monolithic upload, or chunked PATCHes for blobs above options.chunk_size.
  StatusOr<BlobPush> PushBlob(const RegistryRef& ref, const Digest& digest, const BlobReader& read,
                              const std::vector<std::string>& mount_from = {});
  // PUTs a manifest under ref's tag (or digest) and returns its digest.
  StatusOr<Digest> PutManifest(const RegistryRef& ref, std::string_view media_type,
                               std::string_view bytes);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace stagefarm
