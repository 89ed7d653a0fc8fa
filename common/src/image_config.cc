#include "stagefarm/common/image_config.h"

namespace stagefarm {

std::optional<std::string> ImageConfig::GetEnv(const std::string& key) const {
  for (const auto& kv : env) {
    if (kv.size() > key.size() && kv.compare(0, key.size(), key) == 0 && kv[key.size()] == '=') {
      return kv.substr(key.size() + 1);
    }
  }
  return std::nullopt;
}

void ImageConfig::SetEnv(const std::string& key, const std::string& value) {
  for (auto& kv : env) {
    if (kv.size() > key.size() && kv.compare(0, key.size(), key) == 0 && kv[key.size()] == '=') {
      kv = key + "=" + value;
      return;
    }
  }
  env.push_back(key + "=" + value);
}

}  // namespace stagefarm
