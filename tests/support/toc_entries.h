// TOC entries for tests that build a layer's table of contents by hand.
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include "stagefarm/common/digest.h"
#include "stagefarm/common/toc.h"

namespace stagefarm::testing {

inline TocEntry TocFile(std::string path, const std::string& content, uint32_t mode = 0644) {
  TocEntry e;
  e.path = std::move(path);
  e.type = TocType::kFile;
  e.mode = mode;
  e.size = content.size();
  e.digest = Digest::Of(content).str();
  return e;
}

inline TocEntry TocDir(std::string path, uint32_t mode = 0755) {
  TocEntry e;
  e.path = std::move(path);
  e.type = TocType::kDir;
  e.mode = mode;
  return e;
}

inline TocEntry TocLink(std::string path, std::string target) {
  TocEntry e;
  e.path = std::move(path);
  e.type = TocType::kSymlink;
  e.mode = 0777;
  e.link = std::move(target);
  return e;
}

// A whiteout or an opaque-directory marker.
inline TocEntry TocMarker(std::string path, TocType type) {
  TocEntry e;
  e.path = std::move(path);
  e.type = type;
  return e;
}

}  // namespace stagefarm::testing
