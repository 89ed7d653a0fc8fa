// Step cache keys (DESIGN.md "Cache keys"): the SHA-256 of a canonical encoding of everything that
// can change a step's result. Pure functions; the callers gather the inputs.
#pragma once

#include <string>
#include <vector>

#include "stagefarm/common/build_plan.h"
#include "stagefarm/common/context_tree.h"
#include "stagefarm/common/copy_sources.h"
#include "stagefarm/common/digest.h"
#include "stagefarm/common/remote_file.h"
#include "stagefarm/common/toc.h"

namespace stagefarm::coordinator {

// The key a stage's first step chains from when the stage starts FROM an image (`manifest` empty
// for scratch).
std::string BaseKey(const Digest& manifest, const std::string& platform, const std::string& salt);

// The key of `step` after `parent`. `sources_digest` is the digest of what a COPY/ADD selects, or
// for a RUN of what its bind mounts mount (empty when there is nothing).
std::string StepKey(const std::string& parent, const frontend::ResolvedStep& step,
                    const std::string& sources_digest);

// The digest of what copying `sources` with `selection` reads from the context
// (copy_sources.h: symlinks followed inside the context, wildcard matches, --parents, --exclude).
StatusOr<std::string> ContextSourcesDigest(ContextTree& tree,
                                           const std::vector<std::string>& sources,
                                           const std::string& instruction,
                                           const CopySelection& selection = {});

// Splits the sources of a COPY/ADD into paths (`local`) and remote sources (`urls`: http(s) URLs
// and git repositories), with dockerfile2llb's rules: URLs only in ADD; --checksum only with a
// single remote source, and well-formed for a URL. Errors are InvalidArgument prefixed with
// `where` (the Dockerfile place).
Status SplitCopySources(const frontend::ResolvedStep& step, const std::string& where,
                        std::vector<std::string>* local, std::vector<std::string>* urls);

// The digest of the remote files `urls` name, from what the client fetched (`fetched`, the
// checkouts made for the step's --keep-git-dir): content digest and mtime, and a repository's
// commit, so a changed remote file or branch changes the key. FailedPrecondition when the client
// did not fetch one; InvalidArgument when `checksum` is set and the content does not match it.
StatusOr<std::string> RemoteSourcesDigest(const std::vector<std::string>& urls,
                                          const std::vector<RemoteFile>& fetched,
                                          const std::string& checksum, const std::string& where,
                                          bool keep_git_dir = false);

// The same for a stage's filesystem, from its TOCs.
StatusOr<std::string> FsSourcesDigest(const FsIndex& fs, const std::vector<std::string>& sources,
                                      const std::string& instruction,
                                      const CopySelection& selection = {});

}  // namespace stagefarm::coordinator
