// Sprite bank and scene compositor: hand-computed mattes, colours, names, category matching,
// canvas ownership, sprite transforms, seeding, and a bank loaded from small real corpora
// (tests/support/sprite_corpora.h).
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <opencv2/imgcodecs.hpp>
#include <set>

#include "florence/core/error.h"
#include "florence/data/sample.h"
#include "florence/data/scene.h"
#include "florence/data/sprites.h"
#include "florence/data/webdataset.h"
#include "support/paths.h"
#include "support/sprite_corpora.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_sprites {

namespace fs = std::filesystem;
using namespace florence::data;

namespace {

cv::Mat solid_rgba(int w, int h, cv::Vec4b c) { return cv::Mat(h, w, CV_8UC4, cv::Scalar(c[0], c[1], c[2], c[3])); }

}  // namespace

TEST(SpriteMatte, KeyWhiteBackgroundKeepsEnclosedWhiteAndUnmixesTheFringe) {
  // 20x20 white; a black ring (rows/cols 5..14, 2 px thick) enclosing white; one grey pixel just
  // outside the ring at (y 10, x 4).
  cv::Mat rgb(20, 20, CV_8UC3, cv::Scalar(255, 255, 255));
  for (int y = 5; y <= 14; ++y)
    for (int x = 5; x <= 14; ++x)
      if (x <= 6 || x >= 13 || y <= 6 || y >= 13) rgb.at<cv::Vec3b>(y, x) = cv::Vec3b(0, 0, 0);
  rgb.at<cv::Vec3b>(10, 4) = cv::Vec3b(128, 128, 128);
  const cv::Mat a = key_white_background(rgb);
  ASSERT_EQ(a.type(), CV_8UC4);
  EXPECT_EQ(a.at<cv::Vec4b>(0, 0)[3], 0);    // outside
  EXPECT_EQ(a.at<cv::Vec4b>(10, 10)[3], 255);  // enclosed white stays
  EXPECT_EQ(a.at<cv::Vec4b>(10, 10)[0], 255);
  EXPECT_EQ(a.at<cv::Vec4b>(10, 6)[3], 255);  // inner ring pixel: not next to the background
  // Grey fringe pixel: a = (255 - 128) / 255, colour (128 - 255 (1 - a)) / a = 0.
  const cv::Vec4b g = a.at<cv::Vec4b>(10, 4);
  EXPECT_EQ(g[3], 127);
  EXPECT_EQ(g[0], 0);
  // Outer ring pixel next to the background: black, a = 1.
  EXPECT_EQ(a.at<cv::Vec4b>(7, 5), cv::Vec4b(0, 0, 0, 255));
  EXPECT_THROW(key_white_background(cv::Mat(4, 4, CV_8UC1)), florence::Error);
}

TEST(SpriteMatte, CropToAlpha) {
  cv::Mat m = solid_rgba(10, 8, {0, 0, 0, 0});
  m.at<cv::Vec4b>(2, 3) = {1, 2, 3, 255};
  m.at<cv::Vec4b>(5, 7) = {1, 2, 3, 10};
  const cv::Mat c = crop_to_alpha(m);
  EXPECT_EQ(c.cols, 5);
  EXPECT_EQ(c.rows, 4);
  EXPECT_EQ(c.at<cv::Vec4b>(0, 0), cv::Vec4b(1, 2, 3, 255));
  EXPECT_TRUE(crop_to_alpha(solid_rgba(3, 3, {9, 9, 9, 0})).empty());
}

TEST(SpriteColour, NamedColoursGetTheirName) {
  const std::vector<std::pair<cv::Vec3b, std::string>> cases = {
      {{255, 0, 0}, "red"},       {{139, 0, 0}, "red"},      {{255, 165, 0}, "orange"}, {{255, 215, 0}, "yellow"},
      {{255, 255, 0}, "yellow"},  {{0, 128, 0}, "green"},    {{0, 255, 0}, "green"},    {{0, 100, 0}, "green"},
      {{0, 0, 128}, "blue"},      {{0, 0, 255}, "blue"},     {{128, 0, 128}, "purple"}, {{75, 0, 130}, "purple"},
      {{255, 192, 203}, "pink"},  {{255, 105, 180}, "pink"}, {{139, 69, 19}, "brown"},  {{160, 82, 45}, "brown"},
      {{0, 0, 0}, "black"},       {{255, 255, 255}, "white"}, {{128, 128, 128}, "gray"}, {{192, 192, 192}, "gray"}};
  for (const auto& [c, name] : cases) EXPECT_EQ(colour_name(c[0], c[1], c[2]), name) << int(c[0]) << "," << int(c[1]) << "," << int(c[2]);
  for (const auto& n : colour_palette()) EXPECT_FALSE(similar_colours(n).empty()) << n;
}

TEST(SpriteColour, DominantColourCountsOpaquePixelsOnly) {
  cv::Mat m = solid_rgba(4, 4, {0, 0, 0, 0});  // 16 px: 8 red, 4 blue, 4 transparent green
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 4; ++x)
      m.at<cv::Vec4b>(y, x) = y < 2 ? cv::Vec4b(250, 10, 10, 255) : (x < 2 ? cv::Vec4b(0, 0, 200, 200) : cv::Vec4b(0, 255, 0, 100));
  const DominantColour d = dominant_colour(m);
  EXPECT_EQ(d.name, "red");
  EXPECT_DOUBLE_EQ(d.share, 8.0 / 12.0);
  EXPECT_EQ(dominant_colour(solid_rgba(2, 2, {1, 1, 1, 0})).name, "");
}

TEST(SpriteNames, FromEmojiNamesAndClipArtTitles) {
  EXPECT_EQ(sprite_name("emoji", {{"name", "GRINNING FACE WITH SMILING EYES"}}, "x"), "grinning face");
  EXPECT_EQ(sprite_name("emoji", {{"name", "Andorra Flag"}}, "x"), "andorra flag");
  EXPECT_EQ(sprite_name("openclipart", {{"title", "Red_car by johnny"}}, ""), "red car");
  EXPECT_EQ(sprite_name("openclipart", {{"title", "Cartoon parrot clipart 02"}}, ""), "parrot");
  EXPECT_EQ(sprite_name("openclipart", {{"title", ""}}, "Sailing boat. boat, sea"), "sailing boat");
  EXPECT_EQ(sprite_name("openclipart", {{"title", "Fiore è bello"}}, ""), "fiore bello");
  EXPECT_EQ(sprite_name("openclipart", {{"title", "clip art 123"}}, ""), "");
}

TEST(SpriteCategories, GroupPatterns) {
  EXPECT_TRUE(group_matches("openclipart:animals/birds", "openclipart", "animals/birds"));
  EXPECT_TRUE(group_matches("openclipart:animals/birds", "openclipart", "animals/birds/parrots"));
  EXPECT_FALSE(group_matches("openclipart:animals/birds", "openclipart", "animals/birdsong"));
  EXPECT_FALSE(group_matches("openclipart:animals/birds", "emoji", "animals/birds"));
  EXPECT_TRUE(group_matches("openclipart:=people", "openclipart", "people"));
  EXPECT_FALSE(group_matches("openclipart:=people", "openclipart", "people/clothing"));
  EXPECT_TRUE(group_matches("emoji:Smileys & Emotion/face-*", "emoji", "Smileys & Emotion/face-smiling"));
  EXPECT_FALSE(group_matches("emoji:Smileys & Emotion/face-*", "emoji", "Smileys & Emotion/heart"));
  EXPECT_EQ(sprite_group({{"source", "openclipart"}, {"folder", "animals/birds"}, {"category", "animals"}}), "animals/birds");
  EXPECT_EQ(sprite_group({{"source", "emoji"}, {"category", "Flags"}, {"subcategory", "country-flag"}}), "Flags/country-flag");

  const auto& table = default_sprite_categories();
  std::set<std::string> names;
  int unseen = 0;
  for (const auto& c : table) {
    EXPECT_TRUE(names.insert(c.name).second) << c.name;
    EXPECT_FALSE(c.groups.empty()) << c.name;
    unseen += c.unseen;
  }
  EXPECT_EQ(table.size(), 26u);
  EXPECT_EQ(unseen, 5);
  const int bird = find_sprite_category(table, "emoji", "Animals & Nature/animal-bird");
  ASSERT_GE(bird, 0);
  EXPECT_EQ(table[size_t(bird)].name, "bird");
  EXPECT_EQ(find_sprite_category(table, "openclipart", "computer/icons"), -1);

  const auto round = sprite_categories_from_json(sprite_categories_to_json(table), "roundtrip");
  ASSERT_EQ(round.size(), table.size());
  EXPECT_EQ(round[1].groups, table[1].groups);
  EXPECT_THROW(sprite_categories_from_json({{"categories", {{{"name", "x"}}}}}, "t"), florence::Error);
  EXPECT_THROW(sprite_categories_from_json({{"categories", {{{"name", "x"}, {"groups", {"nocolon"}}}}}}, "t"), florence::Error);
  EXPECT_THROW(sprite_categories_from_json({{"categories", {{{"name", "x"}, {"groups", {"a:b"}}}, {{"name", "x"}, {"groups", {"a:c"}}}}}}, "t"),
               florence::Error);
}

TEST(SceneCanvas, OwnerMapVisibleBoxAndOcclusion) {
  SceneCanvas c(cv::Mat(20, 30, CV_8UC3, cv::Scalar(10, 20, 30)));
  const int a = c.paste(solid_rgba(10, 10, {200, 0, 0, 255}), 2, 3);
  // B covers the right half of A (x 7..11) and sticks out of the canvas on the right.
  const cv::Mat b = solid_rgba(25, 10, {0, 200, 0, 255});
  EXPECT_DOUBLE_EQ(c.visible_fraction_after(a, b, 7, 3), 0.5);
  const int bid = c.paste(b, 7, 3);
  EXPECT_EQ(c.visible(a).pixels, 50);
  EXPECT_EQ(c.visible(a).box, cv::Rect(2, 3, 5, 10));
  EXPECT_EQ(c.visible(bid).box, cv::Rect(7, 3, 23, 10));  // clipped at x = 29
  EXPECT_EQ(c.pasted_pixels(bid), 230);
  // Half-transparent pixels blend and do not take ownership.
  const int h = c.paste(solid_rgba(2, 2, {255, 255, 255, 100}), 0, 0);
  EXPECT_EQ(c.visible(h).pixels, 0);
  const cv::Vec3b p = c.image().at<cv::Vec3b>(0, 0);
  EXPECT_EQ(p[0], uint8_t(std::lround(100.0 / 255 * 255 + (1 - 100.0 / 255) * 10)));
  // Opacity scales alpha.
  const int o = c.paste(solid_rgba(2, 2, {0, 0, 255, 255}), 0, 16, 0.4);
  EXPECT_EQ(c.visible(o).pixels, 0);
}

TEST(SceneSprites, RotateIsClockwiseOnScreenAndResizeKeepsColour) {
  // A 9x9 transparent sprite with a red dot at the right middle (y 4, x 8).
  cv::Mat s = solid_rgba(9, 9, {0, 0, 0, 0});
  s.at<cv::Vec4b>(4, 8) = {255, 0, 0, 255};
  s.at<cv::Vec4b>(4, 4) = {0, 0, 255, 255};
  const cv::Mat r = rotate_sprite(s, 90.0);
  ASSERT_EQ(r.cols, 9);
  ASSERT_EQ(r.rows, 9);
  // Clockwise by 90 degrees on screen (y down): right -> bottom.
  EXPECT_GT(r.at<cv::Vec4b>(8, 4)[3], 200);
  EXPECT_EQ(r.at<cv::Vec4b>(8, 4)[0], 255);
  EXPECT_EQ(r.at<cv::Vec4b>(4, 8)[3], 0);
  const cv::Mat big = resize_sprite(s, 18, 18);
  for (int y = 0; y < 18; ++y)
    for (int x = 0; x < 18; ++x) {
      const cv::Vec4b p = big.at<cv::Vec4b>(y, x);
      if (p[3] > 20) {
        EXPECT_TRUE((p[0] >= 250 && p[2] <= 5) || (p[2] >= 250 && p[0] <= 5)) << x << "," << y;  // no dark fringe
      }
    }
  const cv::Mat sc = scaled_sprite(solid_rgba(20, 10, {1, 2, 3, 255}), 40, true);
  EXPECT_EQ(sc.cols, 40);
  EXPECT_EQ(sc.rows, 20);
  EXPECT_THROW(resize_sprite(s, 0, 3), florence::Error);
}

TEST(SceneHelpers, SeedsLoopsAndChoices) {
  EXPECT_EQ(item_seed(1, "a", 2), item_seed(1, "a", 2));
  EXPECT_NE(item_seed(1, "a", 2), item_seed(1, "a", 3));
  EXPECT_NE(item_seed(1, "a", 2), item_seed(1, "b", 2));
  EXPECT_NE(item_seed(1, "a", 2), item_seed(2, "a", 2));
  std::vector<std::atomic<int>> hits(1000);
  parallel_for_index(hits.size(), 3, [&](size_t i) { ++hits[i]; });
  for (const auto& h : hits) EXPECT_EQ(h.load(), 1);
  EXPECT_THROW(parallel_for_index(50, 2, [](size_t i) {
                 if (i == 7) throw florence::Error("boom");
               }),
               florence::Error);
  std::mt19937_64 rng(5);
  std::vector<int> n(3);
  for (int i = 0; i < 3000; ++i) ++n[weighted_choice(rng, {1.0, 0.0, 2.0})];
  EXPECT_EQ(n[1], 0);
  EXPECT_NEAR(n[2] / 3000.0, 2.0 / 3.0, 0.04);
  EXPECT_EQ(coco_area_class(32 * 32 - 1), "small");
  EXPECT_EQ(coco_area_class(32 * 32), "medium");
  EXPECT_EQ(coco_area_class(96 * 96), "large");
  EXPECT_EQ(indefinite_article("owl"), "an");
  EXPECT_EQ(indefinite_article("bird"), "a");
}

TEST(Backgrounds, KindsSizesAndDeterminism) {
  BackgroundOptions o;  // opencv-doc's example photos when installed
  const BackgroundBank bank(o);
  std::set<std::string> kinds;
  for (int i = 0; i < 40; ++i) {
    std::mt19937_64 a(item_seed(3, "bg", uint64_t(i))), b(item_seed(3, "bg", uint64_t(i)));
    std::string k;
    const cv::Mat x = bank.make(48, 32, "test", a, &k), y = bank.make(48, 32, "test", b);
    ASSERT_EQ(x.size(), cv::Size(48, 32));
    EXPECT_EQ(cv::norm(x, y, cv::NORM_INF), 0.0);
    kinds.insert(k);
  }
  EXPECT_GE(kinds.size(), 3u);
  if (bank.photo_count() > 0) {
    EXPECT_TRUE(kinds.count("photo"));
  }
  BackgroundOptions none;
  none.photos_dir = "/nonexistent";
  none.p_photo = 1, none.p_gradient = none.p_noise = none.p_plain = 0;
  const BackgroundBank empty(none);
  std::mt19937_64 rng(1);
  EXPECT_THROW(empty.make(8, 8, "train", rng), florence::Error);
  none.p_photo = -1;
  EXPECT_THROW(BackgroundBank{none}, florence::Error);
}

TEST(SpriteBank, LoadsRealCorporaSplitBySpriteWithExactEmojiAlpha) {
  if (!florence::test::sprite_sources_available()) GTEST_SKIP() << "needs openclipart-svg, librsvg2-bin and emoji-datasource-google (scripts/setup)";
  const SpriteBank bank = SpriteBank::load(florence::test::test_sprite_options());
  const auto& cats = bank.categories();
  std::set<std::string> names;
  for (const auto& s : bank.sprites()) {
    names.insert(cats[size_t(s.category)].name);
    EXPECT_EQ(s.split, split_of(s.corpus_key, 70, 10)) << s.key;
    EXPECT_EQ(s.rgba.type(), CV_8UC4);
    EXPECT_GE(std::min(s.rgba.cols, s.rgba.rows), 8) << s.key;
    EXPECT_FALSE(s.name.empty());
    EXPECT_EQ(s.alpha, s.source == "emoji" ? "source" : "keyed") << s.key;
    // Cropped to the matte: the border rows/columns hold a visible pixel.
    cv::Mat alpha;
    cv::extractChannel(s.rgba, alpha, 3);
    EXPECT_GT(cv::countNonZero(alpha.row(0)), 0) << s.key;
    EXPECT_GT(cv::countNonZero(alpha.col(alpha.cols - 1)), 0) << s.key;
  }
  EXPECT_EQ(names, (std::set<std::string>{"bird", "bug", "fruit", "boat"}));
  // Every category has sprites on both sides of the split.
  EXPECT_EQ(bank.usable_categories({"train", "test"}, 3).size(), 4u);
  const auto sum = bank.summary();
  EXPECT_EQ(sum["sprites"].get<size_t>(), bank.sprites().size());
  EXPECT_GT(sum["alpha"]["source"].get<int64_t>(), 20);
  EXPECT_GT(sum["alpha"]["keyed"].get<int64_t>(), 100);
}

TEST(SpriteBank, BrokenSpriteIsCountedNotFatal) {
  if (!florence::test::sprite_sources_available()) GTEST_SKIP() << "needs the real sprite sources (scripts/setup)";
  const fs::path dir = fs::path(FLORENCE_TEST_TMP) / "sprites_broken";
  fs::remove_all(dir);
  {
    ShardWriter w((dir / "train").string());
    Sample bad;
    bad.key = "animals/birds/broken";
    bad.image = {0x89, 'P', 'N', 'G', 1, 2, 3};
    bad.image_ext = "png";
    bad.text = "a broken bird";
    bad.meta = {{"source", "openclipart"}, {"folder", "animals/birds"}, {"title", "broken"}};
    w.write(bad);
    Sample blank = bad;  // decodes, but is all white: nothing left after keying
    blank.key = "animals/birds/blank";
    const cv::Mat white(16, 16, CV_8UC3, cv::Scalar(255, 255, 255));
    std::vector<uint8_t> png;
    cv::imencode(".png", white, png);
    blank.image = png;
    w.write(blank);
    Sample dup = bad;
    dup.key = "animals/birds/dup";
    dup.meta["duplicate_of"] = "animals/birds/x";
    w.write(dup);
  }
  auto o = florence::test::test_sprite_options();
  const SpriteBank before = SpriteBank::load(o);
  o.corpora.push_back(dir.string());
  const SpriteBank bank = SpriteBank::load(o);
  auto skip = [](const SpriteBank& b, const std::string& k) { return b.skips().count(k) ? b.skips().at(k) : int64_t(0); };
  EXPECT_EQ(skip(bank, "undecodable") - skip(before, "undecodable"), 1);
  EXPECT_EQ(skip(bank, "empty_alpha") - skip(before, "empty_alpha"), 1);
  EXPECT_EQ(skip(bank, "duplicate") - skip(before, "duplicate"), 1);
  EXPECT_EQ(bank.sprites().size(), before.sprites().size());
  o.corpora = {(dir / "nope").string()};
  EXPECT_THROW(SpriteBank::load(o), florence::Error);
}

}  // namespace test_sprites
