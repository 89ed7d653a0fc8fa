// Resolving USER and --chown the way Docker does, from the image's own /etc/passwd and /etc/group
// (read inside the rootfs; a missing file counts as empty).
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

#include "stagefarm/common/status.h"

namespace stagefarm::worker {

struct ResolvedUser {
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> additional_gids;  // RUN: the primary group, then the user's other groups
  std::string home = "/";  // RUN: the first /etc/passwd entry of `uid`'s, as runc sets HOME
};

// RUN's USER, as BuildKit's executor resolves it. `spec` is "", "user", "uid", "user:group",
// "uid:gid" (and mixes). Empty = uid 0 (with its groups in the files, if any). "uid:gid" (each a
// number or "root") needs no files; otherwise runc's rules: a numeric user absent from /etc/passwd
// is accepted with gid 0 (or the given group); an unknown name is InvalidArgument naming it:
// `unable to find user app: no matching entries in passwd file`. The primary group is always the
// first of `additional_gids`, then the user's groups from /etc/group when no group was given.
StatusOr<ResolvedUser> ResolveUser(int root_fd, std::string_view spec);

// The same from file contents (for tests and for callers that already read the files).
StatusOr<ResolvedUser> ResolveUserFrom(std::string_view spec, std::string_view passwd,
                                       std::string_view group);

// The owner COPY/ADD --chown and WORKDIR give, as BuildKit's file operations resolve it: "name"
// takes the user's uid and primary group from /etc/passwd; a bare number (or "root", which is 0
// without reading any file) is used for both uid and gid; a given group (name, number or "root")
// wins. A name found in neither file (or with no file at all)
// is 0 for a user and leaves the gid as it was for a group: never an error. Empty = 0:0. No
// supplementary groups.
StatusOr<ResolvedUser> ResolveOwner(int root_fd, std::string_view spec);
ResolvedUser ResolveOwnerFrom(std::string_view spec, std::string_view passwd,
                              std::string_view group);

}  // namespace stagefarm::worker
