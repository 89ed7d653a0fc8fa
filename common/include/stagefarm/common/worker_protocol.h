// Messages between the coordinator and workers (Method::kRegisterWorker ... kCancelTask).
// Encode/Decode are the Cap'n Proto codec (common/schema/worker.capnp); Decode fails with
// InvalidArgument on malformed bytes.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "stagefarm/common/digest.h"
#include "stagefarm/common/layer_ref.h"
#include "stagefarm/common/remote_file.h"
#include "stagefarm/common/status.h"

namespace stagefarm {

// kWorkdir: mkdir -p of `workdir` (as BuildKit's WORKDIR), new directories owned by `user`.
enum class StepKind : uint8_t { kRun = 0, kCopy = 1, kAdd = 2, kWorkdir = 3 };

// One RUN --mount, resolved by the coordinator. Nothing it mounts becomes part of the layer.
struct MountSpec {
  enum class Type : uint8_t { kBind = 0, kCache = 1, kTmpfs = 2, kSecret = 3 };
  Type type = Type::kBind;
  std::string target;  // absolute, or relative to the step's workdir; secrets: may be empty (env)
  // bind (and cache seeding): the path in the source filesystem; "" = its root.
  std::string source;
  bool readonly = false;  // bind: rw changes are discarded; cache: mounted read-only
  // bind: the build context when set, else the filesystem of `from_layers` (a stage or image).
  // cache: a new cache directory is seeded from `from_layers` at `source` when they are given.
  Digest context_root;
  std::vector<LayerRef> from_layers;
  std::string id;       // cache id (default: the target) or secret id
  std::string sharing;  // cache: "shared", "private" or "locked"
  int64_t mode = -1, uid = -1, gid = -1;  // cache dir / secret file; -1 = the default
  bool required = false;                  // secret: a missing value fails the step
  std::string env;                        // secret: exposed as this variable, not as a file
  int64_t size_limit = 0;                 // tmpfs bytes; 0 = the kernel's default

  friend bool operator==(const MountSpec&, const MountSpec&) = default;
};

// A file COPY or ADD writes from the Dockerfile itself (`COPY <<EOF dest`), after the step's
// sources, as BuildKit does: a file `name` of mode 0644 and owner 0:0 (before --chmod and
// --chown), copied to dest as a source file would be.
struct HeredocFile {
  std::string name;
  std::string content;  // as the frontend expanded it

  friend bool operator==(const HeredocFile&, const HeredocFile&) = default;
};

// One filesystem-changing step, fully resolved by the coordinator: the worker needs nothing else.
struct StepSpec {
  std::string key;  // the step's cache key (hex); the worker records its result under it
  StepKind kind = StepKind::kRun;
  int line = 0;             // Dockerfile line, for messages
  std::string text;         // the instruction as written, for display ("RUN make")
  std::string created_by;   // history entry

  // The image state the step runs in.
  std::vector<std::string> env;  // "K=V": the config env plus the build args the step sees
  std::string user;              // USER as written ("app", "1000:1000"); empty = root
  std::string workdir;           // absolute; empty = "/"

  // RUN
  std::vector<std::string> argv;  // the final command, shell already prepended for shell form
  std::string network;            // "default", "none" or "host"
  std::vector<MountSpec> mounts;  // RUN --mount, in the order written

  // COPY / ADD
  std::vector<std::string> sources;  // as written (after expansion), relative to the source root
  std::string dest;                  // as written; relative dests are relative to workdir
  std::string chown;                 // --chown as written; names resolved in the image
  std::string chmod;                 // --chmod as written
  Digest context_root;               // source is the build context (when from_layers is empty)
  std::vector<LayerRef> from_layers; // source is this filesystem (COPY --from a stage or image)
  std::vector<RemoteFile> remote_files;  // ADD: the content of its http(s) sources, in the CAS
  std::vector<HeredocFile> heredocs;     // COPY <<EOF, in the order written
  bool parents = false;                  // COPY --parents
  std::vector<std::string> excludes;     // --exclude patterns, as written (after expansion)
  std::optional<bool> unpack;            // ADD --unpack; unset: local archives only
  bool link = false;                     // --link

  friend bool operator==(const StepSpec&, const StepSpec&) = default;
};

// A run of steps of one stage, starting at its first cache miss.
struct StageTask {
  std::string task_id;
  std::string build_id;
  std::string stage;                // stage name for display ("build", or "stage-1")
  std::vector<LayerRef> base_layers;  // the stage's filesystem before the first step, lowest first
  std::vector<StepSpec> steps;
  int64_t source_date_epoch = -1;   // clamp layer mtimes when >= 0
  uint32_t timeout_seconds = 0;     // per step; 0 = the worker's default
  // Secret id -> value, only those the steps mount and the build was given. Never logged, never
  // in a layer, an event or a cache key.
  std::map<std::string, std::string> secrets;

  friend bool operator==(const StageTask&, const StageTask&) = default;
};

struct RegisterWorkerRequest {
  std::string name;      // unique in the farm, e.g. "host-1/worker-2"
  uint32_t slots = 1;    // tasks it runs at once
  std::string platform;  // "linux/amd64"
  std::map<std::string, std::string> labels;
  std::vector<std::string> running_tasks;  // what it still runs from before (it reconnected)
};

struct HeartbeatRequest {
  std::string name;
  uint32_t busy_slots = 0;
  std::vector<std::string> running_tasks;
  std::vector<std::string> layers;  // diffID hex of the layers it holds extracted (for placement)
  // Shutting down: give it no new tasks. With no running tasks either, it is leaving the farm.
  bool draining = false;
};

struct TaskEvent {
  enum class Kind : uint8_t { kStepStarted = 0, kLog = 1, kStepDone = 2 };
  std::string task_id;
  Kind kind = Kind::kStepStarted;
  uint32_t step = 0;    // index into StageTask::steps
  std::string log;      // kLog: a chunk of the command's output
  double seconds = 0;   // kStepDone
  LayerRef layer;       // kStepDone

  friend bool operator==(const TaskEvent&, const TaskEvent&) = default;
};

struct TaskDone {
  std::string task_id;
  Status status;              // OK, or why the task failed
  int32_t failed_step = -1;   // index of the failing step
  int32_t exit_code = 0;      // of a failed RUN
  std::vector<LayerRef> layers;  // one per completed step (in order)
  std::vector<double> seconds;   // one per completed step
  std::string log_tail;          // last lines of the failing step's output
  // The worker is shutting down and stopped the task before its end: not a failure of the task,
  // which runs again elsewhere without counting an attempt.
  bool handed_back = false;

  friend bool operator==(const TaskDone&, const TaskDone&) = default;
};

struct CancelTaskRequest {
  std::string task_id;
};

std::string Encode(const StageTask& m);
std::string Encode(const RegisterWorkerRequest& m);
std::string Encode(const HeartbeatRequest& m);
std::string Encode(const TaskEvent& m);
std::string Encode(const TaskDone& m);
std::string Encode(const CancelTaskRequest& m);
Status Decode(std::string_view bytes, StageTask* m);
Status Decode(std::string_view bytes, RegisterWorkerRequest* m);
Status Decode(std::string_view bytes, HeartbeatRequest* m);
Status Decode(std::string_view bytes, TaskEvent* m);
Status Decode(std::string_view bytes, TaskDone* m);
Status Decode(std::string_view bytes, CancelTaskRequest* m);

}  // namespace stagefarm
