#include "florence/core/threads.h"

#include <ATen/Parallel.h>

#include <cstdlib>
#include <string>
#include <thread>

namespace florence {

int configure_threads(int requested) {
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
