// KEY=VALUE flags that become a map: `stagefarm worker --label` (what the worker offers) and
// `stagefarm build --worker-label` (what the build's tasks need).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "stagefarm/common/status.h"

namespace stagefarm::cli {

// Each spec is KEY=VALUE with a non-empty KEY; a later KEY wins. An error names the flag and the
// spec ("--label size: want KEY=VALUE").
StatusOr<std::map<std::string, std::string>> ParseLabelFlags(const std::string& flag,
                                                             const std::vector<std::string>& specs);

}  // namespace stagefarm::cli
