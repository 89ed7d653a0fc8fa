@0xc1a3f4e2b7d80004;
using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("stagefarm::schema");
# Coordinator <-> worker. See common/include/stagefarm/common/worker_protocol.h.

using Common = import "common.capnp";

struct StepSpec {
  key @0 :Text;
  kind @1 :UInt8;           # stagefarm::StepKind: 0 run, 1 copy, 2 add, 3 workdir
  line @2 :Int32;
  text @3 :Text;
  createdBy @4 :Text;
  env @5 :List(Text);
  user @6 :Text;
  workdir @7 :Text;
  argv @8 :List(Text);
  network @9 :Text;
  sources @10 :List(Text);
  dest @11 :Text;
  chown @12 :Text;
  chmod @13 :Text;
  contextRoot @14 :Common.Digest;
  fromLayers @15 :List(Common.LayerRef);
  mounts @16 :List(MountSpec);
  remoteFiles @17 :List(Common.RemoteFile);  # ADD: the step's URL sources, fetched
  heredocs @18 :List(HeredocFile);           # COPY <<EOF dest: files written after the sources
  copyFlags @19 :CopyFlags;
}

struct HeredocFile {
  name @0 :Text;
  content @1 :Data;
}

# COPY/ADD flags beyond --chown and --chmod (stagefarm::StepSpec's parents ... link).
struct CopyFlags {
  parents @0 :Bool;
  excludes @1 :List(Text);
  unpack @2 :Int8;          # -1: not given, 0: false, 1: true
  link @3 :Bool;
}

struct MountSpec {
  type @0 :UInt8;           # stagefarm::MountSpec::Type
  target @1 :Text;
  source @2 :Text;
  readonly @3 :Bool;
  contextRoot @4 :Common.Digest;
  fromLayers @5 :List(Common.LayerRef);
  id @6 :Text;
  sharing @7 :Text;
  mode @8 :Int64;
  uid @9 :Int64;
  gid @10 :Int64;
  required @11 :Bool;
  env @12 :Text;
  sizeLimit @13 :Int64;
}

struct StageTask {
  taskId @0 :Text;
  buildId @1 :Text;
  stage @2 :Text;
  baseLayers @3 :List(Common.LayerRef);
  steps @4 :List(StepSpec);
  sourceDateEpoch @5 :Int64;
  timeoutSeconds @6 :UInt32;
  secrets @7 :List(Common.Secret);
}

struct RegisterWorkerRequest {
  name @0 :Text;
  slots @1 :UInt32;
  platform @2 :Text;
  labels @3 :List(Common.KeyValue);
  runningTasks @4 :List(Text);
}

struct HeartbeatRequest {
  name @0 :Text;
  busySlots @1 :UInt32;
  runningTasks @2 :List(Text);
  layers @3 :List(Text);
  draining @4 :Bool;  # shutting down: no new tasks; with no running tasks, it is leaving
}

struct TaskEvent {
  taskId @0 :Text;
  kind @1 :UInt8;
  step @2 :UInt32;
  log @3 :Data;
  seconds @4 :Float64;
  layer @5 :Common.LayerRef;
}

struct TaskDone {
  taskId @0 :Text;
  statusCode @1 :UInt16;
  statusMessage @2 :Text;
  failedStep @3 :Int32;
  exitCode @4 :Int32;
  layers @5 :List(Common.LayerRef);
  seconds @6 :List(Float64);
  logTail @7 :Data;
  handedBack @8 :Bool;  # not run to the end: the worker is shutting down; run it elsewhere
}

struct CancelTaskRequest {
  taskId @0 :Text;
}
