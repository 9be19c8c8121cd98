// Detection set from real art: scale sampling by COCO area classes, and a small COCO set built
// from real corpora (tests/support/sprite_corpora.h): boxes inside the image, areas, ids, the
// unseen-category views, held-out sprites, determinism.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <set>

#include "florence/adapt/detect/detection_set.h"
#include "florence/core/error.h"
#include "florence/core/files.h"
#include "support/paths.h"
#include "support/sprite_corpora.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_detection_set {

namespace fs = std::filesystem;
using namespace florence;
using namespace florence::detect;

TEST(DetectionScales, AreaClassesFollowTheProbabilitiesAndRanges) {
  std::mt19937_64 rng(4);
  std::map<std::string, int> n;
  for (int i = 0; i < 6000; ++i) {
    const double a = draw_box_area(rng, 160, 0.35, 0.45, 0.2);
    ASSERT_GE(a, 100.0);
    ASSERT_LE(a, 144.0 * 144.0);
    ++n[data::coco_area_class(a)];
  }
  EXPECT_NEAR(n["small"] / 6000.0, 0.35, 0.03);
  EXPECT_NEAR(n["medium"] / 6000.0, 0.45, 0.03);
  EXPECT_NEAR(n["large"] / 6000.0, 0.2, 0.03);
  for (int i = 0; i < 1000; ++i) EXPECT_LT(draw_box_area(rng, 96, 0.3, 0.3, 0.4), 96.0 * 96.0);  // no room for large
  EXPECT_DOUBLE_EQ(longer_side_for_area(800, 20, 10), 40.0);
  EXPECT_DOUBLE_EQ(longer_side_for_area(100, 5, 5), 10.0);
}

TEST(DetectionSet, BuildsCocoFromRealSpritesWithUnseenCategories) {
  if (!test::sprite_sources_available()) GTEST_SKIP() << "needs openclipart-svg, librsvg2-bin and emoji-datasource-google (scripts/setup)";
  const fs::path out = fs::path(FLORENCE_TEST_TMP) / "detection_set";
  DetectionSetOptions o;
  o.out_dir = out.string();
  o.sprites = test::test_sprite_options();
  o.train_images = 30, o.val_images = 6, o.test_images = 12;
  o.image_size = 128;
  o.unseen = {"boat"};
  o.seed = 5;
  o.overwrite = true;
  o.progress = false;
  const nlohmann::json s = build_detection_set(o);
  EXPECT_EQ(s["unseen_categories"], nlohmann::json::array({"boat"}));
  {
    DetectionSetOptions bad = o;
    bad.unseen = {"unicorn"};
    EXPECT_THROW(build_detection_set(bad), Error);
    bad.unseen = {};
    bad.overwrite = false;
    EXPECT_THROW(build_detection_set(bad), Error);  // the set is there
  }

  const data::SpriteBank bank = data::SpriteBank::load(o.sprites);
  std::map<std::string, std::string> split_of_sprite;
  for (const auto& sp : bank.sprites()) split_of_sprite[sp.key] = sp.split;
  const fs::path ann = out / "annotations";
  std::set<int64_t> image_ids, ann_ids;
  int boat_id = -1;
  std::map<std::string, int64_t> area_classes;
  for (const std::string split : {"train", "val", "test"}) {
    const auto j = core::read_json_file(ann / ("instances_" + split + ".json"));
    std::set<int> cat_ids;
    for (const auto& c : j["categories"]) {
      cat_ids.insert(c["id"].get<int>());
      if (c["name"] == "boat") {
        boat_id = c["id"];
        EXPECT_TRUE(c["unseen"].get<bool>());
      }
    }
    EXPECT_EQ(cat_ids.size(), 4u);
    std::map<int64_t, int> boxes_per_image;
    for (const auto& im : j["images"]) {
      EXPECT_TRUE(image_ids.insert(im["id"].get<int64_t>()).second);
      EXPECT_TRUE(fs::exists(out / "images" / split / im["file_name"].get<std::string>()));
      EXPECT_EQ(im["width"], 128);
      boxes_per_image[im["id"].get<int64_t>()] = 0;
    }
    EXPECT_GE(j["images"].size(), size_t(split == "train" ? 29 : 5));
    EXPECT_EQ(s["splits"][split]["annotations"].get<size_t>(), j["annotations"].size());
    for (const auto& a : j["annotations"]) {
      EXPECT_TRUE(ann_ids.insert(a["id"].get<int64_t>()).second);
      ASSERT_TRUE(boxes_per_image.count(a["image_id"].get<int64_t>()));
      ++boxes_per_image[a["image_id"].get<int64_t>()];
      EXPECT_TRUE(cat_ids.count(a["category_id"].get<int>()));
      const double x = a["bbox"][0], y = a["bbox"][1], w = a["bbox"][2], h = a["bbox"][3];
      EXPECT_GE(x, 0);
      EXPECT_GE(y, 0);
      EXPECT_GT(w, 0);
      EXPECT_GT(h, 0);
      EXPECT_LE(x + w, 128);
      EXPECT_LE(y + h, 128);
      EXPECT_DOUBLE_EQ(a["area"].get<double>(), w * h);
      EXPECT_LE(a["visible_pixels"].get<double>(), w * h);
      EXPECT_LE(a["occluded"].get<double>(), 1.0 - o.min_visible + 1e-9);
      EXPECT_EQ(a["iscrowd"], 0);
      EXPECT_EQ(split_of_sprite.at(a["sprite"].get<std::string>()), split) << a;  // held-out sprites
      ++area_classes[data::coco_area_class(w * h)];
    }
    for (const auto& [id, n] : boxes_per_image) EXPECT_GE(n, 1) << "image " << id;
    // The zero-shot training view never shows an unseen object.
    if (split != "test") {
      const auto v = core::read_json_file(ann / ("instances_" + split + "_seen.json"));
      std::set<int64_t> seen_imgs;
      for (const auto& im : v["images"]) seen_imgs.insert(im["id"].get<int64_t>());
      EXPECT_GT(seen_imgs.size(), 0u);
      EXPECT_LT(seen_imgs.size(), j["images"].size());
      for (const auto& c : v["categories"]) EXPECT_NE(c["name"], "boat");
      size_t n = 0;
      for (const auto& a : j["annotations"])
        if (seen_imgs.count(a["image_id"].get<int64_t>())) {
          EXPECT_NE(a["category_id"].get<int>(), boat_id);
          ++n;
        }
      EXPECT_EQ(n, v["annotations"].size());
    }
  }
  ASSERT_GT(boat_id, 0);
  EXPECT_GT(area_classes["small"], 0);
  EXPECT_GT(area_classes["medium"], 0);
  EXPECT_GT(area_classes["large"], 0);
  const auto all = core::read_json_file(ann / "instances_test.json");
  const auto su = core::read_json_file(ann / "instances_test_unseen.json");
  const auto ss = core::read_json_file(ann / "instances_test_seen.json");
  EXPECT_EQ(su["annotations"].size() + ss["annotations"].size(), all["annotations"].size());
  EXPECT_GT(su["annotations"].size(), 0u);
  for (const auto& a : su["annotations"]) EXPECT_EQ(a["category_id"].get<int>(), boat_id);
  for (const auto& a : ss["annotations"]) EXPECT_NE(a["category_id"].get<int>(), boat_id);
  EXPECT_EQ(su["categories"].size(), 1u);

  const std::string first = core::read_text_file(ann / "instances_test.json");
  o.threads = 1;
  build_detection_set(o);
  EXPECT_EQ(core::read_text_file(ann / "instances_test.json"), first);
}

}  // namespace test_detection_set
