#pragma once
// Thread configuration. Debian's LibTorch starts with at::get_num_threads() == 1,
// so every entry point calls configure_threads() once.

namespace florence {

/// Sets LibTorch's intra-op thread count and returns the value applied.
/// Precedence: `requested` > 0, else the OMP_NUM_THREADS environment variable
/// (when it parses as a positive integer), else all hardware cores.
/// Inter-op threads are set once (LibTorch allows that only before first use).
int configure_threads(int requested = 0);

}  // namespace florence
