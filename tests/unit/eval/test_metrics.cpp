// Metrics against hand-computed cases and chance levels against brute-force enumeration.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <nlohmann/json.hpp>

#include "florence/core/error.h"
#include "florence/eval/metrics.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_metrics {

using namespace florence::eval;

namespace {

torch::Tensor mat(std::vector<std::vector<double>> rows) {
  const int64_t r = int64_t(rows.size()), c = int64_t(rows[0].size());
  torch::Tensor t = torch::empty({r, c}, torch::kDouble);
  for (int64_t i = 0; i < r; ++i)
    for (int64_t j = 0; j < c; ++j) t[i][j] = rows[i][j];
  return t.to(torch::kFloat);
}

torch::Tensor rel(std::vector<std::vector<int>> rows) {
  const int64_t r = int64_t(rows.size()), c = int64_t(rows[0].size());
  torch::Tensor t = torch::zeros({r, c}, torch::kBool);
  for (int64_t i = 0; i < r; ++i)
    for (int64_t j = 0; j < c; ++j) t[i][j] = bool(rows[i][j]);
  return t;
}

}  // namespace

// Hand-computed 3-class case (worked through in the comments).
TEST(Classification, ThreeClassConfusionTopKPerClass) {
  torch::Tensor s = mat({
      {0.9, 0.1, 0.0},  // true 0 -> rank 1, pred 0
      {0.2, 0.7, 0.1},  // true 0 -> rank 2, pred 1
      {0.1, 0.8, 0.1},  // true 1 -> rank 1, pred 1
      {0.3, 0.3, 0.4},  // true 1 -> tie with class 0 counts against: rank 3, pred 2
      {0.5, 0.2, 0.3},  // true 2 -> rank 2, pred 0
      {0.5, 0.5, 0.1},  // true 0 -> tie with class 1: rank 2, pred 1 (pessimistic ties)
  });
  torch::Tensor y = torch::tensor({0, 0, 1, 1, 2, 0}, torch::kLong);
  ClassificationMetrics m = classification_metrics(s, y, {1, 2, 5});
  EXPECT_EQ(m.num_samples, 6);
  EXPECT_EQ(m.num_classes, 3);
  EXPECT_DOUBLE_EQ(m.topk.at(1), 2.0 / 6.0);
  EXPECT_DOUBLE_EQ(m.topk.at(2), 5.0 / 6.0);
  EXPECT_DOUBLE_EQ(m.topk.at(5), 1.0);  // k > C counts as C
  EXPECT_DOUBLE_EQ(m.chance_topk.at(1), 1.0 / 3.0);
  EXPECT_DOUBLE_EQ(m.chance_topk.at(2), 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(m.chance_topk.at(5), 1.0);
  const std::vector<std::vector<int64_t>> want{{1, 2, 0}, {0, 1, 1}, {1, 0, 0}};
  EXPECT_EQ(m.confusion, want);
  EXPECT_EQ(m.support, (std::vector<int64_t>{3, 2, 1}));
  EXPECT_DOUBLE_EQ(m.per_class_accuracy[0], 1.0 / 3.0);
  EXPECT_DOUBLE_EQ(m.per_class_accuracy[1], 0.5);
  EXPECT_DOUBLE_EQ(m.per_class_accuracy[2], 0.0);
  EXPECT_DOUBLE_EQ(m.mean_per_class_accuracy, 5.0 / 18.0);
  nlohmann::json j = m.to_json({"a", "b", "c"});
  EXPECT_DOUBLE_EQ(j["top1"].get<double>(), 2.0 / 6.0);
  EXPECT_DOUBLE_EQ(j["per_class"]["b"].get<double>(), 0.5);
  EXPECT_EQ(j["confusion"][0][1].get<int64_t>(), 2);
  EXPECT_DOUBLE_EQ(j["chance"]["top1"].get<double>(), 1.0 / 3.0);
}

// Binomial upper tails worked by hand: P(Bin(10, 1/2) >= 8) = (45 + 10 + 1) / 1024;
// P(Bin(3, 1/3) >= 2) = 3 * (1/3)^2 * (2/3) + (1/3)^3 = 7/27.
TEST(Classification, BinomialUpperTail) {
  EXPECT_NEAR(binomial_upper_tail(10, 0.5, 8), 56.0 / 1024.0, 1e-14);
  EXPECT_NEAR(binomial_upper_tail(3, 1.0 / 3.0, 2), 7.0 / 27.0, 1e-14);
  EXPECT_DOUBLE_EQ(binomial_upper_tail(10, 0.3, 0), 1.0);
  EXPECT_DOUBLE_EQ(binomial_upper_tail(10, 0.3, 11), 0.0);
  EXPECT_DOUBLE_EQ(binomial_upper_tail(10, 1.0, 10), 1.0);
  EXPECT_DOUBLE_EQ(binomial_upper_tail(10, 0.0, 1), 0.0);
  // Large n stays finite and monotone: 10,000 draws at 1/10, the mean 1,000 and 4 sd (120) above it.
  const double at_mean = binomial_upper_tail(10000, 0.1, 1000), far = binomial_upper_tail(10000, 0.1, 1120);
  EXPECT_NEAR(at_mean, 0.5, 0.02);
  EXPECT_GT(far, 1e-6);
  EXPECT_LT(far, 1e-4);
  EXPECT_THROW(binomial_upper_tail(-1, 0.5, 0), florence::Error);
  EXPECT_THROW(binomial_upper_tail(5, 1.5, 1), florence::Error);
}

// p-values of the hand case above: top-1 hits 2 of 6 at 1/3 -> P(Bin(6, 1/3) >= 2) = 1 - (2/3)^6 - 6 (1/3)(2/3)^5
// = 1 - 64/729 - 192/729 = 473/729; top-5 (k > C) is certain at chance -> 1. Mean per class: perfect
// accuracy on 2 classes of 2 samples each at chance 1/2 -> P = (1/4)^2 = 1/16, simulated to ~3 sd.
TEST(Classification, PValuesAgainstChance) {
  torch::Tensor s = mat({{0.9, 0.1, 0.0}, {0.2, 0.7, 0.1}, {0.1, 0.8, 0.1}, {0.3, 0.3, 0.4}, {0.5, 0.2, 0.3}, {0.5, 0.5, 0.1}});
  torch::Tensor y = torch::tensor({0, 0, 1, 1, 2, 0}, torch::kLong);
  ClassificationMetrics m = classification_metrics(s, y, {1, 5});
  EXPECT_NEAR(m.p_topk.at(1), 473.0 / 729.0, 1e-12);
  EXPECT_DOUBLE_EQ(m.p_topk.at(5), 1.0);
  nlohmann::json j = m.to_json();
  EXPECT_NEAR(j["p_value"]["top1"].get<double>(), 473.0 / 729.0, 1e-12);
  ASSERT_TRUE(j["p_value"]["mean_per_class"].is_number());

  ClassificationMetrics perfect =
      classification_metrics(mat({{1, 0}, {1, 0}, {0, 1}, {0, 1}}), torch::tensor({0, 0, 1, 1}, torch::kLong), {1});
  const double sd = std::sqrt((1.0 / 16) * (15.0 / 16) / double(kPValueDraws));
  EXPECT_NEAR(perfect.p_mean_per_class, 1.0 / 16.0, 4 * sd);
  EXPECT_NEAR(perfect.p_topk.at(1), 1.0 / 16.0, 1e-12);  // 4 of 4 at 1/2
  // Chance-level predictions are not significant: all predicted as class 0 -> mean per class exactly 1/2.
  ClassificationMetrics flat =
      classification_metrics(mat({{1, 0}, {1, 0}, {1, 0}, {1, 0}}), torch::tensor({0, 0, 1, 1}, torch::kLong), {1});
  EXPECT_DOUBLE_EQ(flat.mean_per_class_accuracy, 0.5);
  EXPECT_GT(flat.p_mean_per_class, 0.5);  // P(mean >= 1/2) = 11/16 for two Bin(2, 1/2) halves
  EXPECT_NEAR(flat.p_mean_per_class, 11.0 / 16.0, 4 * std::sqrt((11.0 / 16) * (5.0 / 16) / double(kPValueDraws)));
}

TEST(Classification, Top5OfSevenClassesAndAbsentClass) {
  // 7 classes; true class 6 has 4 classes strictly above it -> rank 5 (in top-5, not top-4);
  // true class 0 has 5 above -> rank 6.
  torch::Tensor s = mat({{0.0, 0.9, 0.8, 0.7, 0.6, 0.1, 0.5},
                         {0.1, 0.9, 0.8, 0.7, 0.6, 0.5, 0.0}});
  torch::Tensor y = torch::tensor({6, 0}, torch::kLong);
  ClassificationMetrics m = classification_metrics(s, y, {1, 4, 5});
  EXPECT_DOUBLE_EQ(m.topk.at(4), 0.0);
  EXPECT_DOUBLE_EQ(m.topk.at(5), 0.5);
  EXPECT_DOUBLE_EQ(m.chance_topk.at(5), 5.0 / 7.0);
  EXPECT_TRUE(std::isnan(m.per_class_accuracy[3]));  // no sample of class 3
  EXPECT_DOUBLE_EQ(m.mean_per_class_accuracy, 0.0);  // over classes 0 and 6 only
  EXPECT_TRUE(m.to_json()["per_class"]["3"].is_null());
}

TEST(Classification, BadInputThrows) {
  EXPECT_THROW(classification_metrics(torch::zeros({2, 3}), torch::tensor({0, 3}, torch::kLong)), florence::Error);
  EXPECT_THROW(classification_metrics(torch::zeros({2, 3}), torch::tensor({0}, torch::kLong)), florence::Error);
  torch::Tensor nan = torch::zeros({1, 2});
  nan[0][1] = std::nan("");
  EXPECT_THROW(classification_metrics(nan, torch::tensor({0}, torch::kLong)), florence::Error);
}

// Retrieval with several correct items per query and a tie; ranks worked out by hand.
TEST(Retrieval, MultipleCorrectItemsTiesAndChance) {
  torch::Tensor s = mat({
      {0.1, 0.5, 0.9, 0.2, 0.3},  // correct {0,1}: best correct 0.5, item 2 above -> rank 2
      {0.9, 0.8, 0.7, 0.7, 0.1},  // correct {2}: items 0,1 above, item 3 ties -> rank 4
      {0.1, 0.2, 0.3, 0.9, 0.4},  // correct {3} -> rank 1
      {0.6, 0.5, 0.4, 0.3, 0.2},  // correct {4} -> rank 5
      {0.1, 0.2, 0.3, 0.9, 0.8},  // correct {0,1,2}: best 0.3, items 3,4 above -> rank 3
  });
  torch::Tensor r = rel({{1, 1, 0, 0, 0}, {0, 0, 1, 0, 0}, {0, 0, 0, 1, 0}, {0, 0, 0, 0, 1}, {1, 1, 1, 0, 0}});
  RetrievalMetrics m = retrieval_metrics(s, r, {1, 2, 5, 10});
  EXPECT_EQ(m.ranks, (std::vector<int64_t>{2, 4, 1, 5, 3}));
  EXPECT_DOUBLE_EQ(m.recall.at(1), 0.2);
  EXPECT_DOUBLE_EQ(m.recall.at(2), 0.4);
  EXPECT_DOUBLE_EQ(m.recall.at(5), 1.0);
  EXPECT_DOUBLE_EQ(m.recall.at(10), 1.0);
  EXPECT_DOUBLE_EQ(m.median_rank, 3.0);
  EXPECT_DOUBLE_EQ(m.mean_rank, 3.0);
  // chance R@1 = mean(m / N) = (2+1+1+1+3) / 25
  EXPECT_NEAR(m.chance_recall.at(1), 8.0 / 25.0, 1e-12);
  // chance R@2 = mean(1 - (N-m)(N-m-1) / (N(N-1))) = (0.7 + 3 * 0.4 + 0.9) / 5
  EXPECT_NEAR(m.chance_recall.at(2), 0.56, 1e-12);
  EXPECT_NEAR(m.chance_recall.at(5), 1.0, 1e-12);
  // chance mean rank = mean((N+1)/(m+1)) = (2 + 3 + 3 + 3 + 1.5) / 5
  EXPECT_NEAR(m.chance_mean_rank, 2.5, 1e-12);
  // pooled CDF: F(1) = 0.32 < 0.5, F(2) = 0.56 -> chance median rank 2
  EXPECT_DOUBLE_EQ(m.chance_median_rank, 2.0);
  EXPECT_NEAR(m.mean_relevant, 8.0 / 5.0, 1e-12);
  nlohmann::json j = m.to_json();
  EXPECT_DOUBLE_EQ(j["R@5"].get<double>(), 1.0);
  EXPECT_NEAR(j["chance"]["R@1"].get<double>(), 0.32, 1e-12);
}

TEST(Retrieval, GroupsRelation) {
  // Items 0 and 1 share group 7 (e.g. two images with one caption).
  torch::Tensor r = relevance_from_groups(torch::tensor({7, 3}, torch::kLong), torch::tensor({7, 7, 3}, torch::kLong));
  EXPECT_TRUE(r.equal(rel({{1, 1, 0}, {0, 0, 1}})));
  torch::Tensor s = mat({{0.2, 0.9, 0.5}, {0.2, 0.9, 0.5}});
  EXPECT_EQ(retrieval_metrics(s, r).ranks, (std::vector<int64_t>{1, 2}));
}

TEST(Retrieval, AllEqualScoresArePessimistic) {
  torch::Tensor s = torch::zeros({2, 4});
  torch::Tensor r = rel({{1, 0, 0, 0}, {1, 1, 0, 0}});
  RetrievalMetrics m = retrieval_metrics(s, r, {1, 2});
  EXPECT_EQ(m.ranks, (std::vector<int64_t>{4, 3}));
  EXPECT_DOUBLE_EQ(m.recall.at(2), 0.0);
}

TEST(Retrieval, QueryWithoutCorrectItemThrows) {
  EXPECT_THROW(retrieval_metrics(torch::zeros({2, 3}), rel({{1, 0, 0}, {0, 0, 0}})), florence::Error);
  EXPECT_THROW(retrieval_metrics(torch::zeros({2, 3}), rel({{1, 0}, {0, 1}})), florence::Error);
}

// Chance formulas against brute force: every permutation of N = 6 items, m = 1..6 correct.
TEST(Chance, MatchesEnumeration) {
  const int n = 6;
  std::vector<std::vector<double>> rank_prob(n + 1, std::vector<double>(n + 2, 0.0));  // [m][r]
  for (int m = 1; m <= n; ++m) {
    std::vector<int> perm(n);
    std::iota(perm.begin(), perm.end(), 0);
    int64_t count = 0;
    do {
      // items 0..m-1 are correct; perm[pos] = item at position pos
      int first = 0;
      while (perm[first] >= m) ++first;
      rank_prob[m][first + 1] += 1;
      ++count;
    } while (std::next_permutation(perm.begin(), perm.end()));
    double mean = 0;
    for (int r = 1; r <= n; ++r) {
      rank_prob[m][r] /= double(count);
      mean += r * rank_prob[m][r];
    }
    double cdf = 0;
    for (int k = 0; k <= n + 1; ++k) {
      if (k >= 1 && k <= n) cdf += rank_prob[m][k];
      EXPECT_NEAR(chance_hit_at_k(n, m, k), std::min(cdf, 1.0), 1e-12) << "m=" << m << " k=" << k;
    }
    // Single-query mean rank through retrieval_metrics (scores are irrelevant for the chance part).
    torch::Tensor r = torch::zeros({1, n}, torch::kBool);
    for (int j = 0; j < m; ++j) r[0][j] = true;
    EXPECT_NEAR(retrieval_metrics(torch::zeros({1, n}), r).chance_mean_rank, mean, 1e-12);
  }
  // Pooled median for queries with m = {1, 1, 4}: enumerate the pooled CDF.
  const std::vector<int64_t> ms{1, 1, 4};
  double pooled = 0;
  int want = 0;
  for (int r = 1; r <= n && !want; ++r) {
    for (int64_t m : ms) pooled += rank_prob[m][r] / ms.size();
    if (pooled >= 0.5) want = r;
  }
  EXPECT_DOUBLE_EQ(chance_median_rank(ms, n), double(want));
  EXPECT_DOUBLE_EQ(median({4, 1, 3, 10}), 3.5);
  EXPECT_DOUBLE_EQ(median({5, 1, 3}), 3.0);
}

}  // namespace test_metrics
