// Step cache keys (DESIGN.md "Cache keys"): the SHA-256 of a canonical encoding of everything that
// can change a step's result. Pure functions; the callers gather the inputs.
#pragma once

#include <string>
#include <vector>

#include "stagefarm/common/build_plan.h"
#include "stagefarm/common/context_tree.h"
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

// Source paths in these digests are read as BuildKit's COPY reads them (FollowSymlinks, with
// continuity's RootPath), so the key covers exactly the bytes the copy reads:
// - the path is cleaned first ("a/../b" is "b"; ".." never climbs above the root);
// - then each component in turn: a symlink met on the way, and one named as the source, is
//   replaced by its target, joined to the directory that holds the link unless it is absolute,
//   and cleaned again the same way: ".." in a target takes away the name before it whatever that
//   name is (a symlink or nothing at all), and never climbs above the root, so no link leads out.
//   At most 40 links (InvalidArgument beyond: a loop);
// - a wildcard source: the components before the first wildcard are resolved so; below that,
//   each component matches names (fnmatch) through real directories only (not symlinks), and
//   every match, a symlink one included, is then read as above;
// - the entry reached is digested with everything below it; symlinks inside a directory stay
//   links (their targets are part of the digest, not what they point to).
// A source that reaches nothing (missing, or a dangling link) is NotFound; a wildcard that
// matches nothing is no error ("absent" in the key).

// The digest of the context entries `sources` select.
StatusOr<std::string> ContextSourcesDigest(ContextTree& tree,
                                           const std::vector<std::string>& sources,
                                           const std::string& instruction);

// Splits the sources of a COPY/ADD into paths (`local`) and http(s) URLs (`urls`), with
// dockerfile2llb's rules: URLs only in ADD; --checksum only with a single URL source, and
// well-formed. Errors are InvalidArgument prefixed with `where` (the Dockerfile place).
Status SplitCopySources(const frontend::ResolvedStep& step, const std::string& where,
                        std::vector<std::string>* local, std::vector<std::string>* urls);

// The digest of the remote files `urls` name, from what the client fetched (`fetched`): content
// digest and mtime, so a changed remote file changes the key. FailedPrecondition when the client
// did not fetch one; InvalidArgument when `checksum` is set and the content does not match it.
StatusOr<std::string> RemoteSourcesDigest(const std::vector<std::string>& urls,
                                          const std::vector<RemoteFile>& fetched,
                                          const std::string& checksum, const std::string& where);

// The same for a stage's filesystem, from its TOCs (and for RUN --mount=type=bind,from=).
StatusOr<std::string> FsSourcesDigest(const FsIndex& fs, const std::vector<std::string>& sources,
                                      const std::string& instruction);

}  // namespace stagefarm::coordinator
