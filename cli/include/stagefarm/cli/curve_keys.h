// How the commands pick up their CURVE keys (--curve-keys DIR; see transport.h for the files).
#pragma once

#include <string>

#include "stagefarm/common/status.h"
#include "stagefarm/common/transport.h"

namespace stagefarm::cli {

// Enables CURVE on `transport` with the keys of `role` in `dir`. An empty `dir` does nothing.
// Call before the transport binds or connects anything.
Status UseCurveKeys(Transport& transport, const std::string& dir, PeerRole role);

// For commands that only connect (build, image, health): `dir`, else $STAGEFARM_CURVE_KEYS, with
// the first role that has a secret key there: client, then worker, then server (a probe inside a
// server's pod uses the server key). Neither set: nothing.
Status UseClientCurveKeys(Transport& transport, const std::string& dir);

}  // namespace stagefarm::cli
