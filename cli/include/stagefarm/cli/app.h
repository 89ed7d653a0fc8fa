// The stagefarm command: parses the subcommand and its flags, wires the parts, runs.
#pragma once

namespace stagefarm::cli {

// Returns the process exit code: 0 success, 1 build or runtime failure, 2 usage error.
int Main(int argc, char** argv);

}  // namespace stagefarm::cli
