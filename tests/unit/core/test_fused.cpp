// core::quick_gelu against x * sigmoid(1.702 x) computed in float64 by torch (values over the
// float range, infinities, NaN, gradients, layouts, bfloat16) and core::adamw_update
// against the formula in float64. The AdamW step over a whole optimizer: tests/unit/train/test_fused_adamw.cpp.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "florence/core/fused.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_fused {

using florence::core::quick_gelu;

torch::Tensor reference(const torch::Tensor& x) {
  const auto d = x.to(torch::kFloat64);
  return d * torch::sigmoid(1.702 * d);
}

// Inputs from -100 to 100 (both tails of the sigmoid, where exp would leave the float range without
// the clamp) against float64: relative error within 5e-7 plus what rounding z = 1.702 x to float32
// alone costs (exp(z) moves by |z| * 2^-23 relative), +1e-30 absolute where the exact value
// underflows float32.
TEST(FusedOps, QuickGeluMatchesTorch) {
  torch::manual_seed(0);
  auto x = torch::cat({torch::linspace(-100, 100, 200001), torch::randn({100000}) * 4,
                       torch::tensor({0.0f, -0.0f, 1e-30f, -1e-30f, 88.0f, -88.0f})});
  const auto y = quick_gelu(x);
  ASSERT_EQ(y.scalar_type(), torch::kFloat32);
  ASSERT_EQ(y.sizes(), x.sizes());
  const auto ref = reference(x);
  const auto err = (y.to(torch::kFloat64) - ref).abs();
  const auto bound = ref.abs() * (5e-7 + (1.702 * x.to(torch::kFloat64)).abs() * 1.2e-7) + 1e-30;
  EXPECT_TRUE((err <= bound).all().item<bool>())
      << "worst relative error " << (err / (ref.abs() + 1e-30)).max().item<double>();
  // Against the composite float32 expression the text tower used before (the parity tests' path).
  const auto composite = x * torch::sigmoid(1.702 * x);
  EXPECT_LE((y - composite).abs().max().item<float>(), 1e-4f);  // |x| up to 100: a few ulp of 100
  EXPECT_TRUE(torch::allclose(y, composite, 1e-6, 1e-7));
}

TEST(FusedOps, QuickGeluInfinitiesNanAndEmpty) {
  const float inf = std::numeric_limits<float>::infinity();
  const auto y = quick_gelu(torch::tensor({inf, -inf, std::nanf("")}));
  EXPECT_EQ(y[0].item<float>(), inf);
  EXPECT_EQ(y[1].item<float>(), -inf);  // -inf * (a tiny positive sigmoid); torch's -inf * 0 is NaN
  EXPECT_TRUE(std::isnan(y[2].item<float>()));
  EXPECT_EQ(quick_gelu(torch::empty({0, 5})).sizes(), torch::IntArrayRef({0, 5}));
}

// The gradient of the fused function against autograd through the float64 composite.
TEST(FusedOps, QuickGeluGradientMatchesAutograd) {
  torch::manual_seed(1);
  auto x = (torch::randn({64, 300}) * 5).requires_grad_(true);
  auto gy = torch::randn({64, 300});
  auto y = quick_gelu(x);
  ASSERT_TRUE(y.requires_grad());
  y.backward(gy);
  auto xd = x.detach().to(torch::kFloat64).requires_grad_(true);
  (xd * torch::sigmoid(1.702 * xd)).backward(gy.to(torch::kFloat64));
  const auto diff = (x.grad().to(torch::kFloat64) - xd.grad()).abs();
  EXPECT_TRUE((diff <= xd.grad().abs() * 2e-6 + 1e-6).all().item<bool>()) << diff.max().item<double>();
  // No double backward: create_graph is refused rather than giving a gradient without a graph.
  auto x2 = torch::randn({8}).requires_grad_(true);
  EXPECT_THROW(torch::autograd::grad({quick_gelu(x2).sum()}, {x2}, {}, true, true), std::exception);
}

// A transposed (non-contiguous) input gives the same values in the input's shape; float64 takes the
// composite expression; bfloat16 follows float32 to bfloat16 rounding.
TEST(FusedOps, QuickGeluLayoutsAndOtherDtypes) {
  torch::manual_seed(2);
  const auto base = torch::randn({37, 53});
  const auto t = base.t();
  ASSERT_FALSE(t.is_contiguous());
  EXPECT_TRUE(torch::equal(quick_gelu(t), quick_gelu(t.contiguous())));
  const auto d = base.to(torch::kFloat64);
  EXPECT_TRUE(torch::allclose(quick_gelu(d), d * torch::sigmoid(1.702 * d), 0, 0));
  const auto b = base.to(torch::kBFloat16);
  const auto yb = quick_gelu(b);
  EXPECT_EQ(yb.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::allclose(yb.to(torch::kFloat32), quick_gelu(base), 2e-2, 2e-2));
}

// bfloat16 (autocast, --precision bf16): computed in float32 and rounded once, so within one
// bfloat16 rounding (2^-8 relative) of the exact value of the bfloat16 input; NaN and infinities
// kept; in place equals out of place; the gradient within two roundings of the float64 one.
TEST(FusedOps, QuickGeluBfloat16) {
  torch::manual_seed(6);
  const auto x = torch::cat({torch::linspace(-60, 60, 24001), torch::randn({20000}) * 3}).to(torch::kBFloat16);
  const auto y = quick_gelu(x);
  ASSERT_EQ(y.scalar_type(), torch::kBFloat16);
  const auto ref = reference(x);
  const auto err = (y.to(torch::kFloat64) - ref).abs();
  EXPECT_TRUE((err <= ref.abs() * (1.0 / 256) + 1e-30).all().item<bool>())
      << "worst relative error " << (err / (ref.abs() + 1e-30)).max().item<double>();
  // Never further from the exact value than the composite bfloat16 expression, on average.
  const auto composite = (x * torch::sigmoid(1.702 * x)).to(torch::kFloat64);
  EXPECT_LE(err.mean().item<double>(), (composite - ref).abs().mean().item<double>());
  const float inf = std::numeric_limits<float>::infinity();
  const auto special = quick_gelu(torch::tensor({inf, -inf, std::nanf(""), 0.0f}).to(torch::kBFloat16)).to(torch::kFloat32);
  EXPECT_EQ(special[0].item<float>(), inf);
  EXPECT_EQ(special[1].item<float>(), -inf);
  EXPECT_TRUE(std::isnan(special[2].item<float>()));
  EXPECT_EQ(special[3].item<float>(), 0.0f);
  auto inplace = x.clone();
  florence::core::quick_gelu_(inplace);
  EXPECT_TRUE(torch::equal(inplace, y));

  auto xg = (torch::randn({64, 300}) * 4).to(torch::kBFloat16).requires_grad_(true);
  const auto gy = torch::randn({64, 300}).to(torch::kBFloat16);
  quick_gelu(xg).backward(gy);
  ASSERT_EQ(xg.grad().scalar_type(), torch::kBFloat16);
  auto xd = xg.detach().to(torch::kFloat64).requires_grad_(true);
  (xd * torch::sigmoid(1.702 * xd)).backward(gy.to(torch::kFloat64));
  const auto diff = (xg.grad().to(torch::kFloat64) - xd.grad()).abs();
  EXPECT_TRUE((diff <= xd.grad().abs() * (2.0 / 256) + 1e-6).all().item<bool>()) << diff.max().item<double>();
}

// In place (inference) equals the out-of-place kernel bit for bit; refused where a gradient is needed.
TEST(FusedOps, QuickGeluInPlace) {
  torch::manual_seed(4);
  auto x = torch::randn({33, 65}) * 3;
  const auto expected = quick_gelu(x);
  auto y = x.clone();
  florence::core::quick_gelu_(y);
  EXPECT_TRUE(torch::equal(y, expected));
  auto t = x.t();  // non-contiguous: the composite, in place
  auto tc = t.clone();
  florence::core::quick_gelu_(t);
  EXPECT_TRUE(torch::allclose(t, quick_gelu(tc), 1e-6, 1e-7));
  auto g = x.clone().requires_grad_(true);
  EXPECT_THROW(florence::core::quick_gelu_(g), std::runtime_error);
}

// core::linear against torch::linear: 3-D and 4-D contiguous inputs (addmm path), a transposed
// input and a missing bias (torch::linear), an empty batch; values and gradients.
TEST(FusedOps, LinearMatchesTorchLinear) {
  torch::manual_seed(5);
  const auto w = torch::randn({24, 40}), b = torch::randn({24});
  for (const auto& x : {torch::randn({3, 7, 40}), torch::randn({2, 3, 5, 40}), torch::randn({40, 9, 3}).transpose(0, 2),
                        torch::randn({0, 4, 40})}) {
    const auto y = florence::core::linear(x, w, b);
    const auto ref = torch::linear(x, w, b);
    ASSERT_EQ(y.sizes(), ref.sizes());
    EXPECT_TRUE(torch::allclose(y, ref, 1e-6, 1e-5)) << (y - ref).abs().max();
    EXPECT_TRUE(torch::allclose(florence::core::linear(x, w, torch::Tensor()), torch::linear(x, w), 0, 0));
  }
  auto x = torch::randn({4, 6, 40}).requires_grad_(true);
  auto wg = w.clone().requires_grad_(true), bg = b.clone().requires_grad_(true);
  const auto gy = torch::randn({4, 6, 24});
  florence::core::linear(x, wg, bg).backward(gy);
  auto x2 = x.detach().clone().requires_grad_(true);
  auto w2 = w.clone().requires_grad_(true), b2 = b.clone().requires_grad_(true);
  torch::linear(x2, w2, b2).backward(gy);
  EXPECT_TRUE(torch::allclose(x.grad(), x2.grad(), 1e-6, 1e-5));
  EXPECT_TRUE(torch::allclose(wg.grad(), w2.grad(), 1e-6, 1e-5));
  EXPECT_TRUE(torch::allclose(bg.grad(), b2.grad(), 1e-6, 1e-5));
}

// One call of the raw update against the documented formula in float64, with and without weight
// decay, at steps 1 and 1000.
TEST(FusedOps, AdamWUpdateFollowsTheFormula) {
  torch::manual_seed(3);
  for (double wd : {0.0, 0.05}) {
    for (int64_t step : {int64_t(1), int64_t(1000)}) {
      const int64_t n = 1003;  // not a multiple of any vector width
      auto p = torch::randn({n}), g = torch::randn({n}) * 1e-2, m = torch::randn({n}) * 1e-3,
           v = torch::rand({n}) * 1e-4;
      florence::core::AdamWScalars s;
      s.lr = 3e-4;
      s.beta1 = 0.9;
      s.beta2 = 0.98;
      s.eps = 1e-6;
      s.weight_decay = wd;
      s.step = step;
      const auto pd = p.to(torch::kFloat64), gd = g.to(torch::kFloat64), md = m.to(torch::kFloat64),
                 vd = v.to(torch::kFloat64);
      const auto m_ref = s.beta1 * md + (1 - s.beta1) * gd;
      const auto v_ref = s.beta2 * vd + (1 - s.beta2) * gd * gd;
      const double bc1 = 1 - std::pow(s.beta1, double(step)), bc2 = 1 - std::pow(s.beta2, double(step));
      const auto p_ref = pd * (1 - s.lr * wd) - s.lr / bc1 * m_ref / (v_ref.sqrt() / std::sqrt(bc2) + s.eps);
      florence::core::adamw_update(p.data_ptr<float>(), g.data_ptr<float>(), m.data_ptr<float>(),
                                   v.data_ptr<float>(), n, s);
      // Measured: m within 3e-10 (|m| <= 6e-3), v within 6e-12 (|v| <= 1e-4), p within 1.7e-7 (|p| <= 4):
      // about one float32 ulp of each.
      EXPECT_TRUE(torch::allclose(m.to(torch::kFloat64), m_ref, 1e-6, 1e-9));
      EXPECT_TRUE(torch::allclose(v.to(torch::kFloat64), v_ref, 1e-6, 2e-11));
      EXPECT_TRUE(torch::allclose(p.to(torch::kFloat64), p_ref, 1e-6, 1e-9))
          << (p.to(torch::kFloat64) - p_ref).abs().max().item<double>();
    }
  }
}

}  // namespace test_fused
