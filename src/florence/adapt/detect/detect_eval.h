#pragma once
// Using a trained detector: load it from its checkpoint, evaluate it on a COCO split (COCO mAP,
// coco_eval.h), detect on one image and draw the boxes, and the box-prior baseline.
//
// A detector checkpoint is RUN/model.safetensors (or a checkpoints/step_N.safetensors) whose
// sidecar holds, beside "model" (name + backbone config):
//   "detector":   detector_config_to_json (detector_config.h), class_names filled in
//   "categories": [{"id", "name"}, ...] in label order (detect_data.h LabelMap)
//   "preprocess": {"image_size", "mean", "std"} (detect_data.h geometry)
#include <torch/types.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "florence/adapt/detect/coco_eval.h"
#include "florence/adapt/detect/detect_data.h"
#include "florence/adapt/detect/detector.h"

namespace florence::detect {

/// Most baseline boxes per image (box_prior_baseline, random_box_baseline): COCOeval reads at most
/// maxDets (100) per image, so more only costs memory.
inline constexpr int64_t kMaxBaselineBoxes = 10000;

struct LoadedDetector {
  Detector model{nullptr};
  DetectorConfig config;
  LabelMap labels;
  BatchOptions preprocess;
  std::string weights;
};

/// Loads a detector checkpoint (strict state dict) onto `device`, in eval mode. Throws
/// florence::Error for a missing file, a sidecar without "detector" / "categories" (not a
/// detector checkpoint), or mismatched weights (naming the key).
LoadedDetector load_detector(const std::string& weights, const torch::Device& device = torch::kCPU);

/// The sidecar keys above for a detector trained with these labels and preprocessing.
nlohmann::json detector_checkpoint_extra(const DetectorConfig& config, const LabelMap& labels,
                                         const BatchOptions& preprocess);

struct DetectEvalOptions {
  int64_t batch_size = 16;
  int64_t max_dets = 100;  ///< COCOeval's largest maxDets
  /// Pool all categories (COCOeval useCats 0): class-agnostic proposals against any labels.
  /// Automatically on for a class-agnostic detector.
  bool class_agnostic = false;
};

struct DetectEvalResult {
  CocoEvalResult metrics;
  std::vector<CocoResult> results;  ///< in the split's category ids and original pixels
  BatchStats data;
  /// Detections of labels whose category id the split does not have (left out; e.g. a detector
  /// trained on all categories evaluated on the seen-only view).
  int64_t dropped = 0;
  double seconds = 0;
  /// {"task": "detection", "set", "split", "images", "metrics": CocoEvalResult::to_json, ...}
  nlohmann::json to_json(const DetectionSplit& split) const;
};

/// Runs `model` (eval mode, no gradient) over every image of `split` and evaluates the results
/// with evaluate_bbox. `labels` maps the model's labels to category ids.
DetectEvalResult evaluate_detector(Detector& model, const DetectionSplit& split, const LabelMap& labels,
                                   const BatchOptions& preprocess, const DetectEvalOptions& options = {},
                                   const torch::Device& device = torch::kCPU);

/// The box-prior baseline: for every image of `split`, `per_image` boxes drawn uniformly from the
/// annotations of `train` (category and box, the box rescaled from its image's size to this one's)
/// with uniform random scores; only categories the split has. When `split` is `train` itself (the
/// same annotation file) an image never receives its own boxes (leave one image out). A
/// detector that learned nothing about the images but the training box and class distribution
/// scores about this. Seeded: same seed, same boxes. Throws florence::Error when `train` has no
/// annotation of a category the split has.
std::vector<CocoResult> box_prior_baseline(const DetectionSplit& train, const DetectionSplit& split, int64_t per_image,
                                           uint64_t seed);

/// The random-box baseline (class-agnostic and zero-shot detection): for every image of `split`, `per_image` boxes
/// drawn from the annotations of `train` regardless of category (their relative size and place:
/// the training box prior), each given a category of `split` uniformly at random and a uniform
/// random score. When `split` is `train` itself an image never receives its own boxes (leave one
/// image out, as box_prior_baseline). Seeded. Throws florence::Error when `train` has no
/// annotation or per_image is out of [1, kMaxBaselineBoxes].
std::vector<CocoResult> random_box_baseline(const DetectionSplit& train, const DetectionSplit& split,
                                            int64_t per_image, uint64_t seed);

/// Which baseline detection_baseline draws.
enum class BaselineKind {
  box_prior,            ///< box_prior_baseline, scored per category (supervised detection)
  random_boxes_pooled,  ///< random_box_baseline, scored with categories pooled (class-agnostic detection)
  random_boxes,         ///< random_box_baseline, scored per category (zero-shot detection)
};

/// The baseline reported beside a detector on `split` (`detect train|eval|zero-shot`): the boxes of
/// `kind` drawn from `train`, scored with COCO mAP. Returns {"name", "metrics"
/// (CocoEvalResult::to_json)}. Throws florence::Error as the drawing functions do (e.g. the box prior
/// on a split whose categories `train` lacks).
nlohmann::json detection_baseline(const DetectionSplit& train, const DetectionSplit& split, int64_t per_image,
                                  uint64_t seed, BaselineKind kind);

/// detection_baseline with its failure recorded, not thrown, so that a run's evaluation is never lost
/// to its baseline: sets result["baseline"] or result["baseline_error"] (and logs a warning).
/// `train` gives the split the boxes come from (a reference: a split already open is not copied);
/// its florence::Error is recorded the same way. Returns whether a baseline was drawn.
bool record_detection_baseline(nlohmann::json& result, const std::function<const DetectionSplit&()>& train,
                               const DetectionSplit& split, int64_t per_image, uint64_t seed, BaselineKind kind);

/// Detections of one image file in its own pixels: boxes xyxy, scores, labels; only those with
/// score >= min_score. Throws florence::Error for an unreadable image.
Detections detect_image(LoadedDetector& d, const std::string& image_path, double min_score = 0.0,
                        const torch::Device& device = torch::kCPU);

/// Draws `dets` (boxes, "name score" labels; dets best first, a label that would cover a better one is
/// left out, its box kept) on the image and writes a PNG. Throws florence::Error
/// when the image cannot be read or the PNG written.
void draw_detections(const std::string& image_path, const Detections& dets, const std::vector<std::string>& names,
                     const std::string& out_png);

}  // namespace florence::detect
