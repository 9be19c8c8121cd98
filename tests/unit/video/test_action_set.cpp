// Action set from real art: motion plans (direction, rotation sense, scale, opacity), captions,
// and a small set built from real corpora (tests/support/sprite_corpora.h) whose clips decode
// through data/video.h with the right frame count, size and held-out sprites.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <opencv2/imgproc.hpp>
#include <set>

#include "florence/adapt/video/action_set.h"
#include "florence/core/error.h"
#include "florence/core/files.h"
#include "florence/data/video.h"
#include "support/files.h"
#include "support/paths.h"
#include "support/sprite_corpora.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_action_set {

namespace fs = std::filesystem;
using namespace florence;
using namespace florence::video;

TEST(ActionPlans, EachActionMovesAsNamed) {
  const int T = 12, S = 64;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    std::mt19937_64 rng(seed);
    auto plan = [&](const std::string& a) { return plan_action(a, T, S, 20, 14, rng); };
    const auto l = plan("move_left"), r = plan("move_right"), u = plan("move_up"), d = plan("move_down");
    EXPECT_LT(l.back().cx - l.front().cx, -0.3 * S);
    EXPECT_GT(r.back().cx - r.front().cx, 0.3 * S);
    EXPECT_LT(u.back().cy - u.front().cy, -0.3 * S);  // y grows downwards
    EXPECT_GT(d.back().cy - d.front().cy, 0.3 * S);
    EXPECT_DOUBLE_EQ(l.front().cy, l.back().cy);
    EXPECT_DOUBLE_EQ(u.front().cx, u.back().cx);
    for (const auto& p : l) EXPECT_TRUE(p.cx >= 10 && p.cx <= S - 10) << p.cx;  // stays inside
    const auto cw = plan("rotate_cw"), ccw = plan("rotate_ccw");
    EXPECT_GE(cw.back().angle - cw.front().angle, 120.0);
    EXPECT_LE(ccw.back().angle - ccw.front().angle, -120.0);
    const auto g = plan("grow"), s = plan("shrink");
    EXPECT_NEAR(g.back().scale, 1.0, 1e-12);
    EXPECT_LE(g.front().scale, 0.6);
    EXPECT_NEAR(s.front().scale, 1.0, 1e-12);
    const auto ap = plan("appear"), dis = plan("disappear");
    EXPECT_EQ(ap.front().opacity, 0.0);
    EXPECT_EQ(ap.back().opacity, 1.0);
    EXPECT_EQ(dis.front().opacity, 1.0);
    EXPECT_EQ(dis.back().opacity, 0.0);
    for (size_t i = 1; i < ap.size(); ++i) EXPECT_GE(ap[i].opacity, ap[i - 1].opacity);
    const auto b = plan("bounce");
    double lo = 1e9, hi = -1e9;
    int turns = 0;
    for (size_t i = 0; i < b.size(); ++i) {
      lo = std::min(lo, b[i].cy), hi = std::max(hi, b[i].cy);
      if (i >= 2 && (b[i].cy - b[i - 1].cy) * (b[i - 1].cy - b[i - 2].cy) < 0) ++turns;
      EXPECT_DOUBLE_EQ(b[i].cx, b[0].cx);
    }
    EXPECT_GT(hi - lo, 0.15 * S);
    EXPECT_GE(turns, 2);  // up and down more than once: not a plain move
  }
  std::mt19937_64 rng(1);
  EXPECT_THROW(plan_action("fly", 8, 64, 10, 10, rng), Error);
  EXPECT_THROW(plan_action("grow", 1, 64, 10, 10, rng), Error);
}

TEST(ActionCaptions, ArticleColourAndPhrase) {
  EXPECT_EQ(action_caption("move_left", "car", "red"), "a red car moves to the left");
  EXPECT_EQ(action_caption("rotate_ccw", "owl", ""), "an owl rotates counterclockwise");
  EXPECT_EQ(action_caption("appear", "apple", "orange"), "an orange apple appears");
  EXPECT_EQ(action_caption("bounce", "red balloon", "red"), "a red balloon bounces");  // no "red red"
  EXPECT_EQ(action_caption("grow", "grey cat", "gray"), "a grey cat grows");
  EXPECT_EQ(action_names().size(), 11u);
  EXPECT_THROW(action_caption("fly", "bird", ""), Error);
}

TEST(ActionSet, BuildsDecodableClipsWithHeldOutSprites) {
  if (!test::sprite_sources_available()) GTEST_SKIP() << "needs openclipart-svg, librsvg2-bin and emoji-datasource-google (scripts/setup)";
  const fs::path out = fs::path(FLORENCE_TEST_TMP) / "action_set";
  ActionSetOptions o;
  o.out_dir = out.string();
  o.sprites = test::test_sprite_options();
  o.train_clips = 22, o.val_clips = 11, o.test_clips = 11;
  o.frames = 10, o.frame_size = 48;
  o.seed = 3;
  o.overwrite = true;
  o.progress = false;
  const nlohmann::json s = build_action_set(o);
  EXPECT_EQ(s["failures"].size(), 0u);

  const data::SpriteBank bank = data::SpriteBank::load(o.sprites);
  std::map<std::string, std::string> split_of_sprite;
  for (const auto& sp : bank.sprites()) split_of_sprite[sp.key] = sp.split;
  const auto rows = test::read_jsonl(out / "manifest.jsonl");
  ASSERT_EQ(rows.size(), 44u);
  std::map<std::string, int> per_action;
  for (const auto& row : rows) {
    const std::string split = row["split"];
    EXPECT_EQ(split_of_sprite.at(row["sprite"].get<std::string>()), split) << row;
    EXPECT_EQ(row["action"], action_names()[row["label"].get<size_t>()]);
    EXPECT_EQ(row["caption"].get<std::string>().find(row["sprite_name"].get<std::string>()) != std::string::npos, true) << row;
    ++per_action[row["action"]];
    const data::VideoInfo info = data::probe_video((out / row["path"].get<std::string>()).string(), {true, 0});
    EXPECT_EQ(info.frames, 10) << row["path"];
    EXPECT_EQ(info.width, 48);
    EXPECT_EQ(info.height, 48);
  }
  EXPECT_EQ(per_action.size(), 11u);
  for (const auto& [a, n] : per_action) EXPECT_EQ(n, 4) << a;  // balanced: 2 + 1 + 1 per action
  EXPECT_EQ(test::read_jsonl(out / "test.jsonl").size(), 11u);
  EXPECT_EQ(core::read_text_file(out / "classes.txt").substr(0, 10), "move_left\n");

  // The first move_right clip: the actor's mass moves right between the first and last frame
  // (difference from the median frame isolates the moving sprite from the still background).
  for (const auto& row : rows) {
    if (row["action"] != "move_right") continue;
    const auto v = data::decode_frames((out / row["path"].get<std::string>()).string(), [](int64_t n) {
      std::vector<int64_t> all(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) all[size_t(i)] = i;
      return all;
    });
    ASSERT_EQ(v.frames.size(), 10u);
    cv::Mat stack(int(v.frames.size()), 48 * 48 * 3, CV_8UC1), median(1, 48 * 48 * 3, CV_8UC1);
    for (size_t f = 0; f < v.frames.size(); ++f) v.frames[f].reshape(1, 1).copyTo(stack.row(int(f)));
    for (int c = 0; c < stack.cols; ++c) {
      std::vector<uint8_t> col;
      for (int f = 0; f < stack.rows; ++f) col.push_back(stack.at<uint8_t>(f, c));
      std::nth_element(col.begin(), col.begin() + long(col.size() / 2), col.end());
      median.at<uint8_t>(0, c) = col[col.size() / 2];
    }
    auto centre_x = [&](const cv::Mat& frame) {
      cv::Mat diff;
      cv::absdiff(frame.reshape(1, 1), median, diff);
      diff = diff.reshape(3, 48);
      cv::Mat grey;
      cv::transform(diff, grey, cv::Matx13f(1, 1, 1));
      grey.convertTo(grey, CV_32F);
      const cv::Moments m = cv::moments(grey);
      return m.m10 / std::max(1e-9, m.m00);
    };
    EXPECT_GT(centre_x(v.frames.back()) - centre_x(v.frames.front()), 8.0) << row;
    break;
  }
}

}  // namespace test_action_set
