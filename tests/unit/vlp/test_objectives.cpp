// ITM batch construction, MLM masking statistics and the losses/accuracies on hand-computed
// cases (objectives.h).
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "florence/adapt/vlp/objectives.h"
#include "florence/core/error.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_objectives {

namespace {

using namespace florence::vlp;

constexpr int kSot = 98, kEot = 99, kMask = 100, kVocab = 100;  // int: torch::tensor({...}) lists need one type

MlmOptions small_vocab_options() {
  MlmOptions o;
  o.sot = kSot;
  o.eot = kEot;
  o.mask_token = kMask;
  o.vocab = kVocab;
  return o;
}

/// B rows of length L: SOT, n ordinary tokens, EOT, then padding (random ids, EOT and SOT
/// among them, which must never be touched).
torch::Tensor random_ids(int64_t B, int64_t L, uint64_t seed, std::vector<int64_t>* lengths) {
  std::mt19937_64 rng(seed);
  auto ids = torch::empty({B, L}, torch::kLong);
  auto a = ids.accessor<int64_t, 2>();
  for (int64_t b = 0; b < B; ++b) {
    const int64_t n = static_cast<int64_t>(rng() % (L - 1));  // ordinary tokens: 0 .. L-2
    a[b][0] = kSot;
    for (int64_t t = 1; t <= n; ++t) a[b][t] = static_cast<int64_t>(rng() % 98);
    a[b][n + 1] = kEot;
    for (int64_t t = n + 2; t < L; ++t) a[b][t] = static_cast<int64_t>(rng() % 100);
    lengths->push_back(n);
  }
  return ids;
}

TEST(Mlm, MaskingStatisticsAndEligibility) {
  const int64_t B = 2000, L = 32;
  std::vector<int64_t> n_ordinary;
  const auto ids = random_ids(B, L, 11, &n_ordinary);
  const MlmBatch m = mask_tokens(ids, small_vocab_options(), 1234);
  auto in = ids.accessor<int64_t, 2>(), out = m.ids.accessor<int64_t, 2>(), lab = m.labels.accessor<int64_t, 2>();
  int64_t predicted = 0, masked = 0, random_changed = 0, eligible_total = 0;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t n = n_ordinary[b];
    eligible_total += n;
    int64_t row_predicted = 0;
    for (int64_t t = 0; t < L; ++t) {
      const bool eligible = t >= 1 && t <= n;
      if (!eligible) {
        // SOT, EOT and padding: never predicted, never changed.
        ASSERT_EQ(lab[b][t], -100) << "row " << b << " pos " << t;
        ASSERT_EQ(out[b][t], in[b][t]) << "row " << b << " pos " << t;
        continue;
      }
      if (lab[b][t] == -100) {
        ASSERT_EQ(out[b][t], in[b][t]);
        continue;
      }
      ASSERT_EQ(lab[b][t], in[b][t]);
      ++row_predicted;
      if (out[b][t] == kMask) ++masked;
      else if (out[b][t] != in[b][t]) ++random_changed;
      ASSERT_NE(out[b][t], kSot);
      ASSERT_NE(out[b][t], kEot);
      ASSERT_TRUE(out[b][t] >= 0 && out[b][t] <= kMask);
    }
    // Google BERT's count: max(1, round(0.15 E)) for E > 0.
    const int64_t expected = n == 0 ? 0 : std::max<int64_t>(1, std::llround(0.15 * n));
    ASSERT_EQ(row_predicted, expected) << "row " << b << " with " << n << " eligible tokens";
    predicted += row_predicted;
  }
  EXPECT_EQ(predicted, m.predicted);
  EXPECT_EQ(masked, m.masked);
  EXPECT_EQ(m.masked + m.randomized + m.kept, m.predicted);
  const double p = static_cast<double>(predicted);
  std::printf("[mlm] eligible %lld predicted %lld (%.4f) masked %.4f random %.4f kept %.4f\n",
              static_cast<long long>(eligible_total), static_cast<long long>(predicted), p / eligible_total,
              m.masked / p, m.randomized / p, m.kept / p);
  // ~4,000 predicted tokens: binomial sd of the 0.8 share ~0.006, of the 0.1 shares ~0.005.
  EXPECT_NEAR(p / eligible_total, 0.15, 0.02);  // rounding per row moves it a little
  EXPECT_NEAR(m.masked / p, 0.8, 0.025);
  EXPECT_NEAR(m.randomized / p, 0.1, 0.02);
  EXPECT_NEAR(m.kept / p, 0.1, 0.02);
  // A random replacement equals the original 1 time in 98, so nearly all of them change the token.
  EXPECT_GE(random_changed, m.randomized * 9 / 10);

  // Seeded: same seed, same batch; another seed, another one.
  const MlmBatch again = mask_tokens(ids, small_vocab_options(), 1234);
  EXPECT_TRUE(torch::equal(again.ids, m.ids));
  EXPECT_TRUE(torch::equal(again.labels, m.labels));
  EXPECT_FALSE(torch::equal(mask_tokens(ids, small_vocab_options(), 1235).labels, m.labels));
}

TEST(Mlm, BadInput) {
  auto no_eot = torch::tensor({{kSot, 5, 6, 7}}, torch::kLong);
  EXPECT_THROW(mask_tokens(no_eot, small_vocab_options(), 0), florence::Error);
  EXPECT_THROW(mask_tokens(torch::zeros({4}, torch::kLong), small_vocab_options(), 0), florence::Error);
  MlmOptions bad = small_vocab_options();
  bad.mask_token_prob = 0.95;
  EXPECT_THROW(mask_tokens(torch::tensor({{kSot, 1, kEot}}, torch::kLong), bad, 0), florence::Error);
  // A row with only SOT/EOT has nothing to predict and stays as it is.
  const auto m = mask_tokens(torch::tensor({{kSot, kEot, 3}}, torch::kLong), small_vocab_options(), 0);
  EXPECT_EQ(m.predicted, 0);
}

TEST(Itm, NegativesNeverPositivesOfTheirText) {
  // Texts 0..5 with repeats: rows with equal labels are the same text.
  const auto labels = torch::tensor({0, 0, 1, 2, 2, 2, 3, 4, 5, 5}, torch::kLong);
  const int64_t B = labels.size(0);
  std::vector<int64_t> negative_count(B, 0);
  for (uint64_t seed = 0; seed < 400; ++seed) {
    const ItmBatch batch = make_itm_batch(labels, seed);
    ASSERT_EQ(batch.negatives, B - B / 2);
    ASSERT_EQ(batch.unswappable, 0);
    ASSERT_EQ(batch.labels.sum().item<int64_t>(), B / 2);
    for (int64_t i = 0; i < B; ++i) {
      const int64_t j = batch.image_index[i].item<int64_t>();
      if (batch.labels[i].item<int64_t>() == 1) {
        ASSERT_EQ(j, i);
      } else {
        ASSERT_NE(labels[j].item<int64_t>(), labels[i].item<int64_t>()) << "seed " << seed << " row " << i;
        ++negative_count[i];
      }
    }
  }
  // Every row is drawn as a negative about half of the time (400 draws: sd 10).
  for (int64_t i = 0; i < B; ++i) EXPECT_NEAR(negative_count[i], 200, 50) << "row " << i;
  // Seeded.
  EXPECT_TRUE(torch::equal(make_itm_batch(labels, 7).image_index, make_itm_batch(labels, 7).image_index));

  // Odd batch: ceil(B/2) negatives (METER: B - B/2).
  EXPECT_EQ(make_itm_batch(torch::arange(5, torch::kLong), 1).negatives, 3);
  // One text only: nothing can be swapped; rows keep their image and label 1, counted.
  const ItmBatch same = make_itm_batch(torch::zeros({4}, torch::kLong), 3);
  EXPECT_EQ(same.negatives, 0);
  EXPECT_EQ(same.unswappable, 2);
  EXPECT_TRUE(torch::equal(same.labels, torch::ones({4}, torch::kLong)));
  EXPECT_THROW(make_itm_batch(torch::zeros({2, 2}, torch::kLong), 0), florence::Error);
}

TEST(Losses, HandComputed) {
  // ITM: logits (0, ln 3) -> p(match) = 3/4; label 1 -> -ln(3/4); label 0 -> -ln(1/4).
  const auto itm_logits = torch::tensor({{0.0, std::log(3.0)}, {0.0, std::log(3.0)}});
  const auto itm_labels = torch::tensor({1, 0}, torch::kLong);
  EXPECT_NEAR(itm_loss(itm_logits, itm_labels).item<double>(), (-std::log(0.75) - std::log(0.25)) / 2, 1e-6);
  const Accuracy acc = itm_accuracy(itm_logits, itm_labels);
  EXPECT_EQ(acc.correct, 1);
  EXPECT_EQ(acc.total, 2);

  // MLM: two labelled positions of three; uniform logits over V = 4 give ln 4 each.
  auto mlm_logits = torch::zeros({1, 3, 4});
  mlm_logits[0][0][2] = 10.0;  // position 0 predicts 2 (label 2: correct)
  const auto mlm_labels = torch::tensor({{2, -100, 1}}, torch::kLong);
  const double l0 = -std::log(std::exp(10.0) / (std::exp(10.0) + 3.0)), l2 = std::log(4.0);
  EXPECT_NEAR(mlm_loss(mlm_logits, mlm_labels).item<double>(), (l0 + l2) / 2, 1e-5);
  const Accuracy macc = mlm_accuracy(mlm_logits, mlm_labels);
  EXPECT_EQ(macc.total, 2);
  EXPECT_EQ(macc.correct, 1);  // position 2's uniform logits argmax to 0, not 1
  EXPECT_THROW(mlm_loss(mlm_logits, torch::full({1, 3}, -100, torch::kLong)), florence::Error);

  // VQA: sum over answers of BCE, mean over rows. Row 0: logit 0 vs target 1 and 0: 2 ln 2;
  // row 1: logits (ln 3, 0) vs (0.3, 0.6): -(0.3 ln 3/4 + 0.7 ln 1/4) - (0.6 + 0.4) ln 1/2.
  const auto vqa_logits = torch::tensor({{0.0, 0.0}, {std::log(3.0), 0.0}});
  const auto targets = torch::tensor({{1.0, 0.0}, {0.3, 0.6}});
  const double r0 = 2 * std::log(2.0);
  const double r1 = -(0.3 * std::log(0.75) + 0.7 * std::log(0.25)) + std::log(2.0);
  EXPECT_NEAR(vqa_loss(vqa_logits, targets).item<double>(), (r0 + r1) / 2, 1e-5);
  // Score: row 0 argmax is answer 0 (tie, first) -> 1.0; row 1 answer 0 -> 0.3.
  EXPECT_NEAR(vqa_score_sum(vqa_logits, targets), 1.3, 1e-6);
  EXPECT_THROW(vqa_loss(vqa_logits, torch::zeros({2, 3})), florence::Error);
}

}  // namespace

}  // namespace test_objectives
