// Unit tests of the Swin / CoSwin tower: shapes, hand-checked relative position index and
// shift mask, shift rule, patch-merging order, state-dict names, config JSON, drop path.
#include "florence/core/checkpoint.h"
#include "florence/core/error.h"
#include "florence/vision/swin.h"
#include "florence/vision/swin_import.h"
#include "florence/vision/swin_layers.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <string>

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_swin {

using namespace florence;
using namespace florence::vision;

namespace {

// A narrow tower: the pyramid geometry depends only on the stem/downsample, not the widths.
SwinConfig small(const std::string& variant) {
  SwinConfig c;
  c.variant = variant;
  c.embed_dim = 16;
  c.depths = {2, 2, 2, 2};
  c.num_heads = {1, 2, 4, 8};
  c.window_size = 7;
  c.drop_path_rate = 0.0;
  if (variant == "swin") c.patch_embed = {4, 4, 0};
  return c;
}

SwinConfig swin_t() {
  SwinConfig c;
  c.variant = "swin";
  c.embed_dim = 96;
  c.depths = {2, 2, 6, 2};
  c.num_heads = {3, 6, 12, 24};
  c.window_size = 7;
  c.patch_embed = {4, 4, 0};
  return c;
}

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no florence::Error thrown>";
}

void expect_pyramid(SwinTransformer& m, int64_t h, int64_t w, const std::vector<std::array<int64_t, 2>>& hw) {
  torch::NoGradGuard ng;
  m->eval();
  std::vector<torch::Tensor> stages;
  auto pooled = m->forward_features(torch::randn({2, 3, h, w}), &stages);
  const auto& cfg = m->config();
  EXPECT_EQ(pooled.sizes(), (std::vector<int64_t>{2, cfg.num_features()}));
  ASSERT_EQ(stages.size(), hw.size());
  for (size_t i = 0; i < hw.size(); ++i) {
    EXPECT_EQ(stages[i].sizes(), (std::vector<int64_t>{2, cfg.stage_dim(static_cast<int>(i)), hw[i][0], hw[i][1]}))
        << cfg.variant << " stage " << i << " for input " << h << "x" << w;
  }
  EXPECT_TRUE(torch::isfinite(pooled).all().item<bool>());
}

TEST(Swin, PyramidShapesSwinVariant) {
  torch::manual_seed(0);
  SwinTransformer m(small("swin"));
  expect_pyramid(m, 224, 224, {{{56, 56}}, {{28, 28}}, {{14, 14}}, {{7, 7}}});
  // 97x75: conv 4/4 floors to 24x18; odd maps are padded before merging (ceil).
  expect_pyramid(m, 97, 75, {{{24, 18}}, {{12, 9}}, {{6, 5}}, {{3, 3}}});
}

TEST(Swin, PyramidShapesCoSwinVariant) {
  torch::manual_seed(0);
  SwinTransformer m(small("coswin"));
  // stem 7/4/2: floor((224 + 4 - 7) / 4) + 1 = 56; downsample 3/2/1: floor((n + 2 - 3) / 2) + 1.
  expect_pyramid(m, 224, 224, {{{56, 56}}, {{28, 28}}, {{14, 14}}, {{7, 7}}});
  // 97x75: stem -> 24x19; then 12x10, 6x5, 3x3.
  expect_pyramid(m, 97, 75, {{{24, 19}}, {{12, 10}}, {{6, 5}}, {{3, 3}}});
}

TEST(Swin, HeadGivesLogits) {
  auto c = small("coswin");
  c.num_classes = 5;
  SwinTransformer m(c);
  m->eval();
  torch::NoGradGuard ng;
  EXPECT_EQ(m->forward(torch::randn({3, 3, 64, 64})).sizes(), (std::vector<int64_t>{3, 5}));
}

TEST(Swin, RelativePositionIndexWindow2) {
  // Tokens (0,0),(0,1),(1,0),(1,1); index = (dh + 1) * 3 + (dw + 1), dh = hi - hj, dw = wi - wj.
  auto expected = torch::tensor({4, 3, 1, 0, 5, 4, 2, 1, 7, 6, 4, 3, 8, 7, 5, 4}, torch::kLong).view({4, 4});
  EXPECT_TRUE(torch::equal(relative_position_index(2), expected));
  EXPECT_TRUE(torch::equal(relative_position_index(1), torch::zeros({1, 1}, torch::kLong)));
  auto i7 = relative_position_index(7);
  EXPECT_EQ(i7.sizes(), (std::vector<int64_t>{49, 49}));
  EXPECT_EQ(i7.min().item<int64_t>(), 0);
  EXPECT_EQ(i7.max().item<int64_t>(), 168);  // (2*7-1)^2 - 1
  EXPECT_EQ(i7[0][0].item<int64_t>(), 84);   // centre of the 13x13 table: (6 * 13 + 6)
}

TEST(Swin, ShiftMask4x4Window2Shift1) {
  // Region labels on the rolled 4x4 map (band(row) * 3 + band(col), bands [0,2)->0, 2->1, 3->2):
  // window (0,0): 0 0 0 0 | (0,1): 1 2 1 2 | (1,0): 3 3 6 6 | (1,1): 4 5 7 8
  const float M = -100.0f;
  auto expected = torch::tensor(std::vector<float>{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,  //
                                 0, M, 0, M, M, 0, M, 0, 0, M, 0, M, M, 0, M, 0,  //
                                 0, 0, M, M, 0, 0, M, M, M, M, 0, 0, M, M, 0, 0,  //
                                 0, M, M, M, M, 0, M, M, M, M, 0, M, M, M, M, 0})
                      .view({4, 4, 4});
  auto mask = shifted_window_mask(4, 4, 2, 1, 1);
  EXPECT_TRUE(torch::equal(mask, expected)) << mask;

  // Shift along W only (H covered by one window): only the column bands matter.
  auto w_only = shifted_window_mask(2, 4, 2, 0, 1);
  auto expected_w = torch::tensor(std::vector<float>{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,  //
                                   0, M, 0, M, M, 0, M, 0, 0, M, 0, M, M, 0, M, 0})
                        .view({2, 4, 4});
  EXPECT_TRUE(torch::equal(w_only, expected_w)) << w_only;

  EXPECT_NE(error_of([] { shifted_window_mask(5, 4, 2, 1, 1); }).find("multiple"), std::string::npos);
  EXPECT_NE(error_of([] { shifted_window_mask(4, 4, 2, 2, 1); }).find("shift"), std::string::npos);
}

TEST(Swin, NoShiftWhenPaddedMapFitsInOneWindow) {
  EXPECT_EQ(effective_shift(7, 7, 3), 0);
  EXPECT_EQ(effective_shift(14, 7, 3), 3);
  torch::manual_seed(1);
  SwinBlockOptions o;
  o.attn.dim = 8;
  o.attn.num_heads = 2;
  o.attn.window = 7;
  o.attn.shift = 3;
  SwinBlock shifted(o);
  o.attn.shift = 0;
  SwinBlock plain(o);
  core::load_state_dict(*plain, core::state_dict(*shifted));
  shifted->eval();
  plain->eval();
  torch::NoGradGuard ng;
  for (auto hw : {std::array<int64_t, 2>{7, 7}, std::array<int64_t, 2>{5, 6}}) {
    auto x = torch::randn({2, hw[0], hw[1], 8});
    EXPECT_TRUE(torch::equal(shifted(x), plain(x))) << hw[0] << "x" << hw[1];
  }
  // A 14x14 map spans 2x2 windows: the shift must change the result.
  auto x = torch::randn({2, 14, 14, 8});
  EXPECT_GT((shifted(x) - plain(x)).abs().max().item<double>(), 1e-3);
  // Padded 10x10 -> 14x14 is shifted as well, and the output keeps the unpadded size.
  auto y = torch::randn({1, 10, 10, 8});
  EXPECT_EQ(shifted(y).sizes(), y.sizes());
  EXPECT_GT((shifted(y) - plain(y)).abs().max().item<double>(), 1e-3);
}

TEST(Swin, PatchMergingChannelOrder) {
  PatchMerging pm(1, 1e-5);
  torch::NoGradGuard ng;
  // reduction picks the first two of the four concatenated channels.
  pm->reduction->weight.copy_(torch::tensor({1.f, 0.f, 0.f, 0.f, 0.f, 1.f, 0.f, 0.f}).view({2, 4}));
  auto x = torch::tensor({0.f, 1.f, 2.f, 3.f}).view({1, 2, 2, 1});  // x[h][w] = 2h + w
  auto y = pm(x);
  ASSERT_EQ(y.sizes(), (std::vector<int64_t>{1, 1, 1, 2}));
  // concat = [x00, x10, x01, x11] = [0, 2, 1, 3]; LayerNorm: mean 1.5, var 1.25.
  const double s = std::sqrt(1.25 + 1e-5);
  EXPECT_NEAR(y[0][0][0][0].item<double>(), (0 - 1.5) / s, 1e-5);
  EXPECT_NEAR(y[0][0][0][1].item<double>(), (2 - 1.5) / s, 1e-5);
  // Odd maps are zero-padded: 3x5 -> 2x3.
  EXPECT_EQ(pm(torch::randn({1, 3, 5, 1})).sizes(), (std::vector<int64_t>{1, 2, 3, 2}));
}

TEST(Swin, CoSwinStateDictNames) {
  SwinTransformer m(SwinConfig{});  // defaults: CoSwin-T
  auto sd = core::state_dict(*m);
  auto shape = [&](const std::string& k) {
    auto it = sd.find(k);
    return it == sd.end() ? std::vector<int64_t>{-1} : it->second.sizes().vec();
  };
  EXPECT_EQ(shape("patch_embed.proj.weight"), (std::vector<int64_t>{96, 3, 7, 7}));
  EXPECT_EQ(shape("patch_embed.proj.bias"), (std::vector<int64_t>{96}));
  EXPECT_EQ(shape("patch_embed.norm.weight"), (std::vector<int64_t>{96}));
  EXPECT_EQ(shape("layers.0.downsample.proj.weight"), (std::vector<int64_t>{192, 96, 3, 3}));
  EXPECT_EQ(shape("layers.0.downsample.proj.bias"), (std::vector<int64_t>{192}));
  EXPECT_EQ(shape("layers.0.downsample.norm.weight"), (std::vector<int64_t>{192}));
  EXPECT_EQ(shape("layers.2.downsample.proj.weight"), (std::vector<int64_t>{768, 384, 3, 3}));
  EXPECT_EQ(shape("layers.0.blocks.0.attn.relative_position_bias_table"), (std::vector<int64_t>{169, 3}));
  EXPECT_EQ(shape("layers.2.blocks.5.attn.qkv.weight"), (std::vector<int64_t>{1152, 384}));
  EXPECT_EQ(shape("layers.3.blocks.1.mlp.fc1.weight"), (std::vector<int64_t>{3072, 768}));
  EXPECT_EQ(shape("layers.3.blocks.1.mlp.fc2.weight"), (std::vector<int64_t>{768, 3072}));
  EXPECT_EQ(shape("norm.weight"), (std::vector<int64_t>{768}));
  EXPECT_EQ(sd.count("layers.3.downsample.proj.weight"), 0u);
  EXPECT_EQ(sd.count("head.weight"), 0u);
  for (const auto& [k, v] : sd) EXPECT_EQ(k.find("relative_position_index"), std::string::npos) << k;
  EXPECT_TRUE(m->named_buffers().is_empty());  // the state dict is exactly the parameters
}

TEST(Swin, SwinTParameterCountMatchesTorchvision) {
  auto c = swin_t();
  c.num_classes = 1000;
  SwinTransformer m(c);
  int64_t n = 0;
  for (const auto& p : m->parameters()) n += p.numel();
  EXPECT_EQ(n, 28288354);  // torchvision Swin_T_Weights.meta["num_params"]
  auto sd = core::state_dict(*m);
  EXPECT_EQ(sd.at("layers.0.downsample.reduction.weight").sizes(), (std::vector<int64_t>{192, 384}));
  EXPECT_EQ(sd.at("layers.0.downsample.norm.weight").sizes(), (std::vector<int64_t>{384}));
  EXPECT_EQ(sd.count("layers.0.downsample.reduction.bias"), 0u);
  EXPECT_EQ(sd.at("patch_embed.proj.weight").sizes(), (std::vector<int64_t>{96, 3, 4, 4}));
}

TEST(Swin, TorchvisionKeyMapping) {
  core::TensorMap tv;
  auto t = torch::zeros({1});
  for (const char* k : {"features.0.0.weight", "features.0.2.bias", "features.1.1.attn.relative_position_index",
                        "features.1.1.attn.relative_position_bias_table", "features.5.3.mlp.0.weight",
                        "features.7.1.mlp.3.bias", "features.6.reduction.weight", "features.2.norm.bias",
                        "norm.weight", "head.weight", "head.bias"})
    tv[k] = t;
  auto m = map_torchvision_swin(tv);
  std::vector<std::string> keys;
  for (const auto& kv : m) keys.push_back(kv.first);
  EXPECT_EQ(keys, (std::vector<std::string>{"layers.0.blocks.1.attn.relative_position_bias_table",
                                            "layers.0.downsample.norm.bias", "layers.2.blocks.3.mlp.fc1.weight",
                                            "layers.2.downsample.reduction.weight", "layers.3.blocks.1.mlp.fc2.bias",
                                            "norm.weight", "patch_embed.norm.bias", "patch_embed.proj.weight"}));
  EXPECT_EQ(map_torchvision_swin(tv, true).count("head.bias"), 1u);
  for (const char* bad : {"features.1.0.attn.cpb_mlp.0.weight", "features.x.0.norm1.weight", "classifier.weight",
                          "features.0.1.weight", "features.2.norm"}) {
    core::TensorMap one{{bad, t}};
    EXPECT_NE(error_of([&] { map_torchvision_swin(one); }).find(bad), std::string::npos) << bad;
  }
}

TEST(Swin, ConfigJsonRoundTripAndErrors) {
  SwinConfig c = swin_t();
  c.layer_scale_init = 1e-5;
  c.num_classes = 10;
  c.downsample = {5, 2, 2};
  c.mlp_ratio = 3.0;
  const auto j = c.to_json();
  const auto back = SwinConfig::from_json(j);
  EXPECT_EQ(back.to_json(), j);
  EXPECT_EQ(back.variant, "swin");
  EXPECT_EQ(back.depths, (std::vector<int>{2, 2, 6, 2}));
  EXPECT_EQ(back.downsample.kernel, 5);
  EXPECT_DOUBLE_EQ(back.layer_scale_init, 1e-5);
  // Missing fields take defaults.
  EXPECT_EQ(SwinConfig::from_json(nlohmann::json::object()).to_json(), SwinConfig{}.to_json());

  auto bad = j;
  bad["windw_size"] = 7;
  EXPECT_NE(error_of([&] { SwinConfig::from_json(bad); }).find("windw_size"), std::string::npos);
  bad = j;
  bad["patch_embed"]["kernal"] = 3;
  EXPECT_NE(error_of([&] { SwinConfig::from_json(bad); }).find("patch_embed.kernal"), std::string::npos);
  bad = j;
  bad["depths"] = "2,2,6,2";
  EXPECT_NE(error_of([&] { SwinConfig::from_json(bad); }).find("depths"), std::string::npos);
}

TEST(Swin, ValidateRejectsInconsistentDims) {
  SwinConfig c;
  c.num_heads = {5, 6, 12, 24};  // 96 % 5 != 0
  EXPECT_NE(error_of([&] { c.validate(); }).find("num_heads[0]"), std::string::npos);
  c = SwinConfig{};
  c.num_heads = {3, 6, 12};
  EXPECT_NE(error_of([&] { c.validate(); }).find("differ in length"), std::string::npos);
  c = SwinConfig{};
  c.window_size = 0;
  EXPECT_NE(error_of([&] { c.validate(); }).find("window_size"), std::string::npos);
  c = SwinConfig{};
  c.variant = "vit";
  EXPECT_NE(error_of([&] { SwinTransformer m(c); }).find("variant"), std::string::npos);
  c = SwinConfig{};
  c.embed_dim = 0;
  EXPECT_NE(error_of([&] { c.validate(); }).find("embed_dim"), std::string::npos);
  EXPECT_NO_THROW(SwinConfig{}.validate());
}

TEST(Swin, BadInputIsAnError) {
  SwinTransformer m(small("coswin"));
  torch::NoGradGuard ng;
  EXPECT_NE(error_of([&] { m->forward(torch::randn({1, 1, 64, 64})); }).find("expected input"), std::string::npos);
  EXPECT_NE(error_of([&] { m->forward(torch::randn({1, 3, 2, 64})); }).find("smaller than kernel"),
            std::string::npos);
}

TEST(Swin, DropPathIsIdentityInEval) {
  auto ones = torch::ones({1000, 4});
  EXPECT_TRUE(drop_path(ones, 0.5, false).equal(ones));
  torch::manual_seed(3);
  auto y = drop_path(ones, 0.5, true);
  // Each row is either dropped (0) or rescaled by 1/(1-p) = 2.
  EXPECT_TRUE(((y == 0) | (y == 2)).all().item<bool>());
  EXPECT_TRUE((y.select(1, 0).unsqueeze(1) == y).all().item<bool>());  // whole rows
  const double kept = (y.select(1, 0) == 2).to(torch::kFloat64).mean().item<double>();
  EXPECT_GT(kept, 0.4);
  EXPECT_LT(kept, 0.6);

  auto c = small("coswin");
  c.drop_path_rate = 0.5;
  torch::manual_seed(0);
  SwinTransformer with_dp(c);
  c.drop_path_rate = 0.0;
  SwinTransformer without(c);
  core::load_state_dict(*without, core::state_dict(*with_dp));
  with_dp->eval();
  without->eval();
  auto x = torch::randn({2, 3, 64, 64});
  {
    torch::NoGradGuard ng;
    EXPECT_TRUE(with_dp->forward(x).equal(without->forward(x)));
  }
  with_dp->train();
  torch::NoGradGuard ng;
  auto a = with_dp->forward(x), b = with_dp->forward(x);
  EXPECT_FALSE(a.equal(b));  // stochastic in training
}

TEST(Swin, LayerScaleParameters) {
  auto c = small("coswin");
  c.layer_scale_init = 1e-4;
  SwinTransformer m(c);
  auto sd = core::state_dict(*m);
  ASSERT_EQ(sd.count("layers.1.blocks.0.gamma_1"), 1u);
  EXPECT_EQ(sd.at("layers.1.blocks.0.gamma_2").sizes(), (std::vector<int64_t>{32}));
  EXPECT_TRUE(sd.at("layers.1.blocks.0.gamma_1").eq(1e-4f).all().item<bool>());
  EXPECT_EQ(core::state_dict(*SwinTransformer(small("coswin"))).count("layers.1.blocks.0.gamma_1"), 0u);
}

TEST(Swin, InferenceModeThenTrainingBackward) {
  // Cached index/mask tensors built under InferenceMode must still work with autograd.
  SwinTransformer m(small("swin"));
  auto x = torch::randn({1, 3, 60, 60});
  {
    c10::InferenceMode im;
    m->eval();
    (void)m->forward(x);
  }
  m->train();
  auto loss = m->forward(x).pow(2).sum();
  loss.backward();
  auto g = (*m->named_parameters().find("layers.0.blocks.1.attn.relative_position_bias_table")).grad();
  ASSERT_TRUE(g.defined());
  EXPECT_GT(g.abs().sum().item<double>(), 0.0);
}

}  // namespace

namespace {

// The reference formulation of the window layout: zero pad, roll by -shift, partition.
torch::Tensor windows_by_roll(const torch::Tensor& x, int64_t ws, int64_t shift) {
  const int64_t B = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
  const int64_t pb = (ws - H % ws) % ws, pr = (ws - W % ws) % ws, ph = H + pb, pw = W + pr;
  auto t = torch::constant_pad_nd(x, {0, 0, 0, pr, 0, pb}, 0);
  const int64_t sh = effective_shift(ph, ws, shift), sw = effective_shift(pw, ws, shift);
  if (sh || sw) t = torch::roll(t, {-sh, -sw}, {1, 2});
  return t.reshape({B, ph / ws, ws, pw / ws, ws, C}).permute({0, 1, 3, 2, 4, 5}).reshape({-1, ws * ws, C});
}

}  // namespace

TEST(Swin, WindowPlanEqualsPadRollPartitionWithGradients) {
  torch::manual_seed(3);
  // (H, W, shift): shifted and padded, padded with the shift dropped in one dimension, exact fit.
  for (auto [H, W, shift] : {std::tuple<int64_t, int64_t, int64_t>{9, 11, 2}, {5, 10, 2}, {8, 8, 2}, {8, 12, 0}}) {
    const int64_t B = 2, C = 3, ws = 4;
    auto x = torch::randn({B, H, W, C}, torch::kDouble).requires_grad_(true);
    const WindowPlan plan = window_plan(B, H, W, ws, shift, torch::kCPU);
    auto mine = gather_rows(x.reshape({B * H * W, C}), plan.to_windows, plan.to_map).view({-1, ws * ws, C});
    auto ref = windows_by_roll(x, ws, shift);
    ASSERT_EQ(mine.sizes(), ref.sizes()) << H << "x" << W;
    EXPECT_TRUE(torch::equal(mine, ref)) << H << "x" << W << " shift " << shift;
    // Gradient of a random linear function of the windows: the backward gather equals autograd
    // through pad/roll/permute.
    auto w = torch::randn(ref.sizes(), torch::kDouble);
    auto g_mine = torch::autograd::grad({(mine * w).sum()}, {x})[0];
    auto g_ref = torch::autograd::grad({(ref * w).sum()}, {x})[0];
    EXPECT_TRUE(torch::allclose(g_mine, g_ref, 0, 1e-12)) << H << "x" << W;
    // Back to the map: the inverse gather crops the padding and undoes the roll.
    auto y = torch::randn(ref.sizes(), torch::kDouble).requires_grad_(true);
    auto back = gather_rows(y.view({-1, C}), plan.to_map, plan.to_windows).view({B, H, W, C});
    const int64_t ph = plan.ph, pw = plan.pw;
    auto ref_back = y.view({B, ph / ws, pw / ws, ws, ws, C}).permute({0, 1, 3, 2, 4, 5}).reshape({B, ph, pw, C});
    if (plan.shift_h || plan.shift_w) ref_back = torch::roll(ref_back, {plan.shift_h, plan.shift_w}, {1, 2});
    ref_back = ref_back.slice(1, 0, H).slice(2, 0, W);
    EXPECT_TRUE(torch::equal(back, ref_back)) << H << "x" << W;
    auto w2 = torch::randn({B, H, W, C}, torch::kDouble);
    auto gb_mine = torch::autograd::grad({(back * w2).sum()}, {y})[0];
    auto gb_ref = torch::autograd::grad({(ref_back * w2).sum()}, {y})[0];
    EXPECT_TRUE(torch::allclose(gb_mine, gb_ref, 0, 1e-12)) << H << "x" << W;
  }
  EXPECT_THROW(gather_rows(torch::zeros({3}), torch::zeros({1}, torch::kLong), torch::zeros({3}, torch::kLong)), Error);
  EXPECT_THROW(window_plan(0, 4, 4, 2, 1, torch::kCPU), Error);
}

TEST(Swin, InferenceBiasCacheFollowsTheTable) {
  // The cached bias must follow a changed relative_position_bias_table (e.g. a loaded checkpoint).
  WindowAttentionOptions o;
  o.dim = 8;
  o.num_heads = 2;
  o.window = 2;
  o.shift = 1;
  WindowAttention a(o);
  a->eval();
  auto x = torch::randn({1, 4, 4, 8});
  torch::Tensor before, after, grad_path;
  {
    torch::InferenceMode g;
    before = a->forward(x);
  }
  {
    torch::NoGradGuard ng;
    // Random, not constant: a constant shift of every logit would leave the softmax unchanged.
    a->relative_position_bias_table.add_(torch::randn_like(a->relative_position_bias_table));
  }
  {
    torch::InferenceMode g;
    after = a->forward(x);
  }
  grad_path = a->forward(x);  // the autograd path builds the bias afresh
  EXPECT_FALSE(torch::allclose(before, after));
  EXPECT_TRUE(torch::allclose(after, grad_path.detach(), 1e-6, 1e-6));
}

}  // namespace test_swin
