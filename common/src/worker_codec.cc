// Cap'n Proto codec for worker_protocol.h.
#include "codec_common.h"
#include "stagefarm/common/worker_protocol.h"
#include "worker.capnp.h"

namespace stagefarm {
namespace {

template <typename ListBuilder>
void WriteLayers(ListBuilder b, const std::vector<LayerRef>& layers) {
  for (size_t i = 0; i < layers.size(); ++i) codec::Write(b[i], layers[i]);
}

template <typename ListReader>
StatusOr<std::vector<LayerRef>> ReadLayers(ListReader r) {
  std::vector<LayerRef> out;
  for (auto l : r) {
    SF_ASSIGN_OR_RETURN(LayerRef ref, codec::ReadLayerRef(l));
    out.push_back(std::move(ref));
  }
  return out;
}

void WriteMounts(capnp::List<schema::MountSpec>::Builder b, const std::vector<MountSpec>& mounts) {
  for (size_t i = 0; i < mounts.size(); ++i) {
    const MountSpec& m = mounts[i];
    auto mb = b[i];
    mb.setType(static_cast<uint8_t>(m.type));
    mb.setTarget(m.target);
    mb.setSource(m.source);
    mb.setReadonly(m.readonly);
    codec::Write(mb.initContextRoot(), m.context_root);
    WriteLayers(mb.initFromLayers(m.from_layers.size()), m.from_layers);
    mb.setId(m.id);
    mb.setSharing(m.sharing);
    mb.setMode(m.mode);
    mb.setUid(m.uid);
    mb.setGid(m.gid);
    mb.setRequired(m.required);
    mb.setEnv(m.env);
    mb.setSizeLimit(m.size_limit);
  }
}

StatusOr<std::vector<MountSpec>> ReadMounts(capnp::List<schema::MountSpec>::Reader r) {
  std::vector<MountSpec> out;
  for (auto mr : r) {
    MountSpec m;
    if (mr.getType() > static_cast<uint8_t>(MountSpec::Type::kSecret)) {
      return InvalidArgumentError("unknown mount type " + std::to_string(mr.getType()));
    }
    m.type = static_cast<MountSpec::Type>(mr.getType());
    m.target = codec::Str(mr.getTarget());
    m.source = codec::Str(mr.getSource());
    m.readonly = mr.getReadonly();
    SF_ASSIGN_OR_RETURN(m.context_root, codec::ReadDigest(mr.getContextRoot()));
    SF_ASSIGN_OR_RETURN(m.from_layers, ReadLayers(mr.getFromLayers()));
    m.id = codec::Str(mr.getId());
    m.sharing = codec::Str(mr.getSharing());
    m.mode = mr.getMode();
    m.uid = mr.getUid();
    m.gid = mr.getGid();
    m.required = mr.getRequired();
    m.env = codec::Str(mr.getEnv());
    m.size_limit = mr.getSizeLimit();
    if (m.mode < -1 || m.uid < -1 || m.gid < -1 || m.mode > 07777 || m.uid > 0xFFFFFFFF ||
        m.gid > 0xFFFFFFFF) {
      return InvalidArgumentError("mount " + m.target + ": mode, uid or gid out of range");
    }
    out.push_back(std::move(m));
  }
  return out;
}

}  // namespace

std::string Encode(const StageTask& m) {
  capnp::MallocMessageBuilder mb;
  auto b = mb.initRoot<schema::StageTask>();
  b.setTaskId(m.task_id);
  b.setBuildId(m.build_id);
  b.setStage(m.stage);
  WriteLayers(b.initBaseLayers(m.base_layers.size()), m.base_layers);
  auto steps = b.initSteps(m.steps.size());
  for (size_t i = 0; i < m.steps.size(); ++i) {
    const StepSpec& s = m.steps[i];
    auto sb = steps[i];
    sb.setKey(s.key);
    sb.setKind(static_cast<uint8_t>(s.kind));
    sb.setLine(s.line);
    sb.setText(s.text);
    sb.setCreatedBy(s.created_by);
    codec::WriteStrings(sb.initEnv(s.env.size()), s.env);
    sb.setUser(s.user);
    sb.setWorkdir(s.workdir);
    codec::WriteStrings(sb.initArgv(s.argv.size()), s.argv);
    sb.setNetwork(s.network);
    codec::WriteStrings(sb.initSources(s.sources.size()), s.sources);
    sb.setDest(s.dest);
    sb.setChown(s.chown);
    sb.setChmod(s.chmod);
    codec::Write(sb.initContextRoot(), s.context_root);
    WriteLayers(sb.initFromLayers(s.from_layers.size()), s.from_layers);
    WriteMounts(sb.initMounts(s.mounts.size()), s.mounts);
    codec::WriteRemoteFiles(sb.initRemoteFiles(s.remote_files.size()), s.remote_files);
    auto docs = sb.initHeredocs(s.heredocs.size());
    for (size_t j = 0; j < s.heredocs.size(); ++j) {
      const HeredocFile& f = s.heredocs[j];
      docs[j].setName(f.name);
      docs[j].setContent(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(f.content.data()),
                                             f.content.size()));
    }
    auto flags = sb.initCopyFlags();
    flags.setParents(s.parents);
    codec::WriteStrings(flags.initExcludes(s.excludes.size()), s.excludes);
    flags.setUnpack(s.unpack ? static_cast<int8_t>(*s.unpack) : int8_t{-1});
    flags.setLink(s.link);
  }
  b.setSourceDateEpoch(m.source_date_epoch);
  b.setTimeoutSeconds(m.timeout_seconds);
  codec::WriteSecrets(b.initSecrets(m.secrets.size()), m.secrets);
  return codec::ToBytes(mb);
}

Status Decode(std::string_view bytes, StageTask* m) {
  return codec::Read<schema::StageTask>(bytes, [&](schema::StageTask::Reader r) -> Status {
    m->task_id = codec::Str(r.getTaskId());
    m->build_id = codec::Str(r.getBuildId());
    m->stage = codec::Str(r.getStage());
    SF_ASSIGN_OR_RETURN(m->base_layers, ReadLayers(r.getBaseLayers()));
    m->steps.clear();
    for (auto sr : r.getSteps()) {
      StepSpec s;
      s.key = codec::Str(sr.getKey());
      if (sr.getKind() > static_cast<uint8_t>(StepKind::kWorkdir)) {
        return InvalidArgumentError("unknown step kind " + std::to_string(sr.getKind()));
      }
      s.kind = static_cast<StepKind>(sr.getKind());
      s.line = sr.getLine();
      s.text = codec::Str(sr.getText());
      s.created_by = codec::Str(sr.getCreatedBy());
      s.env = codec::ReadStrings(sr.getEnv());
      s.user = codec::Str(sr.getUser());
      s.workdir = codec::Str(sr.getWorkdir());
      s.argv = codec::ReadStrings(sr.getArgv());
      s.network = codec::Str(sr.getNetwork());
      s.sources = codec::ReadStrings(sr.getSources());
      s.dest = codec::Str(sr.getDest());
      s.chown = codec::Str(sr.getChown());
      s.chmod = codec::Str(sr.getChmod());
      SF_ASSIGN_OR_RETURN(s.context_root, codec::ReadDigest(sr.getContextRoot()));
      SF_ASSIGN_OR_RETURN(s.from_layers, ReadLayers(sr.getFromLayers()));
      SF_ASSIGN_OR_RETURN(s.mounts, ReadMounts(sr.getMounts()));
      SF_ASSIGN_OR_RETURN(s.remote_files, codec::ReadRemoteFiles(sr.getRemoteFiles()));
      for (auto doc : sr.getHeredocs()) {
        s.heredocs.push_back({codec::Str(doc.getName()), codec::Bytes(doc.getContent())});
      }
      auto flags = sr.getCopyFlags();
      s.parents = flags.getParents();
      s.excludes = codec::ReadStrings(flags.getExcludes());
      if (flags.getUnpack() > 1 || flags.getUnpack() < -1) {
        return InvalidArgumentError("bad unpack flag " + std::to_string(flags.getUnpack()));
      }
      if (flags.getUnpack() >= 0) s.unpack = flags.getUnpack() == 1;
      s.link = flags.getLink();
      m->steps.push_back(std::move(s));
    }
    m->source_date_epoch = r.getSourceDateEpoch();
    m->timeout_seconds = r.getTimeoutSeconds();
    m->secrets = codec::ReadSecrets(r.getSecrets());
    return Status();
  });
}

std::string Encode(const RegisterWorkerRequest& m) {
  capnp::MallocMessageBuilder mb;
  auto b = mb.initRoot<schema::RegisterWorkerRequest>();
  b.setName(m.name);
  b.setSlots(m.slots);
  b.setPlatform(m.platform);
  codec::WriteMap(b.initLabels(m.labels.size()), m.labels);
  codec::WriteStrings(b.initRunningTasks(m.running_tasks.size()), m.running_tasks);
  return codec::ToBytes(mb);
}

Status Decode(std::string_view bytes, RegisterWorkerRequest* m) {
  return codec::Read<schema::RegisterWorkerRequest>(
      bytes, [&](schema::RegisterWorkerRequest::Reader r) -> Status {
        m->name = codec::Str(r.getName());
        m->slots = r.getSlots();
        m->platform = codec::Str(r.getPlatform());
        m->labels = codec::ReadMap(r.getLabels());
        m->running_tasks = codec::ReadStrings(r.getRunningTasks());
        if (m->name.empty()) return InvalidArgumentError("worker registered without a name");
        if (m->slots == 0 || m->slots > 1024) {
          return InvalidArgumentError("worker slots " + std::to_string(m->slots) + " out of range");
        }
        return Status();
      });
}

std::string Encode(const HeartbeatRequest& m) {
  capnp::MallocMessageBuilder mb;
  auto b = mb.initRoot<schema::HeartbeatRequest>();
  b.setName(m.name);
  b.setBusySlots(m.busy_slots);
  codec::WriteStrings(b.initRunningTasks(m.running_tasks.size()), m.running_tasks);
  codec::WriteStrings(b.initLayers(m.layers.size()), m.layers);
  b.setDraining(m.draining);
  return codec::ToBytes(mb);
}

Status Decode(std::string_view bytes, HeartbeatRequest* m) {
  return codec::Read<schema::HeartbeatRequest>(bytes,
                                               [&](schema::HeartbeatRequest::Reader r) -> Status {
                                                 m->name = codec::Str(r.getName());
                                                 m->busy_slots = r.getBusySlots();
                                                 m->running_tasks =
                                                     codec::ReadStrings(r.getRunningTasks());
                                                 m->layers = codec::ReadStrings(r.getLayers());
                                                 m->draining = r.getDraining();
                                                 return Status();
                                               });
}

std::string Encode(const TaskEvent& m) {
  capnp::MallocMessageBuilder mb;
  auto b = mb.initRoot<schema::TaskEvent>();
  b.setTaskId(m.task_id);
  b.setKind(static_cast<uint8_t>(m.kind));
  b.setStep(m.step);
  b.setLog(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(m.log.data()), m.log.size()));
  b.setSeconds(m.seconds);
  codec::Write(b.initLayer(), m.layer);
  return codec::ToBytes(mb);
}

Status Decode(std::string_view bytes, TaskEvent* m) {
  return codec::Read<schema::TaskEvent>(bytes, [&](schema::TaskEvent::Reader r) -> Status {
    m->task_id = codec::Str(r.getTaskId());
    if (r.getKind() > static_cast<uint8_t>(TaskEvent::Kind::kStepDone)) {
      return InvalidArgumentError("unknown task event kind " + std::to_string(r.getKind()));
    }
    m->kind = static_cast<TaskEvent::Kind>(r.getKind());
    m->step = r.getStep();
    m->log = codec::Bytes(r.getLog());
    m->seconds = r.getSeconds();
    SF_ASSIGN_OR_RETURN(m->layer, codec::ReadLayerRef(r.getLayer()));
    return Status();
  });
}

std::string Encode(const TaskDone& m) {
  capnp::MallocMessageBuilder mb;
  auto b = mb.initRoot<schema::TaskDone>();
  b.setTaskId(m.task_id);
  b.setStatusCode(static_cast<uint16_t>(m.status.code()));
  b.setStatusMessage(m.status.message());
  b.setFailedStep(m.failed_step);
  b.setExitCode(m.exit_code);
  WriteLayers(b.initLayers(m.layers.size()), m.layers);
  auto secs = b.initSeconds(m.seconds.size());
  for (size_t i = 0; i < m.seconds.size(); ++i) secs.set(i, m.seconds[i]);
  b.setLogTail(
      capnp::Data::Reader(reinterpret_cast<const kj::byte*>(m.log_tail.data()), m.log_tail.size()));
  b.setHandedBack(m.handed_back);
  return codec::ToBytes(mb);
}

Status Decode(std::string_view bytes, TaskDone* m) {
  return codec::Read<schema::TaskDone>(bytes, [&](schema::TaskDone::Reader r) -> Status {
    m->task_id = codec::Str(r.getTaskId());
    if (r.getStatusCode() > static_cast<uint16_t>(StatusCode::kDataLoss)) {
      return InvalidArgumentError("unknown status code " + std::to_string(r.getStatusCode()));
    }
    m->status = Status(static_cast<StatusCode>(r.getStatusCode()), codec::Str(r.getStatusMessage()));
    m->failed_step = r.getFailedStep();
    m->exit_code = r.getExitCode();
    SF_ASSIGN_OR_RETURN(m->layers, ReadLayers(r.getLayers()));
    m->seconds.clear();
    for (double sec : r.getSeconds()) m->seconds.push_back(sec);
    m->log_tail = codec::Bytes(r.getLogTail());
    m->handed_back = r.getHandedBack();
    return Status();
  });
}

std::string Encode(const CancelTaskRequest& m) {
  capnp::MallocMessageBuilder mb;
  mb.initRoot<schema::CancelTaskRequest>().setTaskId(m.task_id);
  return codec::ToBytes(mb);
}

Status Decode(std::string_view bytes, CancelTaskRequest* m) {
  return codec::Read<schema::CancelTaskRequest>(
      bytes, [&](schema::CancelTaskRequest::Reader r) -> Status {
        m->task_id = codec::Str(r.getTaskId());
        return Status();
      });
}

}  // namespace stagefarm
