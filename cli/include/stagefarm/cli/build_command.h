// `stagefarm build`: docker build's flags, against a farm or the embedded farm.
#pragma once

#include <string>
#include <vector>

#include "stagefarm/cli/farm_connection.h"

namespace stagefarm::cli {

struct BuildFlags {
  std::string context = ".";  // "-": a tarball (or a Dockerfile) on stdin
  std::string file;  // -f; empty: <context>/Dockerfile; "-": stdin
  std::vector<std::string> tags;
  std::vector<std::string> build_args;  // K=V or K (taken from the environment)
  std::string target;
  std::vector<std::string> labels;
  bool no_cache = false;
  std::vector<std::string> no_cache_filter;
  std::string platform;
  std::string progress = "auto";
  bool quiet = false;
  std::string iidfile;
  std::string metadata_file;            // BuildKit-style JSON result
  std::vector<std::string> secrets;     // id=..,src=.. | id=..,env=..
  std::vector<std::string> outputs;  // -o type=oci,dest=x.tar
  std::string network;
  std::vector<std::string> insecure_registries;  // --insecure-registry: plain http
  std::string tenant;  // BuildRequest.tenant: fair shares between tenants
  int priority = 0;    // BuildRequest.priority
  std::vector<std::string> worker_labels;  // KEY=VALUE: BuildRequest.worker_constraints
  FarmTarget farm;
};

// Returns the exit code: 0 built, 1 build failed, 2 usage error.
int RunBuild(const BuildFlags& flags);

}  // namespace stagefarm::cli
