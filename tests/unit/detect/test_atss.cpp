// ATSS pieces on hand-made anchors and boxes: anchors, box coding, the adaptive assignment
// (per-level top-k, mean + std threshold, centre inside, highest IoU wins), losses and their
// normalisation, post-processing and NMS. Every expected value is worked out in the comments.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "florence/adapt/detect/atss.h"
#include "florence/adapt/detect/box_ops.h"
#include "florence/core/error.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_atss {

using namespace florence::detect;

namespace {

torch::Tensor boxes(std::vector<std::array<double, 4>> b) {
  auto t = torch::empty({int64_t(b.size()), 4}, torch::kDouble);
  for (size_t i = 0; i < b.size(); ++i)
    for (int k = 0; k < 4; ++k) t[int64_t(i)][k] = b[i][size_t(k)];
  return t;
}

DetectionTarget target(std::vector<std::array<double, 4>> b, std::vector<int64_t> labels) {
  return {boxes(std::move(b)).to(torch::kFloat), torch::tensor(labels, torch::kLong)};
}

std::vector<int64_t> vec(const torch::Tensor& t) {
  auto c = t.to(torch::kLong).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

}  // namespace

TEST(Atss, AnchorsAreCentredOnCellsRowMajor) {
  // 2 rows x 3 columns, stride 8, side 8 x 8 = 64: centres (4, 4), (12, 4), (20, 4), (4, 12), ...
  const auto a = level_anchors(2, 3, 8, 8.0);
  ASSERT_EQ(a.sizes(), (std::vector<int64_t>{6, 4}));
  EXPECT_TRUE(torch::allclose(a[0], torch::tensor({-28.f, -28.f, 36.f, 36.f})));
  EXPECT_TRUE(torch::allclose(a[1], torch::tensor({-20.f, -28.f, 44.f, 36.f})));
  EXPECT_TRUE(torch::allclose(a[3], torch::tensor({-28.f, -20.f, 36.f, 44.f})));
}

TEST(Atss, BoxCoderByHandAndRoundTrip) {
  // anchor [0,0,10,10]: centre (5,5), 10x10; box [5,5,25,15]: centre (15,10), 20x10.
  // deltas = (10 * 10/10, 10 * 5/10, 5 log 2, 5 log 1) = (10, 5, 3.4657, 0).
  BoxCoder c;
  const auto d = c.encode(boxes({{0, 0, 10, 10}}), boxes({{5, 5, 25, 15}}));
  EXPECT_NEAR(d[0][0].item<double>(), 10.0, 1e-12);
  EXPECT_NEAR(d[0][1].item<double>(), 5.0, 1e-12);
  EXPECT_NEAR(d[0][2].item<double>(), 5 * std::log(2.0), 1e-12);
  EXPECT_NEAR(d[0][3].item<double>(), 0.0, 1e-12);
  EXPECT_TRUE(torch::allclose(c.decode(d, boxes({{0, 0, 10, 10}})), boxes({{5, 5, 25, 15}})));
  // A huge size delta is clamped at log(1000/16): width 10 * 62.5 = 625.
  const auto big = c.decode(torch::tensor({{0.0, 0.0, 1000.0, 0.0}}, torch::kDouble), boxes({{0, 0, 10, 10}}));
  EXPECT_NEAR((big[0][2] - big[0][0]).item<double>(), 625.0, 1e-9);
}

TEST(Atss, AssignmentUsesTheAdaptiveThreshold) {
  // Level 0: A0..A3, 10x10 side by side; level 1: B0 = [0,0,20,10] (equal to the GT), B1 [20,0,40,20].
  // GT [0,0,20,10], centre (10,5). topk 2 per level:
  //   level 0: centre distances 5, 5, 15, 25 -> A0, A1 (IoU 100/200 = 0.5 each);
  //   level 1: both (B0 IoU 1, B1 IoU 0).
  // Candidate IoUs [0.5, 0.5, 1, 0]: mean 0.5, unbiased std sqrt(0.5/3) = 0.408 -> threshold 0.908:
  // only B0 is positive (its centre (10,5) is inside). A0/A1 (IoU 0.5) are not.
  std::vector<torch::Tensor> anchors = {boxes({{0, 0, 10, 10}, {10, 0, 20, 10}, {20, 0, 30, 10}, {30, 0, 40, 10}}),
                                        boxes({{0, 0, 20, 10}, {20, 0, 40, 20}})};
  const auto a = atss_assign(anchors, target({{0, 0, 20, 10}}, {3}), 2);
  EXPECT_EQ(vec(a.labels), (std::vector<int64_t>{0, 0, 0, 0, 4, 0}));  // class 3 -> label 4
  EXPECT_EQ(vec(a.matched), (std::vector<int64_t>{-1, -1, -1, -1, 0, -1}));
  // Without level 1, the candidates A0, A1 have IoUs [0.5, 0.5]: std 0, threshold 0.5: both positive.
  const auto b = atss_assign({anchors[0]}, target({{0, 0, 20, 10}}, {3}), 2);
  EXPECT_EQ(vec(b.labels), (std::vector<int64_t>{4, 4, 0, 0}));
}

TEST(Atss, AssignmentRequiresTheAnchorCentreInsideTheBox) {
  // A0 [0,0,10,10] (centre (5,5)) and two far anchors (IoU 0). GT [4.995,0,10,10]: IoU with A0
  // 50.05/100 = 0.5005; candidates [0.5005, 0, 0]: mean 0.167, std 0.289 -> threshold 0.456, so A0
  // passes the IoU test, but its centre is only 0.005 inside (not > 0.01): rejected. With GT
  // [4.9,0,10,10] (IoU 0.51, margin 0.1) it is positive.
  std::vector<torch::Tensor> anchors = {boxes({{0, 0, 10, 10}, {100, 0, 110, 10}, {200, 0, 210, 10}})};
  EXPECT_EQ(vec(atss_assign(anchors, target({{4.995, 0, 10, 10}}, {0}), 3).labels), (std::vector<int64_t>{0, 0, 0}));
  EXPECT_EQ(vec(atss_assign(anchors, target({{4.9, 0, 10, 10}}, {0}), 3).labels), (std::vector<int64_t>{1, 0, 0}));
}

TEST(Atss, AnchorPositiveForTwoBoxesTakesTheHigherIou) {
  // Anchors A0 [0,0,10,10], A1, A2 far. GT0 [0,0,10,10] (IoU 1 with A0), GT1 [0,0,10,12]
  // (IoU 100/120 = 0.833). Per GT, candidates [iou, 0, 0]: thresholds 1/3 + 0.577 = 0.911 and
  // 0.278 + 0.481 = 0.759: A0 is positive for both; it takes GT0 (IoU 1 > 0.833), label of GT0.
  std::vector<torch::Tensor> anchors = {boxes({{0, 0, 10, 10}, {100, 0, 110, 10}, {200, 0, 210, 10}})};
  const auto a = atss_assign(anchors, target({{0, 0, 10, 10}, {0, 0, 10, 12}}, {2, 5}), 3);
  EXPECT_EQ(vec(a.labels), (std::vector<int64_t>{3, 0, 0}));
  EXPECT_EQ(vec(a.matched), (std::vector<int64_t>{0, -1, -1}));
  // Swapping the GT order does not change the winner.
  const auto b = atss_assign(anchors, target({{0, 0, 10, 12}, {0, 0, 10, 10}}, {5, 2}), 3);
  EXPECT_EQ(vec(b.labels), (std::vector<int64_t>{3, 0, 0}));
  EXPECT_EQ(vec(b.matched), (std::vector<int64_t>{1, -1, -1}));
  // No GT: everything background.
  const auto e = atss_assign(anchors, {torch::zeros({0, 4}), torch::zeros({0}, torch::kLong)}, 3);
  EXPECT_EQ(vec(e.labels), (std::vector<int64_t>{0, 0, 0}));
}

TEST(Atss, LossPiecesByHand) {
  // Focal loss at logit 0: p = 1/2, BCE = ln 2, (1 - p_t)^2 = 1/4; alpha 0.25 for a positive, 0.75
  // for a negative.
  const auto f = sigmoid_focal_loss(torch::zeros({2}, torch::kDouble), torch::tensor({1.0, 0.0}, torch::kDouble));
  EXPECT_NEAR(f[0].item<double>(), 0.25 * 0.25 * std::log(2.0), 1e-12);
  EXPECT_NEAR(f[1].item<double>(), 0.75 * 0.25 * std::log(2.0), 1e-12);
  // GIoU: half-overlapping squares IoU 50/150 = 1/3, enclosing = union -> loss 2/3; disjoint
  // [0,0,10,10] / [20,0,30,10]: IoU 0, enclosing 300, union 200 -> GIoU -1/3, loss 4/3.
  const auto g = giou_loss(boxes({{0, 0, 10, 10}, {0, 0, 10, 10}}), boxes({{5, 0, 15, 10}, {20, 0, 30, 10}}));
  EXPECT_NEAR(g[0].item<double>(), 2.0 / 3.0, 1e-8);
  EXPECT_NEAR(g[1].item<double>(), 4.0 / 3.0, 1e-8);
  // Centerness: anchor centre (5,5) in [0,0,20,10]: l/r = 5/15, t/b = 5/5 -> sqrt(1/3).
  EXPECT_NEAR(centerness_target(boxes({{0, 0, 10, 10}}), boxes({{0, 0, 20, 10}}))[0].item<double>(),
              std::sqrt(1.0 / 3.0), 1e-12);
}

TEST(Atss, LossesAndTheirNormalisationByHand) {
  // One image, one level of 3 anchors (as a 1x3 map), 2 classes, all logits 0:
  //   A0 = GT [0,0,10,10] (IoU 1), A1 [5,0,15,10] and A2 [-5,0,5,10] (IoU 1/3 each); topk 3:
  //   mean 5/9, std 0.385 -> threshold 0.940: A0 alone is positive (class 1). P = 1.
  // cls: one positive entry 0.0625 ln2 and five negatives 5 * 0.1875 ln2: sum = ln 2, / P = ln 2.
  // box: A0's deltas (5, 0, 5 ln 2, 0) decode to [0,0,20,10]; GIoU loss vs [0,0,10,10] = 1/2;
  //   centerness target 1 (anchor centre (5,5) is the GT centre) -> 2 * (1 * 1/2) / 1 = 1.
  // ctr: BCE(0, 1) = ln 2, / P = ln 2.
  HeadOutputs out;
  out.cls = {torch::zeros({1, 2, 1, 3}, torch::kDouble)};
  auto box = torch::zeros({1, 4, 1, 3}, torch::kDouble);
  box[0][0][0][0] = 5.0;
  box[0][2][0][0] = 5 * std::log(2.0);
  out.box = {box};
  out.centerness = {torch::zeros({1, 1, 1, 3}, torch::kDouble)};
  const std::vector<torch::Tensor> anchors = {boxes({{0, 0, 10, 10}, {5, 0, 15, 10}, {-5, 0, 5, 10}})};
  ATSSLossOptions o;
  o.topk = 3;
  const auto L = atss_losses(out, anchors, {target({{0, 0, 10, 10}}, {1})}, o);
  EXPECT_EQ(L.num_pos, 1);
  EXPECT_NEAR(L.cls.item<double>(), std::log(2.0), 1e-9);
  EXPECT_NEAR(L.box.item<double>(), 1.0, 1e-6);
  EXPECT_NEAR(L.centerness.item<double>(), std::log(2.0), 1e-9);
  EXPECT_NEAR(L.total.item<double>(), 1.0 + 2 * std::log(2.0), 1e-6);
  // No GT: 6 negatives 0.1875 ln 2 each, normalised by max(P, 1) = 1; box and ctr 0.
  const auto E = atss_losses(out, anchors, {{torch::zeros({0, 4}), torch::zeros({0}, torch::kLong)}}, o);
  EXPECT_EQ(E.num_pos, 0);
  EXPECT_NEAR(E.cls.item<double>(), 6 * 0.1875 * std::log(2.0), 1e-9);
  EXPECT_EQ(E.box.item<double>(), 0.0);
  EXPECT_EQ(E.centerness.item<double>(), 0.0);
  // Two images, the positive one twice: P = 2, cls sum doubles -> cls still ln 2; box averages.
  out.cls = {torch::zeros({2, 2, 1, 3}, torch::kDouble)};
  out.box = {torch::cat({box, box})};
  out.centerness = {torch::zeros({2, 1, 1, 3}, torch::kDouble)};
  const auto T = atss_losses(out, anchors, {target({{0, 0, 10, 10}}, {1}), target({{0, 0, 10, 10}}, {1})}, o);
  EXPECT_EQ(T.num_pos, 2);
  EXPECT_NEAR(T.cls.item<double>(), std::log(2.0), 1e-9);
  EXPECT_NEAR(T.box.item<double>(), 1.0, 1e-6);
  // Bad targets are named.
  EXPECT_THROW(atss_losses(out, anchors, {target({{0, 0, 10, 10}}, {1})}, o), florence::Error);  // 1 target, 2 images
  EXPECT_THROW(atss_losses(out, anchors, {target({{0, 0, 10, 10}}, {2}), target({{0, 0, 10, 10}}, {1})}, o),
               florence::Error);  // label 2 of 2 classes
  EXPECT_THROW(atss_losses(out, anchors, {target({{10, 0, 0, 10}}, {1}), target({{0, 0, 10, 10}}, {1})}, o),
               florence::Error);  // x2 < x1
}

TEST(Atss, NmsByHand) {
  // b0 (0.9) and b1 (0.8) overlap with IoU 90/110 = 0.818 > 0.6: b1 goes; b2 (0.7) is apart.
  const auto b = boxes({{0, 0, 10, 10}, {1, 0, 11, 10}, {20, 20, 30, 30}});
  const auto s = torch::tensor({0.9, 0.8, 0.7}, torch::kDouble);
  EXPECT_EQ(vec(nms(b, s, 0.6)), (std::vector<int64_t>{0, 2}));
  EXPECT_EQ(vec(nms(b, s, 0.85)), (std::vector<int64_t>{0, 1, 2}));  // 0.818 is not > 0.85
  // b1 in another class survives; output sorted by score.
  EXPECT_EQ(vec(batched_nms(b, s, torch::tensor({0, 1, 0}, torch::kLong), 0.6)), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(vec(batched_nms(b, torch::tensor({0.5, 0.8, 0.7}, torch::kDouble), torch::tensor({0, 1, 0}, torch::kLong), 0.6)),
            (std::vector<int64_t>{1, 2, 0}));
}

TEST(Atss, PostprocessThresholdsMultipliesClipsAndSuppresses) {
  // One image 20x30 (h x w), one level 1x3 with anchors given; 2 classes.
  // loc 0: class 0 logit 2 (p 0.881), centerness logit 0 (0.5) -> score 0.440, box = anchor
  // loc 1: class 0 logit 1.9 (p 0.870) -> 0.435, box overlapping loc 0's by IoU 0.818 -> suppressed
  // loc 2: class 1 logit -3 (p 0.047 < 0.05) -> dropped; class 0 logit 0 (0.5) -> 0.25, its box
  //        [25,0,40,10] is clipped to [25,0,30,10].
  HeadOutputs out;
  auto cls = torch::full({1, 2, 1, 3}, -10.0, torch::kDouble);
  cls[0][0][0][0] = 2.0;
  cls[0][0][0][1] = 1.9;
  cls[0][1][0][2] = -3.0;
  cls[0][0][0][2] = 0.0;
  out.cls = {cls};
  out.box = {torch::zeros({1, 4, 1, 3}, torch::kDouble)};
  out.centerness = {torch::zeros({1, 1, 1, 3}, torch::kDouble)};
  const std::vector<torch::Tensor> anchors = {boxes({{0, 0, 10, 10}, {1, 0, 11, 10}, {25, 0, 40, 10}})};
  const auto d = atss_postprocess(out, anchors, {{20, 30}});
  ASSERT_EQ(d.size(), 1u);
  ASSERT_EQ(d[0].scores.size(0), 2);
  EXPECT_NEAR(d[0].scores[0].item<double>(), 0.5 / (1 + std::exp(-2.0)), 1e-9);
  EXPECT_NEAR(d[0].scores[1].item<double>(), 0.25, 1e-9);
  EXPECT_TRUE(torch::allclose(d[0].boxes[1], torch::tensor({25.0, 0.0, 30.0, 10.0}, torch::kDouble)));
  EXPECT_EQ(vec(d[0].labels), (std::vector<int64_t>{0, 0}));
  // max_detections 1 keeps the best only; an all-background image gives empty tensors.
  PostprocessOptions o;
  o.max_detections = 1;
  EXPECT_EQ(atss_postprocess(out, anchors, {{20, 30}}, o)[0].scores.size(0), 1);
  out.cls = {torch::full({1, 2, 1, 3}, -10.0, torch::kDouble)};
  EXPECT_EQ(atss_postprocess(out, anchors, {{20, 30}})[0].boxes.size(0), 0);
}

}  // namespace test_atss
