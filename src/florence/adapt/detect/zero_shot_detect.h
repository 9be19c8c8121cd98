#pragma once
// Zero-shot detection, Florence §3.1's transfer protocol: a class-agnostic detector proposes
// boxes, the image–text model names them. Each proposal is cropped from the original image (a
// square around the box, `context` of its side added on every side, pixels outside the image
// filled with the encoder's mean colour), resized to the image tower's input, embedded, and
// compared with the text embeddings of the split's category names (prompt templates averaged,
// eval/zero_shot.h). A proposal with objectness s and class probabilities p = softmax(cos / tau)
// becomes one detection per category c with score s * p_c; the `max_dets` best per image are kept
// and evaluated with COCO mAP (use_cats on) against the split, whose categories were never
// trained as boxes (instances_test_unseen.json of the set builder).
#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "florence/adapt/detect/coco_eval.h"
#include "florence/adapt/detect/detect_data.h"
#include "florence/adapt/detect/detect_eval.h"
#include "florence/eval/encode.h"

namespace florence::detect {

struct ZeroShotDetectOptions {
  int64_t proposals = 100;            ///< highest-scoring class-agnostic boxes per image that are named
  double context = 0.1;               ///< crop margin, fraction of the box's longer side on each side
  std::vector<std::string> templates; ///< prompt templates ("a photo of a {}."); empty = eval's defaults
  int64_t max_dets = 100;             ///< detections kept per image (COCOeval's largest maxDets)
};

struct ZeroShotDetectResult {
  CocoEvalResult metrics;
  std::vector<CocoResult> results;  ///< named detections, split category ids, original pixels
  int64_t images = 0;               ///< images with at least one proposal that were read
  int64_t crops = 0;                ///< proposals embedded
  int64_t unreadable = 0;           ///< images either pass could not read (their boxes count as missed)
  /// The detector pass (the overload that runs it): its boxes' class-agnostic COCO metrics and count.
  std::optional<CocoEvalResult> proposal_metrics;
  int64_t proposals = 0;
  double seconds = 0;
  /// {"task": "zero-shot detection", "split", "images", "crops", "unreadable", "metrics", ...; with a
  /// detector pass "proposals": {"boxes", "class_agnostic_metrics"}}
  nlohmann::json to_json(const DetectionSplit& split) const;
};

/// Throws florence::Error when an option is out of range (proposals, max_dets < 1; context not in
/// [0, 4], NaN included).
void check_zero_shot_options(const ZeroShotDetectOptions& options);

/// Names class-agnostic `proposals` (COCO results on `split`'s images, original pixels; their
/// category ids are ignored) with the image–text model `clip` and evaluates them on `split`.
/// Throws florence::Error when `clip` has no tokenizer, the split has no categories, or an
/// option is out of range (check_zero_shot_options). An unreadable image is a counted, logged skip;
/// an image whose file size differs from its annotated size is cropped in file pixels, with a warning.
ZeroShotDetectResult zero_shot_detect(const std::vector<CocoResult>& proposals, const DetectionSplit& split,
                                      eval::EvalModel& clip, const ZeroShotDetectOptions& options = {});

/// The whole protocol: `detector` proposes boxes on every image of `split` (evaluate_detector with
/// categories pooled, `detector_batch` images per batch; a class detector's labels are ignored),
/// then the overload above names them. `unreadable` counts the images of both passes,
/// `proposal_metrics` / `proposals` describe the detector pass. Throws as the overload above, and
/// before the detector pass when an option is out of range.
ZeroShotDetectResult zero_shot_detect(LoadedDetector& detector, const DetectionSplit& split, eval::EvalModel& clip,
                                      const ZeroShotDetectOptions& options = {}, int64_t detector_batch = 16,
                                      const torch::Device& device = torch::kCPU);

}  // namespace florence::detect
