// ADD from http(s) URLs and git repositories, the client's part (common/remote_file.h): before a
// build is submitted, every URL that an ADD of the stages the target needs names is fetched once
// (a repository checked out, git_source.h), checked against the step's --checksum and stored in
// the farm's CAS. The result goes into BuildRequest::remote_files.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "stagefarm/common/build_plan.h"
#include "stagefarm/common/cache_client.h"
#include "stagefarm/common/remote_file.h"

namespace stagefarm::cli {

// Resolves `dockerfile` as the coordinator will (images from the store behind `cache`) and
// fetches the ADD URLs of the plan, in order, each URL once (a repository once per
// --keep-git-dir and --checksum); `note` gets one line per file or checkout.
// A Dockerfile that does not resolve gives an empty list: the coordinator reports its error with
// its place. A failed fetch or a checksum mismatch is an error naming the Dockerfile line and
// the URL: "Dockerfile:3: ADD http://h/x /x: GET http://h/x: HTTP 404 (not found)".
StatusOr<std::vector<RemoteFile>> FetchAddUrls(CacheClient& cache, std::string_view dockerfile,
                                               const frontend::BuildOptions& options,
                                               const std::function<void(const std::string&)>& note);

}  // namespace stagefarm::cli
