// The flattened listing of an image, the common ground on which `docker build` and `stagefarm
// build` are compared (tests/golden/fs-cases, scripts/regen-docker-golden, golden_fs_test). The
// same code reads docker's `docker save` output and stagefarm's exports, so the two listings are
// made the same way.
//
// A listing is JSON:
//   {"files": [{"path": "/a", "type": "file|dir|symlink|char|block|fifo", "mode": "0644",
//               "uid": 0, "gid": 0, "size": 2, "sha256": "<hex>", "target": "..."}, ...],
//    "hardlinks": [["/a", "/b"], ...], "config": {"Env": [...], ...}}
// with files sorted by path (size and sha256 for regular files only, target for symlinks only),
// hard-link groups of two or more paths, and the image config fields that must match docker's,
// empty ones left out. Timestamps are never listed.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "stagefarm/common/status.h"

namespace stagefarm::golden {

// Reads the image at `path`, a docker-archive tar (docker save, `-o type=docker`) or an OCI
// layout directory, applies its layers in order in memory (OCI whiteouts and opaque directories
// honoured) and returns its listing. Bad input is InvalidArgument naming the file and entry.
StatusOr<nlohmann::json> FlattenImage(const std::string& path);

// The part of `image` that is not in `base`: files that are new or differ ("files"), paths of
// `base` that are gone ("deleted"), and `image`'s hardlinks and config. Golden files hold this
// form, so they do not depend on the busybox build the base image was made from.
nlohmann::json DiffFromBase(const nlohmann::json& base, const nlohmann::json& image);

// A readable account of how `actual` differs from `expected` (both DiffFromBase results), one
// line per path or config field; empty when they are the same.
std::string DescribeDifferences(const nlohmann::json& expected, const nlohmann::json& actual);

}  // namespace stagefarm::golden
