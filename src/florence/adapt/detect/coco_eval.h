#pragma once
// Bounding-box mAP computed as pycocotools' COCOeval (cocodataset/cocoapi,
// PythonAPI/pycocotools/cocoeval.py, iouType "bbox") computes it, step for step:
//
//  * Images: the ground truth's image ids, sorted; categories: its category ids, sorted
//    (use_cats = false pools every category, as COCOeval's useCats = 0 does for proposals).
//  * Per image and category: detections sorted by score, highest first, with a stable sort (ties
//    keep their order in the results list: numpy mergesort), cut at max(max_dets); ground truth
//    sorted stably with ignored boxes last. IoU of boxes (maskApi.c bbIou); against a crowd box
//    the union is the detection's own area. A ground-truth box is ignored when iscrowd or when its
//    `area` field lies outside the area range [lo, hi] (both ends inclusive).
//  * Greedy matching per IoU threshold t: each detection in score order takes the unmatched
//    (crowd: even if matched) box of highest IoU >= min(t, 1 - 1e-10), preferring non-ignored
//    boxes; a detection matched to an ignored box is ignored (neither TP nor FP), as is an
//    unmatched detection whose area w*h lies outside the area range.
//  * Per category, area range and maxDets m: the first m detections of every image pooled and
//    sorted by score (stable, images in id order); precision/recall cumulated; precision made
//    monotone (envelope from the right); sampled at 101 recall thresholds 0:.01:1 with
//    searchsorted(side='left'), 0 past the last recall; recall = the final recall. A category
//    with no non-ignored ground truth in that area range gets -1 (undefined) and is left out of
//    the means.
//  * Summary (COCOeval.summarize, _summarizeDets): AP = mean precision over IoU .50:.05:.95,
//    101 recall points and the defined categories (area all, 100 dets); AP50, AP75 at one IoU;
//    APs/m/l per area range (small < 32^2 <= medium < 96^2 <= large, by area); AR1/10/100 mean
//    recall over IoUs and categories; ARs/m/l. -1 when nothing is defined.
//
// Thresholds are generated as numpy.linspace generates them (i * step + start, the last one the
// end point exactly), so searchsorted sees the same doubles. The one intended difference from
// numpy is summation order in the final means (numpy sums pairwise): results agree to ~1e-15.
// Kept as in pycocotools, documented so nobody is surprised: a match is recorded by the matched
// box's annotation id, and an id of 0 reads as "unmatched" (annotation ids should start at 1).
#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "florence/adapt/detect/coco.h"

namespace florence::detect {

struct CocoEvalParams {
  /// IoU thresholds (default .50:.05:.95, 10 values).
  std::vector<double> iou_thresholds = default_iou_thresholds();
  /// Recall thresholds (default 0:.01:1, 101 values).
  std::vector<double> recall_thresholds = default_recall_thresholds();
  /// Detections kept per image, ascending (default 1, 10, 100; the last one is the cut in matching).
  std::vector<int> max_dets{1, 10, 100};
  /// Area ranges [lo, hi] in pixels^2 and their labels (pycocotools Params.setDetParams).
  std::vector<std::pair<double, double>> area_ranges{{0, 1e10}, {0, 32.0 * 32.0}, {32.0 * 32.0, 96.0 * 96.0}, {96.0 * 96.0, 1e10}};
  std::vector<std::string> area_labels{"all", "small", "medium", "large"};
  /// false: categories ignored (every box is one class), as COCOeval useCats = 0.
  bool use_cats = true;

  /// numpy.linspace(.5, .95, 10) and numpy.linspace(0, 1, 101), bit for bit.
  static std::vector<double> default_iou_thresholds();
  static std::vector<double> default_recall_thresholds();
  /// Throws florence::Error for empty/unsorted thresholds, max_dets not ascending or < 1, an
  /// area range with lo > hi, or labels not matching the ranges.
  void validate() const;
};

struct CocoEvalResult {
  /// The 12 numbers of COCOeval.stats, in its order (-1 = undefined).
  double ap = -1, ap50 = -1, ap75 = -1, ap_small = -1, ap_medium = -1, ap_large = -1;
  double ar1 = -1, ar10 = -1, ar100 = -1, ar_small = -1, ar_medium = -1, ar_large = -1;

  /// Evaluated category ids (sorted; {-1} when use_cats is false) and each one's AP over IoU
  /// .50:.95 (area "all", the largest maxDets); -1 for a category without ground truth.
  std::vector<int64_t> category_ids;
  std::vector<double> category_ap;
  /// Per category: AP50, and recall at the largest maxDets averaged over IoUs (-1 undefined).
  std::vector<double> category_ap50, category_ar;

  /// COCOeval.eval["precision"] [T, R, K, A, M] and ["recall"] [T, K, A, M], row-major.
  std::vector<double> precision, recall;
  int64_t T = 0, R = 0, K = 0, A = 0, M = 0;
  double precision_at(int64_t t, int64_t r, int64_t k, int64_t a, int64_t m) const {
    return precision[(((t * R + r) * K + k) * A + a) * M + m];
  }
  double recall_at(int64_t t, int64_t k, int64_t a, int64_t m) const { return recall[((t * K + k) * A + a) * M + m]; }

  /// stats as a vector, in COCOeval.stats order.
  std::vector<double> stats() const;
  /// The 12 lines COCOeval.summarize() prints ("Average Precision  (AP) @[ IoU=0.50:0.95 | ...").
  std::string summary() const;
  /// {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
  ///  "per_category": [{"id", "name", "AP", "AP50", "AR100"}]}; names from `gt` when given.
  nlohmann::json to_json(const CocoDataset* gt = nullptr) const;
};

/// Evaluates `dt` (results answering `gt`: every image/category id must exist in gt, as
/// coco_results_from_json checks; throws florence::Error otherwise) with `params`.
CocoEvalResult evaluate_bbox(const CocoDataset& gt, const std::vector<CocoResult>& dt,
                             const CocoEvalParams& params = {});

/// IoU of COCO boxes [x, y, w, h] as maskApi.c bbIou: 0 when they do not overlap; with
/// `crowd`, intersection / area(dt).
double coco_box_iou(const CocoBox& dt, const CocoBox& gt, bool crowd);

}  // namespace florence::detect
