// COCO bbox mAP on hand-computed cases. pycocotools cannot be installed here, so every expected
// number is worked out by hand in the comment beside it, following cocoeval.py step by step:
// per-(image, category) greedy matching in score order, pooled detections sorted by score,
// tp/fp cumulative sums, rc = tp / npig, pr = tp / (tp + fp + eps), the right-to-left envelope
// of pr, and pr sampled at the first index whose rc >= each of the 101 recall thresholds (0 past
// the end). "AP over IoUs" averages the 10 thresholds .50:.05:.95.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "florence/adapt/detect/coco.h"
#include "florence/adapt/detect/coco_eval.h"
#include "florence/core/error.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_coco_eval {

using namespace florence::detect;

namespace {

constexpr double kTol = 1e-12;

// Images 1000x1000 with the given ids (in that file order), categories named c<id>.
struct Set {
  CocoDataset d;
  std::vector<CocoResult> dt;
  Set(std::vector<int64_t> images, std::vector<int64_t> cats) {
    for (auto id : images) d.images.push_back({id, "i" + std::to_string(id) + ".png", 1000, 1000});
    for (auto id : cats) d.categories.push_back({id, "c" + std::to_string(id), ""});
  }
  // Ground-truth box; area = w*h unless given.
  void gt(int64_t img, int64_t cat, CocoBox b, bool crowd = false, double area = -1) {
    CocoAnnotation a;
    a.id = int64_t(d.annotations.size()) + 1;
    a.image_id = img;
    a.category_id = cat;
    a.bbox = b;
    a.area = area >= 0 ? area : b[2] * b[3];
    a.iscrowd = crowd;
    d.annotations.push_back(a);
  }
  void det(int64_t img, int64_t cat, CocoBox b, double score) { dt.push_back({img, cat, b, score}); }
  CocoEvalResult eval(CocoEvalParams p = {}) {
    validate_coco(d, "test");
    return evaluate_bbox(d, dt, p);
  }
};

}  // namespace

TEST(CocoEval, ThresholdsAreNumpyLinspaceBitForBit) {
  const auto iou = CocoEvalParams::default_iou_thresholds();
  const auto rec = CocoEvalParams::default_recall_thresholds();
  ASSERT_EQ(iou.size(), 10u);
  ASSERT_EQ(rec.size(), 101u);
  // numpy 1.24: np.linspace(.5, .95, 10)[8] is 0.8999999999999999 (0x1.cccccccccccccp-1), [5] is 0.75.
  EXPECT_EQ(iou[8], 0x1.cccccccccccccp-1);
  EXPECT_EQ(iou[5], 0.75);
  EXPECT_EQ(iou[9], 0.95);
  // np.linspace(0, 1, 101)[35] is 35 * 0.01 = 0x1.6666666666667p-2, one ulp above 0.35 (= 7/20).
  EXPECT_EQ(rec[35], 0x1.6666666666667p-2);
  EXPECT_GT(rec[35], 7.0 / 20.0);
  EXPECT_EQ(rec[100], 1.0);
}

TEST(CocoEval, PerfectDetectionsScoreOne) {
  // Two images, two categories; one box per (image, category) in each size class, each detected
  // exactly: every match has IoU 1, so at every IoU threshold tp = 1 per detection, fp = 0 and
  // precision is 1 at every recall: all APs and ARs are 1 (AR1 too: one box per image-category).
  Set s({1, 2}, {1, 2});
  s.gt(1, 1, {10, 10, 10, 10});     // small (area 100)
  s.gt(1, 2, {100, 100, 50, 50});   // medium (2500)
  s.gt(2, 1, {300, 300, 200, 200}); // large (40000)
  s.gt(2, 2, {0, 0, 20, 30});       // small (600)
  for (const auto& a : s.d.annotations) s.det(a.image_id, a.category_id, a.bbox, 0.9);
  const auto r = s.eval();
  for (double v : r.stats()) EXPECT_NEAR(v, 1.0, kTol);
  ASSERT_EQ(r.category_ap.size(), 2u);
  EXPECT_NEAR(r.category_ap[0], 1.0, kTol);
  EXPECT_NEAR(r.category_ap[1], 1.0, kTol);
}

TEST(CocoEval, FalsePositiveRankedAboveTruePositiveHalvesPrecision) {
  // One GT. FP (0.9) then TP (0.8): tp = [0, 1], fp = [1, 1], rc = [0, 1], pr = [0, 0.5];
  // envelope [0.5, 0.5]; threshold 0 -> index 0, the other 100 -> index 1: AP = 0.5 at every
  // IoU. AR100 = 1; AR1 keeps only the FP: 0.
  Set s({1}, {1});
  s.gt(1, 1, {0, 0, 100, 100});
  s.det(1, 1, {500, 500, 100, 100}, 0.9);
  s.det(1, 1, {0, 0, 100, 100}, 0.8);
  auto r = s.eval();
  EXPECT_NEAR(r.ap, 0.5, kTol);
  EXPECT_NEAR(r.ap50, 0.5, kTol);
  EXPECT_NEAR(r.ap75, 0.5, kTol);
  EXPECT_NEAR(r.ar100, 1.0, kTol);
  EXPECT_NEAR(r.ar10, 1.0, kTol);
  EXPECT_NEAR(r.ar1, 0.0, kTol);
  // Scores swapped: TP first: pr = [1, 0.5] -> envelope keeps 1 at index 0, every threshold hits
  // index 0 (rc[0] = 1): AP = 1.
  s.dt[0].score = 0.7;
  r = s.eval();
  EXPECT_NEAR(r.ap, 1.0, kTol);
  EXPECT_NEAR(r.ar1, 1.0, kTol);
}

TEST(CocoEval, PartialOverlapCountsOnlyAtLowerIouThresholds) {
  // IoU 6200/10000 = 0.62: a TP at .50, .55, .60 (3 of 10 thresholds), unmatched (FP) above:
  // AP = 3/10, AP50 = 1, AP75 = 0, AR100 = 3/10.
  Set s({1}, {1});
  s.gt(1, 1, {0, 0, 100, 100});
  s.det(1, 1, {0, 0, 100, 62}, 0.9);
  const auto r = s.eval();
  EXPECT_NEAR(r.ap, 0.3, kTol);
  EXPECT_NEAR(r.ap50, 1.0, kTol);
  EXPECT_NEAR(r.ap75, 0.0, kTol);
  EXPECT_NEAR(r.ar100, 0.3, kTol);
}

TEST(CocoEval, ScoreTiesKeepResultOrderWithinAndImageIdOrderAcrossImages) {
  // Equal scores: the stable sort keeps the results-file order. FP listed first -> as the FP-above-
  // TP case, AP = 0.5; TP listed first -> AP = 1. With maxDets 1 the tie also decides AR1.
  {
    Set s({1}, {1});
    s.gt(1, 1, {0, 0, 100, 100});
    s.det(1, 1, {500, 500, 100, 100}, 0.5);
    s.det(1, 1, {0, 0, 100, 100}, 0.5);
    const auto r = s.eval();
    EXPECT_NEAR(r.ap, 0.5, kTol);
    EXPECT_NEAR(r.ar1, 0.0, kTol);
  }
  {
    Set s({1}, {1});
    s.gt(1, 1, {0, 0, 100, 100});
    s.det(1, 1, {0, 0, 100, 100}, 0.5);
    s.det(1, 1, {500, 500, 100, 100}, 0.5);
    const auto r = s.eval();
    EXPECT_NEAR(r.ap, 1.0, kTol);
    EXPECT_NEAR(r.ar1, 1.0, kTol);
  }
  {
    // Across images, pooled ties follow the sorted image ids, not file or results order: images
    // listed [2, 1]; the TP (image 2) is the first result, the FP (image 1) the second; pooled
    // order is image 1 then 2: FP, TP -> AP = 0.5.
    Set s({2, 1}, {1});
    s.gt(2, 1, {0, 0, 100, 100});
    s.det(2, 1, {0, 0, 100, 100}, 0.5);
    s.det(1, 1, {0, 0, 100, 100}, 0.5);
    EXPECT_NEAR(s.eval().ap, 0.5, kTol);
  }
}

TEST(CocoEval, RecallThresholdsUseNumpysDoublesNotExactHundredths) {
  // 20 GT boxes in a row; 7 exact detections, then a FP, then the other 13 (scores descending).
  // tp/fp: positions 0..6 pr = 1 (rc = (j+1)/20), position 7 pr = 7/8 (rc = 7/20), positions
  // j = 8..20 pr = j/(j+1) (rc = j/20), so the envelope is 1 for j <= 6 and 20/21 from j = 7 on.
  // Recall thresholds 0..34 find an index <= 6 -> 1. Threshold 35 is 0.35000000000000003 > 7/20,
  // so searchsorted skips positions 6 and 7 (rc = 0.35) and lands on 8 -> 20/21, as do 36..100.
  // AP = (35 * 1 + 66 * 20/21) / 101 at every IoU (the boxes are exact). Exact hundredths would
  // have given (36 + 65 * 20/21) / 101 instead.
  Set s({1}, {1});
  for (int i = 0; i < 20; ++i) s.gt(1, 1, {double(i) * 40, 0, 30, 30});
  double score = 1.0;
  for (int i = 0; i < 7; ++i) s.det(1, 1, {double(i) * 40, 0, 30, 30}, score -= 0.01);
  s.det(1, 1, {0, 500, 30, 30}, score -= 0.01);
  for (int i = 7; i < 20; ++i) s.det(1, 1, {double(i) * 40, 0, 30, 30}, score -= 0.01);
  const auto r = s.eval();
  EXPECT_NEAR(r.ap, (35.0 + 66.0 * 20.0 / 21.0) / 101.0, kTol);
  EXPECT_NEAR(r.ar100, 1.0, kTol);
  EXPECT_NEAR(r.ar10, 9.0 / 20.0, kTol);  // the first 10 detections: 7 TPs, the FP, 2 TPs
}

TEST(CocoEval, CrowdMatchesAreIgnoredAndUseTheDetectionArea) {
  // GT: A regular [0,0,100,100]; C crowd [200,200,300,300] (area 90000, not counted in npig = 1).
  // d4 (0.95) [150,150,100,100]: overlap with C is 50x50 = 2500; crowd IoU = 2500 / area(d4) =
  //     0.25 < .5 -> unmatched -> FP.
  // d1 (0.9) [210,210,50,50] and d2 (0.8) [300,300,50,50]: inside C, crowd IoU = 1 -> both match C
  //     (a crowd box can be matched repeatedly) -> ignored.
  // d3 (0.7) = A -> TP.
  // Sequence without ignored: FP, TP -> AP = 0.5 at every IoU; AR = 1.
  Set s({1}, {1});
  s.gt(1, 1, {0, 0, 100, 100});
  s.gt(1, 1, {200, 200, 300, 300}, /*crowd=*/true);
  s.det(1, 1, {150, 150, 100, 100}, 0.95);
  s.det(1, 1, {210, 210, 50, 50}, 0.9);
  s.det(1, 1, {300, 300, 50, 50}, 0.8);
  s.det(1, 1, {0, 0, 100, 100}, 0.7);
  const auto r = s.eval();
  EXPECT_NEAR(r.ap, 0.5, kTol);
  EXPECT_NEAR(r.ar100, 1.0, kTol);
  EXPECT_NEAR(coco_box_iou({150, 150, 100, 100}, {200, 200, 300, 300}, true), 0.25, kTol);
  // The non-crowd IoU of the same pair: 2500 / (10000 + 90000 - 2500).
  EXPECT_NEAR(coco_box_iou({150, 150, 100, 100}, {200, 200, 300, 300}, false), 2500.0 / 97500.0, kTol);
}

TEST(CocoEval, RegularBoxIsPreferredOverAHigherIouCrowdBox) {
  // A regular [0,0,100,100]; C crowd [0,0,200,200]; one detection [0,0,90,100] (0.9):
  // IoU with A = 9000/10000 = 0.9, crowd IoU with C = 9000/9000 = 1. Regular boxes are scanned
  // first and the scan stops at the ignored ones once a regular box matched: TP at thresholds
  // .50 ... .8999999999999999 (9 of 10); at .95 A fails and C matches -> ignored, no TP: AP 0 there.
  // AP = 9/10, AR100 = 9/10. (Preferring the highest IoU would ignore it everywhere: AP 0.)
  Set s({1}, {1});
  s.gt(1, 1, {0, 0, 100, 100});
  s.gt(1, 1, {0, 0, 200, 200}, true);
  s.det(1, 1, {0, 0, 90, 100}, 0.9);
  const auto r = s.eval();
  EXPECT_NEAR(r.ap, 0.9, kTol);
  EXPECT_NEAR(r.ar100, 0.9, kTol);
}

TEST(CocoEval, CategoryWithOnlyCrowdBoxesIsUndefined) {
  // Category 2 has only a crowd box: npig = 0 -> -1, left out of the mean (category 1 perfect).
  Set s({1}, {1, 2});
  s.gt(1, 1, {0, 0, 100, 100});
  s.gt(1, 2, {300, 300, 100, 100}, true);
  s.det(1, 1, {0, 0, 100, 100}, 0.9);
  s.det(1, 2, {300, 300, 100, 100}, 0.9);
  const auto r = s.eval();
  EXPECT_NEAR(r.ap, 1.0, kTol);
  EXPECT_EQ(r.category_ap[1], -1.0);
}

TEST(CocoEval, EmptyImagesAndDetectionsOnImagesWithoutBoxes) {
  // Image 1: one GT, its exact detection (0.8). Image 2: no GT, one detection (0.9) = a FP ranked
  // first: FP, TP -> AP 0.5. Image 3: nothing at all -> no effect.
  Set s({1, 2, 3}, {1});
  s.gt(1, 1, {0, 0, 100, 100});
  s.det(1, 1, {0, 0, 100, 100}, 0.8);
  EXPECT_NEAR(s.eval().ap, 1.0, kTol);
  s.det(2, 1, {0, 0, 100, 100}, 0.9);
  const auto r = s.eval();
  EXPECT_NEAR(r.ap, 0.5, kTol);
  EXPECT_NEAR(r.ar100, 1.0, kTol);
  // No detections at all: every category with GT has precision 0 and recall 0.
  s.dt.clear();
  const auto e = s.eval();
  EXPECT_NEAR(e.ap, 0.0, kTol);
  EXPECT_NEAR(e.ar100, 0.0, kTol);
}

TEST(CocoEval, CategoryWithoutGroundTruthIsLeftOutOfTheMean) {
  // Category 1 perfect (AP 1); category 2 has detections but no GT anywhere -> -1, not averaged:
  // AP = 1. Category 3 has GT and no detections -> precision 0 -> AP 0, averaged: see next test.
  Set s({1, 2}, {1, 2});
  s.gt(1, 1, {0, 0, 100, 100});
  s.det(1, 1, {0, 0, 100, 100}, 0.6);
  s.det(1, 2, {0, 0, 100, 100}, 0.9);
  s.det(2, 2, {50, 50, 100, 100}, 0.9);
  const auto r = s.eval();
  EXPECT_NEAR(r.ap, 1.0, kTol);
  EXPECT_NEAR(r.ar100, 1.0, kTol);
  ASSERT_EQ(r.category_ids, (std::vector<int64_t>{1, 2}));
  EXPECT_NEAR(r.category_ap[0], 1.0, kTol);
  EXPECT_EQ(r.category_ap[1], -1.0);
  const auto j = r.to_json(&s.d);
  EXPECT_EQ(j["per_category"][1]["name"], "c2");
  EXPECT_EQ(j["per_category"][1]["AP"], -1.0);
}

TEST(CocoEval, CategoryWithGroundTruthButNoDetectionsCountsAsZero) {
  // Category 1 perfect (1), category 2 has a GT box and no detection (0): AP = (1 + 0) / 2.
  Set s({1}, {1, 2});
  s.gt(1, 1, {0, 0, 100, 100});
  s.gt(1, 2, {200, 200, 100, 100});
  s.det(1, 1, {0, 0, 100, 100}, 0.9);
  const auto r = s.eval();
  EXPECT_NEAR(r.ap, 0.5, kTol);
  EXPECT_NEAR(r.ar100, 0.5, kTol);
  EXPECT_NEAR(r.category_ap[1], 0.0, kTol);
}

TEST(CocoEval, MaxDetsCutsPerImage) {
  // Three GT boxes, three exact detections (0.9, 0.8, 0.7): AP = 1; AR1 = 1/3 (one detection
  // kept per image), AR10 = AR100 = 1.
  {
    Set s({1}, {1});
    for (int i = 0; i < 3; ++i) s.gt(1, 1, {double(i) * 200, 0, 100, 100});
    for (int i = 0; i < 3; ++i) s.det(1, 1, {double(i) * 200, 0, 100, 100}, 0.9 - 0.1 * i);
    const auto r = s.eval();
    EXPECT_NEAR(r.ap, 1.0, kTol);
    EXPECT_NEAR(r.ar1, 1.0 / 3.0, kTol);
    EXPECT_NEAR(r.ar10, 1.0, kTol);
    EXPECT_NEAR(r.ar100, 1.0, kTol);
  }
  // One GT; 99 FPs (0.9) then the TP (0.1) as the 100th detection: kept. pr at the TP =
  // 1 / (100 + eps) = 0.01, envelope 0.01 everywhere, rc reaches 1 only there: AP = 0.01, AR100 = 1,
  // AR10 = 0. A 100th FP pushes the TP past the 100-detection cut: AP = 0, AR100 = 0.
  Set s({1}, {1});
  s.gt(1, 1, {0, 0, 10, 10});
  for (int i = 0; i < 99; ++i) s.det(1, 1, {500, 500, 10, 10}, 0.9);
  s.det(1, 1, {0, 0, 10, 10}, 0.1);
  auto r = s.eval();
  EXPECT_NEAR(r.ap, 0.01, kTol);
  EXPECT_NEAR(r.ar100, 1.0, kTol);
  EXPECT_NEAR(r.ar10, 0.0, kTol);
  s.det(1, 1, {500, 500, 10, 10}, 0.9);
  r = s.eval();
  EXPECT_NEAR(r.ap, 0.0, kTol);
  EXPECT_NEAR(r.ar100, 0.0, kTol);
}

TEST(CocoEval, AreaRangesIgnoreBoxesOutsideThem) {
  // GT: S small [0,0,10,10] (area 100), L large [500,500,200,200] (40000).
  // Detections: f1 (0.95) small FP [900,0,10,10]; s (0.9) = S; l (0.8) = L; f2 (0.7) large FP
  // [0,500,200,200].
  // all:    FP, TP, TP, FP; npig 2; rc = [0, .5, 1, 1], pr = [0, .5, 2/3, .5] -> envelope
  //         [2/3, 2/3, 2/3, .5]; every threshold lands on index <= 2: AP = 2/3.
  // small:  L ignored (npig 1); l matches L -> ignored; f2 unmatched with area 40000 outside ->
  //         ignored; f1 (area 100, inside) FP; s TP: FP, TP -> APs = 0.5, ARs = 1.
  // large:  S ignored; s matches S -> ignored; f1 unmatched, area 100 outside -> ignored; l TP, f2
  //         FP: TP, FP -> APl = 1, ARl = 1.
  // medium: no GT in range -> -1.
  Set s({1}, {1});
  s.gt(1, 1, {0, 0, 10, 10});
  s.gt(1, 1, {500, 500, 200, 200});
  s.det(1, 1, {900, 0, 10, 10}, 0.95);
  s.det(1, 1, {0, 0, 10, 10}, 0.9);
  s.det(1, 1, {500, 500, 200, 200}, 0.8);
  s.det(1, 1, {0, 500, 200, 200}, 0.7);
  const auto r = s.eval();
  EXPECT_NEAR(r.ap, 2.0 / 3.0, kTol);
  EXPECT_NEAR(r.ap_small, 0.5, kTol);
  EXPECT_NEAR(r.ap_large, 1.0, kTol);
  EXPECT_EQ(r.ap_medium, -1.0);
  EXPECT_NEAR(r.ar_small, 1.0, kTol);
  EXPECT_NEAR(r.ar_large, 1.0, kTol);
  EXPECT_EQ(r.ar_medium, -1.0);
}

TEST(CocoEval, AreaRangeEndsAreInclusiveAndUseTheAnnotationArea) {
  // A box whose `area` field is exactly 32^2 = 1024 belongs to small [0, 1024] and to medium
  // [1024, 9216]; large has no GT -> -1. Its bbox (10x10) is not what decides: the area field is.
  Set s({1}, {1});
  s.gt(1, 1, {0, 0, 10, 10}, false, 1024.0);
  s.det(1, 1, {0, 0, 10, 10}, 0.9);
  const auto r = s.eval();
  EXPECT_NEAR(r.ap_small, 1.0, kTol);
  EXPECT_NEAR(r.ap_medium, 1.0, kTol);
  EXPECT_EQ(r.ap_large, -1.0);
}

TEST(CocoEval, ClassAgnosticModePoolsCategories) {
  // GT of category 1, detection labelled category 2 at the same place: per category, AP(1) = 0
  // (no detection) and category 2 is undefined -> AP 0. Class-agnostic (use_cats false): a TP -> 1.
  Set s({1}, {1, 2});
  s.gt(1, 1, {0, 0, 100, 100});
  s.det(1, 2, {0, 0, 100, 100}, 0.9);
  EXPECT_NEAR(s.eval().ap, 0.0, kTol);
  CocoEvalParams p;
  p.use_cats = false;
  const auto r = s.eval(p);
  EXPECT_NEAR(r.ap, 1.0, kTol);
  EXPECT_EQ(r.category_ids, (std::vector<int64_t>{-1}));
}

TEST(CocoEval, SummaryPrintsPycocotoolsLines) {
  Set s({1}, {1});
  s.gt(1, 1, {0, 0, 100, 100});
  s.det(1, 1, {500, 500, 100, 100}, 0.9);
  s.det(1, 1, {0, 0, 100, 100}, 0.8);
  const std::string text = s.eval().summary();
  EXPECT_NE(text.find(" Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.500\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find(" Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets=  1 ] = 0.000\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("area= small"), std::string::npos);
}

TEST(CocoEval, ResultsNamingUnknownIdsAndBadParamsAreErrors) {
  Set s({1}, {1});
  s.gt(1, 1, {0, 0, 100, 100});
  s.det(4, 1, {0, 0, 100, 100}, 0.9);
  EXPECT_THROW(s.eval(), florence::Error);
  s.dt = {{1, 1, {0, 0, 1, 1}, 0.5}};
  CocoEvalParams p;
  p.max_dets = {10, 1};
  EXPECT_THROW(s.eval(p), florence::Error);
  p = {};
  p.area_labels.pop_back();
  EXPECT_THROW(s.eval(p), florence::Error);
}

}  // namespace test_coco_eval
