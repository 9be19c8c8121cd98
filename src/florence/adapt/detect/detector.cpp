// The detector; see detector.h.
#include "florence/adapt/detect/detector.h"

#include <fmt/format.h>

#include "florence/adapt/detect/dyhead.h"
#include "florence/core/error.h"
#include "florence/core/precision.h"

namespace florence::detect {

DetectorImpl::DetectorImpl(const DetectorConfig& cfg) : cfg_(cfg) {
  cfg_.validate();
  cfg_.backbone.num_classes = 0;  // the tower's pooled head is not used
  backbone = register_module("backbone", vision::SwinTransformer(cfg_.backbone));
  const int last_stage = cfg_.backbone.num_stages() - 1;
  FPNOptions fo;
  for (int s : cfg_.in_stages) {
    fo.in_channels.push_back(cfg_.backbone.stage_dim(s));
    if (s != last_stage) {
      out_norms.push_back(register_module(
          fmt::format("out_norm{}", s),
          torch::nn::LayerNorm(torch::nn::LayerNormOptions({cfg_.backbone.stage_dim(s)}).eps(cfg_.backbone.norm_eps))));
    }
  }
  fo.first_level = cfg_.first_level();
  fo.max_level = cfg_.max_level;
  fo.out_channels = cfg_.channels;
  fpn = register_module("fpn", FPN(fo));
  dyhead_tower = register_module("dyhead_tower", torch::nn::ModuleList());
  if (cfg_.head == "dyhead") {
    const CoarseOffsets mode = coarse_offsets_from_string(cfg_.coarse_offsets);
    for (int64_t i = 0; i < cfg_.num_blocks; ++i) {
      DyConv block(cfg_.channels, cfg_.channels, mode);
      if (cfg_.offset_init == "zero") {
        torch::NoGradGuard ng;
        block->offset->weight.zero_();
        block->offset->bias.zero_();
      }
      dyhead_tower->push_back(block);
    }
  }
  ATSSHeadOptions ho;
  ho.in_channels = cfg_.channels;
  ho.num_classes = cfg_.classes();
  ho.num_convs = cfg_.head == "conv" ? cfg_.num_blocks : 0;
  ho.num_levels = cfg_.num_levels();
  ho.pred_kernel = cfg_.pred_kernel;
  head = register_module("head", ATSSHead(ho));
}

std::vector<torch::Tensor> DetectorImpl::features(const torch::Tensor& images) {
  std::vector<torch::Tensor> stages;
  backbone->forward_features(images, &stages);
  std::vector<torch::Tensor> inputs;
  size_t norm = 0;
  const int last_stage = cfg_.backbone.num_stages() - 1;
  for (int s : cfg_.in_stages) {
    torch::Tensor x = stages.at(size_t(s));
    if (s != last_stage) x = out_norms[norm++]->forward(x.permute({0, 2, 3, 1})).permute({0, 3, 1, 2}).contiguous();
    inputs.push_back(x);
  }
  auto levels = fpn->forward(inputs);
  for (const auto& block : *dyhead_tower) levels = block->as<DyConvImpl>()->forward(levels);
  return levels;
}

HeadOutputs DetectorImpl::forward(const torch::Tensor& images) { return head->forward(features(images)); }

std::vector<torch::Tensor> DetectorImpl::anchors(const HeadOutputs& out) {
  std::vector<int64_t> key;
  for (const auto& c : out.cls) key.insert(key.end(), {c.size(2), c.size(3)});
  auto it = anchor_cache_.find(key);
  if (it == anchor_cache_.end() || (!it->second.empty() && it->second[0].device() != out.cls[0].device())) {
    std::vector<torch::Tensor> a;
    const int64_t first = cfg_.first_level();
    for (size_t l = 0; l < out.cls.size(); ++l)
      a.push_back(level_anchors(out.cls[l].size(2), out.cls[l].size(3), int64_t(1) << (first + int64_t(l)),
                                cfg_.anchor_scale, out.cls[l].options().requires_grad(false)));
    it = anchor_cache_.insert_or_assign(key, std::move(a)).first;
  }
  return it->second;
}

DetectionLosses DetectorImpl::losses(const torch::Tensor& images, const std::vector<DetectionTarget>& targets) {
  if (int64_t(targets.size()) != images.size(0))
    throw Error(fmt::format("detector losses: {} targets for a batch of {} images", targets.size(), images.size(0)));
  std::vector<DetectionTarget> t = targets;
  if (cfg_.class_agnostic)
    for (auto& x : t)
      if (x.labels.defined()) x.labels = torch::zeros_like(x.labels);
  const HeadOutputs out = forward(images);
  ATSSLossOptions o;
  o.focal_alpha = cfg_.focal_alpha;
  o.focal_gamma = cfg_.focal_gamma;
  o.reg_weight = cfg_.reg_weight;
  o.topk = cfg_.topk;
  return atss_losses(out, anchors(out), t, o);
}

std::vector<Detections> DetectorImpl::predict(const torch::Tensor& images,
                                              std::vector<std::pair<int64_t, int64_t>> image_sizes) {
  torch::NoGradGuard ng;
  if (image_sizes.empty()) image_sizes.assign(size_t(images.size(0)), {images.size(2), images.size(3)});
  HeadOutputs out;
  {
    AutocastGuard autocast(autocast_bf16_, images.device());
    out = forward(images);
  }
  if (autocast_bf16_)
    for (auto* maps : {&out.cls, &out.box, &out.centerness})
      for (auto& t : *maps) t = t.to(torch::kFloat);
  PostprocessOptions o;
  o.score_threshold = cfg_.score_threshold;
  o.pre_nms_top_n = cfg_.pre_nms_top_n;
  o.nms_threshold = cfg_.nms_threshold;
  o.max_detections = cfg_.max_detections;
  return atss_postprocess(out, anchors(out), image_sizes, o);
}

void DetectorImpl::load_backbone(const core::TensorMap& state) {
  const std::string prefix = "image_encoder.";
  core::TensorMap tower;
  for (const auto& [k, v] : state)
    if (k.rfind(prefix, 0) == 0) tower[k.substr(prefix.size())] = v;
  if (tower.empty()) tower = state;  // a bare tower's state dict
  // A classification head trained with the tower is not part of the detector.
  for (auto it = tower.begin(); it != tower.end();) it = it->first.rfind("head.", 0) == 0 ? tower.erase(it) : std::next(it);
  core::load_state_dict(*backbone, tower);
}

void DetectorImpl::set_backbone_trainable(bool trainable) {
  for (auto& p : backbone->parameters()) p.set_requires_grad(trainable);
}

std::vector<CocoResult> to_coco_results(const Detections& d, int64_t image_id,
                                        const std::vector<int64_t>& label_to_category, double sx, double sy) {
  std::vector<CocoResult> out;
  const auto boxes = d.boxes.detach().to(torch::kCPU, torch::kDouble).contiguous();
  const auto scores = d.scores.detach().to(torch::kCPU, torch::kDouble).contiguous();
  const auto labels = d.labels.detach().to(torch::kCPU, torch::kLong).contiguous();
  for (int64_t i = 0; i < boxes.size(0); ++i) {
    const int64_t label = labels[i].item<int64_t>();
    if (label < 0 || label >= int64_t(label_to_category.size()))
      throw Error(fmt::format("to_coco_results: label {} has no category id ({} known)", label, label_to_category.size()));
    const double* b = boxes.data_ptr<double>() + 4 * i;
    out.push_back({image_id, label_to_category[size_t(label)], xyxy_to_coco(b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy),
                   scores[i].item<double>()});
  }
  return out;
}

}  // namespace florence::detect
