// The registry client: auth, retries and the distribution API's requests.
#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <thread>

#include "registry_http.h"
#include "stagefarm/common/oci.h"
#include "stagefarm/common/registry.h"
#include "stagefarm/common/unique_fd.h"

namespace stagefarm {
namespace {

using registry_http::Request;
using registry_http::Response;

constexpr const char* kUnauthorizedHelp =
    "unauthorized: log in with docker login or put credentials in ~/.docker/config.json";

std::string ManifestAccept() {
  return "Accept: " + std::string(kMediaTypeOciIndex) + ", " + std::string(kMediaTypeOciManifest) +
         ", " + std::string(kMediaTypeDockerManifestList) + ", " +
         std::string(kMediaTypeDockerManifest);
}

std::string Base64(std::string_view in) {
  std::string out(4 * ((in.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(in.data()),
                          static_cast<int>(in.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

bool IsLoopback(const std::string& host) {
  std::string h = host;
  if (h.starts_with("[")) {
    h = h.substr(1, h.find(']') - 1);
  } else if (size_t colon = h.rfind(':'); colon != std::string::npos) {
    h.resize(colon);
  }
  return h == "localhost" || h == "127.0.0.1" || h == "::1";
}

// The registry's answer to a request as a Status naming `what`.
Status CheckResponse(const Response& r, const std::string& what, int attempts) {
  if (r.status / 100 == 2) return Status();
  std::string detail = registry_http::ErrorText(r);
  std::string suffix = detail.empty() ? "" : " (" + detail + ")";
  switch (r.status) {
    case 401:
    case 403:
      return PermissionDeniedError(what + ": " + kUnauthorizedHelp + suffix);
    case 404:
      return NotFoundError(what + ": not found in the registry" + suffix);
    case 429:
      return ResourceExhaustedError(what + ": the registry answered 429 Too Many Requests " +
                                    std::to_string(attempts) + " times; wait and try again later" +
                                    suffix);
    default:
      break;
  }
  std::string text = what + ": the registry answered HTTP " + std::to_string(r.status) + suffix;
  if (r.status >= 500) return UnavailableError(text);
  return Status(StatusCode::kUnknown, text);
}

}  // namespace

struct RegistryClient::Impl {
  RegistryOptions options;
  std::map<std::string, std::optional<RegistryCredentials>> creds;  // by registry host
  std::map<std::string, std::string> auth;  // "host scope" -> Authorization header

  std::string ApiHost(const std::string& registry) const {
    return registry == "docker.io" ? "registry-1.docker.io" : registry;
  }
  bool Insecure(const std::string& registry) const {
    if (IsLoopback(registry) || options.insecure_registries.count(registry)) return true;
    size_t colon = registry.rfind(':');
    return colon != std::string::npos && !registry.starts_with("[") &&
           options.insecure_registries.count(registry.substr(0, colon));
  }
  std::string Origin(const std::string& registry) const {
    return (Insecure(registry) ? "http://" : "https://") + ApiHost(registry);
  }
  std::string RepoUrl(const RegistryRef& ref) const {
    return Origin(ref.registry) + "/v2/" + ref.repository;
  }
  std::string ConfigPath() const {
    return (options.docker_config_dir.empty() ? DefaultDockerConfigDir()
                                              : options.docker_config_dir) +
           "/config.json";
  }

  StatusOr<std::optional<RegistryCredentials>> Credentials(const std::string& registry) {
    if (auto it = creds.find(registry); it != creds.end()) return it->second;
    const std::string path = ConfigPath();
    std::optional<RegistryCredentials> found;
    std::ifstream in(path, std::ios::binary);
    if (in) {
      std::string text(std::istreambuf_iterator<char>(in), {});
      SF_ASSIGN_OR_RETURN(found, CredentialsFromDockerConfig(text, registry, path));
    }
    creds[registry] = found;
    return found;
  }

  void Backoff(int attempt, const Response* r) const {
    auto wait = options.initial_backoff * (1 << std::min(attempt - 1, 7));
    if (r != nullptr) {
      const std::string after = r->Header("retry-after");
      if (!after.empty() && std::all_of(after.begin(), after.end(), ::isdigit)) {
        wait = std::max<std::chrono::milliseconds>(
            wait, std::chrono::seconds(std::min(std::stoll(after.substr(0, 4)), 60LL)));
      }
    }
    std::this_thread::sleep_for(
        std::min<std::chrono::milliseconds>(wait, std::chrono::seconds(60)));
  }

  // Sends `req` with retries on connection errors, 5xx and 429; answers one 401 by getting
  // credentials for `scope` (space-separated) and trying again. `restart` undoes what the sink
  // took from a broken attempt. Returns the last answer; the caller checks its status.
  StatusOr<Response> Send(const std::string& registry, Request req, const std::string& scope,
                          const std::function<void()>& restart = nullptr) {
    const std::string key = registry + " " + scope;
    // Credentials go only to the registry itself, never to a host an upload URL names.
    const std::string origin = registry_http::OriginOf(Origin(registry));
    const bool own = registry_http::OriginOf(req.url) == origin;
    req.timeout = options.request_timeout;
    bool authenticated = false;
    for (int attempt = 1;; ++attempt) {
      Request r = req;
      if (auto it = auth.find(key); own && it != auth.end()) r.headers.push_back(it->second);
      StatusOr<Response> resp = registry_http::Perform(r);
      if (!resp.ok()) {
        if (resp.status().code() != StatusCode::kUnavailable || attempt >= options.max_attempts) {
          return resp.status().Annotate("registry " + registry);
        }
        Backoff(attempt, nullptr);
        if (restart) restart();
        continue;
      }
      // A 401 from where a redirect led (storage, another host) is not the registry's challenge.
      if (resp->status == 401 && !authenticated && own &&
          registry_http::OriginOf(resp->url) == origin) {
        authenticated = true;
        SF_RETURN_IF_ERROR(Authenticate(registry, scope, resp->Header("www-authenticate")));
        --attempt;  // not a failure of the registry
        continue;
      }
      if ((resp->status >= 500 || resp->status == 429) && attempt < options.max_attempts) {
        Backoff(attempt, &*resp);
        if (restart) restart();
        continue;
      }
      return resp;
    }
  }

  Status Authenticate(const std::string& registry, const std::string& scope,
                      const std::string& header) {
    const std::string what = "registry " + registry;
    if (header.empty()) return PermissionDeniedError(what + ": " + kUnauthorizedHelp);
    SF_ASSIGN_OR_RETURN(AuthChallenge challenge, ParseWwwAuthenticate(header));
    SF_ASSIGN_OR_RETURN(std::optional<RegistryCredentials> c, Credentials(registry));
    std::string basic = c ? "Authorization: Basic " + Base64(c->username + ":" + c->password) : "";
    const std::string key = registry + " " + scope;
    if (challenge.scheme == "basic") {
      if (!c) return PermissionDeniedError(what + ": " + kUnauthorizedHelp);
      auth[key] = basic;
      return Status();
    }
    if (challenge.scheme != "bearer") {
      return PermissionDeniedError(what + ": unsupported auth scheme \"" + challenge.scheme + "\"");
    }
    const std::string realm = challenge.params["realm"];
    if (realm.empty()) return InvalidArgumentError(what + ": bearer challenge without a realm");
    const std::string realm_origin = registry_http::OriginOf(realm);
    if (realm_origin.empty() || (!realm_origin.starts_with("https://") && !Insecure(registry))) {
      return InvalidArgumentError(what + ": the token realm \"" + realm + "\" is not an " +
                                  (Insecure(registry) ? "http(s)" : "https") + " URL");
    }
    Request token;
    token.timeout = options.request_timeout;
    token.url = realm + (realm.find('?') == std::string::npos ? "?" : "&") +
                "service=" + registry_http::Escape(challenge.params["service"]);
    std::vector<std::string> scopes;
    for (size_t start = 0; start < scope.size();) {
      size_t end = scope.find(' ', start);
      if (end == std::string::npos) end = scope.size();
      scopes.push_back(scope.substr(start, end - start));
      start = end + 1;
    }
    if (!challenge.params["scope"].empty() &&
        std::find(scopes.begin(), scopes.end(), challenge.params["scope"]) == scopes.end()) {
      scopes.push_back(challenge.params["scope"]);
    }
    for (const std::string& s : scopes) token.url += "&scope=" + registry_http::Escape(s);
    if (c) token.headers.push_back(basic);
    StatusOr<Response> resp = UnavailableError("no attempt");
    for (int attempt = 1; attempt <= options.max_attempts; ++attempt) {
      resp = registry_http::Perform(token);
      bool retry = !resp.ok() ? resp.status().code() == StatusCode::kUnavailable
                              : resp->status >= 500 || resp->status == 429;
      if (!retry || attempt == options.max_attempts) break;
      Backoff(attempt, resp.ok() ? &*resp : nullptr);
    }
    if (!resp.ok()) return resp.status().Annotate(what + ": token from " + realm);
    SF_RETURN_IF_ERROR(CheckResponse(*resp, what + ": token from " + realm, options.max_attempts));
    nlohmann::json j = nlohmann::json::parse(resp->body, nullptr, false);
    std::string value;
    for (const char* field : {"token", "access_token"}) {
      if (j.is_object() && j.contains(field) && j[field].is_string()) {
        value = j[field].get<std::string>();
        break;
      }
    }
    if (value.empty()) {
      return InvalidArgumentError(what + ": the token server " + realm + " sent no token");
    }
    auth[key] = "Authorization: Bearer " + value;
    return Status();
  }

  // An upload Location header from the answer to a request to `base`, as an absolute URL. It may
  // name another host (credentials are not sent there) but not downgrade https to http.
  StatusOr<std::string> UploadUrl(const std::string& registry, const std::string& base,
                                  const std::string& location, const std::string& what) const {
    StatusOr<std::string> url = registry_http::ResolveUrl(base, location);
    if (!url.ok()) return url.status().Annotate(what + ": upload location");
    if (Origin(registry).starts_with("https://") && !url->starts_with("https://")) {
      return InvalidArgumentError(what + ": the registry gave the upload URL " + *url +
                                  ", which switches from https to plain http");
    }
    return url;
  }

  StatusOr<Response> Call(const RegistryRef& ref, Request req, const std::string& scope,
                          const std::string& what) {
    SF_ASSIGN_OR_RETURN(Response r, Send(ref.registry, std::move(req), scope));
    SF_RETURN_IF_ERROR(CheckResponse(r, what, options.max_attempts));
    return r;
  }
};

RegistryClient::RegistryClient(RegistryOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->options = std::move(options);
}
RegistryClient::~RegistryClient() = default;

namespace {
std::string PullScope(const RegistryRef& ref) { return "repository:" + ref.repository + ":pull"; }
std::string PushScope(const RegistryRef& ref) {
  return "repository:" + ref.repository + ":pull,push";
}
}  // namespace

StatusOr<Digest> RegistryClient::Resolve(const RegistryRef& ref) {
  if (!ref.digest.empty()) return Digest::Parse(ref.digest);
  Request req;
  req.method = "HEAD";
  req.url = impl_->RepoUrl(ref) + "/manifests/" + ref.Reference();
  req.headers.push_back(ManifestAccept());
  SF_ASSIGN_OR_RETURN(Response r, impl_->Call(ref, req, PullScope(ref), ref.str()));
  const std::string header = r.Header("docker-content-digest");
  const std::string length = r.Header("content-length");
  uint64_t size = 0;
  auto [end, ec] = std::from_chars(length.data(), length.data() + length.size(), size);
  // An unparsable, overflowing or implausibly large length: ask for the manifest itself.
  if (!header.empty() && !length.empty() && ec == std::errc() &&
      end == length.data() + length.size() && size <= kMaxManifestBytes) {
    return Digest::Parse(header, size);
  }
  SF_ASSIGN_OR_RETURN(FetchedManifest m, GetManifest(ref, ref.Reference()));
  return m.digest;
}

StatusOr<FetchedManifest> RegistryClient::GetManifest(const RegistryRef& ref,
                                                      const std::string& reference) {
  RegistryRef at = ref;
  const std::string what = ref.registry + "/" + ref.repository +
                           (reference.starts_with("sha256:") ? "@" : ":") + reference;
  Request req;
  req.url = impl_->RepoUrl(ref) + "/manifests/" + reference;
  req.headers.push_back(ManifestAccept());
  req.max_body = kMaxManifestBytes;
  SF_ASSIGN_OR_RETURN(Response r, impl_->Call(ref, req, PullScope(ref), what));
  FetchedManifest m;
  m.bytes = std::move(r.body);
  m.digest = Digest::Of(m.bytes);
  if (reference.starts_with("sha256:") && "sha256:" + m.digest.hex != reference) {
    return DataLossError(what + ": the registry sent a manifest with digest " + m.digest.str());
  }
  nlohmann::json j = nlohmann::json::parse(m.bytes, nullptr, false);
  if (!j.is_object()) return InvalidArgumentError(what + ": the manifest is not a JSON object");
  if (j.contains("mediaType") && j["mediaType"].is_string()) {
    m.media_type = j["mediaType"].get<std::string>();
  } else {
    m.media_type = r.Header("content-type").substr(0, r.Header("content-type").find(';'));
  }
  return m;
}

Status RegistryClient::FetchBlobToFile(const RegistryRef& ref, const Digest& digest,
                                       const std::string& path) {
  const std::string what = "blob " + digest.str() + " of " + ref.registry + "/" + ref.repository;
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd) return ErrnoError("create " + path, errno);
  auto hash = std::make_unique<Sha256>();
  uint64_t seen = 0;
  Request req;
  req.url = impl_->RepoUrl(ref) + "/blobs/" + digest.str();
  req.blob = true;
  // digest.size is exact (only the empty blob has size 0).
  req.sink = [&](std::string_view bytes) -> Status {
    seen += bytes.size();
    if (seen > digest.size) {
      return DataLossError(what + ": the registry sent more than " + std::to_string(digest.size) +
                           " bytes");
    }
    hash->Update(bytes);
    while (!bytes.empty()) {
      ssize_t n = ::write(fd.get(), bytes.data(), bytes.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return ErrnoError("write " + path, errno);
      bytes.remove_prefix(static_cast<size_t>(n));
    }
    return Status();
  };
  Status restart_error;
  auto restart = [&] {
    if (::ftruncate(fd.get(), 0) != 0 || ::lseek(fd.get(), 0, SEEK_SET) != 0) {
      restart_error = ErrnoError("truncate " + path, errno);
    }
    hash = std::make_unique<Sha256>();
    seen = 0;
  };
  SF_ASSIGN_OR_RETURN(Response r, impl_->Send(ref.registry, req, PullScope(ref), restart));
  SF_RETURN_IF_ERROR(restart_error);
  SF_RETURN_IF_ERROR(CheckResponse(r, what, impl_->options.max_attempts));
  Digest got = hash->Finish();
  if (got.hex != digest.hex || got.size != digest.size) {
    return DataLossError(what + ": the registry sent content with digest " + got.str() + " (" +
                         std::to_string(got.size) + " bytes)");
  }
  return Status();
}

StatusOr<BlobPush> RegistryClient::PushBlob(const RegistryRef& ref, const Digest& digest,
                                            const BlobReader& read,
                                            const std::vector<std::string>& mount_from) {
  const std::string what =
      "push blob " + digest.str() + " to " + ref.registry + "/" + ref.repository;
  std::string scope = PushScope(ref);
  Request head;
  head.method = "HEAD";
  head.url = impl_->RepoUrl(ref) + "/blobs/" + digest.str();
  SF_ASSIGN_OR_RETURN(Response exists, impl_->Send(ref.registry, head, scope));
  if (exists.status == 200) return BlobPush::kExisted;
  if (exists.status != 404) SF_RETURN_IF_ERROR(CheckResponse(exists, what, 1));

  Request start;
  start.method = "POST";
  start.url = impl_->RepoUrl(ref) + "/blobs/uploads/";
  auto from = std::find_if(mount_from.begin(), mount_from.end(),
                           [&](const std::string& r) { return r != ref.repository; });
  if (from != mount_from.end()) {
    start.url +=
        "?mount=" + registry_http::Escape(digest.str()) + "&from=" + registry_http::Escape(*from);
    scope += " repository:" + *from + ":pull";
  }
  SF_ASSIGN_OR_RETURN(Response started, impl_->Call(ref, start, scope, what));
  if (started.status == 201) return BlobPush::kMounted;
  if (started.Header("location").empty()) {
    return InvalidArgumentError(what + ": the registry gave no upload URL");
  }
  SF_ASSIGN_OR_RETURN(std::string location, impl_->UploadUrl(ref.registry, started.url,
                                                             started.Header("location"), what));

  // Reads the next piece of the blob into memory (at most chunk_size bytes), hashing it.
  Sha256 sent;
  auto read_piece = [&](uint64_t offset, uint64_t length) -> StatusOr<std::string> {
    std::string piece;
    piece.reserve(length);
    SF_RETURN_IF_ERROR(read(offset, length, [&](std::string_view b) -> Status {
      piece.append(b);
      return Status();
    }));
    if (piece.size() != length) {
      return DataLossError(what + ": the store gave " + std::to_string(piece.size()) +
                           " bytes at offset " + std::to_string(offset) + ", not " +
                           std::to_string(length));
    }
    sent.Update(piece);
    return piece;
  };
  auto with_query = [](const std::string& url, const std::string& query) {
    return url + (url.find('?') == std::string::npos ? "?" : "&") + query;
  };
  const uint64_t chunk = std::max<uint64_t>(impl_->options.chunk_size, 1);
  std::string last_piece;
  if (digest.size > chunk) {
    for (uint64_t offset = 0; offset < digest.size; offset += chunk) {
      uint64_t n = std::min(chunk, digest.size - offset);
      SF_ASSIGN_OR_RETURN(std::string piece, read_piece(offset, n));
      Request patch;
      patch.method = "PATCH";
      patch.url = location;
      patch.blob = true;
      patch.headers = {
          "Content-Type: application/octet-stream",
          "Content-Range: " + std::to_string(offset) + "-" + std::to_string(offset + n - 1)};
      patch.body = piece;
      SF_ASSIGN_OR_RETURN(Response r, impl_->Call(ref, patch, scope, what));
      if (!r.Header("location").empty()) {
        SF_ASSIGN_OR_RETURN(location,
                            impl_->UploadUrl(ref.registry, patch.url, r.Header("location"), what));
      }
    }
  } else {
    SF_ASSIGN_OR_RETURN(last_piece, read_piece(0, digest.size));
  }
  Digest actual = sent.Finish();
  if (actual.hex != digest.hex) {
    return DataLossError(what + ": the stored bytes hash to " + actual.str());
  }
  Request put;
  put.method = "PUT";
  put.url = with_query(location, "digest=" + registry_http::Escape(digest.str()));
  put.blob = true;
  put.headers = {"Content-Type: application/octet-stream"};
  put.body = last_piece;
  SF_ASSIGN_OR_RETURN(Response done, impl_->Call(ref, put, scope, what));
  (void)done;
  return BlobPush::kUploaded;
}

StatusOr<Digest> RegistryClient::PutManifest(const RegistryRef& ref, std::string_view media_type,
                                             std::string_view bytes) {
  const std::string what = "push manifest to " + ref.str();
  Request put;
  put.method = "PUT";
  put.url = impl_->RepoUrl(ref) + "/manifests/" + ref.Reference();
  put.headers = {"Content-Type: " + std::string(media_type)};
  put.body = bytes;
  SF_ASSIGN_OR_RETURN(Response r, impl_->Call(ref, put, PushScope(ref), what));
  Digest d = Digest::Of(bytes);
  const std::string said = r.Header("docker-content-digest");
  if (!said.empty() && said != d.str()) {
    return DataLossError(what + ": the registry stored it as " + said + ", not " + d.str());
  }
  return d;
}

}  // namespace stagefarm
