// Fuzz target: the Dockerfile parser and resolution (build_plan) on arbitrary text. Any input
// must give a plan or an error, never a crash, a sanitizer report or a hang. Seeded from
// tests/conformance/dockerfile/parser*/ (see CMakeLists.txt).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "stagefarm/common/build_plan.h"
#include "stagefarm/common/dockerfile_parser.h"

using namespace stagefarm;
using namespace stagefarm::frontend;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (64 << 10)) return 0;  // a Dockerfile that large tests nothing new, only time
  std::string_view text(reinterpret_cast<const char*>(data), size);
  StatusOr<ParsedDockerfile> parsed = ParseDockerfile(text);
  if (parsed.ok()) {
    std::string dump = DumpParseTree(*parsed);
    if (dump.empty() && !parsed->nodes.empty()) __builtin_trap();  // every node prints a line
  }
  // Images: every name resolves to an empty config, except "missing" (NotFound) and
  // "onbuild", whose triggers are a bit of the input itself.
  ImageResolver images = [&](const std::string& ref) -> StatusOr<ImageConfig> {
    if (ref == "missing") return NotFoundError("no image missing");
    ImageConfig config;
    if (ref == "onbuild") config.on_build = {std::string(text.substr(0, 200))};
    return config;
  };
  BuildOptions options;
  options.build_args = {{"A", "1"}, {"HTTP_PROXY", "p"}};
  StatusOr<BuildPlan> plan = Resolve(text, options, images);
  if (plan.ok()) {
    if (plan->target < 0 || plan->target >= static_cast<int>(plan->stages.size())) __builtin_trap();
    (void)DescribePlan(*plan);
  } else if (plan.status().message().empty()) {
    __builtin_trap();  // an error always says something
  }
  return 0;
}
