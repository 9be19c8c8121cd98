// Plain-thread parallel loops; see parallel.h.
#include "florence/core/parallel.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace florence::core {

int resolve_threads(int requested) {
  if (requested > 0) return requested;
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : int(hw);
}

void parallel_ranges(size_t n, int threads, const std::function<void(size_t, size_t)>& fn) {
  if (n == 0) return;
  const int t = std::max(1, std::min<int>(resolve_threads(threads), int(std::min<size_t>(n, 1 << 16))));
  if (t == 1) {
    fn(0, n);
    return;
  }
  const size_t block = std::max<size_t>(1, n / (size_t(t) * 16));
  std::atomic<size_t> next{0};
  std::exception_ptr error;
  std::mutex mu;
  std::atomic<bool> failed{false};
  auto work = [&] {
    while (!failed.load()) {
      const size_t b = next.fetch_add(block);
      if (b >= n) break;
      try {
        fn(b, std::min(n, b + block));
      } catch (...) {
        std::lock_guard<std::mutex> lk(mu);
        if (!error) error = std::current_exception();
        failed = true;
      }
    }
  };
  std::vector<std::thread> pool;
  for (int i = 0; i < t; ++i) pool.emplace_back(work);
  for (auto& th : pool) th.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace florence::core
