@0xc1a3f4e2b7d80005;
using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("stagefarm::schema");
# Client <-> coordinator. See common/include/stagefarm/common/build_protocol.h.

using Common = import "common.capnp";

struct BuildRequest {
  contextRoot @0 :Common.Digest;
  dockerfile @1 :Common.Digest;
  dockerfileName @2 :Text;
  buildArgs @3 :List(Common.KeyValue);
  target @4 :Text;
  tags @5 :List(Text);
  labels @6 :List(Common.KeyValue);
  noCache @7 :Bool;
  noCacheFilter @8 :List(Text);
  platform @9 :Text;
  tenant @10 :Text;
  network @11 :Text;
  priority @12 :Int32;
  secrets @13 :List(Common.Secret);
  workerConstraints @14 :List(Common.KeyValue);
  remoteFiles @15 :List(Common.RemoteFile);  # ADD URLs the client fetched
}

struct SubmitBuildResponse {
  buildId @0 :Text;
}

struct CancelBuildRequest {
  buildId @0 :Text;
}

struct StageSummary {
  name @0 :Text;
  worker @1 :Text;
  cached @2 :Bool;
  seconds @3 :Float64;
  size @4 :UInt64;
}

struct BuildEvent {
  kind @0 :UInt8;
  time @1 :Float64;
  stage @2 :Text;
  step @3 :Int32;
  line @4 :Int32;
  text @5 :Text;
  worker @6 :Text;
  log @7 :Data;
  seconds @8 :Float64;
  layerSize @9 :UInt64;
  manifest @10 :Common.Digest;
  config @11 :Common.Digest;
  imageSize @12 :UInt64;
  exitCode @13 :Int32;
  error @14 :Text;
  stages @15 :List(StageSummary);
}

struct FarmInfo {
  cacheEndpoint @0 :Text;
  platform @1 :Text;
  workers @2 :UInt32;
}
