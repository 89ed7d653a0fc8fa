// ADD of a git repository, with BuildKit v0.24's rules: which sources name a repository (its
// dockerfile2llb and gitutil), and a checkout made with the git CLI as its git source makes one.
// remote_file.h stores a checkout in the CAS for a build.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "stagefarm/common/status.h"

namespace stagefarm {

// A git source as an ADD names it:
//   http(s)://host/path.git[?query][#ref[:subdir]]   (http and https only when the path ends in
//   .git) git://host/path..., ssh://[user@]host/path...    (any path)
//   user@host:path[?query][#ref[:subdir]]            (scp-like, over ssh)
// The query may hold ref=, tag= (refs/tags/ is prepended), branch= (refs/heads/), subdir=,
// checksum= or commit=, keep-git-dir= and submodules= (booleans; a key with no value is true).
struct GitRef {
  std::string remote = {};    // what git fetches from: the source without query and fragment
  std::string ref = {};       // branch, tag, full commit hash or other ref; empty: default branch
  std::string checksum = {};  // the checked-out commit must start with it (hex digits)
  std::string subdir = {};    // only this directory of the repository; empty: all of it
  std::optional<bool> keep_git_dir = {};
  std::optional<bool> submodules = {};  // false: submodules are left empty (default: checked out)

  friend bool operator==(const GitRef&, const GitRef&) = default;
};

// Whether ADD reads `source` as a git repository (and COPY refuses it). Such a source may still
// be malformed: ParseGitRef says how.
bool IsGitSource(std::string_view source);

// Parses a source that IsGitSource accepts. InvalidArgument, in BuildKit's words, for a query it
// refuses: `unexpected query "x"`, `query "ref" has no value`, `ref conflicts: "a" vs "b"`,
// `branch conflicts with tag`, `invalid keep-git-dir value: "x"`...
StatusOr<GitRef> ParseGitRef(std::string_view source);

// Applies an ADD's --checksum and --keep-git-dir to `ref`: they must agree with the query's
// ("checksum mismatch \"a\" != \"b\"", "inconsistent keep-git-dir configuration").
StatusOr<GitRef> WithAddFlags(GitRef ref, const std::string& checksum,
                              std::optional<bool> keep_git_dir);

// Whether `commit` starts with `checksum` (both as written: BuildKit compares case-sensitively).
// The error says "expected checksum to match <checksum>, got <commit>".
Status CheckGitChecksum(const std::string& checksum, const std::string& commit);

struct GitCheckout {
  std::string commit;       // the commit checked out, 40 hex digits
  int64_t commit_time = 0;  // its committer date, seconds since the Unix epoch
};

// Checks `ref` out into `dir` (an empty directory) with the git CLI, as BuildKit's git source
// does on a fresh builder: the ref resolved with ls-remote (a branch before a tag), a shallow
// fetch into a bare repository made in `scratch` (an empty directory outside `dir`), the
// checksum checked, the files checked out under umask 022, submodules (unless disabled) checked
// out too, `subdir` alone kept. With keep_git_dir (and no subdir) `dir/.git` is BuildKit's: a
// depth-1 clone at a detached HEAD whose origin is the remote. git runs without the user's or
// the system's git configuration and never prompts. Errors name the remote and carry git's last
// words: "repository does not contain ref x", "failed to fetch remote URL: ...". Before anything
// is fetched, a checksum that is not hex digits is InvalidArgument ("invalid checksum x for Git
// URL, expected hex commit hash"), and so is a ref git would read as an option ("-...").
StatusOr<GitCheckout> CheckoutGitRef(const GitRef& ref, const std::string& scratch,
                                     const std::string& dir);

}  // namespace stagefarm
