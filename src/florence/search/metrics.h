#pragma once
// Counters and histograms of `florence serve`, rendered in the Prometheus text exposition format
// (version 0.0.4: "# HELP", "# TYPE", one sample per line; histograms as cumulative
// NAME_bucket{le="..."} plus NAME_sum and NAME_count). Thread-safe.
//
// Series:
//   florence_http_requests_total{route, code}            counter
//   florence_http_request_duration_seconds{route}        histogram (latency buckets below)
//   florence_model_batches_total / florence_model_batch_items (histogram of items per model call)
//   florence_model_batch_duration_seconds                histogram (one forward of a batch)
//   florence_model_queue_rejections_total                counter (queue full -> 503)
//   plus the gauges passed to render() (queue depth, index sizes, resident memory).
// Routes are a fixed set (route_label) so that a client cannot grow the series without bound.
#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace florence::search {

/// A Prometheus histogram with fixed upper bounds (the +Inf bucket is implicit).
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double v);
  /// NAME_bucket / NAME_sum / NAME_count lines with `labels` ("" or `route="/knn"`).
  std::string render(const std::string& name, const std::string& labels) const;
  int64_t count() const { return count_; }

 private:
  std::vector<double> bounds_;
  std::vector<int64_t> counts_;  // per bucket (not cumulative); last = +Inf
  double sum_ = 0;
  int64_t count_ = 0;
};

class Metrics {
 public:
  Metrics();
  /// The route label of a request path: "/", "/knn", "/embed", "/classify", "/indices",
  /// "/health", "/metrics", "/images", or "other".
  static std::string route_label(const std::string& path);

  void observe_request(const std::string& path, int status, double seconds);
  void observe_batch(int64_t items, double seconds);
  void count_rejection();
  /// The exposition text; `gauges` are (name with labels, value) lines of extra gauges, each
  /// with a HELP text: {name, help, value}.
  struct Gauge {
    std::string name, help;
    double value = 0;
  };
  std::string render(const std::vector<Gauge>& gauges) const;

  int64_t requests(const std::string& route, int status) const;  ///< for tests

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, int64_t> requests_;
  std::map<std::string, Histogram> latency_;
  Histogram batch_items_, batch_seconds_;
  int64_t rejections_ = 0;
};

/// Resident memory of this process in bytes (/proc/self/statm), 0 when unavailable.
int64_t resident_memory_bytes();

}  // namespace florence::search
