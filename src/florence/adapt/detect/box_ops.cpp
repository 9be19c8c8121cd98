// Box operations; see box_ops.h.
#include "florence/adapt/detect/box_ops.h"

#include <algorithm>
#include <numeric>
#include <vector>

#include "florence/core/error.h"

namespace florence::detect {

namespace F = torch::nn::functional;

namespace {

void check_boxes(const torch::Tensor& b, const char* what) {
  if (b.dim() != 2 || b.size(1) != 4)
    throw Error(std::string(what) + ": boxes must be [N, 4] (x1, y1, x2, y2), got " + std::to_string(b.dim()) +
                " dims");
}

}  // namespace

torch::Tensor box_iou(const torch::Tensor& a, const torch::Tensor& b) {
  check_boxes(a, "box_iou");
  check_boxes(b, "box_iou");
  const auto area_a = (a.select(1, 2) - a.select(1, 0)) * (a.select(1, 3) - a.select(1, 1));
  const auto area_b = (b.select(1, 2) - b.select(1, 0)) * (b.select(1, 3) - b.select(1, 1));
  const auto lt = torch::max(a.slice(1, 0, 2).unsqueeze(1), b.slice(1, 0, 2).unsqueeze(0));
  const auto rb = torch::min(a.slice(1, 2, 4).unsqueeze(1), b.slice(1, 2, 4).unsqueeze(0));
  const auto wh = (rb - lt).clamp_min(0);
  const auto inter = wh.select(2, 0) * wh.select(2, 1);
  return torch::where(inter > 0, inter / (area_a.unsqueeze(1) + area_b.unsqueeze(0) - inter),
                      torch::zeros({1}, inter.options()));
}

torch::Tensor BoxCoder::encode(const torch::Tensor& anchors, const torch::Tensor& boxes) const {
  const auto aw = anchors.select(1, 2) - anchors.select(1, 0), ah = anchors.select(1, 3) - anchors.select(1, 1);
  const auto ax = anchors.select(1, 0) + 0.5 * aw, ay = anchors.select(1, 1) + 0.5 * ah;
  const auto gw = boxes.select(1, 2) - boxes.select(1, 0), gh = boxes.select(1, 3) - boxes.select(1, 1);
  const auto gx = boxes.select(1, 0) + 0.5 * gw, gy = boxes.select(1, 1) + 0.5 * gh;
  return torch::stack({weights[0] * (gx - ax) / aw, weights[1] * (gy - ay) / ah, weights[2] * torch::log(gw / aw),
                       weights[3] * torch::log(gh / ah)},
                      1);
}

torch::Tensor BoxCoder::decode(const torch::Tensor& deltas, const torch::Tensor& anchors) const {
  const auto aw = anchors.select(1, 2) - anchors.select(1, 0), ah = anchors.select(1, 3) - anchors.select(1, 1);
  const auto ax = anchors.select(1, 0) + 0.5 * aw, ay = anchors.select(1, 1) + 0.5 * ah;
  const auto dx = deltas.select(1, 0) / weights[0], dy = deltas.select(1, 1) / weights[1];
  const auto dw = (deltas.select(1, 2) / weights[2]).clamp_max(scale_clamp);
  const auto dh = (deltas.select(1, 3) / weights[3]).clamp_max(scale_clamp);
  const auto cx = dx * aw + ax, cy = dy * ah + ay;
  const auto w = torch::exp(dw) * aw, h = torch::exp(dh) * ah;
  return torch::stack({cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h}, 1);
}

torch::Tensor nms(const torch::Tensor& boxes_in, const torch::Tensor& scores_in, double iou_threshold) {
  check_boxes(boxes_in, "nms");
  if (scores_in.dim() != 1 || scores_in.size(0) != boxes_in.size(0))
    throw Error("nms: scores must be [N] for N boxes");
  const auto boxes = boxes_in.detach().to(torch::kCPU, torch::kDouble).contiguous();
  const auto scores = scores_in.detach().to(torch::kCPU, torch::kDouble).contiguous();
  const int64_t n = boxes.size(0);
  const double* b = boxes.data_ptr<double>();
  const double* s = scores.data_ptr<double>();
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t(0));
  std::stable_sort(order.begin(), order.end(), [&](int64_t i, int64_t j) { return s[i] > s[j]; });
  std::vector<double> area(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) area[size_t(i)] = (b[4 * i + 2] - b[4 * i]) * (b[4 * i + 3] - b[4 * i + 1]);
  std::vector<char> removed(static_cast<size_t>(n), 0);
  std::vector<int64_t> keep;
  for (int64_t oi = 0; oi < n; ++oi) {
    const int64_t i = order[size_t(oi)];
    if (removed[size_t(i)]) continue;
    keep.push_back(i);
    for (int64_t oj = oi + 1; oj < n; ++oj) {
      const int64_t j = order[size_t(oj)];
      if (removed[size_t(j)]) continue;
      const double w = std::max(0.0, std::min(b[4 * i + 2], b[4 * j + 2]) - std::max(b[4 * i], b[4 * j]));
      const double h = std::max(0.0, std::min(b[4 * i + 3], b[4 * j + 3]) - std::max(b[4 * i + 1], b[4 * j + 1]));
      const double inter = w * h;
      if (inter / (area[size_t(i)] + area[size_t(j)] - inter) > iou_threshold) removed[size_t(j)] = 1;
    }
  }
  return torch::tensor(keep, torch::kLong);
}

torch::Tensor batched_nms(const torch::Tensor& boxes, const torch::Tensor& scores, const torch::Tensor& labels,
                          double iou_threshold) {
  check_boxes(boxes, "batched_nms");
  if (labels.dim() != 1 || labels.size(0) != boxes.size(0)) throw Error("batched_nms: labels must be [N] for N boxes");
  if (boxes.size(0) == 0) return torch::empty({0}, torch::kLong);
  // torchvision's coordinate trick: shift each label's boxes by label * (max coordinate + 1), so
  // boxes of different labels cannot overlap; one NMS over all.
  const auto b = boxes.detach().to(torch::kCPU, torch::kDouble);
  const auto shift = labels.to(torch::kCPU, torch::kDouble) * (b.max().item<double>() + 1.0);
  return nms(b + shift.unsqueeze(1), scores, iou_threshold);
}

torch::Tensor giou_loss(const torch::Tensor& pred, const torch::Tensor& target) {
  const auto px1 = pred.select(1, 0), py1 = pred.select(1, 1);
  const auto px2 = torch::max(px1, pred.select(1, 2)), py2 = torch::max(py1, pred.select(1, 3));
  const auto tx1 = target.select(1, 0), ty1 = target.select(1, 1), tx2 = target.select(1, 2), ty2 = target.select(1, 3);
  const auto pred_area = (px2 - px1) * (py2 - py1);
  const auto target_area = (tx2 - tx1) * (ty2 - ty1);
  const auto ix1 = torch::max(px1, tx1), iy1 = torch::max(py1, ty1);
  const auto ix2 = torch::min(px2, tx2), iy2 = torch::min(py2, ty2);
  const auto overlap = (iy2 > iy1) & (ix2 > ix1);
  const auto inter = torch::where(overlap, (ix2 - ix1) * (iy2 - iy1), torch::zeros({1}, pred.options()));
  const auto ex1 = torch::min(px1, tx1), ey1 = torch::min(py1, ty1);
  const auto ex2 = torch::max(px2, tx2), ey2 = torch::max(py2, ty2);
  const auto enclosing = (ex2 - ex1) * (ey2 - ey1) + 1e-7;
  const auto uni = pred_area + target_area - inter + 1e-7;
  const auto iou = inter / uni;
  return 1 - (iou - (enclosing - uni) / enclosing);
}

torch::Tensor sigmoid_focal_loss(const torch::Tensor& logits, const torch::Tensor& targets, double alpha, double gamma) {
  const auto p = torch::sigmoid(logits);
  const auto ce = F::binary_cross_entropy_with_logits(
      logits, targets, F::BinaryCrossEntropyWithLogitsFuncOptions().reduction(torch::kNone));
  const auto p_t = p * targets + (1 - p) * (1 - targets);
  auto loss = ce * torch::pow(1 - p_t, gamma);
  if (alpha >= 0) loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss;
  return loss;
}

torch::Tensor centerness_target(const torch::Tensor& anchors, const torch::Tensor& boxes) {
  const auto cx = (anchors.select(1, 0) + anchors.select(1, 2)) / 2, cy = (anchors.select(1, 1) + anchors.select(1, 3)) / 2;
  const auto l = cx - boxes.select(1, 0), t = cy - boxes.select(1, 1);
  const auto r = boxes.select(1, 2) - cx, b = boxes.select(1, 3) - cy;
  return torch::sqrt((torch::min(l, r) / torch::max(l, r)) * (torch::min(t, b) / torch::max(t, b)));
}

}  // namespace florence::detect
