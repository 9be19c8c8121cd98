#pragma once
// Evaluation metrics: classification (top-k, per-class accuracy, confusion matrix) and
// retrieval (R@K, median / mean rank) where a query may have SEVERAL correct items, plus the
// exact chance level of every number (what a uniformly random ranking scores on the same set).
//
// Ranks and ties (one policy everywhere). For a query with score row s over N items and the set
// P of its correct items, the rank of the first correct item is
//     rank = 1 + #{ j not in P : s_j >= max_{k in P} s_k }            (1-based)
// i.e. the best-scoring correct item counts, other correct items never push it down, and an
// incorrect item that TIES with it is ranked ahead of it (pessimistic ties). A model whose scores
// are all equal therefore gets R@K = 0 rather than 100 %; with real-valued embeddings exact ties
// only happen between identical inputs. Classification uses the same rule with P = {true class}.
//
// Chance (uniformly random permutation of the N items, a query with m correct items):
//     P(rank > r) = C(N - m, r) / C(N, r) = prod_{i=0}^{r-1} (N - m - i) / (N - i)
//     chance R@K  = mean over queries of 1 - P(rank > K)
//     E[rank]     = (N + 1) / (m + 1)               (chance mean rank: mean over queries)
//     chance median rank = median of the pooled rank distribution: the smallest r with
//                          mean_q P(rank_q <= r) >= 1/2.
// For classification (m = 1, N = C classes) chance top-k = min(k, C) / C.
#include <torch/types.h>

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace florence::eval {

/// Ranks of the first correct item per query under the tie policy above.
/// scores: [Q, N] float (any floating dtype/device); relevant: [Q, N] bool, true where item j is
/// correct for query q. Returns [Q] int64 (CPU), values in [1, N].
/// Throws florence::Error on shape mismatch, non-finite scores, or a query without any correct
/// item (the message names the first such query).
torch::Tensor first_relevant_ranks(const torch::Tensor& scores, const torch::Tensor& relevant);

/// relevant[q][i] = (query_groups[q] == item_groups[i]): [Q] and [I] int64 group ids -> [Q, I] bool.
torch::Tensor relevance_from_groups(const torch::Tensor& query_groups, const torch::Tensor& item_groups);

/// P(rank <= k) for one query of a random ranking of n_items with n_relevant correct ones
/// (formula above). Throws florence::Error unless 1 <= n_relevant <= n_items and k >= 0.
double chance_hit_at_k(int64_t n_items, int64_t n_relevant, int64_t k);

/// Median of the pooled chance rank distribution (see top of file) for queries with the given
/// numbers of correct items over n_items items.
double chance_median_rank(const std::vector<int64_t>& n_relevant, int64_t n_items);

/// numpy.median of integer ranks (mean of the two middle values for an even count). Throws on empty.
double median(std::vector<int64_t> values);

struct RetrievalMetrics {
  int64_t num_queries = 0;
  int64_t num_items = 0;
  std::vector<int64_t> ks;          ///< the K of each recall, ascending
  std::map<int64_t, double> recall;  ///< K -> fraction of queries with rank <= K, in [0, 1]
  double median_rank = 0, mean_rank = 0;
  std::map<int64_t, double> chance_recall;
  double chance_median_rank = 0, chance_mean_rank = 0;
  double mean_relevant = 0;     ///< average number of correct items per query
  std::vector<int64_t> ranks;   ///< per query, same order as the score rows

  /// {"num_queries", "num_items", "mean_relevant", "R@1": ..., "median_rank", "mean_rank",
  ///  "chance": {"R@1": ..., "median_rank", "mean_rank"}}; recalls as fractions in [0, 1].
  nlohmann::json to_json() const;
};

/// R@K for each K in `ks`, median and mean rank, and their chance levels.
/// scores [Q, N], relevant [Q, N] bool as for first_relevant_ranks (same errors).
RetrievalMetrics retrieval_metrics(const torch::Tensor& scores, const torch::Tensor& relevant,
                                   std::vector<int64_t> ks = {1, 5, 10});

struct ClassificationMetrics {
  int64_t num_samples = 0;
  int64_t num_classes = 0;
  std::vector<int64_t> ks;              ///< top-k values reported
  std::map<int64_t, double> topk;       ///< k -> accuracy in [0, 1]
  std::map<int64_t, double> chance_topk;  ///< k -> min(k, C) / C
  /// k -> one-sided p-value of top-k against chance: the probability that a classifier guessing
  /// k distinct classes uniformly at random gets at least the observed number of hits,
  /// P(Binomial(N, min(k, C) / C) >= hits), exact. Below ~0.01 the accuracy is clearly above chance.
  std::map<int64_t, double> p_topk;
  std::vector<int64_t> support;         ///< samples per true class
  std::vector<double> per_class_accuracy;  ///< top-1 per true class; NaN where support is 0
  double mean_per_class_accuracy = 0;   ///< over classes with support > 0 (balanced accuracy)
  /// One-sided p-value of the mean per-class accuracy against uniform random guessing (each class's
  /// hits ~ Binomial(support, 1/C), independent): Monte Carlo from a fixed seed with kPValueDraws
  /// draws (fewer, down to 10,000, above 200 classes, keeping the work near 2*10^7 binomial draws),
  /// estimated as (1 + #{draws >= observed}) / (1 + draws), so never below ~1e-5.
  double p_mean_per_class = 1;
  /// confusion[t][p]: samples of true class t predicted as p. The prediction is the true class
  /// when its rank is 1 (see tie policy), else the lowest-index class among the best-scoring
  /// other classes, so the diagonal sums to top-1 * N exactly.
  std::vector<std::vector<int64_t>> confusion;

  /// {"num_samples", "num_classes", "top1", "top5", "mean_per_class", "per_class": {name: acc|null},
  ///  "support": {...}, "confusion": [[...]], "classes": [...], "chance": {"top1", "top5",
  ///  "mean_per_class"}, "p_value": {"top1", "top5", "mean_per_class"}}; `top<k>` for every k. `class_names` must have num_classes entries
  /// (empty: "0", "1", ...).
  nlohmann::json to_json(const std::vector<std::string>& class_names = {}) const;
};

/// Monte Carlo draws behind ClassificationMetrics::p_mean_per_class.
inline constexpr int64_t kPValueDraws = 100000;

/// A p-value as tables print it: 2 significant digits, "<1e-300" where it underflowed to 0.
std::string format_p_value(double p);

/// P(X >= k) for X ~ Binomial(n, p), exact (log-space sum of the terms; 0 where it is below the
/// smallest double, ~1e-308). 1 for k <= 0, 0 for k > n.
/// Throws florence::Error for n < 0 or p outside [0, 1].
double binomial_upper_tail(int64_t n, double p, int64_t k);

/// scores: [N, C] float; labels: [N] int64 in [0, C). Top-k for each k in `ks` (k > C counts as C).
/// Throws florence::Error on shape mismatch, labels out of range or non-finite scores.
ClassificationMetrics classification_metrics(const torch::Tensor& scores, const torch::Tensor& labels,
                                              std::vector<int64_t> ks = {1, 5});

}  // namespace florence::eval
