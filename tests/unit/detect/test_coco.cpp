// COCO instances / results JSON: parsing, defaults, round trips and the validation errors (each
// must name the file, the array index and the field).
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "florence/adapt/detect/coco.h"
#include "florence/core/error.h"
#include "support/paths.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_coco {

using florence::Error;
using namespace florence::detect;
using nlohmann::json;

namespace {

json sample() {
  return json::parse(R"({
    "info": {"description": "test set"},
    "images": [{"id": 7, "file_name": "a.png", "width": 128, "height": 96},
               {"id": 3, "file_name": "b.png", "width": 64, "height": 64, "license": 1}],
    "annotations": [
      {"id": 1, "image_id": 7, "category_id": 2, "bbox": [10, 20, 30.5, 40], "area": 1000, "iscrowd": 0,
       "segmentation": [[10, 20, 40, 20, 40, 60]]},
      {"id": 2, "image_id": 3, "category_id": 5, "bbox": [0, 0, 8, 4]},
      {"id": 9, "image_id": 3, "category_id": 2, "bbox": [1, 1, 2, 2], "iscrowd": 1}],
    "categories": [{"id": 2, "name": "cat", "supercategory": "animal"}, {"id": 5, "name": "dog"}]
  })");
}

// Expects `fn` to throw florence::Error whose message contains every one of `parts`.
template <class F>
void expect_error(F&& fn, std::initializer_list<std::string> parts) {
  try {
    fn();
    ADD_FAILURE() << "expected florence::Error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
  }
}

}  // namespace

TEST(CocoJson, ParsesFieldsAndDefaults) {
  const CocoDataset d = coco_from_json(sample(), "t.json");
  ASSERT_EQ(d.images.size(), 2u);
  EXPECT_EQ(d.images[0].id, 7);
  EXPECT_EQ(d.images[0].file_name, "a.png");
  EXPECT_EQ(d.images[0].width, 128);
  EXPECT_EQ(d.images[0].height, 96);
  ASSERT_EQ(d.annotations.size(), 3u);
  EXPECT_DOUBLE_EQ(d.annotations[0].bbox[2], 30.5);
  EXPECT_DOUBLE_EQ(d.annotations[0].area, 1000.0);  // the given area, not w*h (1220)
  EXPECT_FALSE(d.annotations[0].iscrowd);
  EXPECT_DOUBLE_EQ(d.annotations[1].area, 32.0);  // missing area: w*h = 8*4
  EXPECT_FALSE(d.annotations[1].iscrowd);          // missing iscrowd: 0
  EXPECT_TRUE(d.annotations[2].iscrowd);
  EXPECT_EQ(d.categories[1].supercategory, "");
  EXPECT_EQ(d.image_index(3), 1);
  EXPECT_EQ(d.image_index(4), -1);
  EXPECT_EQ(d.category_index(5), 1);
  EXPECT_EQ(d.info["description"], "test set");
}

TEST(CocoJson, FileRoundTripKeepsEverything) {
  const auto dir = std::filesystem::path(FLORENCE_TEST_TMP) / "coco_json";
  std::filesystem::create_directories(dir);
  const CocoDataset d = coco_from_json(sample(), "t.json");
  write_coco((dir / "rt.json").string(), d);
  const CocoDataset r = read_coco((dir / "rt.json").string());
  EXPECT_EQ(coco_to_json(r), coco_to_json(d));
  ASSERT_EQ(r.annotations.size(), 3u);
  EXPECT_EQ(r.annotations[2].id, 9);
  EXPECT_DOUBLE_EQ(r.annotations[1].area, 32.0);

  std::vector<CocoResult> res = {{7, 2, {1.5, 2, 3, 4}, 0.9}, {3, 5, {0, 0, 0, 0}, 0.25}};
  write_coco_results((dir / "res.json").string(), res);
  const auto back = read_coco_results((dir / "res.json").string(), d);
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back[0].image_id, 7);
  EXPECT_EQ(back[1].category_id, 5);
  EXPECT_DOUBLE_EQ(back[0].bbox[0], 1.5);
  EXPECT_DOUBLE_EQ(back[1].score, 0.25);
}

TEST(CocoJson, MissingFieldsAndBadTypesNameFileIndexAndField) {
  auto bad = [](auto edit) {
    json j = sample();
    edit(j);
    return j;
  };
  expect_error([&] { coco_from_json(bad([](json& j) { j["annotations"][1].erase("bbox"); }), "v.json"); },
               {"v.json", "annotations[1]", "missing 'bbox'"});
  expect_error([&] { coco_from_json(bad([](json& j) { j["images"][0].erase("file_name"); }), "v.json"); },
               {"v.json", "images[0]", "'file_name'"});
  expect_error([&] { coco_from_json(bad([](json& j) { j["categories"][1]["id"] = "5"; }), "v.json"); },
               {"categories[1]", "'id' must be an integer"});
  expect_error([&] { coco_from_json(bad([](json& j) { j["annotations"][2]["image_id"] = 3.5; }), "v.json"); },
               {"annotations[2]", "'image_id' must be an integer"});
  expect_error([&] { coco_from_json(bad([](json& j) { j["annotations"][0]["bbox"] = {1, 2, 3}; }), "v.json"); },
               {"annotations[0]", "'bbox' must be [x, y, w, h]"});
  expect_error([&] { coco_from_json(bad([](json& j) { j["annotations"][0]["bbox"][1] = "x"; }), "v.json"); },
               {"annotations[0]", "'bbox' must be a number"});
  expect_error([&] { coco_from_json(bad([](json& j) { j["annotations"][0]["iscrowd"] = 2; }), "v.json"); },
               {"annotations[0]", "'iscrowd' must be 0 or 1"});
  expect_error([&] { coco_from_json(bad([](json& j) { j.erase("categories"); }), "v.json"); },
               {"v.json", "missing 'categories'"});
  expect_error([&] { coco_from_json(bad([](json& j) { j["images"] = json::object(); }), "v.json"); },
               {"v.json", "'images' must be an array"});
  expect_error([&] { coco_from_json(bad([](json& j) { j["images"][1] = 5; }), "v.json"); },
               {"images[1]", "must be an object"});
  expect_error([&] { coco_from_json(json::array(), "v.json"); }, {"v.json", "must be a JSON object"});
}

TEST(CocoJson, BadValuesAndUnknownIds) {
  auto bad = [](auto edit) {
    json j = sample();
    edit(j);
    return j;
  };
  expect_error([&] { coco_from_json(bad([](json& j) { j["annotations"][1]["bbox"][2] = -3; }), "v.json"); },
               {"v.json", "annotations[1]", "negative width (-3)"});
  expect_error([&] { coco_from_json(bad([](json& j) { j["annotations"][1]["bbox"][3] = -0.5; }), "v.json"); },
               {"annotations[1]", "negative height"});
  expect_error([&] { coco_from_json(bad([](json& j) { j["annotations"][0]["area"] = -1; }), "v.json"); },
               {"annotations[0]", "'area' must be >= 0"});
  expect_error([&] { coco_from_json(bad([](json& j) { j["images"][1]["width"] = 0; }), "v.json"); },
               {"images[1]", "width/height must be >= 1"});
  expect_error([&] { coco_from_json(bad([](json& j) { j["annotations"][2]["image_id"] = 4; }), "v.json"); },
               {"annotations[2]", "unknown image_id 4"});
  expect_error([&] { coco_from_json(bad([](json& j) { j["annotations"][0]["category_id"] = 1; }), "v.json"); },
               {"annotations[0]", "unknown category_id 1"});
  expect_error([&] { coco_from_json(bad([](json& j) { j["annotations"][2]["id"] = 1; }), "v.json"); },
               {"annotations[2]", "duplicate annotation id 1"});
  expect_error([&] { coco_from_json(bad([](json& j) { j["images"][1]["id"] = 7; }), "v.json"); },
               {"images[1]", "duplicate image id 7"});
  expect_error([&] { coco_from_json(bad([](json& j) { j["categories"][1]["id"] = 2; }), "v.json"); },
               {"categories[1]", "duplicate category id 2"});
}

TEST(CocoJson, ResultsValidation) {
  const CocoDataset gt = coco_from_json(sample(), "t.json");
  EXPECT_TRUE(coco_results_from_json(json::array(), gt, "r.json").empty());
  auto one = [](json e) { return json::array({json{{"image_id", 7}, {"category_id", 2}, {"bbox", {0, 0, 1, 1}}, {"score", 0.5}}, e}); };
  json ok = {{"image_id", 3}, {"category_id", 5}, {"bbox", {0, 0, 1, 1}}, {"score", 0.5}};
  EXPECT_EQ(coco_results_from_json(one(ok), gt, "r.json").size(), 2u);
  json e = ok;
  e["image_id"] = 8;
  expect_error([&] { coco_results_from_json(one(e), gt, "r.json"); }, {"r.json", "[1]", "image_id 8"});
  e = ok;
  e["category_id"] = 6;
  expect_error([&] { coco_results_from_json(one(e), gt, "r.json"); }, {"r.json", "[1]", "category_id 6"});
  e = ok;
  e.erase("score");
  expect_error([&] { coco_results_from_json(one(e), gt, "r.json"); }, {"[1]", "missing 'score'"});
  e = ok;
  e["score"] = "high";
  expect_error([&] { coco_results_from_json(one(e), gt, "r.json"); }, {"[1]", "'score' must be a number"});
  e = ok;
  e["bbox"] = {0, 0, -1, 1};
  expect_error([&] { coco_results_from_json(one(e), gt, "r.json"); }, {"[1]", "negative width"});
  expect_error([&] { coco_results_from_json(json::object(), gt, "r.json"); }, {"r.json", "JSON array"});
}

TEST(CocoJson, ReadingAMissingOrBrokenFileNamesIt) {
  const auto dir = std::filesystem::path(FLORENCE_TEST_TMP) / "coco_json";
  std::filesystem::create_directories(dir);
  const std::string missing = (dir / "none.json").string();
  std::filesystem::remove(missing);
  expect_error([&] { read_coco(missing); }, {"none.json"});
  const std::string broken = (dir / "broken.json").string();
  FILE* f = std::fopen(broken.c_str(), "w");
  std::fputs("{\"images\": [", f);
  std::fclose(f);
  expect_error([&] { read_coco(broken); }, {"broken.json", "not valid JSON"});
}

TEST(CocoJson, BoxConversions) {
  const CocoBox b = xyxy_to_coco(10, 20, 40, 25);
  EXPECT_DOUBLE_EQ(b[2], 30);
  EXPECT_DOUBLE_EQ(b[3], 5);
  const auto x = coco_to_xyxy({1, 2, 3, 4});
  EXPECT_DOUBLE_EQ(x[2], 4);
  EXPECT_DOUBLE_EQ(x[3], 6);
}

}  // namespace test_coco
