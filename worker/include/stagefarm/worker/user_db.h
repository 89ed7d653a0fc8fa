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
  std::vector<gid_t> additional_gids;  // the user's groups in /etc/group, when no group was given
  std::string home = "/";
};

// `spec` is "", "user", "uid", "user:group", "uid:gid" (and mixes). Empty = root. A numeric user
// absent from /etc/passwd is accepted with gid 0 (or the given group); an unknown name is
// InvalidArgument naming it: `unable to find user app: no matching entries in passwd file`.
StatusOr<ResolvedUser> ResolveUser(int root_fd, std::string_view spec);

// The same from file contents (for tests and for callers that already read the files).
StatusOr<ResolvedUser> ResolveUserFrom(std::string_view spec, std::string_view passwd,
                                       std::string_view group);

}  // namespace stagefarm::worker

namespace stagefarm::worker {

// --chown's rules (BuildKit's): "name" takes the user's primary group from /etc/passwd; a bare
// number is used for both uid and gid; a given group (name or number) wins. Empty = 0:0.
StatusOr<ResolvedUser> ResolveOwner(int root_fd, std::string_view spec);

}  // namespace stagefarm::worker
