// Allocator settings for processes that move blob chunks (about 1 MiB each) through memory.
#pragma once

namespace stagefarm {

// glibc serves allocations of 128 KiB and more with mmap, at first, and returns free memory at
// the top of the heap to the kernel once more than 128 KiB is free there. A chunk buffer
// allocated and freed per message then costs a page fault per 4 KiB on every message: measured
// on the cache server, page faults were a third of its CPU time while it ingested a 1 GiB blob,
// and its ingest rate tripled without them. This keeps allocations under 32 MiB on the heap and
// lets up to 256 MiB of free heap stay mapped for reuse; memory stays bounded by what the
// process holds at its peak (the servers bound their queues). Call it first thing in main(),
// before any thread starts.
void TuneAllocatorForChunks();

}  // namespace stagefarm
