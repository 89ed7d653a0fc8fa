// Names a thread as `top -H`, `perf` and /proc/<pid>/task/*/comm show it.
#pragma once

#include <pthread.h>

#include <thread>

namespace stagefarm {

// Named by its creator, so the name is there as soon as the std::thread is. At most 15
// characters (the kernel's limit); a longer name is left unset.
inline void NameThread(std::thread& thread, const char* name) {
  pthread_setname_np(thread.native_handle(), name);
}

}  // namespace stagefarm
