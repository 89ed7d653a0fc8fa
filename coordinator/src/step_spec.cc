#include "step_spec.h"

#include "stagefarm/common/clean_path.h"

namespace stagefarm::coordinator {
namespace {

StepKind ToWireKind(frontend::StepKind k) {
  switch (k) {
    case frontend::StepKind::kCopy: return StepKind::kCopy;
    case frontend::StepKind::kAdd: return StepKind::kAdd;
    case frontend::StepKind::kWorkdir: return StepKind::kWorkdir;
    default: return StepKind::kRun;
  }
}

MountSpec::Type ToWireMountType(const std::string& type) {
  if (type == "cache") return MountSpec::Type::kCache;
  if (type == "tmpfs") return MountSpec::Type::kTmpfs;
  if (type == "secret") return MountSpec::Type::kSecret;
  return MountSpec::Type::kBind;  // ssh never gets here: the coordinator refuses it first
}

MountSpec ToWireMount(const frontend::RunMount& m, const BuildRequest& request,
                      std::vector<LayerRef> layers) {
  MountSpec w;
  w.type = ToWireMountType(m.type);
  w.target = m.target;
  w.source = m.source;
  w.readonly = m.readonly;
  w.id = m.id;
  w.sharing = m.sharing;
  w.mode = m.mode ? static_cast<int64_t>(*m.mode) : -1;
  w.uid = m.uid ? static_cast<int64_t>(*m.uid) : -1;
  w.gid = m.gid ? static_cast<int64_t>(*m.gid) : -1;
  w.required = m.required;
  w.env = m.env.value_or("");
  w.size_limit = m.size_limit;
  w.from_layers = std::move(layers);
  if (w.type == MountSpec::Type::kBind && m.from.empty()) w.context_root = request.context_root;
  return w;
}

}  // namespace

std::map<std::string, std::string> TaskSecrets(const StageTask& task, const BuildRequest& request) {
  std::map<std::string, std::string> out;
  for (const StepSpec& step : task.steps) {
    for (const MountSpec& m : step.mounts) {
      if (m.type != MountSpec::Type::kSecret) continue;
      auto it = request.secrets.find(m.id);
      if (it != request.secrets.end()) out[m.id] = it->second;
    }
  }
  return out;
}

StepSpec MakeStepSpec(const frontend::ResolvedStep& step, const std::string& key,
                      const BuildRequest& request, std::vector<LayerRef> from_layers,
                      std::vector<std::vector<LayerRef>> mount_layers) {
  StepSpec w;
  w.key = key;
  w.kind = ToWireKind(step.kind);
  w.line = step.line;
  w.text = step.text;
  w.created_by = step.created_by;
  w.env = step.kind == frontend::StepKind::kRun ? step.env : step.config().env;
  w.user = step.config().user;
  // The config keeps an absolute WORKDIR as written ("/a//b/"); the worker gets it cleaned.
  const std::string& workdir = step.config().working_dir;
  w.workdir = workdir.empty() ? workdir : CleanSlashPath(workdir);
  w.argv = step.argv;
  w.network = step.network.empty() ? "default" : step.network;
  if (request.network == "none") w.network = "none";
  w.sources = step.sources;
  w.dest = step.dest;
  w.chown = step.chown;
  w.chmod = step.chmod;
  w.parents = step.parents;
  w.excludes = step.excludes;
  w.unpack = step.unpack;
  w.link = step.link;
  w.from_layers = std::move(from_layers);
  for (const std::string& source : step.sources) {
    if (step.kind != frontend::StepKind::kAdd || !IsRemoteUrl(source)) continue;
    // The coordinator checked that the client fetched every one (RemoteSourcesDigest).
    if (const RemoteFile* f =
            FindRemoteFile(request.remote_files, source, step.keep_git_dir.value_or(false))) {
      w.remote_files.push_back(*f);
    }
  }
  for (const frontend::InlineFile& f : step.heredocs) w.heredocs.push_back({f.name, f.content});
  if (w.from_layers.empty()) w.context_root = request.context_root;
  if (step.kind == frontend::StepKind::kRun) {
    for (size_t i = 0; i < step.mounts.size(); ++i) {
      w.mounts.push_back(ToWireMount(step.mounts[i], request,
                                     i < mount_layers.size() ? std::move(mount_layers[i])
                                                             : std::vector<LayerRef>{}));
    }
  }
  return w;
}

}  // namespace stagefarm::coordinator
