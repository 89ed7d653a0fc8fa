#include "step_spec.h"

namespace stagefarm::coordinator {
namespace {

StepKind ToWireKind(frontend::StepKind k) {
  switch (k) {
    case frontend::StepKind::kCopy: return StepKind::kCopy;
    case frontend::StepKind::kAdd: return StepKind::kAdd;
    default: return StepKind::kRun;
  }
}

}  // namespace

StepSpec MakeStepSpec(const frontend::ResolvedStep& step, const std::string& key,
                      const BuildRequest& request, std::vector<LayerRef> from_layers) {
  StepSpec w;
  w.key = key;
  w.kind = ToWireKind(step.kind);
  w.line = step.line;
  w.text = step.text;
  w.created_by = step.created_by;
  w.env = step.kind == frontend::StepKind::kRun ? step.env : step.config.env;
  w.user = step.config.user;
  w.workdir = step.config.working_dir;
  w.argv = step.argv;
  w.network = step.network.empty() ? "default" : step.network;
  if (request.network == "none") w.network = "none";
  w.sources = step.sources;
  w.dest = step.dest;
  w.chown = step.chown;
  w.chmod = step.chmod;
  w.from_layers = std::move(from_layers);
  if (w.from_layers.empty()) w.context_root = request.context_root;
  return w;
}

}  // namespace stagefarm::coordinator
