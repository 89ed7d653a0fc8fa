#include "stagefarm/common/allocator.h"

#include <malloc.h>

namespace stagefarm {

void TuneAllocatorForChunks() {
  // Either call fails only for an out-of-range value; the defaults then stay, which is slower but
  // correct.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
}

}  // namespace stagefarm
