#include "stagefarm/cli/add_urls.h"

#include <cstdlib>
#include <set>

#include "stagefarm/cli/progress.h"
#include "stagefarm/common/git_source.h"
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
  // Repositories checked out so far, by URL, --keep-git-dir and --checksum: another checksum
  // is checked against a checkout of its own (the checksum may name an annotated tag).
  std::set<std::string> checked_out;
  for (const frontend::ResolvedStage& stage : plan->stages) {
    for (const frontend::ResolvedStep& step : stage.steps) {
      if (step.kind != frontend::StepKind::kAdd) continue;
      // A --checksum with several sources is refused by the coordinator, with the place.
      if (!step.checksum.empty() && step.sources.size() != 1) continue;
      const std::string where =
          options.filename + ":" + std::to_string(step.line) + ": " + step.text;
      for (const std::string& url : step.sources) {
        if (!IsGitSource(url)) continue;
        const bool keep = step.keep_git_dir.value_or(false);
        if (!checked_out.insert(url + "\n" + (keep ? "1" : "0") + "\n" + step.checksum).second) {
          continue;
        }
        StatusOr<RemoteFile> got = FetchGitSource(url, step.checksum, step.keep_git_dir, cache);
        if (!got.ok()) return got.status().Annotate(where);
        note("fetched " + url + " (commit " + got->commit + ")");
        if (!FindRemoteFile(fetched, url, keep)) fetched.push_back(std::move(*got));
      }
      if (!step.checksum.empty() && !IsGitSource(step.sources[0])) {
        // A malformed --checksum fails before anything is fetched.
        SF_RETURN_IF_ERROR(ParseAddChecksum(step.checksum).status().Annotate(where));
      }
      for (const std::string& url : step.sources) {
        if (!IsRemoteUrl(url) || IsGitSource(url)) continue;
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
