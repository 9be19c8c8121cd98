#pragma once
// A blocking first-in first-out queue of bounded capacity for producer / consumer pipelines (one
// reader thread feeding worker threads, as the curation scan does): push waits while the queue is
// full, pop waits while it is empty, and close() wakes everyone so both sides can stop early.
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <utility>

namespace florence::core {

template <class T>
class BoundedQueue {
 public:
  /// `capacity`: the most items held at once (>= 1; push blocks beyond it).
  explicit BoundedQueue(size_t capacity) : cap_(capacity) {}

  /// Appends `v`, waiting for room. Returns false (dropping `v`) once the queue is closed.
  bool push(T v) {
    std::unique_lock<std::mutex> lk(mu_);
    not_full_.wait(lk, [&] { return q_.size() < cap_ || closed_; });
    if (closed_) return false;
    q_.push_back(std::move(v));
    not_empty_.notify_one();
    return true;
  }

  /// Takes the oldest item into `out`, waiting for one. Returns false when the queue is closed
  /// and empty (items pushed before close() are still delivered).
  bool pop(T& out) {
    std::unique_lock<std::mutex> lk(mu_);
    not_empty_.wait(lk, [&] { return !q_.empty() || closed_; });
    if (q_.empty()) return false;
    out = std::move(q_.front());
    q_.pop_front();
    not_full_.notify_one();
    return true;
  }

  /// No more pushes: waiting producers return false, consumers drain what is left.
  void close() {
    std::lock_guard<std::mutex> lk(mu_);
    closed_ = true;
    not_empty_.notify_all();
    not_full_.notify_all();
  }

 private:
  size_t cap_;
  std::deque<T> q_;
  std::mutex mu_;
  std::condition_variable not_full_, not_empty_;
  bool closed_ = false;
};

}  // namespace florence::core
