#include "stagefarm/cli/curve_keys.h"

#include <cstdlib>

namespace stagefarm::cli {

Status UseCurveKeys(Transport& transport, const std::string& dir, PeerRole role) {
  if (dir.empty()) return Status();
  SF_ASSIGN_OR_RETURN(CurveKeys keys, LoadCurveKeys(dir, role));
  return transport.EnableCurve(std::move(keys));
}

Status UseClientCurveKeys(Transport& transport, const std::string& dir) {
  std::string d = dir;
  if (d.empty()) {
    const char* env = std::getenv("STAGEFARM_CURVE_KEYS");
    d = env ? env : "";
  }
  if (d.empty() || transport.curve_enabled()) return Status();
  Status first;
  for (PeerRole role : {PeerRole::kClient, PeerRole::kWorker, PeerRole::kServer}) {
    StatusOr<CurveKeys> keys = LoadCurveKeys(d, role);
    if (keys.ok()) return transport.EnableCurve(*std::move(keys));
    if (first.ok()) first = keys.status();
  }
  return first;
}

}  // namespace stagefarm::cli
