#include "stagefarm/cli/app.h"
#include "stagefarm/common/allocator.h"

int main(int argc, char** argv) {
  stagefarm::TuneAllocatorForChunks();
  return stagefarm::cli::Main(argc, argv);
}
