// Zero-shot detection (detect/zero_shot_detect.h) on hand-made splits: with one category every
// proposal keeps its objectness and ground-truth proposals give AP 1; with two, each proposal's
// scores split its objectness by the class probabilities (they sum back to it); the per-image
// proposal and detection limits; an unreadable image is a counted skip; the random-box baseline's
// geometry, categories and seed.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "florence/adapt/detect/detect_eval.h"
#include "florence/adapt/detect/zero_shot_detect.h"
#include "florence/core/error.h"
#include "support/paths.h"
#include "support/vocab.h"

namespace test_zero_shot_detect {

namespace fs = std::filesystem;
using namespace florence;
using namespace florence::detect;

namespace {

// ROOT/images/zs/{a,b}.png (64 x 64, 32 x 16) and c.png (not an image), found by the "images/{split
// before _}" rule; instances_zs_one.json has
// one category (id 5), instances_zs_two.json two (5, 9), instances_zs_nine.json only 9, over the
// same images.
fs::path make_set() {
  const fs::path root = fs::path(FLORENCE_TEST_TMP) / "unit_zero_shot_detect";
  fs::remove_all(root);
  fs::create_directories(root / "annotations");
  fs::create_directories(root / "images" / "zs");
  cv::Mat a(64, 64, CV_8UC3, cv::Scalar(30, 30, 30));
  cv::rectangle(a, cv::Rect(8, 8, 20, 30), cv::Scalar(0, 0, 255), cv::FILLED);
  cv::circle(a, cv::Point(48, 44), 10, cv::Scalar(0, 255, 0), cv::FILLED);
  cv::imwrite((root / "images" / "zs" / "a.png").string(), a);
  cv::Mat b(16, 32, CV_8UC3, cv::Scalar(200, 200, 200));
  cv::imwrite((root / "images" / "zs" / "b.png").string(), b);
  std::ofstream(root / "images" / "zs" / "c.png") << "not an image";
  const nlohmann::json images = {{{"id", 1}, {"file_name", "a.png"}, {"width", 64}, {"height", 64}},
                                 {{"id", 2}, {"file_name", "b.png"}, {"width", 32}, {"height", 16}},
                                 {{"id", 3}, {"file_name", "c.png"}, {"width", 10}, {"height", 10}}};
  const nlohmann::json one = {{"images", images},
                              {"annotations",
                               {{{"id", 1}, {"image_id", 1}, {"category_id", 5}, {"bbox", {8, 8, 20, 30}}},
                                {{"id", 2}, {"image_id", 1}, {"category_id", 5}, {"bbox", {38, 34, 20, 20}}},
                                {{"id", 3}, {"image_id", 2}, {"category_id", 5}, {"bbox", {4, 2, 16, 8}}}}},
                              {"categories", {{{"id", 5}, {"name", "square"}}}}};
  nlohmann::json two = one;
  two["annotations"][1]["category_id"] = 9;
  two["categories"].push_back({{"id", 9}, {"name", "disc"}});
  std::ofstream(root / "annotations" / "instances_zs_one.json") << one.dump();
  std::ofstream(root / "annotations" / "instances_zs_two.json") << two.dump();
  nlohmann::json nine = two;  // only the disc (category 9)
  nine["annotations"] = nlohmann::json::array({two["annotations"][1]});
  nine["categories"] = nlohmann::json::array({two["categories"][1]});
  std::ofstream(root / "annotations" / "instances_zs_nine.json") << nine.dump();
  return root;
}

eval::EvalModel random_model() {
  torch::manual_seed(0);
  eval::LoadOptions lo;
  lo.model = "florence-nano";
  lo.vocab = ::test::clip_vocab();
  return eval::load_eval_model(lo);
}

std::vector<CocoResult> gt_proposals(const DetectionSplit& s, double score) {
  std::vector<CocoResult> p;
  for (const auto& a : s.coco.annotations) p.push_back({a.image_id, 123, a.bbox, score});
  return p;
}

}  // namespace

TEST(ZeroShotDetect, OneCategoryKeepsObjectnessAndGroundTruthBoxesScoreApOne) {
  const fs::path root = make_set();
  const DetectionSplit s = open_detection_split(root.string(), "zs_one");
  eval::EvalModel m = random_model();
  const ZeroShotDetectResult r = zero_shot_detect(gt_proposals(s, 0.9), s, m);
  ASSERT_EQ(r.results.size(), 3u);
  for (const auto& d : r.results) {
    EXPECT_EQ(d.category_id, 5);
    EXPECT_NEAR(d.score, 0.9, 1e-6);  // p(square) = 1 with one category
  }
  EXPECT_EQ(r.crops, 3);
  EXPECT_EQ(r.images, 2);
  EXPECT_EQ(r.unreadable, 0);  // c.png has no proposal: never read
  EXPECT_DOUBLE_EQ(r.metrics.ap, 1.0);
  EXPECT_DOUBLE_EQ(r.metrics.ap50, 1.0);
  EXPECT_EQ(r.to_json(s)["task"], "zero-shot detection");
}

TEST(ZeroShotDetect, ClassProbabilitiesSplitEachProposalsObjectness) {
  const fs::path root = make_set();
  const DetectionSplit s = open_detection_split(root.string(), "zs_two");
  eval::EvalModel m = random_model();
  std::vector<CocoResult> p = gt_proposals(s, 0.8);
  p.push_back({1, 0, {0, 0, 10, 10}, 0.1});     // the weakest proposal of image 1
  p.push_back({3, 0, {1, 1, 4, 4}, 0.7});       // c.png: unreadable
  const ZeroShotDetectResult r = zero_shot_detect(p, s, m);
  EXPECT_EQ(r.unreadable, 1);
  EXPECT_EQ(r.crops, 4);
  ASSERT_EQ(r.results.size(), 8u);  // 4 proposals x 2 categories
  std::map<std::pair<int64_t, double>, double> sum;  // (image, x) -> summed score
  for (const auto& d : r.results) {
    EXPECT_TRUE(d.category_id == 5 || d.category_id == 9);
    EXPECT_NE(d.image_id, 3);
    sum[{d.image_id, d.bbox[0]}] += d.score;
  }
  ASSERT_EQ(sum.size(), 4u);
  for (const auto& [k, v] : sum) EXPECT_NEAR(v, k.second == 0 ? 0.1 : 0.8, 1e-6);

  ZeroShotDetectOptions o;
  o.proposals = 2;  // image 1 keeps its two 0.8 boxes only
  o.max_dets = 3;   // and 3 of their 4 detections
  const ZeroShotDetectResult q = zero_shot_detect(p, s, m, o);
  int64_t on_first = 0;
  for (const auto& d : q.results) {
    if (d.image_id != 1) continue;
    ++on_first;
    EXPECT_NE(d.bbox[0], 0.0) << "the weakest proposal was named";
  }
  EXPECT_EQ(on_first, 3);
  EXPECT_EQ(q.crops, 3);
}

TEST(ZeroShotDetect, BadOptionsAreRefused) {
  const fs::path root = make_set();
  const DetectionSplit s = open_detection_split(root.string(), "zs_two");
  eval::EvalModel m = random_model();
  ZeroShotDetectOptions o;
  o.proposals = 0;
  EXPECT_THROW(zero_shot_detect({}, s, m, o), Error);
  o = {};
  o.context = -1;
  EXPECT_THROW(zero_shot_detect({}, s, m, o), Error);
  o = {};
  o.context = std::nan("");
  EXPECT_THROW(check_zero_shot_options(o), Error);
  o = {};
  o.max_dets = 0;
  EXPECT_THROW(zero_shot_detect({}, s, m, o), Error);
  EXPECT_NO_THROW(check_zero_shot_options({}));
  // No proposal at all: nothing detected, every box missed.
  const ZeroShotDetectResult r = zero_shot_detect({}, s, m);
  EXPECT_TRUE(r.results.empty());
  EXPECT_DOUBLE_EQ(r.metrics.ap50, 0.0);
}

TEST(ZeroShotDetect, RandomBoxBaselineDrawsTrainingBoxesWithRandomCategories) {
  const fs::path root = make_set();
  const DetectionSplit train = open_detection_split(root.string(), "zs_one");
  const DetectionSplit s = open_detection_split(root.string(), "zs_two");
  const auto r = random_box_baseline(train, s, 40, 3);
  ASSERT_EQ(r.size(), 120u);  // 3 images x 40
  std::set<int64_t> cats;
  for (const auto& d : r) {
    cats.insert(d.category_id);
    EXPECT_GE(d.score, 0.0);
    EXPECT_LT(d.score, 1.0);
    if (d.image_id == 2) {
      // b.png is 32 x 16: every training box, relative to its image, rescaled to it.
      const std::set<std::vector<double>> allowed = {
          {8 / 64.0 * 32, 8 / 64.0 * 16, 20 / 64.0 * 32, 30 / 64.0 * 16},
          {38 / 64.0 * 32, 34 / 64.0 * 16, 20 / 64.0 * 32, 20 / 64.0 * 16},
          {4, 2, 16, 8}};
      EXPECT_EQ(allowed.count({d.bbox[0], d.bbox[1], d.bbox[2], d.bbox[3]}), 1u);
    }
  }
  EXPECT_EQ(cats, (std::set<int64_t>{5, 9}));
  const auto again = random_box_baseline(train, s, 40, 3);
  EXPECT_EQ(again[77].score, r[77].score);
  // Drawn on its own split: never an image's own boxes (leave one image out, as the box prior).
  std::map<int64_t, std::set<std::vector<double>>> own;
  for (const auto& a : train.coco.annotations) own[a.image_id].insert({a.bbox[0], a.bbox[1], a.bbox[2], a.bbox[3]});
  const auto self = random_box_baseline(train, train, 40, 3);
  ASSERT_FALSE(self.empty());
  for (const auto& d : self) EXPECT_EQ(own[d.image_id].count({d.bbox[0], d.bbox[1], d.bbox[2], d.bbox[3]}), 0u);
  EXPECT_THROW(random_box_baseline(train, s, 0, 3), Error);
  EXPECT_THROW(random_box_baseline(train, s, kMaxBaselineBoxes + 1, 3), Error);

  // The baseline detect train / eval report: the box prior needs the split's categories in
  // training; class-agnostic evaluation takes random boxes, which do not.
  const DetectionSplit nine = open_detection_split(root.string(), "zs_nine");
  EXPECT_THROW(detection_baseline(train, nine, 10, 0, BaselineKind::box_prior), Error);
  const nlohmann::json b = detection_baseline(train, nine, 10, 0, BaselineKind::random_boxes_pooled);
  EXPECT_EQ(b["name"], "random boxes (10 'zs_one' boxes per image, random scores)");
  EXPECT_GE(b["metrics"]["AR100"].get<double>(), 0.0);
  const nlohmann::json p = detection_baseline(train, s, 10, 0, BaselineKind::box_prior);
  EXPECT_EQ(p["name"], "box prior (10 'zs_one' boxes per image, random scores)");
  // Zero-shot: the same random boxes, scored with categories kept.
  const nlohmann::json z = detection_baseline(train, nine, 10, 0, BaselineKind::random_boxes);
  EXPECT_EQ(z["name"], "random boxes (10 'zs_one' boxes per image, random category and score)");
  EXPECT_EQ(z["metrics"]["AP"].get<double>(),
            evaluate_bbox(nine.coco, random_box_baseline(train, nine, 10, 0), CocoEvalParams{}).ap);

  // Recorded, not thrown: a baseline that cannot be drawn, or whose split cannot be opened, is an
  // error string in the result; one that can be drawn is the same JSON as detection_baseline's.
  nlohmann::json e = {{"AP", 0.5}};
  EXPECT_FALSE(record_detection_baseline(e, [&]() -> const DetectionSplit& { return train; }, nine, 10, 0, BaselineKind::box_prior));
  EXPECT_FALSE(e.contains("baseline"));
  EXPECT_NE(e["baseline_error"].get<std::string>().find("has no annotation of the categories"), std::string::npos);
  EXPECT_EQ(e["AP"], 0.5);
  nlohmann::json e2;
  EXPECT_FALSE(record_detection_baseline(
      e2, []() -> const DetectionSplit& { throw Error("no such split"); }, nine, 10, 0, BaselineKind::random_boxes));
  EXPECT_EQ(e2["baseline_error"], "no such split");
  nlohmann::json e3;
  EXPECT_TRUE(record_detection_baseline(e3, [&]() -> const DetectionSplit& { return train; }, nine, 10, 0, BaselineKind::random_boxes));
  EXPECT_EQ(e3["baseline"], z);
}

}  // namespace test_zero_shot_detect
