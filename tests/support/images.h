// Images for integration tests: the busybox base image, and running a built image for real.
#pragma once

#include <string>
#include <vector>

namespace stagefarm::testing {

// The busybox OCI layout from scripts/make-busybox-image, made once per test binary and removed
// at exit. A failure to make it fails the calling test.
const std::string& BusyboxLayout();

// `stagefarm image import` of BusyboxLayout() as "busybox", with `env` (STAGEFARM_HOME=... names
// the store). False, with the command's stderr as a test failure, if it fails.
[[nodiscard]] bool ImportBusybox(const std::vector<std::string>& env);

// Copies the image at `src_ref` (a skopeo reference: oci-archive:F, docker-archive:F, oci:D:T)
// into an OCI layout under `dir`, unpacks it with umoci and runs its default command with crun.
// Returns the command's stdout; failures of any tool fail the calling test.
std::string RunImage(const std::string& src_ref, const std::string& dir);

}  // namespace stagefarm::testing
