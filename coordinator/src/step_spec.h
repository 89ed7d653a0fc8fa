// What a worker is told about one step: the resolved step turned into the wire StepSpec.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "stagefarm/common/build_plan.h"
#include "stagefarm/common/build_protocol.h"
#include "stagefarm/common/worker_protocol.h"

namespace stagefarm::coordinator {

// `from_layers` is the source filesystem of a COPY --from (empty: the build context).
// `mount_layers`, parallel to step.mounts (or empty), is the filesystem each RUN --mount from=
// names (a stage's or an image's layers). Secret values are not copied into the step: the caller
// puts them into the StageTask (TaskSecrets).
StepSpec MakeStepSpec(const frontend::ResolvedStep& step, const std::string& key,
                      const BuildRequest& request, std::vector<LayerRef> from_layers,
                      std::vector<std::vector<LayerRef>> mount_layers = {});

// The secrets (id -> value) of `request` that the steps of `task` mount: only those go to the
// worker. A secret the build was not given is left out (the worker fails a required one).
std::map<std::string, std::string> TaskSecrets(const StageTask& task, const BuildRequest& request);

}  // namespace stagefarm::coordinator
