// Unit tests of Video CoSwin: inflation invariance (a still clip gives the 2D tower's feature),
// 3D window attention against a direct unwindowed reference, hand-checked layout / mask / index,
// replicate time padding of the 3D conv embedding, inflation of kernels and bias tables, state-dict
// names and shapes, config JSON and errors.
#include "florence/core/checkpoint.h"
#include "florence/core/error.h"
#include "florence/core/precision.h"
#include "florence/vision/swin.h"
#include "florence/vision/video_swin.h"
#include "florence/vision/video_swin_layers.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <string>

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_video_swin {

using namespace florence;
using namespace florence::vision;

namespace {

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no florence::Error thrown>";
}

SwinConfig tower(std::vector<int> depths, std::vector<int> heads, int window) {
  SwinConfig c;
  c.variant = "coswin";
  c.embed_dim = 16;
  c.depths = std::move(depths);
  c.num_heads = std::move(heads);
  c.window_size = window;
  c.drop_path_rate = 0.0;
  return c;
}

// A random 2D tower with non-trivial LayerNorms, biases and bias tables (so that a wrong
// inflation of any of them shows).
SwinTransformer random_2d(const SwinConfig& c, uint64_t seed) {
  torch::manual_seed(seed);
  SwinTransformer m(c);
  torch::NoGradGuard ng;
  for (auto& p : m->named_parameters()) {
    const std::string& k = p.key();
    if (k.find("norm") != std::string::npos && k.find(".weight") != std::string::npos) p.value().uniform_(0.5, 1.5);
    else if (k.find("relative_position_bias_table") != std::string::npos) p.value().normal_(0.0, 1.0);
    else if (k.find(".bias") != std::string::npos) p.value().uniform_(-0.2, 0.2);
  }
  m->eval();
  return m;
}

struct InvarianceCase {
  std::string name;
  SwinConfig image;
  int tube;
  TimeConvConfig merge;
  std::vector<std::array<int, 3>> windows;
  int frames, size;
};

// Direct reference of 3D shifted-window attention: full attention over all tokens of the padded,
// rolled map, with a pair allowed only when both tokens lie in the same window and the same shift
// region (and the key is not a padded time slice); bias from the table at the pair's offsets.
torch::Tensor reference_attention(WindowAttention3dImpl& m, const torch::Tensor& x) {
  const int64_t B = x.size(0), T = x.size(1), H = x.size(2), W = x.size(3), C = x.size(4);
  const auto& o = m.options;
  const Size3 size{T, H, W};
  Size3 win, sh, pad;
  for (int a = 0; a < 3; ++a) {
    const bool one = size[a] <= o.window[a];
    win[a] = one ? size[a] : o.window[a];
    sh[a] = one ? 0 : o.shift[a];
    pad[a] = (size[a] + win[a] - 1) / win[a] * win[a];
  }
  auto xp = torch::zeros({B, pad[0], pad[1], pad[2], C});
  xp.slice(1, 0, T).slice(2, 0, H).slice(3, 0, W).copy_(x);
  auto xr = torch::roll(xp, {-sh[0], -sh[1], -sh[2]}, {1, 2, 3});
  const int64_t n = pad[0] * pad[1] * pad[2], heads = o.num_heads, hd = C / heads;
  auto qkv = m.qkv(xr.reshape({B, n, C})).view({B, n, 3, heads, hd}).permute({2, 0, 3, 1, 4});
  auto q = qkv[0] / std::sqrt(double(hd)), k = qkv[1], v = qkv[2];
  auto logits = torch::matmul(q, k.transpose(-2, -1));  // [B, heads, n, n]
  auto region = [&](int a, int64_t p) -> int64_t {
    if (sh[a] == 0) return 0;
    return p < pad[a] - win[a] ? 0 : (p < pad[a] - sh[a] ? 1 : 2);
  };
  auto extra = torch::full({heads, n, n}, -std::numeric_limits<float>::infinity());
  auto table = m.relative_position_bias_table.detach();
  const int64_t sh_span = 2 * o.window[1] - 1, sw_span = 2 * o.window[2] - 1;
  auto acc = extra.accessor<float, 3>();
  auto tab = table.accessor<float, 2>();
  for (int64_t i = 0; i < n; ++i) {
    const Size3 pi{i / (pad[1] * pad[2]), (i / pad[2]) % pad[1], i % pad[2]};
    for (int64_t j = 0; j < n; ++j) {
      const Size3 pj{j / (pad[1] * pad[2]), (j / pad[2]) % pad[1], j % pad[2]};
      bool ok = (pj[0] + sh[0]) % pad[0] < T;  // the key is not a padded time slice
      for (int a = 0; a < 3 && ok; ++a) ok = pi[a] / win[a] == pj[a] / win[a] && region(a, pi[a]) == region(a, pj[a]);
      if (!ok) continue;
      const int64_t row = (pi[0] % win[0] - pj[0] % win[0] + o.window[0] - 1) * sh_span * sw_span +
                          (pi[1] % win[1] - pj[1] % win[1] + o.window[1] - 1) * sw_span +
                          (pi[2] % win[2] - pj[2] % win[2] + o.window[2] - 1);
      for (int64_t h = 0; h < heads; ++h) acc[h][i][j] = tab[row][h];
    }
  }
  auto attn = torch::softmax(logits + extra.unsqueeze(0), -1);
  auto out = m.proj(torch::matmul(attn, v).transpose(1, 2).reshape({B, n, C})).view({B, pad[0], pad[1], pad[2], C});
  out = torch::roll(out, {sh[0], sh[1], sh[2]}, {1, 2, 3});
  return out.slice(1, 0, T).slice(2, 0, H).slice(3, 0, W);
}

}  // namespace

// ------------------------------------------------------------------------------------------ layout

TEST(VideoWindowLayout, ShrinkRuleAndPadding) {
  // T = 3 > Wt = 2: padded to 4, shifted; H = 4 == Wh: one window, no shift; W = 9 > 4: padded 12.
  auto l = window_layout_3d({3, 4, 9}, {2, 4, 4}, {1, 2, 2});
  EXPECT_EQ(l.window, (Size3{2, 4, 4}));
  EXPECT_EQ(l.shift, (Size3{1, 0, 2}));
  EXPECT_EQ(l.padded, (Size3{4, 4, 12}));
  EXPECT_EQ(l.num_windows(), 2 * 1 * 3);
  EXPECT_TRUE(l.time_padded());
  // An axis smaller than the window shrinks to it.
  auto s = window_layout_3d({1, 2, 3}, {8, 7, 7}, {4, 3, 3});
  EXPECT_EQ(s.window, (Size3{1, 2, 3}));
  EXPECT_EQ(s.shift, (Size3{0, 0, 0}));
  EXPECT_FALSE(s.masked());
  EXPECT_NE(error_of([] { window_layout_3d({2, 2, 2}, {2, 2, 2}, {2, 0, 0}); }).find("shift"), std::string::npos);
  EXPECT_NE(error_of([] { window_layout_3d({0, 2, 2}, {2, 2, 2}, {0, 0, 0}); }).find(">= 1"), std::string::npos);
}

TEST(VideoWindowLayout, MaskByHand) {
  // T = 4, window 2, shift 1 (H, W: one window, no shift). Rolled time positions 0..3 have bands
  // 0, 0, 1, 2: window 0 (positions 0, 1) is one region; in window 1, position 2 (the old frames
  // 2) and 3 (frame 0, wrapped around) must not attend to each other.
  auto l = window_layout_3d({4, 1, 2}, {2, 1, 2}, {1, 0, 0});
  auto mask = shifted_window_mask_3d(l);
  ASSERT_EQ(mask.sizes(), (std::vector<int64_t>{2, 4, 4}));
  EXPECT_EQ(mask[0].abs().sum().item<float>(), 0.0f);
  // window 1 tokens: (t2, w0), (t2, w1), (t3, w0), (t3, w1)
  auto expected = torch::tensor({0, 0, -100, -100, 0, 0, -100, -100, -100, -100, 0, 0, -100, -100, 0, 0},
                                torch::kFloat32)
                      .view({4, 4});
  EXPECT_TRUE(torch::equal(mask[1], expected)) << mask[1];
}

TEST(VideoWindowLayout, PaddedTimeSlicesHaveTheirOwnLabel) {
  auto l = window_layout_3d({3, 1, 1}, {2, 1, 1}, {0, 0, 0});  // padded to 4, no shift
  auto labels = window_region_labels_3d(l);
  EXPECT_TRUE(torch::equal(labels, torch::tensor({0, 0, 0, 27}, torch::kLong).view({2, 2}))) << labels;
  EXPECT_TRUE(l.masked());
}

TEST(VideoRelativePosition, IndexByHand) {
  // Full window (2, 2, 2): spans 3 x 3 x 3, offset (dt, dh, dw) -> (dt+1)*9 + (dh+1)*3 + (dw+1).
  auto full = relative_position_index_3d({2, 2, 2}, {2, 2, 2});
  ASSERT_EQ(full.sizes(), (std::vector<int64_t>{8, 8}));
  EXPECT_EQ(full[0][0].item<int64_t>(), 13);  // (0, 0, 0)
  EXPECT_EQ(full[7][0].item<int64_t>(), 26);  // token 7 = (1, 1, 1): (+1, +1, +1)
  EXPECT_EQ(full[0][7].item<int64_t>(), 0);   // (-1, -1, -1)
  EXPECT_EQ(full[4][1].item<int64_t>(), 2 * 9 + 1 * 3 + 0);  // (1,0,0) - (0,0,1) = (+1, 0, -1)
  // A shrunk window (1, 1, 2) keeps its tokens' own offsets in the full table.
  auto shrunk = relative_position_index_3d({1, 1, 2}, {2, 2, 2});
  EXPECT_TRUE(torch::equal(shrunk, torch::tensor({13, 12, 14, 13}, torch::kLong).view({2, 2}))) << shrunk;
  EXPECT_NE(error_of([] { relative_position_index_3d({3, 1, 1}, {2, 2, 2}); }).find("within"), std::string::npos);
}

// ------------------------------------------------------------------------------- attention

TEST(VideoWindowAttention, MatchesDirectMaskedReference) {
  struct Case {
    Size3 size, window, shift;
  };
  const std::vector<Case> cases = {
      {{4, 6, 6}, {2, 3, 3}, {1, 1, 1}},  // shifted on every axis, no padding
      {{3, 5, 6}, {2, 3, 4}, {1, 1, 2}},  // padded time (masked) and space, shifted
      {{4, 6, 6}, {2, 3, 3}, {0, 0, 0}},  // plain windows
      {{2, 3, 3}, {4, 4, 4}, {2, 2, 2}},  // every axis shrinks: one window, no shift
      {{5, 4, 3}, {2, 4, 2}, {1, 2, 1}},  // H shrinks to one window, T and W shifted and padded
      {{3, 4, 4}, {2, 4, 4}, {0, 0, 0}},  // padded time without a shift: only its own label masks it
      {{5, 3, 3}, {4, 3, 3}, {2, 1, 1}},  // padded time spread over two shift bands
  };
  for (const auto& c : cases) {
    torch::manual_seed(7);
    WindowAttention3dOptions o;
    o.dim = 8;
    o.num_heads = 2;
    o.window = c.window;
    o.shift = c.shift;
    WindowAttention3d m(o);
    {
      torch::NoGradGuard ng;
      m->relative_position_bias_table.normal_(0.0, 1.0);  // strong bias: a misplaced row shows
      m->qkv->bias.uniform_(-0.5, 0.5);
    }
    auto x = torch::randn({2, c.size[0], c.size[1], c.size[2], 8});
    torch::NoGradGuard ng;
    auto got = m(x);
    auto want = reference_attention(*m, x);
    EXPECT_LE((got - want).abs().max().item<double>(), 1e-5)
        << "size " << c.size[0] << "x" << c.size[1] << "x" << c.size[2] << " window " << c.window[0] << ","
        << c.window[1] << "," << c.window[2];
  }
}

TEST(VideoWindowAttention, GradientsFlowThroughTheGathers) {
  torch::manual_seed(3);
  WindowAttention3dOptions o;
  o.dim = 8;
  o.num_heads = 2;
  o.window = {2, 2, 2};
  o.shift = {1, 1, 1};
  WindowAttention3d m(o);
  auto x = torch::randn({1, 3, 3, 3, 8}, torch::requires_grad());
  m(x).pow(2).sum().backward();
  ASSERT_TRUE(x.grad().defined());
  EXPECT_GT(x.grad().abs().sum().item<double>(), 0.0);
  EXPECT_GT(m->relative_position_bias_table.grad().abs().sum().item<double>(), 0.0);
}

// --------------------------------------------------------------------------- conv embedding

TEST(VideoConvEmbed, ReplicatesEndFramesAndKeepsEveryFrame) {
  torch::manual_seed(5);
  ConvEmbed3d e(2, 4, Size3{3, 3, 3}, Size3{2, 1, 1}, Size3{1, 1, 1}, /*with_norm=*/false, 1e-5);
  auto x = torch::randn({1, 2, 4, 5, 5});
  torch::NoGradGuard ng;
  auto y = e->forward_ncthw(x);
  ASSERT_EQ(y.sizes(), (std::vector<int64_t>{1, 2, 5, 5, 4}));
  // T' = max(floor((4 + 2 - 3) / 2), ceil((4 + 1 - 3) / 2)) + 1 = 2: frames [0, 0, 1, 2, 3] (one
  // replicated in front; the end needs none: the second window already reaches frame 3).
  auto idx = torch::tensor({0, 0, 1, 2, 3}, torch::kLong);
  auto want = torch::conv3d(x.index_select(2, idx), e->proj->weight, e->proj->bias, {2, 1, 1}, {0, 1, 1});
  EXPECT_LE((y.permute({0, 4, 1, 2, 3}) - want).abs().max().item<double>(), 1e-6);
  // The tokenizer: tube 2 on 5 frames -> 3 tokens (the last tube repeats frame 4).
  ConvEmbed3d tok(2, 4, Size3{2, 3, 3}, Size3{2, 2, 2}, Size3{0, 1, 1}, true, 1e-5);
  EXPECT_EQ(tok->forward_ncthw(torch::randn({1, 2, 5, 8, 8})).size(1), 3);
  EXPECT_EQ(tok->forward_ncthw(torch::randn({1, 2, 1, 8, 8})).size(1), 1);
  // Stride 1 keeps every position (a "same" convolution in time): 3 frames in, 3 tokens out,
  // the first and last from replicated end frames.
  ConvEmbed3d same(2, 4, Size3{3, 3, 3}, Size3{1, 1, 1}, Size3{1, 1, 1}, false, 1e-5);
  auto x3 = torch::randn({1, 2, 3, 4, 4});
  auto y3 = same->forward_ncthw(x3).permute({0, 4, 1, 2, 3});
  auto want3 = torch::conv3d(x3.index_select(2, torch::tensor({0, 0, 1, 2, 2}, torch::kLong)), same->proj->weight,
                             same->proj->bias, {1, 1, 1}, {0, 1, 1});
  EXPECT_LE((y3 - want3).abs().max().item<double>(), 1e-6);
  EXPECT_NE(error_of([&] { tok->forward_ncthw(torch::randn({1, 2, 4, 8})); }).find("5-D"), std::string::npos);
}

// ---------------------------------------------------------------------------- inflation

TEST(VideoInflation, StillClipGivesTheImageFeature) {
  std::vector<InvarianceCase> cases = {
      // florence-nano's shape at 64 px, 8 frames: stage 2's odd block shifts time (T' = 4 > Wt = 2).
      {"nano-like", tower({1, 2, 2}, {1, 2, 4}, 4), 2, {3, 1, 1}, {{2, 4, 4}, {2, 4, 4}, {4, 4, 4}}, 8, 64},
      // T' = 3 with Wt = 2: padded time slices (masked) and a temporal shift in every stage.
      {"padded-time", tower({2, 2, 2}, {1, 2, 4}, 4), 2, {3, 1, 1}, {{2, 4, 4}, {2, 4, 4}, {2, 4, 4}}, 6, 64},
      // Odd frame count (the tokenizer repeats the last frame) and time downsampled by the merging.
      {"time-stride", tower({2, 2, 2}, {1, 2, 4}, 4), 2, {3, 2, 1}, {{2, 4, 4}, {2, 4, 4}, {2, 4, 4}}, 5, 64},
      // Four stages, window 2, dynamic temporal windows 2-4-8-8 over T' = 8.
      {"four-stage", tower({2, 2, 2, 2}, {1, 2, 4, 8}, 2), 2, {3, 1, 1}, {{2, 2, 2}, {4, 2, 2}, {8, 2, 2}, {8, 2, 2}},
       16, 64},
      // 80 px: maps 20, 10, 5 with window 4 -> spatial padding (as the 2D tower), tube 4.
      {"spatial-padding", tower({2, 2, 2}, {1, 2, 4}, 4), 4, {3, 1, 1}, {{2, 4, 4}, {2, 4, 4}, {2, 4, 4}}, 12, 80},
  };
  for (auto& c : cases) {
    SwinTransformer m2d = random_2d(c.image, 11);
    VideoSwinConfig vc;
    vc.image = c.image;
    vc.tube = c.tube;
    vc.merge = c.merge;
    vc.windows = c.windows;
    vc.num_frames = c.frames;
    VideoSwinTransformer m3d(vc);
    load_inflated(m3d, core::state_dict(*m2d));
    m3d->eval();
    torch::manual_seed(12);
    auto frame = torch::randn({2, 3, c.size, c.size});
    torch::NoGradGuard ng;
    auto want = m2d(frame);
    auto got = m3d(frame.unsqueeze(2).expand({2, 3, c.frames, c.size, c.size}).contiguous());
    ASSERT_EQ(got.sizes(), want.sizes()) << c.name;
    EXPECT_LE((got - want).abs().max().item<double>(), 1e-4) << c.name;
    EXPECT_GT(want.abs().mean().item<double>(), 0.1) << c.name;  // a real feature, not ~0
  }
}

/// A random 3-stage tower (64 px, window 4) inflated with temporal windows 2-2-4, in eval mode.
VideoSwinTransformer inflated_nano_like(uint64_t seed) {
  SwinConfig im = tower({1, 2, 2}, {1, 2, 4}, 4);
  SwinTransformer m2d = random_2d(im, seed);
  VideoSwinConfig vc;
  vc.image = im;
  vc.windows = {{2, 4, 4}, {2, 4, 4}, {4, 4, 4}};
  VideoSwinTransformer m3d(vc);
  load_inflated(m3d, core::state_dict(*m2d));
  m3d->eval();
  return m3d;
}

TEST(VideoInflation, FreshlyInflatedModelCannotTellTimeReversal) {
  // Every inflated piece is symmetric in time (equal kernel taps, a bias table equal for +dt and
  // -dt) and with T' = 4 and Wt = 2 the windows map onto windows under t -> 3 - t: the inflated
  // model gives a clip and its reverse the same feature (left vs right motion needs video
  // training, docs/video.md). A clip with motion still differs from a still clip.
  VideoSwinTransformer m3d = inflated_nano_like(21);
  torch::NoGradGuard ng;
  auto clip = torch::randn({1, 3, 8, 64, 64});
  auto f = m3d(clip);
  EXPECT_LE((f - m3d(clip.flip(2))).abs().max().item<double>(), 1e-4);
  auto still = clip.select(2, 0).unsqueeze(2).expand({1, 3, 8, 64, 64}).contiguous();
  EXPECT_GT((f - m3d(still)).abs().max().item<double>(), 1e-2);
}

// --precision amp_bf16 (video eval): the clip's class scores under bfloat16 autocast follow float32's
// within 5% (relative L2).
TEST(VideoInflation, AmpBf16FollowsFloat32) {
  VideoSwinTransformer m3d = inflated_nano_like(31);
  torch::NoGradGuard ng;
  torch::manual_seed(6);
  const auto clip = torch::randn({2, 3, 8, 64, 64});
  const torch::Tensor f32 = m3d(clip);
  torch::Tensor amp;
  {
    florence::AutocastGuard guard(true, torch::kCPU);
    amp = m3d(clip);
  }
  // (the final LayerNorm runs in float32 under autocast, so the pooled feature is float32)
  const double rel = (amp.to(torch::kFloat) - f32).norm().item<double>() / f32.norm().item<double>();
  EXPECT_LT(rel, 0.05);
  EXPECT_GT(rel, 0.0);
}

TEST(VideoInflation, KernelsAndTables) {
  SwinConfig im = tower({2, 2}, {1, 2}, 3);
  SwinTransformer m2d = random_2d(im, 4);
  auto sd = core::state_dict(*m2d);
  VideoSwinConfig vc;
  vc.image = im;
  vc.tube = 2;
  vc.merge = {3, 1, 1};
  vc.windows = {{2, 3, 3}, {3, 5, 5}};  // stage 1: the 2D window; stage 2: a larger spatial window
  auto v = inflate_from_2d(sd, vc);
  const auto& w2 = sd.at("patch_embed.proj.weight");
  const auto& w3 = v.at("patch_embed.proj.weight");
  ASSERT_EQ(w3.sizes(), (std::vector<int64_t>{16, 3, 2, 7, 7}));
  EXPECT_TRUE(torch::allclose(w3.select(2, 0), w2 / 2.0));
  EXPECT_TRUE(torch::allclose(w3.select(2, 1), w2 / 2.0));
  const auto& d3 = v.at("layers.0.downsample.proj.weight");
  ASSERT_EQ(d3.sizes(), (std::vector<int64_t>{32, 16, 3, 3, 3}));
  EXPECT_TRUE(torch::allclose(d3.sum(2), sd.at("layers.0.downsample.proj.weight"), 1e-6, 1e-6));
  // Stage 1 table: 3 temporal copies of the 25-row 2D table.
  const auto& t2 = sd.at("layers.0.blocks.1.attn.relative_position_bias_table");
  const auto& t3 = v.at("layers.0.blocks.1.attn.relative_position_bias_table");
  ASSERT_EQ(t3.sizes(), (std::vector<int64_t>{3 * 25, 1}));
  for (int k = 0; k < 3; ++k) EXPECT_TRUE(torch::equal(t3.slice(0, 25 * k, 25 * (k + 1)), t2));
  // Stage 2 (window 5 vs the 2D 3): bicubic resize to 9 x 9, 5 temporal copies; a constant
  // table stays constant under the resize.
  auto flat = sd;
  flat.at("layers.1.blocks.0.attn.relative_position_bias_table") = torch::full({25, 2}, 0.25);
  auto r = inflate_from_2d(flat, vc).at("layers.1.blocks.0.attn.relative_position_bias_table");
  ASSERT_EQ(r.sizes(), (std::vector<int64_t>{5 * 81, 2}));
  EXPECT_LE((r - 0.25).abs().max().item<double>(), 1e-6);
  // Everything else is inherited as it is.
  EXPECT_TRUE(torch::equal(v.at("layers.1.blocks.0.attn.qkv.weight"), sd.at("layers.1.blocks.0.attn.qkv.weight")));
  EXPECT_TRUE(torch::equal(v.at("norm.weight"), sd.at("norm.weight")));
  // Errors name the key.
  auto bad = sd;
  bad.erase("patch_embed.proj.weight");
  EXPECT_NE(error_of([&] { inflate_from_2d(bad, vc); }).find("patch_embed.proj.weight"), std::string::npos);
  bad = sd;
  bad.at("layers.0.blocks.0.attn.relative_position_bias_table") = torch::zeros({49, 1});
  EXPECT_NE(error_of([&] { inflate_from_2d(bad, vc); }).find("layers.0.blocks.0.attn.relative_position_bias_table"),
            std::string::npos);
}

TEST(VideoInflation, StateDictNamesAndShapesMirrorThe2DTower) {
  SwinConfig im = tower({1, 2, 2}, {1, 2, 4}, 4);
  SwinTransformer m2d(im);
  VideoSwinConfig vc;
  vc.image = im;
  VideoSwinTransformer m3d(vc);
  auto s2 = core::state_dict(*m2d), s3 = core::state_dict(*m3d);
  ASSERT_EQ(s2.size(), s3.size());
  for (const auto& [k, t] : s2) {
    ASSERT_TRUE(s3.count(k)) << k;
    const auto& u = s3.at(k);
    if (k == "patch_embed.proj.weight" || k.find("downsample.proj.weight") != std::string::npos) {
      EXPECT_EQ(u.dim(), 5) << k;
      EXPECT_EQ(u.size(0), t.size(0)) << k;
    } else if (k.find("relative_position_bias_table") != std::string::npos) {
      const int wt = k.rfind("layers.2", 0) == 0 ? 8 : 2;  // the default rule: (2, W, W) ... (8, W, W)
      EXPECT_EQ(u.sizes(), (std::vector<int64_t>{(2 * wt - 1) * 49, t.size(1)})) << k;
    } else {
      EXPECT_EQ(u.sizes(), t.sizes()) << k;
    }
  }
  EXPECT_TRUE(s3.count("layers.1.blocks.1.attn.relative_position_bias_table"));
  EXPECT_TRUE(s3.count("layers.0.downsample.norm.weight"));
}

TEST(VideoInflation, HeadIsKeptOnlyWhenItFits) {
  SwinConfig im = tower({1, 1}, {1, 2}, 2);
  VideoSwinConfig vc;
  vc.image = im;
  vc.num_classes = 5;
  SwinTransformer m2d = random_2d(im, 2);
  VideoSwinTransformer m3d(vc);
  auto head_before = m3d->named_parameters()["head.weight"].clone();
  load_inflated(m3d, core::state_dict(*m2d));  // the 2D tower has no head: the fresh one stays
  EXPECT_TRUE(torch::equal(m3d->named_parameters()["head.weight"], head_before));
  auto logits = m3d(torch::randn({1, 3, 4, 32, 32}));
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{1, 5}));
}

// ------------------------------------------------------------------------------ config / model

TEST(VideoSwinConfigTest, JsonRoundTripAndErrors) {
  VideoSwinConfig c;
  c.image = tower({1, 2, 2}, {1, 2, 4}, 4);
  c.tube = 4;
  c.merge = {3, 2, 1};
  c.windows = {{2, 4, 4}, {2, 4, 4}, {4, 4, 4}};
  c.num_frames = 16;
  c.num_classes = 7;
  auto back = VideoSwinConfig::from_json(c.to_json());
  EXPECT_EQ(back.to_json(), c.to_json());
  EXPECT_EQ(back.window(2), (std::array<int, 3>{4, 4, 4}));
  auto j = c.to_json();
  j["frames"] = 3;
  EXPECT_NE(error_of([&] { VideoSwinConfig::from_json(j); }).find("'frames'"), std::string::npos);
  auto bad = c;
  bad.windows.pop_back();
  EXPECT_NE(error_of([&] { bad.validate(); }).find("windows has 2 entries for 3 stages"), std::string::npos);
  bad = c;
  bad.image.variant = "swin";
  EXPECT_NE(error_of([&] { bad.validate(); }).find("coswin"), std::string::npos);
  bad = c;
  bad.tube = 0;
  EXPECT_NE(error_of([&] { bad.validate(); }).find("tube"), std::string::npos);
  // The default window rule: (2, W, W) early, (8, W, W) in the last stage.
  VideoSwinConfig d;
  d.image = tower({1, 1, 1}, {1, 2, 4}, 7);
  EXPECT_EQ(d.window(0), (std::array<int, 3>{2, 7, 7}));
  EXPECT_EQ(d.window(2), (std::array<int, 3>{8, 7, 7}));
}

TEST(VideoSwinModel, PyramidShapesAndInputErrors) {
  VideoSwinConfig c;
  c.image = tower({1, 2, 2}, {1, 2, 4}, 4);
  c.merge = {3, 2, 1};
  VideoSwinTransformer m(c);
  m->eval();
  torch::NoGradGuard ng;
  std::vector<torch::Tensor> stages;
  auto f = m->forward_features(torch::randn({2, 3, 8, 64, 64}), &stages);
  EXPECT_EQ(f.sizes(), (std::vector<int64_t>{2, 64}));
  ASSERT_EQ(stages.size(), 3u);
  EXPECT_EQ(stages[0].sizes(), (std::vector<int64_t>{2, 16, 4, 16, 16}));
  EXPECT_EQ(stages[1].sizes(), (std::vector<int64_t>{2, 32, 2, 8, 8}));
  EXPECT_EQ(stages[2].sizes(), (std::vector<int64_t>{2, 64, 1, 4, 4}));
  EXPECT_NE(error_of([&] { m(torch::randn({2, 3, 64, 64})); }).find("[B, 3, T, H, W]"), std::string::npos);
  EXPECT_NE(error_of([&] { m(torch::randn({1, 3, 2, 2, 2})); }).find("smaller than kernel"), std::string::npos);
}

}  // namespace test_video_swin
