// Classification and retrieval metrics with exact chance levels (see metrics.h).
#include "florence/eval/metrics.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "florence/core/error.h"

namespace florence::eval {

namespace {

std::string shape_str(const torch::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

void check_scores(const torch::Tensor& scores, const char* what) {
  if (!scores.defined() || scores.dim() != 2)
    throw Error(std::string(what) + ": scores must be a 2-D [queries, items] tensor, got " +
                (scores.defined() ? shape_str(scores) : std::string("undefined")));
  if (!scores.is_floating_point()) throw Error(std::string(what) + ": scores must be floating point");
  if (!torch::isfinite(scores).all().item<bool>())
    throw Error(std::string(what) + ": scores contain NaN or Inf");
}

}  // namespace

torch::Tensor first_relevant_ranks(const torch::Tensor& scores_in, const torch::Tensor& relevant_in) {
  check_scores(scores_in, "ranking");
  if (!relevant_in.defined() || relevant_in.sizes() != scores_in.sizes())
    throw Error("ranking: relevance matrix " + (relevant_in.defined() ? shape_str(relevant_in) : "undefined") +
                " does not match scores " + shape_str(scores_in));
  torch::Tensor scores = scores_in.to(torch::kCPU, torch::kDouble);
  torch::Tensor rel = relevant_in.to(torch::kCPU).to(torch::kBool);
  torch::Tensor has = rel.any(1);
  if (scores.size(0) > 0 && !has.all().item<bool>()) {
    int64_t q = (~has).nonzero()[0][0].item<int64_t>();
    throw Error("ranking: query " + std::to_string(q) + " has no correct item");
  }
  const double neg_inf = -std::numeric_limits<double>::infinity();
  torch::Tensor best = scores.masked_fill(~rel, neg_inf).amax(1, /*keepdim=*/true);  // [Q, 1]
  torch::Tensor ahead = (scores >= best).logical_and(~rel).sum(1);                   // [Q]
  return (ahead + 1).to(torch::kLong);
}

torch::Tensor relevance_from_groups(const torch::Tensor& query_groups, const torch::Tensor& item_groups) {
  if (query_groups.dim() != 1 || item_groups.dim() != 1)
    throw Error("relevance_from_groups: group ids must be 1-D, got " + shape_str(query_groups) + " and " +
                shape_str(item_groups));
  return query_groups.to(torch::kCPU, torch::kLong).unsqueeze(1).eq(item_groups.to(torch::kCPU, torch::kLong).unsqueeze(0));
}

double chance_hit_at_k(int64_t n, int64_t m, int64_t k) {
  if (m < 1 || m > n) throw Error("chance_hit_at_k: need 1 <= relevant (" + std::to_string(m) + ") <= items (" +
                                  std::to_string(n) + ")");
  if (k < 0) throw Error("chance_hit_at_k: k must be >= 0");
  if (k > n - m) return 1.0;
  // P(no correct item in the first k) = prod_{i<k} (n - m - i) / (n - i)
  double miss = 1.0;
  for (int64_t i = 0; i < k; ++i) miss *= double(n - m - i) / double(n - i);
  return 1.0 - miss;
}

double chance_median_rank(const std::vector<int64_t>& n_relevant, int64_t n_items) {
  if (n_relevant.empty()) throw Error("chance_median_rank: no queries");
  // Pooled CDF F(r) = mean_q P(rank_q <= r); the smallest r with F(r) >= 1/2. Per query the
  // survival function is updated incrementally: S(r) = S(r-1) * (n - m - r + 1) / (n - r + 1).
  std::vector<double> surv(n_relevant.size(), 1.0);
  for (int64_t r = 1; r <= n_items; ++r) {
    double cdf = 0;
    for (size_t q = 0; q < n_relevant.size(); ++q) {
      const int64_t m = n_relevant[q];
      if (m < 1 || m > n_items) throw Error("chance_median_rank: bad number of correct items " + std::to_string(m));
      const double f = double(n_items - m - (r - 1)) / double(n_items - (r - 1));
      surv[q] *= std::max(0.0, f);
      cdf += 1.0 - surv[q];
    }
    // Tolerance: the pooled CDF can land exactly on 1/2 (e.g. N = 2, m = 1); accept rounding.
    if (cdf / double(n_relevant.size()) >= 0.5 - 1e-12) return double(r);
  }
  return double(n_items);
}

double median(std::vector<int64_t> v) {
  if (v.empty()) throw Error("median of an empty list");
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? double(v[n / 2]) : 0.5 * double(v[n / 2 - 1] + v[n / 2]);
}

RetrievalMetrics retrieval_metrics(const torch::Tensor& scores, const torch::Tensor& relevant,
                                   std::vector<int64_t> ks) {
  RetrievalMetrics m;
  torch::Tensor ranks = first_relevant_ranks(scores, relevant);
  m.num_queries = scores.size(0);
  m.num_items = scores.size(1);
  if (m.num_queries == 0) throw Error("retrieval_metrics: no queries");
  std::sort(ks.begin(), ks.end());
  ks.erase(std::unique(ks.begin(), ks.end()), ks.end());
  m.ks = ks;
  m.ranks.assign(ranks.data_ptr<int64_t>(), ranks.data_ptr<int64_t>() + m.num_queries);
  torch::Tensor counts = relevant.to(torch::kCPU).to(torch::kBool).sum(1).to(torch::kLong).contiguous();
  std::vector<int64_t> nrel(counts.data_ptr<int64_t>(), counts.data_ptr<int64_t>() + m.num_queries);
  double sum_rank = 0, chance_mean = 0, sum_rel = 0;
  for (int64_t q = 0; q < m.num_queries; ++q) {
    sum_rank += double(m.ranks[q]);
    chance_mean += double(m.num_items + 1) / double(nrel[q] + 1);
    sum_rel += double(nrel[q]);
  }
  for (int64_t k : ks) {
    if (k < 1) throw Error("retrieval_metrics: K must be >= 1");
    int64_t hits = 0;
    double chance = 0;
    for (int64_t q = 0; q < m.num_queries; ++q) {
      hits += m.ranks[q] <= k;
      chance += chance_hit_at_k(m.num_items, nrel[q], k);
    }
    m.recall[k] = double(hits) / double(m.num_queries);
    m.chance_recall[k] = chance / double(m.num_queries);
  }
  m.median_rank = median(m.ranks);
  m.mean_rank = sum_rank / double(m.num_queries);
  m.chance_mean_rank = chance_mean / double(m.num_queries);
  m.chance_median_rank = chance_median_rank(nrel, m.num_items);
  m.mean_relevant = sum_rel / double(m.num_queries);
  return m;
}

nlohmann::json RetrievalMetrics::to_json() const {
  nlohmann::json j{{"num_queries", num_queries}, {"num_items", num_items}, {"mean_relevant", mean_relevant}};
  nlohmann::json chance = nlohmann::json::object();
  for (int64_t k : ks) {
    j["R@" + std::to_string(k)] = recall.at(k);
    chance["R@" + std::to_string(k)] = chance_recall.at(k);
  }
  j["median_rank"] = median_rank;
  j["mean_rank"] = mean_rank;
  chance["median_rank"] = chance_median_rank;
  chance["mean_rank"] = chance_mean_rank;
  j["chance"] = chance;
  return j;
}

std::string format_p_value(double p) { return p < 1e-300 ? std::string("<1e-300") : fmt::format("{:.2g}", p); }

double binomial_upper_tail(int64_t n, double p, int64_t k) {
  if (n < 0) throw Error("binomial_upper_tail: n must be >= 0, got " + std::to_string(n));
  if (!(p >= 0.0 && p <= 1.0)) throw Error("binomial_upper_tail: p must lie in [0, 1]");
  if (k <= 0) return 1.0;
  if (k > n) return 0.0;
  if (p == 0.0) return 0.0;
  if (p == 1.0) return 1.0;
  // log C(n, i) + i log p + (n - i) log(1 - p), summed from i = k by log-sum-exp around the largest term.
  const double lp = std::log(p), lq = std::log1p(-p), lgn = std::lgamma(double(n) + 1);
  std::vector<double> terms;
  terms.reserve(size_t(n - k + 1));
  double top = -std::numeric_limits<double>::infinity();
  for (int64_t i = k; i <= n; ++i) {
    const double t = lgn - std::lgamma(double(i) + 1) - std::lgamma(double(n - i) + 1) + double(i) * lp + double(n - i) * lq;
    terms.push_back(t);
    top = std::max(top, t);
  }
  double sum = 0;
  for (double t : terms) sum += std::exp(t - top);
  return std::min(1.0, std::exp(top) * sum);
}

namespace {

// Mean per-class accuracy of uniform random guessing, simulated: class t's hits ~ Binomial(n_t, 1/C).
double mean_per_class_p_value(const std::vector<int64_t>& support, int64_t num_classes, double observed) {
  std::mt19937_64 rng(0);
  std::vector<std::binomial_distribution<int64_t>> draw;
  std::vector<double> inv;
  for (int64_t n : support) {
    if (n == 0) continue;
    draw.emplace_back(n, 1.0 / double(num_classes));
    inv.push_back(1.0 / double(n));
  }
  const double need = observed * double(draw.size()) - 1e-9;  // compare sums, with room for rounding
  // Many classes (ImageNet's 1,000) would cost 10^8 binomial draws: keep the work near 2*10^7.
  const int64_t draws = std::clamp<int64_t>(int64_t(2e7) / int64_t(std::max<size_t>(draw.size(), 1)), 10000, kPValueDraws);
  int64_t at_least = 0;
  for (int64_t b = 0; b < draws; ++b) {
    double sum = 0;
    for (size_t t = 0; t < draw.size(); ++t) sum += double(draw[t](rng)) * inv[t];
    at_least += sum >= need;
  }
  return double(1 + at_least) / double(1 + draws);
}

}  // namespace

ClassificationMetrics classification_metrics(const torch::Tensor& scores_in, const torch::Tensor& labels_in,
                                              std::vector<int64_t> ks) {
  check_scores(scores_in, "classification");
  ClassificationMetrics m;
  m.num_samples = scores_in.size(0);
  m.num_classes = scores_in.size(1);
  const int64_t n = m.num_samples, c = m.num_classes;
  if (n == 0) throw Error("classification_metrics: no samples");
  if (c == 0) throw Error("classification_metrics: no classes");
  if (!labels_in.defined() || labels_in.dim() != 1 || labels_in.size(0) != n)
    throw Error("classification_metrics: labels must be [" + std::to_string(n) + "], got " +
                (labels_in.defined() ? shape_str(labels_in) : std::string("undefined")));
  torch::Tensor labels = labels_in.to(torch::kCPU, torch::kLong).contiguous();
  if (labels.min().item<int64_t>() < 0 || labels.max().item<int64_t>() >= c)
    throw Error("classification_metrics: labels must lie in [0, " + std::to_string(c) + ")");
  torch::Tensor scores = scores_in.to(torch::kCPU, torch::kDouble).contiguous();
  torch::Tensor relevant = torch::one_hot(labels, c).to(torch::kBool);
  torch::Tensor ranks = first_relevant_ranks(scores, relevant).contiguous();
  // Best other class (lowest index among ties): argmax returns the first maximal index.
  torch::Tensor others = scores.masked_fill(relevant, -std::numeric_limits<double>::infinity());
  torch::Tensor best_other = others.argmax(1).contiguous();
  if (c == 1) best_other = torch::zeros({n}, torch::kLong);

  std::sort(ks.begin(), ks.end());
  ks.erase(std::unique(ks.begin(), ks.end()), ks.end());
  m.ks = ks;
  m.support.assign(c, 0);
  m.confusion.assign(c, std::vector<int64_t>(c, 0));
  const int64_t* lab = labels.data_ptr<int64_t>();
  const int64_t* rk = ranks.data_ptr<int64_t>();
  const int64_t* bo = best_other.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    m.support[lab[i]]++;
    m.confusion[lab[i]][rk[i] == 1 ? lab[i] : bo[i]]++;
  }
  for (int64_t k : ks) {
    if (k < 1) throw Error("classification_metrics: k must be >= 1");
    int64_t hits = 0;
    for (int64_t i = 0; i < n; ++i) hits += rk[i] <= k;
    m.topk[k] = double(hits) / double(n);
    m.chance_topk[k] = double(std::min(k, c)) / double(c);
    m.p_topk[k] = binomial_upper_tail(n, m.chance_topk[k], hits);
  }
  m.per_class_accuracy.assign(c, std::numeric_limits<double>::quiet_NaN());
  double sum = 0;
  int64_t present = 0;
  for (int64_t t = 0; t < c; ++t) {
    if (m.support[t] == 0) continue;
    m.per_class_accuracy[t] = double(m.confusion[t][t]) / double(m.support[t]);
    sum += m.per_class_accuracy[t];
    ++present;
  }
  m.mean_per_class_accuracy = sum / double(present);
  m.p_mean_per_class = mean_per_class_p_value(m.support, c, m.mean_per_class_accuracy);
  return m;
}

nlohmann::json ClassificationMetrics::to_json(const std::vector<std::string>& names_in) const {
  std::vector<std::string> names = names_in;
  if (names.empty())
    for (int64_t i = 0; i < num_classes; ++i) names.push_back(std::to_string(i));
  if (int64_t(names.size()) != num_classes)
    throw Error("classification metrics: " + std::to_string(names.size()) + " class names for " +
                std::to_string(num_classes) + " classes");
  nlohmann::json j{{"num_samples", num_samples}, {"num_classes", num_classes}, {"classes", names}};
  nlohmann::json chance = nlohmann::json::object(), p_value = nlohmann::json::object();
  for (int64_t k : ks) {
    j["top" + std::to_string(k)] = topk.at(k);
    chance["top" + std::to_string(k)] = chance_topk.at(k);
    p_value["top" + std::to_string(k)] = p_topk.at(k);
  }
  j["mean_per_class"] = mean_per_class_accuracy;
  chance["mean_per_class"] = 1.0 / double(num_classes);
  p_value["mean_per_class"] = p_mean_per_class;
  j["chance"] = chance;
  j["p_value"] = p_value;
  nlohmann::json pc = nlohmann::json::object(), sup = nlohmann::json::object();
  for (int64_t t = 0; t < num_classes; ++t) {
    pc[names[t]] = std::isnan(per_class_accuracy[t]) ? nlohmann::json(nullptr) : nlohmann::json(per_class_accuracy[t]);
    sup[names[t]] = support[t];
  }
  j["per_class"] = pc;
  j["support"] = sup;
  j["confusion"] = confusion;
  return j;
}

}  // namespace florence::eval
