// The flattened listing of an image, the common ground on which the reference BuildKit and
// `stagefarm build` are compared (tests/golden/fs-cases, scripts/regen-golden, golden_fs_test).
// The same code reads BuildKit's OCI archives and stagefarm's exports, so the two listings are
// made the same way.
//
// A listing is JSON:
//   {"files": [{"path": "/a", "type": "file|dir|symlink|char|block|fifo", "mode": "0644",
//               "uid": 0, "gid": 0, "size": 2, "sha256": "<hex>", "target": "..."}, ...],
//    "hardlinks": [["/a", "/b"], ...], "config": {"Env": [...], ...},
//    "image": {"architecture": "amd64", "os": "linux"}, "history": [{"created_by": "..."}],
//    "layers": 3}
// with files sorted by path (size and sha256 for regular files only, target for symlinks only),
// hard-link groups of two or more paths, the whole container config (empty members left out),
// the history without times, and the number of layers. Timestamps are never listed.
#pragma once

#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "stagefarm/common/status.h"

namespace stagefarm::golden {

// Reads the image at `path`, a docker-archive tar (docker save, `-o type=docker`), an OCI
// archive tar (`-o type=oci`) or an OCI layout directory, applies its layers in order in memory (OCI whiteouts and opaque directories
// honoured) and returns its listing. Bad input is InvalidArgument naming the file and entry.
StatusOr<nlohmann::json> FlattenImage(const std::string& path);

// The part of `image` that is not in `base`: files that are new or differ ("files"), paths of
// `base` that are gone ("deleted"), `image`'s hardlinks, config and image fields, and the
// history entries and layer count it adds to the base's. Golden files hold this
// form, so they do not depend on the busybox build the base image was made from.
nlohmann::json DiffFromBase(const nlohmann::json& base, const nlohmann::json& image);

// A readable account of how `actual` differs from `expected` (both DiffFromBase results), one
// line per path or config field; empty when they are the same.
std::string DescribeDifferences(const nlohmann::json& expected, const nlohmann::json& actual);

// Replaces every `from` in the strings of `listing` (paths, link targets, config, history) with
// `to`: a git server's URL, which has another port in every run, becomes a placeholder.
void ReplaceText(nlohmann::json& listing, const std::string& from, const std::string& to);

// Where stagefarm deliberately differs from BuildKit in one case: its known-differences.txt,
// one item a line, "# reason" comments: a path ("/etc/x"), a history entry ("history[3]"), or
// "hardlinks" (the hard-link groups).
struct KnownDifferences {
  std::set<std::string> paths;
  std::set<size_t> history;
  bool hardlinks = false;
};
// Reads `file`; a missing file is no difference. A line that is neither form is InvalidArgument.
StatusOr<KnownDifferences> ReadKnownDifferences(const std::string& file);

// Takes the known differences out of both listings, so that the rest can be compared. Returns
// a line for each one that no longer differs (the deviation is gone: remove its line); empty
// when all still differ.
std::string SetAsideKnownDifferences(const KnownDifferences& known, nlohmann::json& expected,
                                     nlohmann::json& actual);

}  // namespace stagefarm::golden
