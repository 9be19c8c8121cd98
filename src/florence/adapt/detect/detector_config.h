#pragma once
// Configuration of the Florence object-level adapter: CoSwin backbone -> FPN -> Dynamic Head
// (or the plain conv-tower baseline) -> ATSS head; named configs; JSON in and out.
//
// Named configs (detector_names()):
//   dyhead-t     CoSwin-T, FPN/DyHead 256 channels, 6 DyHead blocks, P3-P7, 80 classes: DynamicHead's
//                Swin-T ATSS config (configs/dyhead_swint_atss_fpn_2x_ms.yaml) on CoSwin-T.
//   dyhead-h     the same head on our CoSwin-H (Florence §3.1 pairs CoSwin-H with DyHead; the paper's
//                detector adds no other published sizes).
//   dyhead-nano  florence-nano's 3-stage CoSwin (C = 48), stages 1-2 -> P3-P4, P5-P6 extra levels,
//                64 channels, 4 DyHead blocks, anchor side 4 x stride: sized for 2 CPU cores on
//                128-192 px scenes (docs/detection.md has the FLOP estimate).
//   conv-nano    dyhead-nano's baseline: no DyHead, ATSS conv towers of the same depth (4).
// A JSON file (detector_config_to_json's format) is accepted wherever a name is.
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "florence/vision/swin.h"

namespace florence::detect {

struct DetectorConfig {
  std::string name = "dyhead-t";
  vision::SwinConfig backbone;             ///< the image tower (a florence checkpoint's vision config)
  std::vector<int> in_stages{1, 2, 3};     ///< consecutive backbone stages feeding the FPN, finest first
  int64_t channels = 256;                  ///< FPN and DyHead width (MODEL.FPN.OUT_CHANNELS, DYHEAD.CHANNELS)
  int64_t max_level = 7;                   ///< pyramid P{first}..P{max_level}; extra levels from the last FPN level
  std::string head = "dyhead";             ///< "dyhead" | "conv" (ATSS towers of num_blocks convs, no attention)
  int64_t num_blocks = 6;                  ///< DyHead blocks (MODEL.DYHEAD.NUM_CONVS) or conv tower depth
  std::string coarse_offsets = "crop";     ///< "crop" | "reference" | "resample" (dyhead.h)
  /// DyHead's offset conv at init: "default" (PyTorch's, as microsoft/DynamicHead) | "zero"
  /// (mmdetection's DyHead: offsets 0, mask 0.5, so each block starts as a plain 3x3 conv).
  std::string offset_init = "default";
  int64_t num_classes = 80;
  bool class_agnostic = false;             ///< one class ("object"): every label is read as 0
  std::vector<std::string> class_names;    ///< optional, num_classes names (for outputs)
  double anchor_scale = 8.0;               ///< anchor side / stride (ATSS)
  int64_t topk = 9;                        ///< ATSS candidates per level
  int64_t pred_kernel = 1;                 ///< cls/box/centerness conv kernel (DynamicHead 1, ATSS 3)
  double focal_alpha = 0.25, focal_gamma = 2.0, reg_weight = 2.0;
  double score_threshold = 0.05;
  int64_t pre_nms_top_n = 1000;
  double nms_threshold = 0.6;
  int64_t max_detections = 100;
  int image_size = 800;                    ///< nominal input side (FLOP estimates only; any size runs)

  /// Level of the first FPN input: log2 of that stage's stride (stem stride x 2^stage).
  int64_t first_level() const;
  int64_t num_levels() const { return max_level - first_level() + 1; }
  /// Effective class count (1 when class_agnostic).
  int64_t classes() const { return class_agnostic ? 1 : num_classes; }
  /// Throws florence::Error naming the field for any inconsistency (stages out of range or not
  /// consecutive, a stem stride that is not a power of two, channels not divisible by DyHead's
  /// GroupNorm(16) or the conv towers' GroupNorm(32), unknown head / coarse_offsets, ...).
  void validate() const;
};

/// Every field above; "backbone" holds SwinConfig::to_json().
nlohmann::json detector_config_to_json(const DetectorConfig& c);
/// Missing fields take the defaults above; unknown fields throw florence::Error naming them
/// (prefixed by `origin`); the result is validated.
DetectorConfig detector_config_from_json(const nlohmann::json& j, const std::string& origin);

std::vector<std::string> detector_names();
/// A registered name or a JSON file. Throws florence::Error listing the known names otherwise.
DetectorConfig resolve_detector(const std::string& name_or_path);

}  // namespace florence::detect
