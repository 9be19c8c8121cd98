#pragma once
// The Florence object-level detector: CoSwin image tower -> FPN -> Dynamic Head (or the plain
// conv-tower baseline) -> ATSS head (Florence §3.1, "Dynamic Head" adapter; configs in
// detector_config.h). What a detection training task and evaluation call:
//   losses(images, targets)  -> DetectionLosses (total = cls + box + centerness; atss.h)
//   predict(images)          -> per image boxes/scores/labels after NMS
//   to_coco_results(...)     -> COCO results entries (coco.h) for evaluate_bbox (coco_eval.h)
//
// Module names: `backbone` (vision::SwinTransformer, its own names), `out_norm{i}` (a LayerNorm on
// each FPN input stage other than the backbone's last, which already has the tower's final norm;
// DynamicHead's Swin backbone normalises every output stage the same way, OUT_NORM), `fpn`
// (fpn.h), `dyhead_tower.{i}` (dyhead.h), `head` (atss.h). DynamicHead's detectron2 checkpoints
// name these `backbone.backbone.bottom_up.`, `backbone.backbone.`, `backbone.dyhead_tower.`,
// `head.` (see docs/detection.md).
//
// Input images: [B, 3, H, W] float, normalised as the backbone was trained (the florence
// checkpoint's preprocessing), any H, W the backbone accepts; padded batches pass each image's
// real (height, width) to predict() for clipping.
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/normalization.h>
#include <torch/types.h>

#include <map>
#include <utility>
#include <vector>

#include "florence/adapt/detect/atss.h"
#include "florence/adapt/detect/coco.h"
#include "florence/adapt/detect/detector_config.h"
#include "florence/adapt/detect/fpn.h"
#include "florence/core/checkpoint.h"
#include "florence/vision/swin.h"

namespace florence::detect {

class DetectorImpl : public torch::nn::Module {
 public:
  /// Validates `cfg` (florence::Error) and builds the modules with random init.
  explicit DetectorImpl(const DetectorConfig& cfg);

  /// Pyramid features after the DyHead tower (or the FPN for the conv baseline): num_levels maps
  /// [B, channels, H_l, W_l], finest first.
  std::vector<torch::Tensor> features(const torch::Tensor& images);
  /// Head outputs for every level (atss.h).
  HeadOutputs forward(const torch::Tensor& images);
  /// The anchors of every level for these head outputs (cached by map size).
  std::vector<torch::Tensor> anchors(const HeadOutputs& out);

  /// Training losses. targets: one per image, boxes xyxy in the input's pixels, labels in
  /// [0, num_classes) (ignored, read as 0, when class_agnostic). Throws florence::Error for a
  /// target count different from the batch or malformed targets (naming the image).
  DetectionLosses losses(const torch::Tensor& images, const std::vector<DetectionTarget>& targets);

  /// Detections per image (no gradient; call eval() first for inference). image_sizes: the real
  /// (height, width) of each image inside a padded batch; empty = the tensor's size for all.
  std::vector<Detections> predict(const torch::Tensor& images,
                                  std::vector<std::pair<int64_t, int64_t>> image_sizes = {});
  /// predict() runs the network under bfloat16 autocast (core/precision.h; --precision amp_bf16);
  /// the head's outputs are cast back to float32 before decoding and NMS.
  void set_autocast_bf16(bool on) { autocast_bf16_ = on; }
  bool autocast_bf16() const { return autocast_bf16_; }

  /// Loads the image tower from a florence checkpoint's state dict (keys `image_encoder.*`; the
  /// other towers' keys are ignored) or a bare tower's (`patch_embed.*`, `layers.*`, ...). Strict:
  /// missing / unexpected / mis-shaped backbone keys throw florence::Error naming them.
  void load_backbone(const core::TensorMap& state);
  /// Freezes (requires_grad false) or unfreezes the backbone's parameters.
  void set_backbone_trainable(bool trainable);

  const DetectorConfig& config() const { return cfg_; }

  vision::SwinTransformer backbone{nullptr};
  std::vector<torch::nn::LayerNorm> out_norms;  ///< per FPN input stage except the backbone's last
  FPN fpn{nullptr};
  torch::nn::ModuleList dyhead_tower{nullptr};  ///< empty for head == "conv"
  ATSSHead head{nullptr};

 private:
  DetectorConfig cfg_;
  bool autocast_bf16_ = false;
  std::map<std::vector<int64_t>, std::vector<torch::Tensor>> anchor_cache_;
};
TORCH_MODULE(Detector);

/// COCO results of one image's detections. label_to_category: category id of each label index
/// (size num_classes); boxes are multiplied by (scale_x, scale_y) first (to map a resized input
/// back to the original image's pixels). Throws florence::Error for a label without a category.
std::vector<CocoResult> to_coco_results(const Detections& d, int64_t image_id,
                                        const std::vector<int64_t>& label_to_category, double scale_x = 1.0,
                                        double scale_y = 1.0);

}  // namespace florence::detect
