#include "stagefarm/cli/add_urls.h"

#include <cstdlib>

#include "stagefarm/cli/progress.h"
#include "stagefarm/common/image_ref.h"
#include "stagefarm/common/oci.h"

namespace stagefarm::cli {

StatusOr<std::vector<RemoteFile>> FetchAddUrls(
    CacheClient& cache, std::string_view dockerfile, const frontend::BuildOptions& options,
    const std::function<void(const std::string&)>& note) {
  auto resolver = [&](const std::string& ref) -> StatusOr<ImageConfig> {
    SF_ASSIGN_OR_RETURN(std::optional<Digest> manifest, cache.GetRef(NormalizeImageRef(ref)));
    if (!manifest) return NotFoundError("image \"" + ref + "\" is not in the farm's store");
    SF_ASSIGN_OR_RETURN(ImageRecord image, LoadImage(cache, *manifest));
    return image.config;
  };
  StatusOr<frontend::BuildPlan> plan = frontend::Resolve(dockerfile, options, resolver);
  if (!plan.ok()) return std::vector<RemoteFile>();  // the coordinator says why, with the place

  const char* tmp = std::getenv("TMPDIR");
  const std::string tmp_dir = tmp && *tmp ? tmp : "/tmp";
  std::vector<RemoteFile> fetched;
  for (const frontend::ResolvedStage& stage : plan->stages) {
    for (const frontend::ResolvedStep& step : stage.steps) {
      if (step.kind != frontend::StepKind::kAdd) continue;
      const std::string where =
          options.filename + ":" + std::to_string(step.line) + ": " + step.text;
      if (!step.checksum.empty()) {
        // A malformed --checksum fails before anything is fetched.
        SF_RETURN_IF_ERROR(ParseAddChecksum(step.checksum).status().Annotate(where));
      }
      for (const std::string& url : step.sources) {
        if (!IsRemoteUrl(url)) continue;
        const RemoteFile* file = FindRemoteFile(fetched, url);
        if (!file) {
          StatusOr<RemoteFile> got = FetchRemoteFile(url, cache, tmp_dir);
          if (!got.ok()) return got.status().Annotate(where);
          note("fetched " + url + " (" + HumanSize(got->digest.size) + ", " + got->digest.str() +
               ")");
          fetched.push_back(std::move(*got));
          file = &fetched.back();
        }
        SF_RETURN_IF_ERROR(CheckAddChecksum(step.checksum, *file, &cache).Annotate(where));
      }
    }
  }
  return fetched;
}

}  // namespace stagefarm::cli
