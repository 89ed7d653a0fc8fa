// What a worker is told about one step: the resolved step turned into the wire StepSpec.
#pragma once

#include <string>
#include <vector>

#include "stagefarm/common/build_plan.h"
#include "stagefarm/common/build_protocol.h"
#include "stagefarm/common/worker_protocol.h"

namespace stagefarm::coordinator {

// `from_layers` is the source filesystem of a COPY --from (empty: the build context).
StepSpec MakeStepSpec(const frontend::ResolvedStep& step, const std::string& key,
                      const BuildRequest& request, std::vector<LayerRef> from_layers);

}  // namespace stagefarm::coordinator
