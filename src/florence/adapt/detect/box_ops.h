#pragma once
// Box operations of the ATSS detector. Boxes are [N, 4] float tensors (x1, y1, x2, y2) in pixels.
#include <torch/types.h>

#include <array>
#include <cmath>

namespace florence::detect {

/// Pairwise IoU [N, M] (detectron2 pairwise_iou: intersection / (area_a + area_b - intersection),
/// 0 where boxes do not overlap).
torch::Tensor box_iou(const torch::Tensor& a, const torch::Tensor& b);

/// detectron2's Box2BoxTransform as ATSS in microsoft/DynamicHead uses it (extra/config.py
/// BBOX_REG_WEIGHTS = (10, 10, 5, 5)): with centres (cx, cy) and sizes (w, h) of anchor a and box g,
///   deltas = (wx (g.cx - a.cx) / a.w, wy (g.cy - a.cy) / a.h, ww log(g.w / a.w), wh log(g.h / a.h)).
/// decode clamps the size deltas at log(1000 / 16) (detectron2 _DEFAULT_SCALE_CLAMP) before exp.
struct BoxCoder {
  std::array<double, 4> weights{10.0, 10.0, 5.0, 5.0};
  double scale_clamp = std::log(1000.0 / 16.0);
  /// anchors [N, 4], boxes [N, 4] -> deltas [N, 4].
  torch::Tensor encode(const torch::Tensor& anchors, const torch::Tensor& boxes) const;
  /// deltas [N, 4], anchors [N, 4] -> boxes [N, 4].
  torch::Tensor decode(const torch::Tensor& deltas, const torch::Tensor& anchors) const;
};

/// Greedy non-maximum suppression as torchvision.ops.nms: boxes in decreasing score order (ties
/// in index order), each removing the later ones whose IoU with it is > iou_threshold. Returns
/// the kept indices (int64, CPU), highest score first. boxes [N, 4], scores [N].
torch::Tensor nms(const torch::Tensor& boxes, const torch::Tensor& scores, double iou_threshold);

/// NMS within each label (torchvision.ops.batched_nms): boxes of different labels never suppress
/// each other. labels [N] int64. Returns kept indices, highest score first.
torch::Tensor batched_nms(const torch::Tensor& boxes, const torch::Tensor& scores, const torch::Tensor& labels,
                          double iou_threshold);

/// 1 - GIoU per box pair as DynamicHead's ATSS GIoULoss (extra/atss.py): the predicted box's x2/y2
/// are raised to at least x1/y1; union and enclosing areas get + 1e-7. pred, target [N, 4] -> [N].
torch::Tensor giou_loss(const torch::Tensor& pred, const torch::Tensor& target);

/// Element-wise sigmoid focal loss (Lin et al. 2017; torchvision.ops.sigmoid_focal_loss,
/// reduction "none"): BCE-with-logits(x, t) * (1 - p_t)^gamma * (alpha t + (1 - alpha)(1 - t)),
/// p_t = p t + (1 - p)(1 - t); alpha < 0 disables the alpha weighting. logits, targets same shape.
torch::Tensor sigmoid_focal_loss(const torch::Tensor& logits, const torch::Tensor& targets, double alpha = 0.25,
                                 double gamma = 2.0);

/// ATSS centerness target of anchor centres inside boxes: sqrt(min(l, r)/max(l, r) * min(t, b)/max(t, b))
/// with l, t, r, b the distances from the anchor centre to the box sides. anchors, boxes [N, 4] -> [N].
torch::Tensor centerness_target(const torch::Tensor& anchors, const torch::Tensor& boxes);

}  // namespace florence::detect
