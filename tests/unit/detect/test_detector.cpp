// The Detector module: named configs and their JSON, module names, forward shapes of every level,
// a loss that falls over a few optimizer steps on one synthetic image (a unit test of the module,
// not the training task), predict / COCO conversion, backbone loading and freezing.
#include <cstdlib>
#include <limits>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "florence/adapt/detect/detector.h"
#include "florence/adapt/detect/dyhead.h"
#include "florence/core/checkpoint.h"
#include "florence/core/error.h"
#include "florence/core/precision.h"
#include "florence/core/threads.h"
#include "florence/model/florence.h"
#include "florence/model/registry.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_detector {

using namespace florence;
using namespace florence::detect;

namespace {

// A 128 x 160 image with two flat rectangles on a dark background, and their boxes.
std::pair<torch::Tensor, DetectionTarget> synthetic_scene() {
  auto img = torch::full({1, 3, 128, 160}, -1.0);
  img.index_put_({0, 0, torch::indexing::Slice(20, 68), torch::indexing::Slice(16, 80)}, 1.5);   // red-ish box
  img.index_put_({0, 2, torch::indexing::Slice(70, 118), torch::indexing::Slice(96, 144)}, 1.5);  // blue-ish box
  DetectionTarget t{torch::tensor({{16.f, 20.f, 80.f, 68.f}, {96.f, 70.f, 144.f, 118.f}}), torch::tensor({0L, 2L})};
  return {img, t};
}

DetectorConfig small(const std::string& name, int64_t classes) {
  DetectorConfig c = resolve_detector(name);
  c.num_classes = classes;
  return c;
}

}  // namespace

class DetectorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { configure_threads(2); }
};

TEST_F(DetectorTest, NamedConfigsAndJsonRoundTrip) {
  for (const auto& n : detector_names()) {
    const auto c = resolve_detector(n);
    EXPECT_EQ(c.name, n);
    const auto back = detector_config_from_json(detector_config_to_json(c), "rt");
    EXPECT_EQ(detector_config_to_json(back), detector_config_to_json(c)) << n;
  }
  const auto t = resolve_detector("dyhead-t");
  EXPECT_EQ(t.first_level(), 3);  // CoSwin-T stage 1 has stride 8
  EXPECT_EQ(t.num_levels(), 5);   // P3..P7
  EXPECT_EQ(t.channels, 256);
  EXPECT_EQ(t.num_blocks, 6);
  const auto n = resolve_detector("dyhead-nano");
  EXPECT_EQ(n.first_level(), 3);
  EXPECT_EQ(n.num_levels(), 4);  // P3..P6
  auto j = detector_config_to_json(n);
  j["num_blokcs"] = 3;
  EXPECT_THROW(detector_config_from_json(j, "x.json"), Error);
  j = detector_config_to_json(n);
  j["in_stages"] = {0, 2};
  EXPECT_THROW(detector_config_from_json(j, "x.json"), Error);
  j = detector_config_to_json(n);
  j["channels"] = 40;  // not a multiple of 16
  EXPECT_THROW(detector_config_from_json(j, "x.json"), Error);
  // Out of range for the field's type: an error naming it (before: unchecked cast, undefined behaviour).
  for (const char* field : {"channels", "topk", "image_size"}) {
    j = detector_config_to_json(n);
    j[field] = 1e30;
    try {
      detector_config_from_json(j, "x.json");
      ADD_FAILURE() << field;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("x.json: field '") + field + "': 1e+30 is not an integer in range"),
                std::string::npos)
          << e.what();
    }
  }
  EXPECT_THROW(resolve_detector("dyhead-q"), Error);
  j = detector_config_to_json(n);
  j["offset_init"] = "zero";
  EXPECT_EQ(detector_config_from_json(j, "x.json").offset_init, "zero");
  j["offset_init"] = "kaiming";
  EXPECT_THROW(detector_config_from_json(j, "x.json"), Error);
}

TEST_F(DetectorTest, CoarseLevelOffsetRulesByHand) {
  // Level l is 5 x 4 (H x W), the coarser level 3 x 2. Value of channel c at (y, x): 100c + 10y + x.
  const auto c = torch::arange(27, torch::kDouble).view({1, 27, 1, 1}) * 100;
  const auto y = torch::arange(5, torch::kDouble).view({1, 1, 5, 1}) * 10;
  const auto x = torch::arange(4, torch::kDouble).view({1, 1, 1, 4});
  const auto om = c + y + x;                                  // [1, 27, 5, 4]
  const auto mask = om.narrow(1, 18, 9) / 10000;              // stands for the sigmoid mask
  // crop: the top-left 3 x 2 window.
  auto [o1, m1] = coarse_level_offsets(om, mask, 3, 2, CoarseOffsets::kCrop);
  EXPECT_EQ(o1.sizes(), (std::vector<int64_t>{1, 18, 3, 2}));
  EXPECT_DOUBLE_EQ(o1[0][4][2][1].item<double>(), 400 + 20 + 1);
  EXPECT_DOUBLE_EQ(m1[0][3][1][1].item<double>(), (2100 + 10 + 1) / 10000.0);
  // resample: rows 0, 2, 4 and columns 0, 2 (the same image points), offsets halved, mask as is.
  auto [o2, m2] = coarse_level_offsets(om, mask, 3, 2, CoarseOffsets::kResample);
  EXPECT_EQ(o2.sizes(), (std::vector<int64_t>{1, 18, 3, 2}));
  EXPECT_DOUBLE_EQ(o2[0][4][2][1].item<double>(), (400 + 40 + 2) / 2.0);
  EXPECT_DOUBLE_EQ(o2[0][17][1][0].item<double>(), (1700 + 20 + 0) / 2.0);
  EXPECT_DOUBLE_EQ(m2[0][3][1][1].item<double>(), (2100 + 20 + 2) / 10000.0);
  // reference: image 0's buffer read from its start as 18 x 3 x 2 (flat index k -> the k-th value).
  auto [o3, m3] = coarse_level_offsets(om, mask, 3, 2, CoarseOffsets::kReference);
  const auto flat = om.reshape({-1});
  EXPECT_DOUBLE_EQ(o3[0][1][0][0].item<double>(), flat[6].item<double>());  // channel 1 starts at 3 x 2 = 6
  EXPECT_DOUBLE_EQ(flat[6].item<double>(), 0 + 10 + 2);                    // which is (y 1, x 2) of channel 0
  // A coarser map that is not the stride-2 map of level l is refused by resample.
  EXPECT_THROW(coarse_level_offsets(om, mask, 2, 2, CoarseOffsets::kResample), Error);
  EXPECT_EQ(coarse_offsets_from_string("resample"), CoarseOffsets::kResample);
  EXPECT_EQ(to_string(CoarseOffsets::kResample), "resample");
  auto j = detector_config_to_json(small("dyhead-nano", 3));
  j["coarse_offsets"] = "resample";
  EXPECT_EQ(detector_config_from_json(j, "x.json").coarse_offsets, "resample");
  j["coarse_offsets"] = "nearest";
  EXPECT_THROW(detector_config_from_json(j, "x.json"), Error);
}

TEST_F(DetectorTest, ZeroOffsetInitStartsEachBlockAsAPlainConv) {
  DetectorConfig c = small("dyhead-nano", 3);
  c.offset_init = "zero";
  Detector d(c);
  const auto params = d->named_parameters();
  for (int64_t b = 0; b < c.num_blocks; ++b) {
    EXPECT_EQ(params[fmt::format("dyhead_tower.{}.offset.weight", b)].abs().max().item<double>(), 0.0);
    EXPECT_EQ(params[fmt::format("dyhead_tower.{}.offset.bias", b)].abs().max().item<double>(), 0.0);
  }
  Detector r(small("dyhead-nano", 3));  // "default": PyTorch's init, as the reference
  EXPECT_GT(r->named_parameters()["dyhead_tower.0.offset.weight"].abs().max().item<double>(), 0.0);
}

TEST_F(DetectorTest, ModuleNamesFollowDynamicHead) {
  Detector d(small("dyhead-nano", 3));
  const auto params = d->named_parameters();
  for (const char* k : {"fpn.fpn_lateral3.weight", "fpn.fpn_output4.bias", "fpn.top_block.p5.weight",
                        "fpn.top_block.p6.weight", "dyhead_tower.0.DyConv.0.conv.weight", "dyhead_tower.3.DyConv.2.bn.bias",
                        "dyhead_tower.1.AttnConv.1.weight", "dyhead_tower.1.relu.fc.0.weight", "dyhead_tower.2.relu.fc.2.bias",
                        "dyhead_tower.0.offset.weight", "head.cls_logits.weight", "head.bbox_pred.bias",
                        "head.centerness.weight", "head.scales.3.scale", "out_norm1.weight", "backbone.patch_embed.proj.weight"})
    EXPECT_TRUE(params.contains(k)) << k;
  EXPECT_EQ(params["dyhead_tower.0.offset.weight"].sizes(), (std::vector<int64_t>{27, 64, 3, 3}));
  EXPECT_NEAR(params["head.cls_logits.bias"][0].item<double>(), -std::log(99.0), 1e-6);  // prior 0.01
  Detector c(small("conv-nano", 3));
  const auto cp = c->named_parameters();
  EXPECT_TRUE(cp.contains("head.cls_tower.0.weight"));
  EXPECT_TRUE(cp.contains("head.bbox_tower.10.weight"));  // 4 x (conv, GN, ReLU): the 4th conv is index 9, its GN 10
  EXPECT_FALSE(cp.contains("dyhead_tower.0.offset.weight"));
}

TEST_F(DetectorTest, ForwardShapesPerLevel) {
  Detector d(small("dyhead-nano", 3));
  d->eval();
  torch::NoGradGuard ng;
  // 128 x 160: CoSwin stem 7x7/4 pad 2 -> 32 x 40; stage 1 (P3) 16 x 20, stage 2 (P4) 8 x 10;
  // P5 4 x 5, P6 2 x 3 (stride-2 convs round up).
  const auto out = d->forward(torch::randn({2, 3, 128, 160}));
  const std::vector<std::vector<int64_t>> hw = {{16, 20}, {8, 10}, {4, 5}, {2, 3}};
  ASSERT_EQ(out.cls.size(), 4u);
  for (size_t l = 0; l < 4; ++l) {
    EXPECT_EQ(out.cls[l].sizes(), (std::vector<int64_t>{2, 3, hw[l][0], hw[l][1]}));
    EXPECT_EQ(out.box[l].sizes(), (std::vector<int64_t>{2, 4, hw[l][0], hw[l][1]}));
    EXPECT_EQ(out.centerness[l].sizes(), (std::vector<int64_t>{2, 1, hw[l][0], hw[l][1]}));
  }
  const auto anchors = d->anchors(out);
  EXPECT_EQ(anchors[1].size(0), 80);
  // P4 (stride 16), first anchor centre (8, 8), side 4 x 16 = 64.
  EXPECT_TRUE(torch::allclose(anchors[1][0], torch::tensor({-24.f, -24.f, 40.f, 40.f})));
}

TEST_F(DetectorTest, LossFallsOverAFewStepsOnOneImage) {
  // Overfitting one image must drive the loss down for both heads. The curve is noisy step to step (focal loss
  // with few positives), so the check compares the best of the last 5 of 30 steps with the first step.
  // Measured 2026-12-05 (2 threads, FLORENCE_TEST_SEED 0-3): dyhead-nano ends at 0.49-0.52x, conv-nano 0.26-0.28x.
  // The old 12-step check (last < 0.7x) failed once in CI at 0.77x for dyhead-nano.
  const int64_t seed = std::getenv("FLORENCE_TEST_SEED") ? std::atoll(std::getenv("FLORENCE_TEST_SEED")) : 0;
  torch::manual_seed(seed);
  auto [img, target] = synthetic_scene();
  for (const std::string name : {"dyhead-nano", "dyhead-nano zero offsets", "conv-nano"}) {
    DetectorConfig cfg = small(name.substr(0, name.find(' ')), 3);
    if (name.find("zero") != std::string::npos) cfg.offset_init = "zero";
    Detector d(cfg);
    d->train();
    torch::optim::AdamW opt(d->parameters(), torch::optim::AdamWOptions(1e-3).weight_decay(0.0));
    constexpr int kSteps = 30;
    double first = 0, best_tail = std::numeric_limits<double>::infinity();
    int64_t pos = 0;
    for (int step = 0; step < kSteps; ++step) {
      opt.zero_grad();
      auto L = d->losses(img, {target});
      L.total.backward();
      opt.step();
      const double v = L.total.item<double>();
      ASSERT_TRUE(std::isfinite(v)) << name << " step " << step;
      if (step == 0) first = v, pos = L.num_pos;
      if (step >= kSteps - 5) best_tail = std::min(best_tail, v);
    }
    std::printf("[detector %s] loss %.4f -> %.4f (best of last 5) after %d AdamW steps (%ld positive anchors)\n",
                name.c_str(), first, best_tail, kSteps, long(pos));
    EXPECT_GT(pos, 0);
    EXPECT_LT(best_tail, 0.65 * first) << name;
  }
}

TEST_F(DetectorTest, PredictAndCocoResults) {
  torch::manual_seed(1);
  auto cfg = small("dyhead-nano", 3);
  cfg.score_threshold = 0.0;  // untrained logits sit at the 0.01 prior: keep them to exercise the path
  cfg.max_detections = 7;
  Detector d(cfg);
  d->eval();
  const auto dets = d->predict(torch::randn({2, 3, 128, 160}), {{120, 150}, {128, 160}});
  ASSERT_EQ(dets.size(), 2u);
  for (const auto& x : dets) {
    EXPECT_EQ(x.boxes.size(0), 7);
    EXPECT_GE(x.boxes.min().item<double>(), 0.0);
    EXPECT_TRUE((x.scores.slice(0, 1) <= x.scores.slice(0, 0, -1)).all().item<bool>());  // best first
  }
  EXPECT_LE(dets[0].boxes.select(1, 2).max().item<double>(), 150.0);  // clipped to the real width
  EXPECT_LE(dets[0].boxes.select(1, 3).max().item<double>(), 120.0);
  const auto res = to_coco_results(dets[0], 42, {10, 20, 30}, 2.0, 0.5);
  ASSERT_EQ(res.size(), 7u);
  const auto b0 = dets[0].boxes[0];
  EXPECT_EQ(res[0].image_id, 42);
  EXPECT_EQ(res[0].category_id, (std::vector<int64_t>{10, 20, 30})[size_t(dets[0].labels[0].item<int64_t>())]);
  EXPECT_NEAR(res[0].bbox[0], 2.0 * b0[0].item<double>(), 1e-4);
  EXPECT_NEAR(res[0].bbox[3], 0.5 * (b0[3] - b0[1]).item<double>(), 1e-4);
  EXPECT_THROW(to_coco_results(dets[0], 42, {10}, 1, 1), Error);
}

// --precision amp_bf16 (detect eval / predict): under bfloat16 autocast (the modulated deformable
// convolutions take their bfloat16 offsets in float32) the head's outputs follow float32's: the box
// deltas within 5% (relative L2, and not equal: bfloat16 ran), the class logits within 0.1; predict()
// decodes float32 boxes and scores.
TEST_F(DetectorTest, AmpBf16PredictFollowsFloat32) {
  torch::manual_seed(3);
  auto cfg = small("dyhead-nano", 3);
  cfg.score_threshold = 0.0;
  cfg.max_detections = 20;
  Detector d(cfg);
  d->eval();
  torch::NoGradGuard ng;
  const torch::Tensor x = torch::randn({1, 3, 128, 160});
  const HeadOutputs f32 = d->forward(x);
  HeadOutputs amp;
  {
    AutocastGuard guard(true, torch::kCPU);
    amp = d->forward(x);
  }
  ASSERT_EQ(amp.box.size(), f32.box.size());
  for (size_t l = 0; l < f32.box.size(); ++l) {
    const double rel = (amp.box[l].to(torch::kFloat) - f32.box[l]).norm().item<double>() / f32.box[l].norm().item<double>();
    EXPECT_LT(rel, 0.05) << "level " << l;
    EXPECT_GT(rel, 0.0) << "level " << l << ": bfloat16 did not run";
    EXPECT_LT((amp.cls[l].to(torch::kFloat) - f32.cls[l]).abs().max().item<double>(), 0.1) << "level " << l;
  }
  d->set_autocast_bf16(true);
  const auto dets = d->predict(x)[0];
  EXPECT_EQ(dets.boxes.scalar_type(), torch::kFloat);
  EXPECT_EQ(dets.scores.scalar_type(), torch::kFloat);
  EXPECT_EQ(dets.boxes.size(0), 20);
  d->set_autocast_bf16(false);
  EXPECT_THROW(adapter_autocast("bf16", torch::kCPU, "detect eval"), Error);
  EXPECT_FALSE(adapter_autocast("fp32", torch::kCPU, "detect eval"));
}

TEST_F(DetectorTest, ClassAgnosticModeIgnoresLabels) {
  auto cfg = small("dyhead-nano", 5);
  cfg.class_agnostic = true;
  Detector d(cfg);
  EXPECT_EQ(d->head->cls_logits->weight.size(0), 1);
  auto [img, target] = synthetic_scene();
  target.labels = torch::tensor({4L, 3L});  // would be out of range for 1 class if not ignored
  const auto L = d->losses(img, {target});
  EXPECT_TRUE(std::isfinite(L.total.item<double>()));
  EXPECT_THROW(d->losses(img, {}), Error);
}

TEST_F(DetectorTest, BackboneLoadsFromAFlorenceCheckpointAndFreezes) {
  model::FlorenceModel f(model::resolve_florence_config("florence-nano"));
  Detector d(small("dyhead-nano", 3));
  d->load_backbone(core::state_dict(*f));
  const auto a = core::state_dict(*d->backbone), b = core::state_dict(*f->image_encoder);
  for (const auto& [k, v] : b) EXPECT_TRUE(torch::equal(a.at(k), v)) << k;
  core::TensorMap bad = core::state_dict(*f);
  bad["image_encoder.extra.weight"] = torch::zeros({1});
  try {
    d->load_backbone(bad);
    FAIL() << "expected florence::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("extra.weight"), std::string::npos) << e.what();
  }
  d->set_backbone_trainable(false);
  for (const auto& p : d->backbone->parameters()) EXPECT_FALSE(p.requires_grad());
  EXPECT_TRUE(d->head->cls_logits->weight.requires_grad());
}

}  // namespace test_detector
