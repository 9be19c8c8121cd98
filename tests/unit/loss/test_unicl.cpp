// Unit tests of the UniCL loss (src/florence/loss/unicl.h): CLIP special case, a hand-computed
// case with shared labels, an independent NumPy reference (tests/unit/loss/unicl_reference.py),
// central-difference gradients, invariances, the local (distributed) variant, labels, bad input.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "florence/core/error.h"
#include "florence/loss/unicl.h"
#include "support/paths.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_unicl {

namespace fs = std::filesystem;
namespace F = torch::nn::functional;
using florence::loss::labels_to_targets;
using florence::loss::text_label;
using florence::loss::text_labels;
using florence::loss::unicl_loss;
using florence::loss::unicl_loss_local;
using florence::loss::UniCLOptions;

namespace {

torch::Tensor unit_rows(int64_t n, int64_t d, torch::ScalarType dtype, uint64_t seed) {
  torch::manual_seed(seed);
  auto x = torch::randn({n, d}, torch::TensorOptions().dtype(dtype));
  return x / x.norm(2, 1, true);
}

torch::Tensor scalar(double v, torch::ScalarType dtype = torch::kFloat64) {
  return torch::tensor(v, torch::TensorOptions().dtype(dtype));
}

double item(const torch::Tensor& t) { return t.item<double>(); }

const UniCLOptions kSum{false};
const UniCLOptions kMean{true};

}  // namespace

// 1. With all labels distinct, UniCL is CLIP's symmetric InfoNCE:
//    CE(logits, arange) + CE(logits^T, arange)   (sum, default) or half of it (average).
TEST(UniCL, EqualsClipInfoNceWhenLabelsDistinct) {
  for (auto dtype : {torch::kFloat64, torch::kFloat32}) {
    const int64_t n = 7, d = 16;
    auto u = unit_rows(n, d, dtype, 1);
    auto v = unit_rows(n, d, dtype, 2);
    auto tau = scalar(14.285714, dtype);  // 1 / 0.07, CLIP's initial scale
    auto labels = torch::arange(n, torch::kInt64) * 3 + 5;
    auto logits = tau * torch::matmul(u, v.t());
    auto target = torch::arange(n, torch::kInt64);
    const double ce_i2t = item(F::cross_entropy(logits, target));
    const double ce_t2i = item(F::cross_entropy(logits.t(), target));
    const double tol = dtype == torch::kFloat64 ? 1e-6 : 1e-5;  // float32: ~1e-7 relative rounding on a value ~4
    EXPECT_NEAR(item(unicl_loss(u, v, labels, tau)), ce_i2t + ce_t2i, tol);
    EXPECT_NEAR(item(unicl_loss(u, v, labels, tau, kMean)), 0.5 * (ce_i2t + ce_t2i), tol);
    EXPECT_EQ(unicl_loss(u, v, labels, tau).scalar_type(), dtype);
    EXPECT_EQ(unicl_loss(u, v, labels, tau).dim(), 0);
  }
}

// 2. Hand-computed case, N = 3, D = 2, labels {0, 0, 1}, tau = ln 2 so that exp(tau * c) = 2^c.
//    u0 = (1,0), u1 = (0,1), u2 = (-1,0);  v0 = (0,1), v1 = (1,0), v2 = (-1,0).
//    u.v^T = [[0, 1, -1], [1, 0, 0], [0, -1, 1]]  ->  exp(logits) = [[1, 2, 1/2], [2, 1, 1], [1, 1/2, 2]]
//    P(0) = P(1) = {0, 1}, P(2) = {2}.
//    i2t (rows, softmax over texts): row sums 3.5, 4, 3.5
//      row 0: (ln(1/3.5) + ln(2/3.5)) / 2 = ln2/2 - ln3.5
//      row 1: (ln(2/4)   + ln(1/4))   / 2 = -1.5 ln2
//      row 2:  ln(2/3.5)                  = ln2 - ln3.5
//      L_i2t = -(1/3)(0.5 ln2 - ln3.5 - 1.5 ln2 + ln2 - ln3.5) = (2/3) ln 3.5
//    t2i (columns, softmax over images): column sums 4, 3.5, 3.5
//      text 0: (ln(1/4) + ln(2/4)) / 2     = -1.5 ln2
//      text 1: (ln(2/3.5) + ln(1/3.5)) / 2 = ln2/2 - ln3.5
//      text 2:  ln(2/3.5)                  = ln2 - ln3.5
//      L_t2i = (2/3) ln 3.5
//    L = (4/3) ln 3.5 = 1.67035062466049...   (average: (2/3) ln 3.5 = 0.83517531233024...)
TEST(UniCL, HandComputedSharedLabels) {
  for (auto dtype : {torch::kFloat64, torch::kFloat32}) {
    auto opts = torch::TensorOptions().dtype(dtype);
    auto u = torch::tensor({1.0, 0.0, 0.0, 1.0, -1.0, 0.0}, opts).view({3, 2});
    auto v = torch::tensor({0.0, 1.0, 1.0, 0.0, -1.0, 0.0}, opts).view({3, 2});
    auto labels = torch::tensor({0, 0, 1}, torch::kInt64);
    auto tau = scalar(std::log(2.0), dtype);
    const double expected = 4.0 / 3.0 * std::log(3.5);
    EXPECT_NEAR(item(unicl_loss(u, v, labels, tau)), expected, 1e-6);
    EXPECT_NEAR(item(unicl_loss(u, v, labels, tau, kMean)), expected / 2, 1e-6);
    // The same data with distinct labels is plain InfoNCE, which differs: the test can fail.
    auto distinct = torch::tensor({0, 1, 2}, torch::kInt64);
    EXPECT_GT(std::abs(item(unicl_loss(u, v, distinct, tau)) - expected), 0.05);
  }
}

// 2b. Independent NumPy reference (explicit loops) on random N = 8 with repeated labels.
TEST(UniCL, MatchesNumpyReference) {
  const fs::path dir = fs::path(FLORENCE_TEST_TMP) / "unicl";
  fs::create_directories(dir);
  const int64_t n = 8, d = 6;
  auto u = unit_rows(n, d, torch::kFloat64, 11);
  auto v = unit_rows(n, d, torch::kFloat64, 12);
  const std::vector<int64_t> lab = {3, 1, 3, 7, 1, 3, -42, 7};
  auto labels = torch::tensor(lab, torch::kInt64);
  const double tau = 5.5;
  nlohmann::json j;
  j["u"] = std::vector<std::vector<double>>();
  j["v"] = std::vector<std::vector<double>>();
  for (int64_t i = 0; i < n; ++i) {
    std::vector<double> ru, rv;
    for (int64_t k = 0; k < d; ++k) {
      ru.push_back(u[i][k].item<double>());
      rv.push_back(v[i][k].item<double>());
    }
    j["u"].push_back(ru);
    j["v"].push_back(rv);
  }
  j["labels"] = lab;
  j["tau"] = tau;
  const fs::path in = dir / "case.json";
  std::ofstream(in) << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::strict);
  const std::string cmd = std::string(FLORENCE_PYTHON) + " '" + FLORENCE_SOURCE_DIR +
                          "/tests/unit/loss/unicl_reference.py' '" + in.string() + "'";
  FILE* pipe = popen(cmd.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buf[512];
  while (fgets(buf, sizeof(buf), pipe)) out += buf;
  ASSERT_EQ(pclose(pipe), 0) << "reference failed: " << cmd << "\n" << out;
  auto ref = nlohmann::json::parse(out);
  const double got_sum = item(unicl_loss(u, v, labels, scalar(tau)));
  const double got_mean = item(unicl_loss(u, v, labels, scalar(tau), kMean));
  const double err_sum = std::abs(got_sum - ref["sum"].get<double>());
  const double err_mean = std::abs(got_mean - ref["mean"].get<double>());
  std::printf("[ numpy parity ] sum %.12f (ref %.12f) |err| %.3g; mean |err| %.3g\n", got_sum,
              ref["sum"].get<double>(), err_sum, err_mean);
  EXPECT_LT(err_sum, 1e-9);
  EXPECT_LT(err_mean, 1e-9);
  // The two directions differ here (u and v are unrelated), so the sum is not twice one of them.
  EXPECT_GT(std::abs(ref["i2t"].get<double>() - ref["t2i"].get<double>()), 1e-3);
}

// 3. Central-difference gradients (float64) w.r.t. u, v and logit_scale (tau = exp(logit_scale)).
TEST(UniCL, GradientMatchesFiniteDifferences) {
  const int64_t n = 5, d = 4;
  auto u0 = unit_rows(n, d, torch::kFloat64, 21);
  auto v0 = unit_rows(n, d, torch::kFloat64, 22);
  auto labels = torch::tensor({0, 1, 0, 2, 1}, torch::kInt64);
  const double ls0 = std::log(3.0);
  for (const auto& options : {kSum, kMean}) {
    auto u = u0.clone().requires_grad_(true);
    auto v = v0.clone().requires_grad_(true);
    auto ls = scalar(ls0).requires_grad_(true);
    unicl_loss(u, v, labels, ls.exp(), options).backward();

    auto f = [&](const torch::Tensor& uu, const torch::Tensor& vv, double l) {
      torch::NoGradGuard ng;
      return item(unicl_loss(uu, vv, labels, scalar(std::exp(l)), options));
    };
    const double eps = 1e-6;
    auto check = [&](const torch::Tensor& analytic, double numeric, const std::string& what) {
      const double a = analytic.item<double>();
      EXPECT_LE(std::abs(a - numeric), 1e-6 * std::max(std::abs(numeric), 1e-2))
          << what << ": analytic " << a << " numeric " << numeric;
    };
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t k = 0; k < d; ++k) {
        auto up = u0.clone(), um = u0.clone();
        up[i][k] += eps;
        um[i][k] -= eps;
        check(u.grad()[i][k], (f(up, v0, ls0) - f(um, v0, ls0)) / (2 * eps),
              "du[" + std::to_string(i) + "][" + std::to_string(k) + "]");
        auto vp = v0.clone(), vm = v0.clone();
        vp[i][k] += eps;
        vm[i][k] -= eps;
        check(v.grad()[i][k], (f(u0, vp, ls0) - f(u0, vm, ls0)) / (2 * eps),
              "dv[" + std::to_string(i) + "][" + std::to_string(k) + "]");
      }
    }
    check(ls.grad(), (f(u0, v0, ls0 + eps) - f(u0, v0, ls0 - eps)) / (2 * eps), "dlogit_scale");
    EXPECT_GT(std::abs(ls.grad().item<double>()), 1e-3);  // a real gradient reaches logit_scale
  }
}

// 4. Invariances: permuting the batch changes nothing; aligned pairs give a lower loss.
TEST(UniCL, PermutationInvariantAndAlignmentLowersLoss) {
  const int64_t n = 9, d = 8;
  auto u = unit_rows(n, d, torch::kFloat64, 31);
  auto v = unit_rows(n, d, torch::kFloat64, 32);
  auto labels = torch::tensor({4, 2, 4, 9, 2, 4, 0, 9, 1}, torch::kInt64);
  auto tau = scalar(10.0);
  auto perm = torch::tensor({8, 3, 0, 5, 1, 7, 2, 6, 4}, torch::kInt64);
  const double base = item(unicl_loss(u, v, labels, tau));
  EXPECT_NEAR(item(unicl_loss(u.index_select(0, perm), v.index_select(0, perm),
                              labels.index_select(0, perm), tau)),
              base, 1e-12);
  // Permuting the labels alone changes the positive sets: the loss must change.
  EXPECT_GT(std::abs(item(unicl_loss(u, v, labels.index_select(0, perm), tau)) - base), 1e-6);

  // Matching pairs aligned (v_i close to u_i) vs the texts shuffled against the images.
  torch::manual_seed(33);
  auto aligned = u + 0.05 * torch::randn({n, d}, torch::kFloat64);
  aligned = aligned / aligned.norm(2, 1, true);
  auto distinct = torch::arange(n, torch::kInt64);
  const double l_aligned = item(unicl_loss(u, aligned, distinct, tau));
  const double l_shuffled = item(unicl_loss(u, aligned.index_select(0, perm), distinct, tau));
  EXPECT_LT(l_aligned, 0.5);
  EXPECT_GT(l_shuffled, l_aligned + 5.0);
}

// 5. Local variant: world = 1 equals the global loss; 2 equal simulated ranks average to it;
//    unequal shards combine with weights n_r / N; gradients of that combination match.
TEST(UniCL, LocalVariantMatchesGlobal) {
  const int64_t n = 8, d = 5;
  auto u = unit_rows(n, d, torch::kFloat64, 41);
  auto v = unit_rows(n, d, torch::kFloat64, 42);
  auto labels = torch::tensor({1, 5, 1, 3, 5, 1, 7, 3}, torch::kInt64);
  auto tau = scalar(7.0);
  for (const auto& options : {kSum, kMean}) {
    const double global = item(unicl_loss(u, v, labels, tau, options));
    EXPECT_NEAR(item(unicl_loss_local(u, v, u, v, labels, 0, tau, options)), global, 1e-12);

    // Two ranks of 4 rows each: the mean of the local losses is the global loss.
    const double r0 = item(unicl_loss_local(u.narrow(0, 0, 4), v.narrow(0, 0, 4), u, v, labels, 0,
                                            tau, options));
    const double r1 = item(unicl_loss_local(u.narrow(0, 4, 4), v.narrow(0, 4, 4), u, v, labels, 4,
                                            tau, options));
    EXPECT_NEAR(0.5 * (r0 + r1), global, 1e-12);
    EXPECT_GT(std::abs(r0 - r1), 1e-3);  // the shards really differ

    // Unequal shards 3 + 5: sum_r (n_r / N) loss_r is the global loss.
    const double s0 = item(unicl_loss_local(u.narrow(0, 0, 3), v.narrow(0, 0, 3), u, v, labels, 0,
                                            tau, options));
    const double s1 = item(unicl_loss_local(u.narrow(0, 3, 5), v.narrow(0, 3, 5), u, v, labels, 3,
                                            tau, options));
    EXPECT_NEAR(3.0 / 8 * s0 + 5.0 / 8 * s1, global, 1e-12);
  }

  // Gradients: rebuild the global batch from grad-carrying local shards (what an all_gather whose
  // backward sums gradients over ranks gives); the mean of the two local losses then has the
  // gradient of the global loss w.r.t. every feature.
  auto ua = u.narrow(0, 0, 4).clone().requires_grad_(true);
  auto ub = u.narrow(0, 4, 4).clone().requires_grad_(true);
  auto va = v.narrow(0, 0, 4).clone().requires_grad_(true);
  auto vb = v.narrow(0, 4, 4).clone().requires_grad_(true);
  auto ug = torch::cat({ua, ub}), vg = torch::cat({va, vb});
  auto local_mean = 0.5 * (unicl_loss_local(ua, va, ug, vg, labels, 0, tau) +
                           unicl_loss_local(ub, vb, ug, vg, labels, 4, tau));
  local_mean.backward();
  auto uu = u.clone().requires_grad_(true), vv = v.clone().requires_grad_(true);
  unicl_loss(uu, vv, labels, tau).backward();
  EXPECT_LT((torch::cat({ua.grad(), ub.grad()}) - uu.grad()).abs().max().item<double>(), 1e-12);
  EXPECT_LT((torch::cat({va.grad(), vb.grad()}) - vv.grad()).abs().max().item<double>(), 1e-12);
}

TEST(UniCL, TextLabelsAndTargets) {
  // FNV-1a 64 published vectors: "a" -> 0xaf63dc4c8601ec8c, "foobar" -> 0x85944171f73967e8
  // (top bit already set, so the label is the hash itself read as int64).
  EXPECT_EQ(static_cast<uint64_t>(text_label("a")), 0xaf63dc4c8601ec8cULL);
  EXPECT_EQ(static_cast<uint64_t>(text_label("foobar")), 0x85944171f73967e8ULL);
  EXPECT_EQ(static_cast<uint64_t>(text_label("")), 0xcbf29ce484222325ULL);
  // "a cat" hashes to 0x719c6a0889da8688 (top bit clear; computed in Python): the label sets it.
  EXPECT_EQ(static_cast<uint64_t>(text_label("a cat")), 0xf19c6a0889da8688ULL);
  EXPECT_LT(text_label("a cat"), 0);
  EXPECT_NE(text_label("a cat"), text_label("a cat "));  // exact bytes, no normalisation

  auto labels = text_labels({"a cat", "a dog", "a cat", "a photo of a cat"});
  ASSERT_EQ(labels.sizes(), torch::IntArrayRef({4}));
  EXPECT_EQ(labels.scalar_type(), torch::kInt64);
  EXPECT_EQ(labels[0].item<int64_t>(), text_label("a cat"));
  EXPECT_EQ(labels[3].item<int64_t>(), static_cast<int64_t>(0xc13a760fbd1d5bfeULL));
  auto t = labels_to_targets(labels);
  auto expected = torch::tensor({1.f, 0.f, 1.f, 0.f, 0.f, 1.f, 0.f, 0.f, 1.f, 0.f, 1.f, 0.f,
                                 0.f, 0.f, 0.f, 1.f})
                      .view({4, 4});
  EXPECT_TRUE(torch::equal(t, expected)) << t;
  EXPECT_EQ(labels_to_targets(labels, torch::kFloat64).scalar_type(), torch::kFloat64);
  auto rect = labels_to_targets(labels.narrow(0, 2, 2), labels);
  EXPECT_TRUE(torch::equal(rect, expected.narrow(0, 2, 2)));

  // A class id never equals a text label (class ids >= 0, text labels < -1).
  for (const char* s : {"", "a", "0", "1", "cat", "dog"}) EXPECT_LT(text_label(s), -1);
}

// 6. Bad input -> florence::Error.
TEST(UniCL, RejectsBadInput) {
  auto u = unit_rows(4, 3, torch::kFloat32, 51);
  auto v = unit_rows(4, 3, torch::kFloat32, 52);
  auto labels = torch::tensor({0, 1, 0, 2}, torch::kInt64);
  auto tau = scalar(10.0, torch::kFloat32);
  EXPECT_NO_THROW(unicl_loss(u, v, labels, tau));
  EXPECT_THROW(unicl_loss(u, v.narrow(0, 0, 3), labels, tau), florence::Error);        // N mismatch
  EXPECT_THROW(unicl_loss(u, unit_rows(4, 5, torch::kFloat32, 1), labels, tau), florence::Error);  // D
  EXPECT_THROW(unicl_loss(u.view({2, 2, 3}), v.view({2, 2, 3}), labels, tau), florence::Error);   // 3-D
  EXPECT_THROW(unicl_loss(u.view({12}), v.view({12}), labels, tau), florence::Error);             // 1-D
  EXPECT_THROW(unicl_loss(u, v, labels.narrow(0, 0, 3), tau), florence::Error);  // labels length
  EXPECT_THROW(unicl_loss(u, v, labels.view({2, 2}), tau), florence::Error);      // labels 2-D
  EXPECT_THROW(unicl_loss(u, v, labels.to(torch::kInt32), tau), florence::Error);  // labels dtype
  EXPECT_THROW(unicl_loss(u, v, labels.to(torch::kFloat32), tau), florence::Error);
  EXPECT_THROW(unicl_loss(u.to(torch::kFloat16), v.to(torch::kFloat16), labels, tau),
               florence::Error);                                                   // feature dtype
  EXPECT_THROW(unicl_loss(u, v.to(torch::kFloat64), labels, tau), florence::Error);  // mixed dtype
  EXPECT_THROW(unicl_loss(u, v, labels, torch::ones({2})), florence::Error);        // tau shape
  EXPECT_THROW(unicl_loss(u, v, labels, torch::tensor(3, torch::kInt64)), florence::Error);
  EXPECT_THROW(unicl_loss(u.narrow(0, 0, 0), v.narrow(0, 0, 0), labels.narrow(0, 0, 0), tau),
               florence::Error);                                                   // empty batch
  EXPECT_THROW(unicl_loss(torch::Tensor(), v, labels, tau), florence::Error);

  // Local variant: rows outside the global batch, width mismatch, wrong global label length.
  EXPECT_NO_THROW(unicl_loss_local(u.narrow(0, 2, 2), v.narrow(0, 2, 2), u, v, labels, 2, tau));
  EXPECT_THROW(unicl_loss_local(u.narrow(0, 2, 2), v.narrow(0, 2, 2), u, v, labels, 3, tau),
               florence::Error);
  EXPECT_THROW(unicl_loss_local(u.narrow(0, 2, 2), v.narrow(0, 2, 2), u, v, labels, -1, tau),
               florence::Error);
  EXPECT_THROW(unicl_loss_local(u, v, u.narrow(0, 0, 2), v.narrow(0, 0, 2), labels.narrow(0, 0, 2),
                                0, tau),
               florence::Error);
  EXPECT_THROW(unicl_loss_local(u.narrow(1, 0, 2), v.narrow(1, 0, 2), u, v, labels, 0, tau),
               florence::Error);
  EXPECT_THROW(unicl_loss_local(u.narrow(0, 0, 2), v.narrow(0, 0, 2), u, v, labels.narrow(0, 0, 3),
                                0, tau),
               florence::Error);
  EXPECT_THROW(labels_to_targets(labels.to(torch::kInt32)), florence::Error);
  EXPECT_THROW(labels_to_targets(labels, torch::kInt64), florence::Error);

  // The message names the problem.
  try {
    unicl_loss(u, v, labels.narrow(0, 0, 3), tau);
    ADD_FAILURE() << "no throw";
  } catch (const florence::Error& e) {
    EXPECT_NE(std::string(e.what()).find("labels"), std::string::npos) << e.what();
  }
}

}  // namespace test_unicl
