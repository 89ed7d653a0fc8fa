// Cap'n Proto codec for build_protocol.h.
#include "build.capnp.h"
#include "codec_common.h"
#include "stagefarm/common/build_protocol.h"

namespace stagefarm {

std::string Encode(const FarmInfo& m) {
  capnp::MallocMessageBuilder mb;
  auto b = mb.initRoot<schema::FarmInfo>();
  b.setCacheEndpoint(m.cache_endpoint);
  b.setPlatform(m.platform);
  b.setWorkers(m.workers);
  return codec::ToBytes(mb);
}

Status Decode(std::string_view bytes, FarmInfo* m) {
  return codec::Read<schema::FarmInfo>(bytes, [&](schema::FarmInfo::Reader r) -> Status {
    m->cache_endpoint = codec::Str(r.getCacheEndpoint());
    m->platform = codec::Str(r.getPlatform());
    m->workers = r.getWorkers();
    return Status();
  });
}

std::string Encode(const BuildRequest& m) {
  capnp::MallocMessageBuilder mb;
  auto b = mb.initRoot<schema::BuildRequest>();
  codec::Write(b.initContextRoot(), m.context_root);
  codec::Write(b.initDockerfile(), m.dockerfile);
  b.setDockerfileName(m.dockerfile_name);
  codec::WriteMap(b.initBuildArgs(m.build_args.size()), m.build_args);
  b.setTarget(m.target);
  codec::WriteStrings(b.initTags(m.tags.size()), m.tags);
  codec::WriteMap(b.initLabels(m.labels.size()), m.labels);
  b.setNoCache(m.no_cache);
  codec::WriteStrings(b.initNoCacheFilter(m.no_cache_filter.size()), m.no_cache_filter);
  b.setPlatform(m.platform);
  b.setTenant(m.tenant);
  b.setNetwork(m.network);
  b.setPriority(m.priority);
  codec::WriteSecrets(b.initSecrets(m.secrets.size()), m.secrets);
  codec::WriteMap(b.initWorkerConstraints(m.worker_constraints.size()), m.worker_constraints);
  codec::WriteRemoteFiles(b.initRemoteFiles(m.remote_files.size()), m.remote_files);
  return codec::ToBytes(mb);
}

Status Decode(std::string_view bytes, BuildRequest* m) {
  return codec::Read<schema::BuildRequest>(bytes, [&](schema::BuildRequest::Reader r) -> Status {
    SF_ASSIGN_OR_RETURN(m->context_root, codec::ReadDigest(r.getContextRoot()));
    SF_ASSIGN_OR_RETURN(m->dockerfile, codec::ReadDigest(r.getDockerfile()));
    m->dockerfile_name = codec::Str(r.getDockerfileName());
    m->build_args = codec::ReadMap(r.getBuildArgs());
    m->target = codec::Str(r.getTarget());
    m->tags = codec::ReadStrings(r.getTags());
    m->labels = codec::ReadMap(r.getLabels());
    m->no_cache = r.getNoCache();
    m->no_cache_filter = codec::ReadStrings(r.getNoCacheFilter());
    m->platform = codec::Str(r.getPlatform());
    m->tenant = codec::Str(r.getTenant());
    m->network = codec::Str(r.getNetwork());
    m->priority = r.getPriority();
    m->secrets = codec::ReadSecrets(r.getSecrets());
    m->worker_constraints = codec::ReadMap(r.getWorkerConstraints());
    SF_ASSIGN_OR_RETURN(m->remote_files, codec::ReadRemoteFiles(r.getRemoteFiles()));
    if (m->dockerfile.empty()) return InvalidArgumentError("build request without a Dockerfile");
    return Status();
  });
}

std::string Encode(const SubmitBuildResponse& m) {
  capnp::MallocMessageBuilder mb;
  mb.initRoot<schema::SubmitBuildResponse>().setBuildId(m.build_id);
  return codec::ToBytes(mb);
}

Status Decode(std::string_view bytes, SubmitBuildResponse* m) {
  return codec::Read<schema::SubmitBuildResponse>(
      bytes, [&](schema::SubmitBuildResponse::Reader r) -> Status {
        m->build_id = codec::Str(r.getBuildId());
        return Status();
      });
}

std::string Encode(const CancelBuildRequest& m) {
  capnp::MallocMessageBuilder mb;
  mb.initRoot<schema::CancelBuildRequest>().setBuildId(m.build_id);
  return codec::ToBytes(mb);
}

Status Decode(std::string_view bytes, CancelBuildRequest* m) {
  return codec::Read<schema::CancelBuildRequest>(
      bytes, [&](schema::CancelBuildRequest::Reader r) -> Status {
        m->build_id = codec::Str(r.getBuildId());
        return Status();
      });
}

std::string Encode(const BuildEvent& m) {
  capnp::MallocMessageBuilder mb;
  auto b = mb.initRoot<schema::BuildEvent>();
  b.setKind(static_cast<uint8_t>(m.kind));
  b.setTime(m.time);
  b.setStage(m.stage);
  b.setStep(m.step);
  b.setLine(m.line);
  b.setText(m.text);
  b.setWorker(m.worker);
  b.setLog(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(m.log.data()), m.log.size()));
  b.setSeconds(m.seconds);
  b.setLayerSize(m.layer_size);
  codec::Write(b.initManifest(), m.manifest);
  codec::Write(b.initConfig(), m.config);
  b.setImageSize(m.image_size);
  b.setExitCode(m.exit_code);
  b.setError(m.error);
  auto stages = b.initStages(m.stages.size());
  for (size_t i = 0; i < m.stages.size(); ++i) {
    stages[i].setName(m.stages[i].name);
    stages[i].setWorker(m.stages[i].worker);
    stages[i].setCached(m.stages[i].cached);
    stages[i].setSeconds(m.stages[i].seconds);
    stages[i].setSize(m.stages[i].size);
  }
  return codec::ToBytes(mb);
}

Status Decode(std::string_view bytes, BuildEvent* m) {
  return codec::Read<schema::BuildEvent>(bytes, [&](schema::BuildEvent::Reader r) -> Status {
    if (r.getKind() > static_cast<uint8_t>(BuildEvent::Kind::kStageRetried)) {
      return InvalidArgumentError("unknown build event kind " + std::to_string(r.getKind()));
    }
    m->kind = static_cast<BuildEvent::Kind>(r.getKind());
    m->time = r.getTime();
    m->stage = codec::Str(r.getStage());
    m->step = r.getStep();
    m->line = r.getLine();
    m->text = codec::Str(r.getText());
    m->worker = codec::Str(r.getWorker());
    m->log = codec::Bytes(r.getLog());
    m->seconds = r.getSeconds();
    m->layer_size = r.getLayerSize();
    SF_ASSIGN_OR_RETURN(m->manifest, codec::ReadDigest(r.getManifest()));
    SF_ASSIGN_OR_RETURN(m->config, codec::ReadDigest(r.getConfig()));
    m->image_size = r.getImageSize();
    m->exit_code = r.getExitCode();
    m->error = codec::Str(r.getError());
    m->stages.clear();
    for (auto s : r.getStages()) {
      m->stages.push_back(StageSummary{codec::Str(s.getName()), codec::Str(s.getWorker()),
                                       s.getCached(), s.getSeconds(), s.getSize()});
    }
    return Status();
  });
}

}  // namespace stagefarm
