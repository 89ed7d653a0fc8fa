#include "stagefarm/coordinator/step_keys.h"

#include <memory>
#include <nlohmann/json.hpp>

#include "stagefarm/common/git_source.h"

namespace stagefarm::coordinator {
namespace {

std::string HashJson(const nlohmann::json& j) { return Digest::Of(j.dump()).hex; }

}  // namespace

std::string BaseKey(const Digest& manifest, const std::string& platform, const std::string& salt) {
  nlohmann::json j;
  j["base"] = manifest.empty() ? "scratch" : manifest.str();
  j["platform"] = platform;
  j["salt"] = salt;
  return HashJson(j);
}

std::string StepKey(const std::string& parent, const frontend::ResolvedStep& step,
                    const std::string& sources_digest) {
  nlohmann::json j;
  j["parent"] = parent;
  j["instruction"] = step.canonical;
  if (step.kind == frontend::StepKind::kRun) {
    // What the command sees beyond its text.
    j["argv"] = step.argv;
    j["env"] = step.env;
    j["user"] = step.config().user;
    j["workdir"] = step.config().working_dir;
    j["network"] = step.network;
    // The content RUN --mount=type=bind mounts (the mount specs are in the instruction; secret
    // values never are).
    if (!sources_digest.empty()) j["mount_sources"] = sources_digest;
  }
  if (step.kind == frontend::StepKind::kCopy || step.kind == frontend::StepKind::kAdd) {
    j["sources"] = sources_digest;
    j["workdir"] = step.config().working_dir;  // relative destinations depend on it
  }
  if (step.kind == frontend::StepKind::kWorkdir) {
    // The directories it creates are owned by the USER of the time.
    j["workdir"] = step.config().working_dir;
    j["user"] = step.config().user;
  }
  return HashJson(j);
}

StatusOr<std::string> ContextSourcesDigest(ContextTree& tree,
                                           const std::vector<std::string>& sources,
                                           const std::string& instruction,
                                           const CopySelection& selection) {
  std::unique_ptr<SourceTreeView> view = MakeContextView(tree);
  nlohmann::json j = nlohmann::json::array();
  for (const std::string& source : sources) {
    // What the worker copies: copy_sources.h resolves it the same way.
    StatusOr<std::string> d = SourceSelectionDigest(*view, source, selection);
    if (!d.ok() && d.status().code() == StatusCode::kNotFound) {
      return NotFoundError(instruction + ": \"" + source + "\": not found in the build context");
    }
    if (!d.ok()) return d.status().Annotate(instruction);
    j.push_back(*d);
  }
  return HashJson(j);
}

Status SplitCopySources(const frontend::ResolvedStep& step, const std::string& where,
                        std::vector<std::string>* local, std::vector<std::string>* urls) {
  for (const std::string& source : step.sources) {
    (IsRemoteUrl(source) ? urls : local)->push_back(source);
  }
  if (!urls->empty() && step.kind != frontend::StepKind::kAdd) {
    if (IsGitSource(urls->front())) {
      return InvalidArgumentError(where + ": source can't be a git ref for COPY (use ADD)");
    }
    return InvalidArgumentError(where + ": source can't be a URL for COPY (use ADD)");
  }
  if (step.checksum.empty()) return Status();
  if (step.sources.size() != 1) {
    return InvalidArgumentError(where + ": --checksum can't be specified for multiple sources");
  }
  if (urls->empty()) {
    return InvalidArgumentError(where + ": --checksum can't be specified for non-HTTP(S) sources");
  }
  if (IsGitSource(urls->front())) return Status();  // a commit hash: RemoteSourcesDigest checks it
  StatusOr<AddChecksum> expected = ParseAddChecksum(step.checksum);
  if (!expected.ok()) return InvalidArgumentError(where + ": " + expected.status().message());
  return Status();
}

StatusOr<std::string> RemoteSourcesDigest(const std::vector<std::string>& urls,
                                          const std::vector<RemoteFile>& fetched,
                                          const std::string& checksum, const std::string& where,
                                          bool keep_git_dir) {
  nlohmann::json j = nlohmann::json::array();
  for (const std::string& url : urls) {
    const RemoteFile* file = FindRemoteFile(fetched, url, keep_git_dir);
    if (!file) {
      return FailedPreconditionError(where + ": " + url +
                                     " was not fetched by the client (stagefarm build fetches "
                                     "ADD URLs before it submits the build)");
    }
    SF_RETURN_IF_ERROR(CheckAddChecksum(checksum, *file).Annotate(where));
    j.push_back({url, file->digest.str(), file->digest.size, file->mtime});
    if (!file->commit.empty()) j.back().push_back(file->commit);
  }
  return HashJson(j);
}

StatusOr<std::string> FsSourcesDigest(const FsIndex& fs, const std::vector<std::string>& sources,
                                      const std::string& instruction,
                                      const CopySelection& selection) {
  std::unique_ptr<SourceTreeView> view = MakeFsIndexView(fs);
  nlohmann::json j = nlohmann::json::array();
  for (const std::string& source : sources) {
    StatusOr<std::string> d = SourceSelectionDigest(*view, source, selection);
    if (!d.ok() && d.status().code() == StatusCode::kNotFound) {
      return NotFoundError(instruction + ": \"" + source + "\": not found");
    }
    if (!d.ok()) return d.status().Annotate(instruction);
    j.push_back(*d);
  }
  return HashJson(j);
}

}  // namespace stagefarm::coordinator
