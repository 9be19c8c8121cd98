// deform_conv2d on hand-computed cases, against plain convolution (zero offsets, unit mask), against
// its own ATen-ops form, and against finite differences; shape errors. torchvision parity is in
// tests/parity/detect/test_deform_conv_parity.cpp.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>

#include "florence/adapt/detect/deform_conv.h"
#include "florence/core/error.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_deform_conv {

using namespace florence::detect;

namespace {

torch::Tensor t2x2() { return torch::tensor({1.0, 2.0, 3.0, 4.0}, torch::kDouble).view({1, 1, 2, 2}); }

// A 1x1 kernel of weight 1 sampling the 2x2 map at (dy, dx) from output (0, 0) (stride 1, no
// padding): output map 2x2, we read out[0, 0, 0, 0].
double sample_at(double dy, double dx, double mask = 1.0) {
  auto off = torch::zeros({1, 2, 2, 2}, torch::kDouble);
  off[0][0][0][0] = dy;
  off[0][1][0][0] = dx;
  auto m = torch::ones({1, 1, 2, 2}, torch::kDouble) * mask;
  auto w = torch::ones({1, 1, 1, 1}, torch::kDouble);
  return deform_conv2d(t2x2(), off, w, {}, m).index({0, 0, 0, 0}).item<double>();
}

}  // namespace

TEST(DeformConv, BilinearSampleByHand) {
  // y = 0.5, x = 0.25 on [[1, 2], [3, 4]]: .5*.75*1 + .5*.25*2 + .5*.75*3 + .5*.25*4 = 2.25.
  EXPECT_NEAR(sample_at(0.5, 0.25), 2.25, 1e-12);
  EXPECT_NEAR(sample_at(0.5, 0.25, 0.5), 1.125, 1e-12);  // the mask multiplies the sample
  // y = -0.5: row -1 is outside (0), row 0 weighted 0.5: 0.5 * 1.
  EXPECT_NEAR(sample_at(-0.5, 0.0), 0.5, 1e-12);
  // y = -1 exactly and x = 2 exactly (= W): entirely outside -> 0.
  EXPECT_EQ(sample_at(-1.0, 0.0), 0.0);
  EXPECT_EQ(sample_at(0.0, 2.0), 0.0);
  // y = 1.5: row 1 weighted 0.5, row 2 outside: 0.5 * 3.
  EXPECT_NEAR(sample_at(1.5, 0.0), 1.5, 1e-12);
  // Far away: 0, and a NaN offset does not crash (treated as outside).
  EXPECT_EQ(sample_at(-1e9, 3e9), 0.0);
  EXPECT_EQ(sample_at(std::nan(""), 0.0), 0.0);
}

TEST(DeformConv, ZeroOffsetsAndUnitMaskAreAPlainConvolution) {
  torch::manual_seed(1);
  struct Case {
    int64_t C, O, H, W, k, s, p, d, groups;
  };
  for (const Case& c : {Case{4, 6, 9, 8, 3, 1, 1, 1, 1}, Case{4, 6, 11, 7, 3, 2, 2, 2, 2}, Case{6, 3, 5, 5, 1, 1, 0, 1, 3}}) {
    auto x = torch::randn({2, c.C, c.H, c.W}, torch::kDouble);
    auto w = torch::randn({c.O, c.C / c.groups, c.k, c.k}, torch::kDouble);
    auto b = torch::randn({c.O}, torch::kDouble);
    auto ref = torch::conv2d(x, w, b, c.s, c.p, c.d, c.groups);
    const int64_t Ho = ref.size(2), Wo = ref.size(3), K = c.k * c.k;
    for (int64_t G : {int64_t(1), int64_t(2)}) {
      if (c.C % G) continue;
      auto off = torch::zeros({2, 2 * G * K, Ho, Wo}, torch::kDouble);
      auto m = torch::ones({2, G * K, Ho, Wo}, torch::kDouble);
      auto y = deform_conv2d(x, off, w, b, m, {{c.s, c.s}, {c.p, c.p}, {c.d, c.d}});
      EXPECT_LE((y - ref).abs().max().item<double>(), 1e-10) << "C " << c.C << " groups " << c.groups << " G " << G;
      auto y1 = deform_conv2d(x, off, w, b, {}, {{c.s, c.s}, {c.p, c.p}, {c.d, c.d}});  // no mask = 1
      EXPECT_LE((y1 - ref).abs().max().item<double>(), 1e-10);
    }
  }
}

TEST(DeformConv, KernelAgreesWithCompositeFormAndFiniteDifferences) {
  torch::manual_seed(2);
  const int64_t B = 2, C = 4, H = 6, W = 5, O = 3, G = 2, K = 9;
  const DeformConvGeometry geo{{2, 1}, {1, 1}, {1, 2}};
  const int64_t Ho = (H + 2 - 2 - 1) / 2 + 1, Wo = (W + 2 - 4 - 1) / 1 + 1;
  auto make = [&](bool grad) {
    std::vector<torch::Tensor> v = {torch::randn({B, C, H, W}, torch::kDouble),
                                    torch::randn({B, 2 * G * K, Ho, Wo}, torch::kDouble) * 1.7,
                                    torch::rand({B, G * K, Ho, Wo}, torch::kDouble),
                                    torch::randn({O, C, 3, 3}, torch::kDouble), torch::randn({O}, torch::kDouble)};
    for (auto& t : v) t.requires_grad_(grad);
    return v;
  };
  auto a = make(true);
  std::vector<torch::Tensor> b;
  for (const auto& t : a) b.push_back(t.detach().clone().requires_grad_(true));
  auto gout = torch::randn({B, O, Ho, Wo}, torch::kDouble);
  auto ya = deform_conv2d(a[0], a[1], a[3], a[4], a[2], geo);
  auto yb = deform_conv2d_composite(b[0], b[1], b[3], b[4], b[2], geo);
  EXPECT_LE((ya - yb).abs().max().item<double>(), 1e-10);
  (ya * gout).sum().backward();
  (yb * gout).sum().backward();
  const char* names[] = {"input", "offset", "mask", "weight", "bias"};
  for (int i = 0; i < 5; ++i)
    EXPECT_LE((a[size_t(i)].grad() - b[size_t(i)].grad()).abs().max().item<double>(), 1e-9) << names[i];

  // Central differences of sum(y * gout) for a few offset and mask entries (offsets are random
  // reals, so no tap sits on a grid line where the derivative jumps).
  auto loss = [&](const torch::Tensor& off, const torch::Tensor& mask) {
    torch::NoGradGuard ng;
    return (deform_conv2d(a[0], off, a[3], a[4], mask, geo) * gout).sum().item<double>();
  };
  const double h = 1e-6;
  for (int64_t idx : {int64_t(0), int64_t(17), int64_t(101), int64_t(250)}) {
    auto op = a[1].detach().clone(), om = a[1].detach().clone();
    op.view(-1)[idx] += h;
    om.view(-1)[idx] -= h;
    const double fd = (loss(op, a[2].detach()) - loss(om, a[2].detach())) / (2 * h);
    EXPECT_NEAR(a[1].grad().view(-1)[idx].item<double>(), fd, 1e-5 * std::max(1.0, std::abs(fd))) << "offset " << idx;
    auto mp = a[2].detach().clone(), mm = a[2].detach().clone();
    mp.view(-1)[idx % mp.numel()] += h;
    mm.view(-1)[idx % mm.numel()] -= h;
    const double fdm = (loss(a[1].detach(), mp) - loss(a[1].detach(), mm)) / (2 * h);
    EXPECT_NEAR(a[2].grad().view(-1)[idx % mp.numel()].item<double>(), fdm, 1e-5 * std::max(1.0, std::abs(fdm)));
  }
}

TEST(DeformConv, FloatKernelCloseToDouble) {
  torch::manual_seed(3);
  auto x = torch::randn({1, 8, 12, 12});
  auto off = torch::randn({1, 18, 12, 12}) * 2;
  auto m = torch::rand({1, 9, 12, 12});
  auto w = torch::randn({8, 8, 3, 3});
  auto yf = deform_conv2d(x, off, w, {}, m, {{1, 1}, {1, 1}, {1, 1}});
  auto yd = deform_conv2d(x.to(torch::kDouble), off.to(torch::kDouble), w.to(torch::kDouble), {}, m.to(torch::kDouble),
                          {{1, 1}, {1, 1}, {1, 1}});
  EXPECT_EQ(yf.scalar_type(), torch::kFloat);
  EXPECT_LE((yf.to(torch::kDouble) - yd).abs().max().item<double>() / yd.abs().max().item<double>(), 1e-5);
}

TEST(DeformConv, ShapeErrorsNameTheTensor) {
  auto x = torch::randn({1, 4, 8, 8});
  auto w = torch::randn({6, 4, 3, 3});
  auto expect = [](auto fn, const std::string& part) {
    try {
      fn();
      ADD_FAILURE() << "expected florence::Error";
    } catch (const florence::Error& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  expect([&] { deform_conv2d(x, torch::zeros({1, 18, 7, 8}), w, {}, {}, {{1, 1}, {1, 1}, {1, 1}}); }, "offset [1, 18, 7, 8]");
  expect([&] { deform_conv2d(x, torch::zeros({1, 18, 8, 8}), w, {}, torch::ones({1, 8, 8, 8}), {{1, 1}, {1, 1}, {1, 1}}); },
         "mask [1, 8, 8, 8]");
  expect([&] { deform_conv2d(x, torch::zeros({1, 18, 8, 8}), w, torch::zeros({5}), {}, {{1, 1}, {1, 1}, {1, 1}}); }, "bias");
  expect([&] { deform_conv2d(x, torch::zeros({1, 54, 8, 8}), w, {}, {}, {{1, 1}, {1, 1}, {1, 1}}); },
         "not divisible by the 3 offset groups");
  expect([&] { deform_conv2d(x, torch::zeros({1, 18, 8, 8}), w, {}, {}, {{0, 1}, {1, 1}, {1, 1}}); }, "stride");
  expect([&] { deform_conv2d(x.to(torch::kDouble), torch::zeros({1, 18, 8, 8}), w, {}, {}, {{1, 1}, {1, 1}, {1, 1}}); },
         "dtype");
  expect([&] { deform_conv2d(torch::randn({1, 4, 1, 1}), torch::zeros({1, 18, 1, 1}), w, {}, {}, {}); }, "too small");
}

TEST(DeformConv, ModuleHasDyHeadNamesAndShapes) {
  ModulatedDeformConv conv(ModulatedDeformConvOptions(8, 4, 3).stride(2).padding(1));
  auto params = conv->named_parameters();
  ASSERT_TRUE(params.contains("weight"));
  ASSERT_TRUE(params.contains("bias"));
  EXPECT_EQ(conv->weight.sizes(), (std::vector<int64_t>{4, 8, 3, 3}));
  EXPECT_EQ(conv->bias.abs().sum().item<double>(), 0.0);
  EXPECT_LE(conv->weight.abs().max().item<double>(), 1.0 / std::sqrt(72.0));
  auto y = conv->forward(torch::randn({2, 8, 9, 9}), torch::zeros({2, 18, 5, 5}), torch::ones({2, 9, 5, 5}));
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2, 4, 5, 5}));
}

}  // namespace test_deform_conv
