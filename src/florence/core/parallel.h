#pragma once
// Plain-thread parallelism for CPU work outside LibTorch (hashing, index queries, shard I/O): a
// thread count that means "all cores" when not given, and a parallel loop over index ranges.
// LibTorch's own intra-op threads are set apart, by configure_threads (core/threads.h).
#include <cstddef>
#include <functional>

namespace florence::core {

/// `requested` when > 0, else std::thread::hardware_concurrency() (1 when that is unknown).
int resolve_threads(int requested);

/// Runs fn(begin, end) over [0, n) split into contiguous ranges on up to `threads` threads
/// (0 = all cores, at most 65536); ranges are handed out dynamically (about 16 per thread), so
/// uneven work balances. The first exception a range throws stops the hand-out and is rethrown
/// after every thread has joined. n == 0 calls nothing; one thread runs fn(0, n) inline.
void parallel_ranges(size_t n, int threads, const std::function<void(size_t, size_t)>& fn);

}  // namespace florence::core
