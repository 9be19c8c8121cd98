#pragma once
// Thread configuration. Debian's LibTorch starts with at::get_num_threads() == 1,
// so every entry point calls configure_threads() once.

namespace florence {

/// Tunes glibc malloc for tensor workloads (once per process; FLORENCE_DEFAULT_MALLOC set in the
/// environment leaves the defaults): large blocks come from the heap and freed memory is kept for
/// reuse (M_MMAP_THRESHOLD 1 GiB, M_TRIM_THRESHOLD INT32_MAX, M_TOP_PAD 64 MiB), so activations do not
/// pay a page fault per 4 KiB page on every forward pass. Peak resident memory can stay at its
/// high-water mark instead of shrinking between passes. Called by configure_threads(). The values
/// are ours, chosen from the measurement in docs/performance.md (GELU over a 160 MB
/// tensor 394 ms -> 12 ms); a mallopt call that glibc rejects is ignored (the default stays). The
/// settings act on the main arena: glibc caps other threads' heaps at 64 MiB, so larger blocks
/// allocated by worker threads are still mapped per allocation.
void configure_allocator();

/// Sets LibTorch's intra-op thread count and returns the value applied.
/// Precedence: `requested` > 0, else the OMP_NUM_THREADS environment variable
/// (when it parses as a positive integer), else all hardware cores.
/// Inter-op threads are set once (LibTorch allows that only before first use).
int configure_threads(int requested = 0);

}  // namespace florence
