// A layer as the farm names it: its uncompressed tar (diffID) and its table of contents.
#pragma once

#include "stagefarm/common/digest.h"

namespace stagefarm {

struct LayerRef {
  Digest diff_id;  // sha256 of the uncompressed tar; size = tar bytes
  Digest toc;      // the TOC blob (see toc.h)

  friend bool operator==(const LayerRef&, const LayerRef&) = default;
};

}  // namespace stagefarm
