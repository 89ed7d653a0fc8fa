#include "registry_http.h"

#include <curl/curl.h>

#include <cctype>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>

namespace stagefarm::registry_http {
namespace {

constexpr size_t kMaxErrorBody = 64 << 10;

struct CurlDeleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
struct SlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};

struct Exchange {
  CURL* curl = nullptr;
  const Request* request = nullptr;
  Response response;
  Status sink_error;
  bool too_long = false;
  bool error_truncated = false;  // an error body reached kMaxErrorBody and was cut there
};

size_t OnHeader(char* data, size_t size, size_t n, void* user) {
  auto* x = static_cast<Exchange*>(user);
  std::string_view line(data, size * n);
  if (line.starts_with("HTTP/")) {
    x->response.headers.clear();  // a redirect or 100-continue: keep the last response's
    return size * n;
  }
  size_t colon = line.find(':');
  if (colon == std::string_view::npos) return size * n;
  std::string name(line.substr(0, colon));
  for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  std::string_view value = line.substr(colon + 1);
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == '\r' || value.back() == '\n' || value.back() == ' ')) {
    value.remove_suffix(1);
  }
  x->response.headers[name] = std::string(value);
  return size * n;
}

size_t OnBody(char* data, size_t size, size_t n, void* user) {
  auto* x = static_cast<Exchange*>(user);
  long status = 0;
  curl_easy_getinfo(x->curl, CURLINFO_RESPONSE_CODE, &status);
  std::string_view bytes(data, size * n);
  if (status / 100 == 2 && x->request->sink) {
    x->sink_error = x->request->sink(bytes);
    return x->sink_error.ok() ? bytes.size() : 0;
  }
  uint64_t limit = status / 100 == 2 ? x->request->max_body : kMaxErrorBody;
  if (x->response.body.size() + bytes.size() > limit) {
    if (status / 100 != 2) {
      // An error page: its start is enough. Stop the transfer; Perform sees the flag.
      x->response.body.append(bytes.substr(0, limit - x->response.body.size()));
      x->error_truncated = true;
    } else {
      x->too_long = true;
    }
    return 0;
  }
  x->response.body.append(bytes);
  return bytes.size();
}

}  // namespace

StatusOr<Response> Perform(const Request& request) {
  static std::once_flag init;
  std::call_once(init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  std::unique_ptr<CURL, CurlDeleter> curl(curl_easy_init());
  SF_CHECK(curl != nullptr);
  Exchange x;
  x.curl = curl.get();
  x.request = &request;
  std::unique_ptr<curl_slist, SlistDeleter> headers;
  auto add_header = [&](const std::string& h) {
    curl_slist* l = curl_slist_append(headers.get(), h.c_str());
    SF_CHECK(l != nullptr);
    (void)headers.release();
    headers.reset(l);
  };
  for (const std::string& h : request.headers) add_header(h);
  add_header("Expect:");  // no 100-continue round trip before uploads
  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_USERAGENT, "stagefarm/0.1");
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
  // Only http and https, also when following a redirect (no file://, no gopher://).
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  if (request.blob) {
    // A blob transfer slower than 1 KiB/s for two minutes has stalled.
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 120L);
  } else if (request.timeout.count() > 0) {
    curl_easy_setopt(c, CURLOPT_TIMEOUT, static_cast<long>(request.timeout.count()));
  }
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, OnHeader);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &x);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, OnBody);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &x);
  if (request.method == "GET" || request.method == "HEAD") {
    // Blob GETs are often redirected to storage; curl sends our Authorization header only to
    // the original host.
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
    if (request.method == "HEAD") curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
  } else {
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, request.method.c_str());
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, request.body.data() ? request.body.data() : "");
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(request.body.size()));
  }
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
  char errbuf[CURL_ERROR_SIZE] = "";
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
  CURLcode rc = curl_easy_perform(c);
  if (!x.sink_error.ok()) return x.sink_error;
  if (x.too_long) {
    return InvalidArgumentError(request.method + " " + request.url +
                                ": the answer is longer than " + std::to_string(request.max_body) +
                                " bytes");
  }
  if (rc == CURLE_WRITE_ERROR && x.error_truncated) rc = CURLE_OK;  // a cut error page
  if (rc != CURLE_OK) {
    return UnavailableError(request.method + " " + request.url + ": " +
                            (errbuf[0] ? std::string(errbuf) : curl_easy_strerror(rc)));
  }
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &x.response.status);
  char* effective = nullptr;
  curl_easy_getinfo(c, CURLINFO_EFFECTIVE_URL, &effective);
  x.response.url = effective ? effective : request.url;
  return std::move(x.response);
}

std::string ErrorText(const Response& response) {
  nlohmann::json j = nlohmann::json::parse(response.body, nullptr, false);
  if (!j.is_object() || !j.contains("errors") || !j["errors"].is_array()) return "";
  std::string out;
  for (const auto& e : j["errors"]) {
    if (!e.is_object()) continue;
    auto text = [&](const char* key) {
      return e.contains(key) && e[key].is_string() ? e[key].get<std::string>() : std::string();
    };
    std::string code = text("code");
    std::string message = text("message");
    if (!out.empty()) out += "; ";
    out += code.empty() ? message : message.empty() ? code : code + ": " + message;
  }
  return out;
}

namespace {
struct UrlDeleter {
  void operator()(CURLU* u) const { curl_url_cleanup(u); }
};
std::string UrlPart(CURLU* u, CURLUPart part, unsigned flags = 0) {
  char* v = nullptr;
  if (curl_url_get(u, part, &v, flags) != CURLUE_OK || v == nullptr) return "";
  std::string out(v);
  curl_free(v);
  return out;
}
}  // namespace

std::string OriginOf(std::string_view url) {
  std::unique_ptr<CURLU, UrlDeleter> u(curl_url());
  SF_CHECK(u != nullptr);
  if (curl_url_set(u.get(), CURLUPART_URL, std::string(url).c_str(), 0) != CURLUE_OK) return "";
  std::string scheme = UrlPart(u.get(), CURLUPART_SCHEME);
  std::string host = UrlPart(u.get(), CURLUPART_HOST);
  std::string port = UrlPart(u.get(), CURLUPART_PORT, CURLU_DEFAULT_PORT);
  if ((scheme != "http" && scheme != "https") || host.empty() || port.empty()) return "";
  for (char& ch : host) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return scheme + "://" + host + ":" + port;
}

StatusOr<std::string> ResolveUrl(std::string_view base, std::string_view location) {
  std::unique_ptr<CURLU, UrlDeleter> u(curl_url());
  SF_CHECK(u != nullptr);
  const std::string what = "the URL \"" + std::string(location) + "\"";
  if (curl_url_set(u.get(), CURLUPART_URL, std::string(base).c_str(), 0) != CURLUE_OK ||
      curl_url_set(u.get(), CURLUPART_URL, std::string(location).c_str(), 0) != CURLUE_OK) {
    return InvalidArgumentError(what + " is not a valid URL");
  }
  std::string out = UrlPart(u.get(), CURLUPART_URL);
  if (OriginOf(out).empty()) return InvalidArgumentError(what + " is not an http(s) URL");
  return out;
}

std::string Escape(std::string_view text) {
  char* e = curl_easy_escape(nullptr, text.data(), static_cast<int>(text.size()));
  SF_CHECK(e != nullptr);
  std::string out(e);
  curl_free(e);
  return out;
}

}  // namespace stagefarm::registry_http
