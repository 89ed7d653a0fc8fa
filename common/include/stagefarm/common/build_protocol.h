// Messages between a client (stagefarm build) and the coordinator. A client sends SubmitBuild;
// the coordinator replies with the build id and then streams BuildEvents with the same request id
// until one of kind kBuildDone or kBuildFailed.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "stagefarm/common/digest.h"
#include "stagefarm/common/remote_file.h"
#include "stagefarm/common/status.h"

namespace stagefarm {

struct BuildRequest {
  Digest context_root;           // the context's Merkle root, already uploaded
  Digest dockerfile;             // the Dockerfile's bytes, already uploaded
  std::string dockerfile_name;   // for messages ("Dockerfile", "docker/Dockerfile.prod")
  std::map<std::string, std::string> build_args;
  std::string target;            // empty: the last stage
  std::vector<std::string> tags; // refs to point at the result
  std::map<std::string, std::string> labels;  // --label
  bool no_cache = false;
  std::vector<std::string> no_cache_filter;
  std::string platform;          // empty: the farm's default
  std::string tenant;            // for fairness; empty = "default"
  std::string network;           // --network for RUN: "default" or "none"
  int32_t priority = 0;          // higher runs first within the fair share of tenants
  // --secret: id -> value, for RUN --mount=type=secret. Sent to the tasks that mount them only;
  // never logged, stored or part of a cache key.
  std::map<std::string, std::string> secrets;
  // --worker-label: the build's tasks run only on workers that carry every one of these labels.
  std::map<std::string, std::string> worker_constraints;
  // The http(s) files the Dockerfile's ADD steps name, fetched by the client and stored in the CAS
  // (remote_file.h). An ADD URL missing here fails the build.
  std::vector<RemoteFile> remote_files;

  friend bool operator==(const BuildRequest&, const BuildRequest&) = default;
};

struct SubmitBuildResponse {
  std::string build_id;
};

struct CancelBuildRequest {
  std::string build_id;
};

struct StageSummary {
  std::string name;
  std::string worker;  // empty when fully cached
  bool cached = false;
  double seconds = 0;
  uint64_t size = 0;   // bytes of the stage's filesystem (sum of its layers)
  friend bool operator==(const StageSummary&, const StageSummary&) = default;
};

struct BuildEvent {
  enum class Kind : uint8_t {
    kInfo = 0,         // a message for the user (text)
    kStageQueued = 1,  // stage, worker
    kStepStarted = 2,  // stage, step, line, text, worker
    kStepCached = 3,   // stage, step, line, text
    kStepLog = 4,      // stage, step, log
    kStepDone = 5,     // stage, step, seconds, layer_size
    kStageDone = 6,    // stage, worker, seconds
    kBuildDone = 7,    // manifest, config, image_size, stages
    kBuildFailed = 8,  // error, stage, step, line, exit_code, log
    kStageRetried = 9, // stage, worker (lost), text (why)
  };
  Kind kind = Kind::kInfo;
  double time = 0;        // seconds since the build started
  std::string stage;
  int32_t step = -1;      // index in the stage's instructions
  int32_t line = 0;       // Dockerfile line
  std::string text;
  std::string worker;
  std::string log;
  double seconds = 0;
  uint64_t layer_size = 0;
  Digest manifest;
  Digest config;
  uint64_t image_size = 0;
  int32_t exit_code = 0;
  std::string error;
  std::vector<StageSummary> stages;

  friend bool operator==(const BuildEvent&, const BuildEvent&) = default;
};

// The reply to Method::kPing from the coordinator: how a client reaches the rest of the farm.
struct FarmInfo {
  std::string cache_endpoint;  // where clients upload the context and read results
  std::string platform;
  uint32_t workers = 0;
};

std::string Encode(const FarmInfo& m);
Status Decode(std::string_view bytes, FarmInfo* m);
std::string Encode(const BuildRequest& m);
std::string Encode(const SubmitBuildResponse& m);
std::string Encode(const CancelBuildRequest& m);
std::string Encode(const BuildEvent& m);
Status Decode(std::string_view bytes, BuildRequest* m);
Status Decode(std::string_view bytes, SubmitBuildResponse* m);
Status Decode(std::string_view bytes, CancelBuildRequest* m);
Status Decode(std::string_view bytes, BuildEvent* m);

}  // namespace stagefarm
