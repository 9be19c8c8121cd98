// Decision rules of the curation stages on hand-made inputs: duplicate representatives (largest,
// ties by key), leader vs connected-component clusters, thread independence, relevance cuts on
// hand-made embeddings, and MetaCLIP balancing (exact formula, statistics, reproducibility).
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include "florence/core/error.h"
#include "florence/curate/balance.h"
#include "florence/curate/cluster.h"
#include "florence/curate/relevance.h"
#include "support/paths.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_decisions {

using namespace florence::curate;

TEST(Representative, LargestThenKey) {
  // Items 1 and 2 share the largest area; "a" < "b" puts item 2 first.
  EXPECT_EQ(priority_order({100, 400, 400, 50}, std::vector<std::string>{"d", "b", "a", "c"}),
            (std::vector<uint32_t>{2, 1, 0, 3}));
  // Equal area and key: input order.
  EXPECT_EQ(priority_order({7, 7}, std::vector<std::string>{"k", "k"}), (std::vector<uint32_t>{0, 1}));
  EXPECT_THROW(priority_order({1}, std::vector<std::string>{}), florence::Error);
}

TEST(ExactGroups, FirstInPriorityRepresentsItsGroup) {
  const PixelHash a{1, 2}, b{1, 3};
  // Priority 3, 0, 1, 2, 4: group {0, 2, 3} -> 3, group {1, 4} -> 1.
  EXPECT_EQ(exact_duplicate_groups({a, b, a, a, b}, {3, 0, 1, 2, 4}), (std::vector<uint32_t>{3, 1, 3, 3, 1}));
  EXPECT_THROW(exact_duplicate_groups({a, b}, {0, 0}), florence::Error);
  EXPECT_THROW(exact_duplicate_groups({a, b}, {0}), florence::Error);
}

TEST(NearClusters, LeaderVersusComponentsByHand) {
  // d(0,1) = 3, d(1,2) = 3, d(0,2) = 6, item 3 far from all. Threshold 3.
  const std::vector<uint64_t> h = {0, 0x7, 0x3F, ~uint64_t(0)};
  // Item 1 first: it claims 0 and 2.
  NearDupResult r = near_duplicate_clusters(h, {1, 0, 2, 3}, 3, ClusterMode::kLeader, 1);
  EXPECT_EQ(r.rep, (std::vector<uint32_t>{1, 1, 1, 3}));
  EXPECT_EQ(r.distance, (std::vector<uint8_t>{3, 0, 3, 0}));
  EXPECT_EQ(r.clusters, 1);
  EXPECT_EQ(r.removed, 2);
  // Item 0 first: it claims 1; 2 is 6 bits from 0 and its only neighbour is taken, so it stays.
  r = near_duplicate_clusters(h, {0, 1, 2, 3}, 3, ClusterMode::kLeader, 1);
  EXPECT_EQ(r.rep, (std::vector<uint32_t>{0, 0, 2, 3}));
  EXPECT_EQ(r.removed, 1);
  // Connected components chain 0-1-2 into one cluster represented by 0, even though d(0,2) = 6.
  r = near_duplicate_clusters(h, {0, 1, 2, 3}, 3, ClusterMode::kComponents, 1);
  EXPECT_EQ(r.rep, (std::vector<uint32_t>{0, 0, 0, 3}));
  EXPECT_EQ(r.distance[2], 6);
  EXPECT_EQ(r.clusters, 1);
  EXPECT_EQ(r.removed, 2);
  EXPECT_THROW(near_duplicate_clusters(h, {0, 1, 2, 3}, 65), florence::Error);
}

TEST(NearClusters, LeaderInvariantsAndThreadIndependence) {
  std::mt19937_64 rng(3);
  std::vector<uint64_t> h;
  for (int b = 0; b < 200; ++b) {
    const uint64_t base = rng();
    const int copies = 1 + int(rng() % 5);
    for (int c = 0; c < copies; ++c) {
      uint64_t x = base;
      const int flips = int(rng() % 12);
      for (int f = 0; f < flips; ++f) x ^= uint64_t(1) << (rng() % 64);
      h.push_back(x);
    }
  }
  std::vector<uint32_t> priority(h.size());
  for (uint32_t i = 0; i < priority.size(); ++i) priority[i] = i;
  std::shuffle(priority.begin(), priority.end(), rng);
  std::vector<uint32_t> rank(h.size());
  for (uint32_t k = 0; k < priority.size(); ++k) rank[priority[k]] = k;
  const int thr = 8;
  const NearDupResult one = near_duplicate_clusters(h, priority, thr, ClusterMode::kLeader, 1);
  for (int threads : {2, 3, 5}) EXPECT_EQ(near_duplicate_clusters(h, priority, thr, ClusterMode::kLeader, threads).rep, one.rep);
  for (int threads : {2, 4})
    EXPECT_EQ(near_duplicate_clusters(h, priority, thr, ClusterMode::kComponents, threads).rep,
              near_duplicate_clusters(h, priority, thr, ClusterMode::kComponents, 1).rep);
  int64_t removed = 0;
  for (size_t i = 0; i < h.size(); ++i) {
    const uint32_t r = one.rep[i];
    EXPECT_EQ(one.rep[r], r) << "a representative is its own representative";
    if (r != i) {
      ++removed;
      EXPECT_LE(hamming(h[i], h[r]), thr);
      EXPECT_LT(rank[r], rank[i]) << "the representative comes first in priority";
    }
  }
  // No two kept items are within the threshold (brute force).
  for (size_t i = 0; i < h.size(); ++i)
    for (size_t j = i + 1; j < h.size(); ++j)
      if (one.rep[i] == i && one.rep[j] == j) {
        EXPECT_GT(hamming(h[i], h[j]), thr) << i << " " << j;
      }
  EXPECT_EQ(removed, one.removed);
  EXPECT_GT(one.removed, 100);
}

TEST(Relevance, PercentileLinearLikeNumpy) {
  // numpy.percentile([1, 2, 3, 4], [0, 25, 50, 100]) = [1, 1.75, 2.5, 4].
  EXPECT_DOUBLE_EQ(percentile_linear({4, 1, 3, 2}, 0), 1.0);
  EXPECT_DOUBLE_EQ(percentile_linear({4, 1, 3, 2}, 25), 1.75);
  EXPECT_DOUBLE_EQ(percentile_linear({4, 1, 3, 2}, 50), 2.5);
  EXPECT_DOUBLE_EQ(percentile_linear({4, 1, 3, 2}, 100), 4.0);
  EXPECT_DOUBLE_EQ(percentile_linear({7}, 30), 7.0);
  EXPECT_THROW(percentile_linear({}, 50), florence::Error);
  EXPECT_THROW(percentile_linear({1}, 101), florence::Error);
}

TEST(Relevance, CutsOnHandMadeEmbeddings) {
  // Unit vectors in 2-D: cosines are cos(angle between image and text).
  const float img[] = {1, 0, 0.6f, 0.8f, 0, 1, -1, 0, 0.8f, 0.6f};
  const float txt[] = {0.6f, 0.8f, 0.6f, 0.8f, 1, 0, 0.6f, 0.8f, 0.8f, 0.6f};
  const std::vector<float> s = row_dots(img, txt, 5, 2);
  ASSERT_EQ(s.size(), 5u);
  const std::vector<float> expect = {0.6f, 1.0f, 0.0f, -0.6f, 1.0f};
  for (size_t i = 0; i < 5; ++i) EXPECT_NEAR(s[i], expect[i], 1e-6) << i;
  // Threshold 0.5 keeps scores >= 0.5: rows 0, 1, 4.
  const double c1 = relevance_cut(s, 0.5, std::nullopt);
  EXPECT_DOUBLE_EQ(c1, 0.5);
  std::vector<int> kept;
  for (size_t i = 0; i < s.size(); ++i)
    if (s[i] >= c1) kept.push_back(int(i));
  EXPECT_EQ(kept, (std::vector<int>{0, 1, 4}));
  // 40th percentile of {-0.6, 0, 0.6, 1, 1}: position 1.6 -> 0 + 0.6 * 0.6 = 0.36; keeps 0, 1, 4.
  EXPECT_NEAR(relevance_cut(s, std::nullopt, 40), 0.36, 1e-6);
  // Both: the stricter cut wins.
  EXPECT_NEAR(relevance_cut(s, 0.7, 40), 0.7, 1e-12);
  EXPECT_NEAR(relevance_cut(s, -0.5, 40), 0.36, 1e-6);
  EXPECT_TRUE(std::isinf(relevance_cut(s, std::nullopt, std::nullopt)));
}

TEST(Balance, KeepProbabilityFormula) {
  EXPECT_DOUBLE_EQ(balance_keep_probability(5, 10), 1.0);
  EXPECT_DOUBLE_EQ(balance_keep_probability(10, 10), 1.0);
  EXPECT_DOUBLE_EQ(balance_keep_probability(40, 10), 0.25);
  EXPECT_DOUBLE_EQ(balance_keep_probability(10, 2.5), 0.25);
  EXPECT_DOUBLE_EQ(balance_keep_probability(20000, 20000), 1.0);  // MetaCLIP 400M used t = 20k
  EXPECT_DOUBLE_EQ(balance_keep_probability(60000, 20000), 1.0 / 3.0);
  EXPECT_THROW(balance_keep_probability(3, 0), florence::Error);
}

TEST(Balance, UniformDrawsAreDeterministicAndUniform) {
  EXPECT_EQ(balance_uniform(1, "key", 7), balance_uniform(1, "key", 7));
  EXPECT_NE(balance_uniform(1, "key", 7), balance_uniform(2, "key", 7));
  EXPECT_NE(balance_uniform(1, "key", 7), balance_uniform(1, "key", 8));
  double sum = 0;
  int below_quarter = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    const double u = balance_uniform(5, "sample-" + std::to_string(i), 0);
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
    below_quarter += u < 0.25;
  }
  // Mean 1/2 (sd of the mean 0.2887 / sqrt(n) = 0.002) and P(u < 1/4) = 1/4 (sd 0.0031): 5 sd bounds.
  EXPECT_NEAR(sum / n, 0.5, 0.0102);
  EXPECT_NEAR(double(below_quarter) / n, 0.25, 0.0153);
}

TEST(Balance, KeptFractionsMatchTheFormula) {
  // 2000 pairs match only A, 2000 match A and B, 100 match only C, 50 match nothing.
  // c_A = 4000, c_B = 2000, c_C = 100; t = 400 -> p_A = 0.1, p_B = 0.2, p_C = 1.
  const double t = 400;
  const std::vector<int64_t> counts = {4000, 2000, 100};
  const std::vector<uint64_t> tags = {11, 22, 33};
  auto run = [&](uint64_t seed, std::vector<bool>* picks) {
    int64_t only_a = 0, a_and_b = 0, only_c = 0, none = 0;
    const uint32_t ea[] = {0}, eab[] = {0, 1}, ec[] = {2};
    for (int i = 0; i < 4150; ++i) {
      const std::string key = "pair" + std::to_string(i);
      bool keep;
      if (i < 2000) {
        keep = balance_keep(ea, 1, counts, tags, t, seed, key);
        only_a += keep;
      } else if (i < 4000) {
        keep = balance_keep(eab, 2, counts, tags, t, seed, key);
        a_and_b += keep;
      } else if (i < 4100) {
        keep = balance_keep(ec, 1, counts, tags, t, seed, key);
        only_c += keep;
      } else {
        keep = balance_keep(nullptr, 0, counts, tags, t, seed, key);
        none += keep;
      }
      if (picks) picks->push_back(keep);
    }
    return std::array<int64_t, 4>{only_a, a_and_b, only_c, none};
  };
  std::vector<bool> p1, p1b, p2;
  const auto r = run(1, &p1);
  // Binomial(2000, 0.1): mean 200, sd 13.4; Binomial(2000, 1 - 0.9 * 0.8 = 0.28): mean 560, sd 20.1.
  EXPECT_NEAR(double(r[0]), 200.0, 5 * 13.42);
  EXPECT_NEAR(double(r[1]), 560.0, 5 * 20.08);
  EXPECT_EQ(r[2], 100);  // c <= t: every pair kept
  EXPECT_EQ(r[3], 0);    // no entry: never kept
  run(1, &p1b);
  EXPECT_EQ(p1, p1b);  // same seed, same selection
  run(2, &p2);
  EXPECT_NE(p1, p2);
  // Over many seeds the mean kept count of A-only pairs is 200 (sd of the mean over 40 seeds: 2.1).
  double mean = 0;
  for (uint64_t seed = 10; seed < 50; ++seed) mean += double(run(seed, nullptr)[0]) / 40;
  EXPECT_NEAR(mean, 200.0, 5 * 13.42 / std::sqrt(40.0));
}

TEST(Balance, EntryListMatchesWholeWords) {
  EXPECT_EQ(EntryList::words("Hello, World! Café-au-lait"), (std::vector<std::string>{"hello", "world", "café", "au", "lait"}));
  const EntryList l = EntryList::from_entries({"red apple", "apple", "Apple", "cat", "", "  "});
  ASSERT_EQ(l.size(), 3u);  // "Apple" merges into "apple"; empty entries are dropped
  EXPECT_EQ(l.entry(0), "red apple");
  EXPECT_EQ(l.match("A RED apple and a catalog"), (std::vector<uint32_t>{0, 1}));
  EXPECT_EQ(l.match("cat."), (std::vector<uint32_t>{2}));
  EXPECT_EQ(l.match("red, apple!"), (std::vector<uint32_t>{0, 1}));  // punctuation separates words only
  EXPECT_TRUE(l.match("redapple").empty());

  const std::string dir = std::string(FLORENCE_TEST_TMP) + "/curate_entries";
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/e.json") << R"(["dog", "hot dog", "dog"])";
  std::ofstream(dir + "/e.txt") << "dog\r\n\nhot dog\n";
  std::ofstream(dir + "/bad.json") << R"({"dog": 1})";
  for (const char* f : {"/e.json", "/e.txt"}) {
    const EntryList e = EntryList::from_file(dir + f);
    EXPECT_EQ(e.size(), 2u) << f;
    EXPECT_EQ(e.match("a hot dog"), (std::vector<uint32_t>{0, 1})) << f;
  }
  EXPECT_THROW(EntryList::from_file(dir + "/bad.json"), florence::Error);
  EXPECT_THROW(EntryList::from_file(dir + "/missing.txt"), florence::Error);
}

}  // namespace test_decisions
