#include "stagefarm/common/image_ref.h"

namespace stagefarm {

std::string NormalizeImageRef(std::string_view ref) {
  std::string r(ref);
  std::string digest;
  if (size_t at = r.find('@'); at != std::string::npos) {
    digest = r.substr(at);
    r.resize(at);
  }
  // A first component with a dot or colon, or "localhost", names a registry.
  size_t slash = r.find('/');
  std::string first = slash == std::string::npos ? "" : r.substr(0, slash);
  bool has_registry = !first.empty() && (first.find('.') != std::string::npos ||
                                         first.find(':') != std::string::npos ||
                                         first == "localhost");
  if (!has_registry) r = (slash == std::string::npos ? "docker.io/library/" : "docker.io/") + r;
  size_t last_slash = r.rfind('/');
  if (digest.empty() && r.find(':', last_slash == std::string::npos ? 0 : last_slash) ==
                            std::string::npos) {
    r += ":latest";
  }
  return r + digest;
}

std::string FamiliarImageRef(std::string_view normalized) {
  std::string r(normalized);
  for (std::string_view prefix : {"docker.io/library/", "docker.io/"}) {
    if (r.rfind(prefix, 0) == 0) return r.substr(prefix.size());
  }
  return r;
}

}  // namespace stagefarm
