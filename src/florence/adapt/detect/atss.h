#pragma once
// ATSS (Zhang et al., "Bridging the Gap Between Anchor-based and Anchor-free Detection via Adaptive
// Training Sample Selection", CVPR 2020) as microsoft/DynamicHead extra/atss.py implements it on
// detectron2: the head, anchors, the adaptive assignment, the losses and the post-processing.
//
// Head (`ATSSHead`, names as DyHead's): optional towers `cls_tower` / `bbox_tower` (num_convs x
// [Conv3x3 + GroupNorm(32) + ReLU], N(0, 0.01) init; 0 when a DyHead tower precedes the head, as
// in DyHead's configs), then `cls_logits` (num_classes), `bbox_pred` (4) and `centerness` (1),
// 1x1 convs as in DynamicHead (ATSS's own code uses 3x3: `pred_kernel`), N(0, 0.01), bias 0, the
// classification bias -log((1 - 0.01) / 0.01) (focal-loss prior 0.01, RetinaNet §3.3); box deltas
// scaled per level by a learnable `scales.{l}.scale` (init 1).
// Anchors: one per location (aspect ratio 1), side anchor_scale x stride (8: detectron2
// ANCHOR_GENERATOR.SIZES = 2 x [32 .. 512] for strides 8 .. 128), centred at ((x + 0.5) stride,
// (y + 0.5) stride) (OFFSET 0.5), locations in row-major order.
// Box regression: detectron2 Box2BoxTransform deltas with weights (10, 10, 5, 5) (box_ops.h).
// Assignment (atss_assign): per level the top-k anchors (k = 9) closest to the GT centre (L2
// distance of centres); their IoUs' mean + std (unbiased) is the GT's IoU threshold; a candidate
// is positive if IoU >= threshold and its centre lies inside the box (min(l, t, r, b) > 0.01);
// an anchor positive for several GTs takes the one of highest IoU.
// Losses (atss_losses), normalised as DyHead's ATSS with one process (its reference averages the
// positive count over GPUs, which equals the count here for one process):
//   cls = sum of sigmoid focal loss (gamma 2, alpha 0.25) over all anchors and classes / max(P, 1),
//   box = reg_weight (2) x sum over positives of centerness_target x (1 - GIoU(decoded pred,
//         GT)) / sum of the positives' centerness targets,
//   ctr = sum over positives of BCE-with-logits(centerness logit, centerness target) / max(P, 1),
//   P = positive anchors over the whole batch. Without positives box and ctr are 0 (kept in the graph).
// Inference (atss_postprocess): per level, candidates with sigmoid(cls) > 0.05; score =
// sigmoid(cls) x sigmoid(centerness) (DynamicHead's detectron2 ATSS; sfzhang15/ATSS reports the
// square root of this product, a monotone change that moves no rank and so no AP); the top 1000
// candidates by score per level; boxes decoded, all levels joined, clipped to the image and empty
// boxes removed (detectron2 detector_postprocess); class-wise NMS at IoU 0.6; the best 100.
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/types.h>

#include <vector>

#include "florence/adapt/detect/box_ops.h"

namespace florence::detect {

struct ATSSHeadOptions {
  int64_t in_channels = 256;
  int64_t num_classes = 80;   ///< 1 for a class-agnostic ("object") detector
  int64_t num_convs = 0;      ///< tower depth (0 behind a DyHead tower; the plain baseline uses its depth)
  int64_t num_levels = 5;     ///< one Scale per level
  int64_t pred_kernel = 1;    ///< 1 as DynamicHead, 3 as sfzhang15/ATSS
  double prior_prob = 0.01;   ///< focal-loss bias prior
};

/// Per-level head outputs, finest level first.
struct HeadOutputs {
  std::vector<torch::Tensor> cls;         ///< [B, num_classes, H_l, W_l] logits
  std::vector<torch::Tensor> box;         ///< [B, 4, H_l, W_l] deltas (already scaled)
  std::vector<torch::Tensor> centerness;  ///< [B, 1, H_l, W_l] logits
};

class ATSSHeadImpl : public torch::nn::Module {
 public:
  explicit ATSSHeadImpl(const ATSSHeadOptions& o);
  /// features: num_levels maps [B, in_channels, H_l, W_l]. Throws florence::Error for another count.
  HeadOutputs forward(const std::vector<torch::Tensor>& features);

  ATSSHeadOptions options;
  torch::nn::Sequential cls_tower{nullptr}, bbox_tower{nullptr};
  torch::nn::Conv2d cls_logits{nullptr}, bbox_pred{nullptr}, centerness{nullptr};
  torch::nn::ModuleList scales{nullptr};
};
TORCH_MODULE(ATSSHead);

/// Anchors of one level: [H * W, 4] xyxy, row-major locations (see the top of this file).
torch::Tensor level_anchors(int64_t height, int64_t width, int64_t stride, double anchor_scale,
                            const torch::TensorOptions& opts = torch::kFloat);

/// Ground truth of one image: boxes [G, 4] xyxy in pixels (x2 > x1, y2 > y1), labels [G] int64 in
/// [0, num_classes). G may be 0.
struct DetectionTarget {
  torch::Tensor boxes;
  torch::Tensor labels;
};

/// ATSS assignment of one image. anchors: per level [N_l, 4]. Returns labels [N] int64 (0 =
/// background, c + 1 = class c) and the matched GT index [N] int64 (-1 for background), N = sum N_l.
struct Assignment {
  torch::Tensor labels;
  torch::Tensor matched;
};
Assignment atss_assign(const std::vector<torch::Tensor>& anchors, const DetectionTarget& target, int64_t topk = 9);

struct ATSSLossOptions {
  double focal_alpha = 0.25, focal_gamma = 2.0;  ///< RetinaNet / DynamicHead config
  double reg_weight = 2.0;                       ///< DynamicHead MODEL.ATSS.REG_LOSS_WEIGHT
  int64_t topk = 9;                              ///< candidates per level (MODEL.ATSS.TOPK)
  BoxCoder coder;
};

struct DetectionLosses {
  torch::Tensor cls, box, centerness;  ///< scalars (box includes reg_weight)
  torch::Tensor total;                 ///< cls + box + centerness
  int64_t num_pos = 0;
};

/// Losses of a batch. anchors: per level [N_l, 4] (the same for every image); targets: one per
/// image. Throws florence::Error for a target count different from the batch, malformed target
/// tensors or labels outside [0, num_classes) (naming the image).
DetectionLosses atss_losses(const HeadOutputs& out, const std::vector<torch::Tensor>& anchors,
                            const std::vector<DetectionTarget>& targets, const ATSSLossOptions& o = {});

struct PostprocessOptions {
  double score_threshold = 0.05;  ///< on sigmoid(cls), before the centerness product (MODEL.ATSS.INFERENCE_TH)
  int64_t pre_nms_top_n = 1000;   ///< per level
  double nms_threshold = 0.6;
  int64_t max_detections = 100;
  BoxCoder coder;
};

/// Detections of one image: boxes [N, 4] xyxy pixels, scores [N], labels [N] int64, best first.
struct Detections {
  torch::Tensor boxes, scores, labels;
};

/// image_sizes: (height, width) per image for clipping (the unpadded size).
std::vector<Detections> atss_postprocess(const HeadOutputs& out, const std::vector<torch::Tensor>& anchors,
                                         const std::vector<std::pair<int64_t, int64_t>>& image_sizes,
                                         const PostprocessOptions& o = {});

}  // namespace florence::detect
