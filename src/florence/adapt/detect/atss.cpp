// ATSS head, assignment, losses and post-processing; see atss.h.
#include "florence/adapt/detect/atss.h"

#include <fmt/format.h>

#include <cmath>
#include <limits>

#include "florence/core/error.h"

namespace florence::detect {

namespace F = torch::nn::functional;

namespace {

// DynamicHead's Scale: one learnable multiplier (`scale`, shape [1]).
class ScaleImpl : public torch::nn::Module {
 public:
  ScaleImpl() { scale = register_parameter("scale", torch::ones({1})); }
  torch::Tensor forward(const torch::Tensor& x) { return x * scale; }
  torch::Tensor scale;
};
TORCH_MODULE(Scale);

torch::nn::Conv2d normal_conv(int64_t in, int64_t out, int64_t k) {
  torch::nn::Conv2d c(torch::nn::Conv2dOptions(in, out, k).padding(k / 2));
  torch::NoGradGuard ng;
  torch::nn::init::normal_(c->weight, 0, 0.01);
  torch::nn::init::zeros_(c->bias);
  return c;
}

torch::nn::Sequential tower(int64_t channels, int64_t depth) {
  torch::nn::Sequential s;
  for (int64_t i = 0; i < depth; ++i) {
    s->push_back(normal_conv(channels, channels, 3));
    s->push_back(torch::nn::GroupNorm(torch::nn::GroupNormOptions(32, channels)));
    s->push_back(torch::nn::ReLU());
  }
  return s;
}

// [B, K, H, W] per level -> [B, sum H*W, K] (locations row-major, as the anchors).
torch::Tensor flatten_levels(const std::vector<torch::Tensor>& maps) {
  std::vector<torch::Tensor> parts;
  for (const auto& m : maps) parts.push_back(m.permute({0, 2, 3, 1}).reshape({m.size(0), -1, m.size(1)}));
  return torch::cat(parts, 1);
}

void check_target(const DetectionTarget& t, size_t image, int64_t num_classes) {
  if (!t.boxes.defined() || t.boxes.dim() != 2 || t.boxes.size(1) != 4)
    throw Error(fmt::format("detection target of image {}: boxes must be [G, 4] xyxy", image));
  if (!t.labels.defined() || t.labels.dim() != 1 || t.labels.size(0) != t.boxes.size(0))
    throw Error(fmt::format("detection target of image {}: labels must be [G] for {} boxes", image, t.boxes.size(0)));
  if (t.labels.numel() > 0 && num_classes > 0) {
    const int64_t lo = t.labels.min().item<int64_t>(), hi = t.labels.max().item<int64_t>();
    if (lo < 0 || hi >= num_classes)
      throw Error(fmt::format("detection target of image {}: label {} outside [0, {})", image, lo < 0 ? lo : hi,
                              num_classes));
  }
  if (t.boxes.numel() > 0) {
    const auto wh = t.boxes.slice(1, 2, 4) - t.boxes.slice(1, 0, 2);
    if (!(wh > 0).all().item<bool>() || !torch::isfinite(t.boxes).all().item<bool>())
      throw Error(fmt::format("detection target of image {}: every box needs x2 > x1 and y2 > y1 (finite)", image));
  }
}

}  // namespace

ATSSHeadImpl::ATSSHeadImpl(const ATSSHeadOptions& o) : options(o) {
  if (o.num_classes < 1) throw Error("ATSS head: num_classes must be >= 1");
  if (o.num_convs > 0) {
    if (o.in_channels % 32 != 0)
      throw Error(fmt::format("ATSS head: {} channels are not divisible by GroupNorm's 32 groups", o.in_channels));
    cls_tower = register_module("cls_tower", tower(o.in_channels, o.num_convs));
    bbox_tower = register_module("bbox_tower", tower(o.in_channels, o.num_convs));
  }
  cls_logits = register_module("cls_logits", normal_conv(o.in_channels, o.num_classes, o.pred_kernel));
  bbox_pred = register_module("bbox_pred", normal_conv(o.in_channels, 4, o.pred_kernel));
  centerness = register_module("centerness", normal_conv(o.in_channels, 1, o.pred_kernel));
  {
    torch::NoGradGuard ng;
    cls_logits->bias.fill_(-std::log((1 - o.prior_prob) / o.prior_prob));
  }
  scales = register_module("scales", torch::nn::ModuleList());
  for (int64_t l = 0; l < o.num_levels; ++l) scales->push_back(Scale());
}

HeadOutputs ATSSHeadImpl::forward(const std::vector<torch::Tensor>& features) {
  if (int64_t(features.size()) != options.num_levels)
    throw Error(fmt::format("ATSS head: expected {} levels, got {}", options.num_levels, features.size()));
  HeadOutputs out;
  for (size_t l = 0; l < features.size(); ++l) {
    const auto& f = features[l];
    const auto c = cls_tower ? cls_tower->forward(f) : f;
    const auto b = bbox_tower ? bbox_tower->forward(f) : f;
    out.cls.push_back(cls_logits->forward(c));
    out.box.push_back(scales[l]->as<ScaleImpl>()->forward(bbox_pred->forward(b)));
    out.centerness.push_back(centerness->forward(b));
  }
  return out;
}

torch::Tensor level_anchors(int64_t height, int64_t width, int64_t stride, double anchor_scale,
                            const torch::TensorOptions& opts) {
  const double half = anchor_scale * double(stride) / 2;
  const auto xs = (torch::arange(width, opts) + 0.5) * double(stride);
  const auto ys = (torch::arange(height, opts) + 0.5) * double(stride);
  const auto cx = xs.view({1, width}).expand({height, width}).reshape({-1});
  const auto cy = ys.view({height, 1}).expand({height, width}).reshape({-1});
  return torch::stack({cx - half, cy - half, cx + half, cy + half}, 1);
}

Assignment atss_assign(const std::vector<torch::Tensor>& anchors, const DetectionTarget& target, int64_t topk) {
  check_target(target, 0, 0);
  const auto all = torch::cat(anchors, 0);
  const int64_t N = all.size(0), G = target.boxes.size(0);
  auto long_opts = torch::TensorOptions().dtype(torch::kLong).device(all.device());
  if (G == 0) return {torch::zeros({N}, long_opts), torch::full({N}, -1, long_opts)};
  const auto gt = target.boxes.to(all.dtype());
  const auto ious = box_iou(all, gt);  // [N, G]
  const auto a_cx = (all.select(1, 0) + all.select(1, 2)) / 2, a_cy = (all.select(1, 1) + all.select(1, 3)) / 2;
  const auto g_cx = (gt.select(1, 0) + gt.select(1, 2)) / 2, g_cy = (gt.select(1, 1) + gt.select(1, 3)) / 2;
  const auto dist = ((a_cx.unsqueeze(1) - g_cx.unsqueeze(0)).pow(2) + (a_cy.unsqueeze(1) - g_cy.unsqueeze(0)).pow(2)).sqrt();
  std::vector<torch::Tensor> cands;
  int64_t start = 0;
  for (const auto& a : anchors) {
    const int64_t n = a.size(0), k = std::min(topk, n);
    if (k > 0) cands.push_back(std::get<1>(dist.narrow(0, start, n).topk(k, 0, /*largest=*/false)) + start);
    start += n;
  }
  const auto cand = torch::cat(cands, 0);  // [C, G]
  const auto cand_ious = ious.gather(0, cand);
  const auto thr = cand_ious.mean(0) + cand_ious.std(0);
  auto is_pos = cand_ious >= thr.unsqueeze(0);
  const auto cx = a_cx.index({cand}), cy = a_cy.index({cand});  // [C, G]
  const auto l = cx - gt.select(1, 0), t = cy - gt.select(1, 1), r = gt.select(1, 2) - cx, b = gt.select(1, 3) - cy;
  is_pos = is_pos & (torch::min(torch::min(l, t), torch::min(r, b)) > 0.01);
  // Positive (anchor, GT) pairs keep their IoU, everything else -inf; each anchor takes its best GT.
  auto ious_inf = torch::full({N, G}, -std::numeric_limits<double>::infinity(), ious.options());
  const auto gt_idx = torch::arange(G, long_opts).unsqueeze(0).expand_as(cand);
  const auto pa = cand.masked_select(is_pos), pg = gt_idx.masked_select(is_pos);
  ious_inf.index_put_({pa, pg}, ious.index({pa, pg}));
  const auto [best, idx] = ious_inf.max(1);
  const auto background = torch::isinf(best);
  Assignment out;
  out.labels = (target.labels.to(long_opts).index({idx}) + 1).masked_fill(background, 0);
  out.matched = idx.masked_fill(background, -1);
  return out;
}

DetectionLosses atss_losses(const HeadOutputs& out, const std::vector<torch::Tensor>& anchors,
                            const std::vector<DetectionTarget>& targets, const ATSSLossOptions& o) {
  if (out.cls.empty()) throw Error("atss_losses: no levels");
  const int64_t B = out.cls[0].size(0), C = out.cls[0].size(1);
  if (int64_t(targets.size()) != B)
    throw Error(fmt::format("atss_losses: {} targets for a batch of {} images", targets.size(), B));
  const auto cls = flatten_levels(out.cls);                    // [B, N, C]
  const auto box = flatten_levels(out.box);                    // [B, N, 4]
  const auto ctr = flatten_levels(out.centerness).squeeze(2);  // [B, N]
  const auto all_anchors = torch::cat(anchors, 0).to(cls.dtype());
  const int64_t N = all_anchors.size(0);
  if (cls.size(1) != N) throw Error(fmt::format("atss_losses: {} anchors for {} predicted locations", N, cls.size(1)));
  std::vector<torch::Tensor> labels, gt_boxes;
  for (size_t i = 0; i < targets.size(); ++i) {
    check_target(targets[i], i, C);
    const Assignment a = atss_assign(anchors, targets[i], o.topk);
    labels.push_back(a.labels);
    const auto boxes = targets[i].boxes.to(cls.dtype());
    gt_boxes.push_back(boxes.size(0) ? boxes.index({a.matched.clamp_min(0)}) : torch::zeros({N, 4}, cls.options()));
  }
  const auto lab = torch::stack(labels);                    // [B, N]
  const auto pos = lab > 0;
  const int64_t num_pos = pos.sum().item<int64_t>();
  const double norm = std::max<double>(double(num_pos), 1.0);
  auto onehot = torch::zeros_like(cls);
  if (num_pos > 0) {
    const auto where = pos.nonzero();  // [P, 2]
    onehot.index_put_({where.select(1, 0), where.select(1, 1), lab.index({pos}) - 1}, torch::ones({num_pos}, cls.options()));
  }
  DetectionLosses L;
  L.num_pos = num_pos;
  L.cls = sigmoid_focal_loss(cls, onehot, o.focal_alpha, o.focal_gamma).sum() / norm;
  if (num_pos > 0) {
    const auto pa = all_anchors.unsqueeze(0).expand({B, N, 4}).index({pos});  // [P, 4]
    const auto pg = torch::stack(gt_boxes).index({pos});
    const auto ctr_t = centerness_target(pa, pg);
    const auto pred = o.coder.decode(box.index({pos}), pa);
    L.box = o.reg_weight * (giou_loss(pred, pg) * ctr_t).sum() / ctr_t.sum();
    L.centerness = F::binary_cross_entropy_with_logits(ctr.index({pos}), ctr_t,
                                                       F::BinaryCrossEntropyWithLogitsFuncOptions().reduction(torch::kSum)) /
                   norm;
  } else {
    L.box = box.sum() * 0.0;
    L.centerness = ctr.sum() * 0.0;
  }
  L.total = L.cls + L.box + L.centerness;
  return L;
}

std::vector<Detections> atss_postprocess(const HeadOutputs& out, const std::vector<torch::Tensor>& anchors,
                                         const std::vector<std::pair<int64_t, int64_t>>& image_sizes,
                                         const PostprocessOptions& o) {
  torch::NoGradGuard ng;
  const int64_t B = out.cls.empty() ? 0 : out.cls[0].size(0);
  if (int64_t(image_sizes.size()) != B)
    throw Error(fmt::format("atss_postprocess: {} image sizes for a batch of {}", image_sizes.size(), B));
  std::vector<Detections> result;
  for (int64_t i = 0; i < B; ++i) {
    std::vector<torch::Tensor> boxes, scores, labels;
    for (size_t l = 0; l < out.cls.size(); ++l) {
      const int64_t C = out.cls[l].size(1);
      const auto prob = out.cls[l][i].reshape({C, -1}).t().sigmoid();            // [HW, C]
      const auto ctr = out.centerness[l][i].reshape({-1}).sigmoid();             // [HW]
      const auto deltas = out.box[l][i].reshape({4, -1}).t();                    // [HW, 4]
      const auto cand = (prob > o.score_threshold).nonzero();                   // [M, 2] (loc, class)
      if (cand.size(0) == 0) continue;
      const auto loc = cand.select(1, 0), cls = cand.select(1, 1);
      auto s = prob.index({loc, cls}) * ctr.index({loc});
      const int64_t k = std::min<int64_t>(o.pre_nms_top_n, s.size(0));
      const auto top = std::get<1>(s.topk(k));
      const auto sel = loc.index({top});
      boxes.push_back(o.coder.decode(deltas.index({sel}), anchors[l].to(deltas.dtype()).index({sel})));
      scores.push_back(s.index({top}));
      labels.push_back(cls.index({top}));
    }
    Detections d;
    if (boxes.empty()) {
      d.boxes = torch::zeros({0, 4});
      d.scores = torch::zeros({0});
      d.labels = torch::zeros({0}, torch::kLong);
      result.push_back(d);
      continue;
    }
    auto bx = torch::cat(boxes);
    const auto [h, w] = image_sizes[size_t(i)];
    bx = torch::stack({bx.select(1, 0).clamp(0, double(w)), bx.select(1, 1).clamp(0, double(h)),
                       bx.select(1, 2).clamp(0, double(w)), bx.select(1, 3).clamp(0, double(h))},
                      1);
    auto sc = torch::cat(scores), lb = torch::cat(labels);
    const auto nonempty = ((bx.select(1, 2) - bx.select(1, 0)) > 0) & ((bx.select(1, 3) - bx.select(1, 1)) > 0);
    bx = bx.index({nonempty});
    sc = sc.index({nonempty});
    lb = lb.index({nonempty});
    auto keep = batched_nms(bx, sc, lb, o.nms_threshold).to(bx.device());
    if (keep.size(0) > o.max_detections) keep = keep.narrow(0, 0, o.max_detections);
    d.boxes = bx.index({keep});
    d.scores = sc.index({keep});
    d.labels = lb.index({keep});
    result.push_back(d);
  }
  return result;
}

}  // namespace florence::detect
