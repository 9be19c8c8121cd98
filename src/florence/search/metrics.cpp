// Prometheus metrics of `florence serve` (see metrics.h).
#include "florence/search/metrics.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace florence::search {

namespace {

const std::vector<double> kLatencyBounds{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
const std::vector<double> kItemBounds{1, 2, 4, 8, 16, 32, 64, 128, 256};

std::string num(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  // Whole numbers as integers ("40", not the shortest %g form "4e+01").
  if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 1e15) {
    std::snprintf(buf, sizeof buf, "%.0f", v);
    return buf;
  }
  for (int prec = 1; prec <= 17; ++prec) {  // the shortest text that reads back as v ("0.005", not "0.0050000000000000001")
    std::snprintf(buf, sizeof buf, "%.*g", prec, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

std::string join_labels(const std::string& a, const std::string& b) {
  if (a.empty()) return b;
  if (b.empty()) return a;
  return a + "," + b;
}

}  // namespace

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double v) {
  size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  counts_[i]++;
  sum_ += v;
  count_++;
}

std::string Histogram::render(const std::string& name, const std::string& labels) const {
  std::string out;
  int64_t cum = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    cum += counts_[i];
    const std::string le = "le=\"" + (i < bounds_.size() ? num(bounds_[i]) : std::string("+Inf")) + "\"";
    out += name + "_bucket{" + join_labels(labels, le) + "} " + std::to_string(cum) + "\n";
  }
  const std::string l = labels.empty() ? "" : "{" + labels + "}";
  out += name + "_sum" + l + " " + num(sum_) + "\n";
  out += name + "_count" + l + " " + std::to_string(count_) + "\n";
  return out;
}

Metrics::Metrics() : batch_items_(kItemBounds), batch_seconds_(kLatencyBounds) {}

std::string Metrics::route_label(const std::string& path) {
  static const char* exact[] = {"/", "/knn", "/embed", "/classify", "/indices", "/health", "/metrics"};
  for (const char* r : exact)
    if (path == r) return r;
  if (path.rfind("/images/", 0) == 0) return "/images";
  return "other";
}

void Metrics::observe_request(const std::string& path, int status, double seconds) {
  const std::string route = route_label(path);
  std::lock_guard<std::mutex> lock(mu_);
  requests_[{route, status}]++;
  auto it = latency_.find(route);
  if (it == latency_.end()) it = latency_.emplace(route, Histogram(kLatencyBounds)).first;
  it->second.observe(seconds);
}

void Metrics::observe_batch(int64_t items, double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  batch_items_.observe(double(items));
  batch_seconds_.observe(seconds);
}

void Metrics::count_rejection() {
  std::lock_guard<std::mutex> lock(mu_);
  rejections_++;
}

int64_t Metrics::requests(const std::string& route, int status) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = requests_.find({route, status});
  return it == requests_.end() ? 0 : it->second;
}

std::string Metrics::render(const std::vector<Gauge>& gauges) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::ostringstream o;
  o << "# HELP florence_http_requests_total HTTP requests answered, by route and status code.\n"
       "# TYPE florence_http_requests_total counter\n";
  for (const auto& [k, v] : requests_)
    o << "florence_http_requests_total{route=\"" << k.first << "\",code=\"" << k.second << "\"} " << v << "\n";
  o << "# HELP florence_http_request_duration_seconds Time from request parsed to response ready, by route.\n"
       "# TYPE florence_http_request_duration_seconds histogram\n";
  for (const auto& [route, h] : latency_) o << h.render("florence_http_request_duration_seconds", "route=\"" + route + "\"");
  o << "# HELP florence_model_batch_items Texts plus images encoded per model call.\n"
       "# TYPE florence_model_batch_items histogram\n"
    << batch_items_.render("florence_model_batch_items", "");
  o << "# HELP florence_model_batch_duration_seconds Time of one batched model call.\n"
       "# TYPE florence_model_batch_duration_seconds histogram\n"
    << batch_seconds_.render("florence_model_batch_duration_seconds", "");
  o << "# HELP florence_model_queue_rejections_total Requests refused with 503 because the model queue was full.\n"
       "# TYPE florence_model_queue_rejections_total counter\n"
    << "florence_model_queue_rejections_total " << rejections_ << "\n";
  std::string last_base;  // gauges of one name (different labels) share one HELP/TYPE header; give them in a row
  for (const auto& g : gauges) {
    const std::string base = g.name.substr(0, g.name.find('{'));
    if (base != last_base) o << "# HELP " << base << " " << g.help << "\n# TYPE " << base << " gauge\n";
    last_base = base;
    o << g.name << " " << num(g.value) << "\n";
  }
  return o.str();
}

int64_t resident_memory_bytes() {
  std::ifstream in("/proc/self/statm");
  int64_t size = 0, resident = 0;
  if (!(in >> size >> resident)) return 0;
  return resident * int64_t(sysconf(_SC_PAGESIZE));
}

}  // namespace florence::search
