// One HTTP exchange over libcurl, for the registry client. Private to common.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "stagefarm/common/cache_client.h"
#include "stagefarm/common/status.h"

namespace stagefarm::registry_http {

struct Request {
  std::string method = "GET";  // GET, HEAD, POST, PUT, PATCH
  std::string url;
  std::vector<std::string> headers;  // "Name: value"
  std::string_view body;             // sent for POST, PUT and PATCH (borrowed)
  // Receives the body of a 2xx answer as it streams; unset: collected into Response::body.
  ByteSink sink;
  uint64_t max_body = 4 << 20;  // a longer collected body is an error
  // A blob transfer is limited only by a low-speed cutoff; any other exchange (manifests, tokens,
  // HEADs) must finish within `timeout`.
  bool blob = false;
  std::chrono::seconds timeout{60};
};

struct Response {
  long status = 0;
  std::map<std::string, std::string> headers;  // lowercase names, of the last response
  std::string body;  // non-2xx answers always (up to 64 KiB); 2xx when no sink
  std::string url;   // the effective URL, after redirects
  std::string Header(const std::string& lowercase_name) const {
    auto it = headers.find(lowercase_name);
    return it == headers.end() ? "" : it->second;
  }
};

// One attempt, following redirects for GET and HEAD. Unavailable when the server cannot be
// reached or the connection breaks; the sink's own error is returned as is.
StatusOr<Response> Perform(const Request& request);

// "scheme://host:port" of an absolute http(s) URL (lowercase, default port filled in), or "" when
// `url` is not one.
std::string OriginOf(std::string_view url);

// `location` (absolute or relative, as a Location header gives it) resolved against `base`.
// InvalidArgument unless the result is an http(s) URL.
StatusOr<std::string> ResolveUrl(std::string_view base, std::string_view location);

// `text` percent-encoded for a URL query.
std::string Escape(std::string_view text);

// The text of the registry's JSON error body ({"errors":[{"code","message"}]}), or "".
std::string ErrorText(const Response& response);

}  // namespace stagefarm::registry_http
