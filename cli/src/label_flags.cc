#include "stagefarm/cli/label_flags.h"

namespace stagefarm::cli {

StatusOr<std::map<std::string, std::string>> ParseLabelFlags(
    const std::string& flag, const std::vector<std::string>& specs) {
  std::map<std::string, std::string> out;
  for (const std::string& spec : specs) {
    size_t eq = spec.find('=');
    if (eq == std::string::npos || eq == 0) {
      return InvalidArgumentError(flag + " " + spec + ": want KEY=VALUE (e.g. size=large)");
    }
    out[spec.substr(0, eq)] = spec.substr(eq + 1);
  }
  return out;
}

}  // namespace stagefarm::cli
