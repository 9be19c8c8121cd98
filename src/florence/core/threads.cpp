#include "florence/core/threads.h"

#include <ATen/Parallel.h>
#include <malloc.h>

#include <cstdlib>
#include <string>
#include <thread>

namespace florence {

void configure_allocator() {
  static const bool done = [] {
    if (std::getenv("FLORENCE_DEFAULT_MALLOC") != nullptr) return true;
    // Keep freed tensor memory in the process instead of returning it to the kernel: glibc
    // serves blocks over 128 KiB-32 MiB with mmap and unmaps them on free, so every new
    // activation tensor is page-faulted in again (measured here: GELU over a 160 MB tensor
    // 394 ms with the defaults, 12 ms with these settings; see docs/performance.md).
    mallopt(M_MMAP_THRESHOLD, 1 << 30);  // blocks up to 1 GiB come from the heap and are reused
    mallopt(M_TRIM_THRESHOLD, INT32_MAX);  // shrink the heap top only above ~2 GiB free
    mallopt(M_TOP_PAD, 64 << 20);          // grow the heap 64 MiB at a time
    return true;
  }();
  (void)done;
}

int configure_threads(int requested) {
  configure_allocator();
  int n = requested;
  if (n <= 0) {
    if (const char* env = std::getenv("OMP_NUM_THREADS")) {
      try {
        n = std::stoi(env);
      } catch (...) {
        n = 0;
      }
    }
  }
  if (n <= 0) n = static_cast<int>(std::thread::hardware_concurrency());
  if (n <= 0) n = 1;
  at::set_num_threads(n);
  static bool interop_set = false;
  if (!interop_set) {
    interop_set = true;
    try {
      at::set_num_interop_threads(n);
    } catch (...) {
      // Already started by an earlier parallel region: keep LibTorch's value.
    }
  }
  return at::get_num_threads();
}

}  // namespace florence
