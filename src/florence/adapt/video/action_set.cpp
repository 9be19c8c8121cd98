// Action set from real art; see action_set.h.
#include "florence/adapt/video/action_set.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <opencv2/imgproc.hpp>
#include <opencv2/videoio.hpp>
#include <sstream>

#include "florence/core/error.h"
#include "florence/core/files.h"
#include "florence/data/transforms.h"

namespace fs = std::filesystem;

namespace florence::video {

namespace {

using data::uniform01;
using data::uniform_int;
using data::uniform_range;

const char* const kSplits[] = {"train", "val", "test"};

const std::map<std::string, std::string>& phrases() {
  static const std::map<std::string, std::string> p = {
      {"move_left", "moves to the left"}, {"move_right", "moves to the right"}, {"move_up", "moves up"},
      {"move_down", "moves down"},        {"rotate_cw", "rotates clockwise"},   {"rotate_ccw", "rotates counterclockwise"},
      {"grow", "grows"},                  {"shrink", "shrinks"},                {"appear", "appears"},
      {"disappear", "disappears"},        {"bounce", "bounces"}};
  return p;
}

}  // namespace

const std::vector<std::string>& action_names() {
  static const std::vector<std::string> a = {"move_left", "move_right", "move_up", "move_down", "rotate_cw", "rotate_ccw",
                                             "grow",      "shrink",     "appear",  "disappear", "bounce"};
  return a;
}

std::string action_caption(const std::string& action, const std::string& name, const std::string& color) {
  const auto it = phrases().find(action);
  if (it == phrases().end()) throw Error("action set: unknown action '" + action + "'");
  bool has_colour = color.empty();
  std::istringstream words(name);
  for (std::string w; words >> w;)
    for (const auto& c : data::colour_palette()) has_colour = has_colour || w == c || (c == "gray" && w == "grey");
  const std::string noun = has_colour ? name : color + " " + name;
  return data::indefinite_article(noun) + " " + noun + " " + it->second;
}

std::vector<ActorPose> plan_action(const std::string& a, int frames, int size, double base_w, double base_h,
                                   std::mt19937_64& rng) {
  if (!phrases().count(a)) throw Error("action set: unknown action '" + a + "'");
  if (frames < 2) throw Error("action set: a clip needs at least 2 frames, got " + std::to_string(frames));
  const double S = size, hw = 0.5 * base_w, hh = 0.5 * base_h;
  auto in_range = [&](double lo, double hi) { return hi > lo ? uniform_range(rng, lo, hi) : 0.5 * (lo + hi); };
  std::vector<ActorPose> p(static_cast<size_t>(frames));
  // Defaults: a still actor somewhere fully inside the frame.
  const double cx = in_range(hw, S - hw), cy = in_range(hh, S - hh);
  for (auto& q : p) q.cx = cx, q.cy = cy;
  auto t_of = [&](int i) { return double(i) / double(frames - 1); };
  if (a == "move_left" || a == "move_right" || a == "move_up" || a == "move_down") {
    const bool horizontal = a == "move_left" || a == "move_right";
    const double half = horizontal ? hw : hh;
    const double lo = half, hi = S - half;
    const double d = std::min(uniform_range(rng, 0.35, 0.6) * S, std::max(0.0, hi - lo));
    const double start = in_range(lo, hi - d);
    const bool forward = a == "move_right" || a == "move_down";  // +x is right, +y is down
    for (int i = 0; i < frames; ++i) {
      const double v = forward ? start + d * t_of(i) : start + d * (1.0 - t_of(i));
      (horizontal ? p[size_t(i)].cx : p[size_t(i)].cy) = v;
    }
  } else if (a == "rotate_cw" || a == "rotate_ccw") {
    const double r = std::hypot(hw, hh);
    const double rx = in_range(std::min(r, 0.5 * S), S - std::min(r, 0.5 * S));
    const double ry = in_range(std::min(r, 0.5 * S), S - std::min(r, 0.5 * S));
    const double a0 = uniform_range(rng, 0.0, 360.0), sweep = uniform_range(rng, 120.0, 300.0) * (a == "rotate_cw" ? 1 : -1);
    for (int i = 0; i < frames; ++i) p[size_t(i)] = {rx, ry, 1.0, a0 + sweep * t_of(i), 1.0};
  } else if (a == "grow" || a == "shrink") {
    const double s0 = uniform_range(rng, 0.45, 0.6);
    for (int i = 0; i < frames; ++i) {
      const double t = a == "grow" ? t_of(i) : 1.0 - t_of(i);
      p[size_t(i)].scale = s0 + (1.0 - s0) * t;
    }
  } else if (a == "appear" || a == "disappear") {
    const int k = frames / 4 + int(uniform_int(rng, uint64_t(std::max(1, frames / 2 - frames / 4 + 1))));
    for (int i = 0; i < frames; ++i) {
      const double in = std::clamp(0.5 * (i - k + 1), 0.0, 1.0);  // 0 before k, 0.5 at k, 1 after
      p[size_t(i)].opacity = a == "appear" ? in : 1.0 - in;
    }
  } else {  // bounce
    const double floor_y = S - hh - uniform_range(rng, 0.0, 0.1) * S;
    const double height = std::max(0.0, std::min(uniform_range(rng, 0.3, 0.5) * S, floor_y - hh));
    const double hops = uniform_range(rng, 1.5, 2.5), phase = uniform_range(rng, 0.0, M_PI);
    for (int i = 0; i < frames; ++i)
      p[size_t(i)].cy = floor_y - height * std::abs(std::sin(M_PI * hops * t_of(i) + phase));
  }
  return p;
}

namespace {

struct ClipResult {
  bool ok = false;
  std::string failure, detail;
  size_t sprite = 0;
  std::string action, background, caption;
  std::vector<std::string> distractors;
};

void write_clip(const std::string& path, const std::vector<cv::Mat>& frames_rgb, double fps, int quality) {
  const fs::path final_path(path);
  const fs::path tmp = final_path.parent_path() / ("." + final_path.stem().string() + ".tmp.avi");
  {
    cv::VideoWriter w(tmp.string(), cv::CAP_OPENCV_MJPEG, cv::VideoWriter::fourcc('M', 'J', 'P', 'G'), fps,
                      frames_rgb.front().size(), true);
    if (!w.isOpened()) throw Error("action set: cannot open a MJPG video writer for '" + tmp.string() + "'");
    w.set(cv::VIDEOWRITER_PROP_QUALITY, quality);
    cv::Mat bgr;
    for (const auto& f : frames_rgb) {
      cv::cvtColor(f, bgr, cv::COLOR_RGB2BGR);
      w.write(bgr);
    }
  }
  std::error_code ec;
  fs::rename(tmp, final_path, ec);
  if (ec) throw Error("action set: cannot rename '" + tmp.string() + "': " + ec.message());
}

}  // namespace

nlohmann::json build_action_set(const ActionSetOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  if (o.frame_size < 16) throw Error("action set: --size must be >= 16, got " + std::to_string(o.frame_size));
  if (o.frames < 2) throw Error("action set: --frames must be >= 2, got " + std::to_string(o.frames));
  if (!(o.fps > 0)) throw Error("action set: --fps must be > 0");
  if (o.train_clips < 1 || o.val_clips < 0 || o.test_clips < 0) throw Error("action set: clip counts must be >= 0 (train >= 1)");
  if (o.max_distractors < 0) throw Error("action set: max_distractors must be >= 0");
  std::vector<std::string> actions = o.actions.empty() ? action_names() : o.actions;
  for (const auto& a : actions)
    if (!phrases().count(a)) throw Error("action set: unknown action '" + a + "' (known: move_left, ..., bounce)");
  const std::vector<std::string> owned = {"clips",      "manifest.jsonl", "train.jsonl", "val.jsonl",
                                         "test.jsonl", "classes.txt",    "summary.json"};
  data::check_set_dir(o.out_dir, owned, o.overwrite, "action set");

  data::SpriteBankOptions so = o.sprites;
  if (so.threads == 0) so.threads = o.threads;
  const data::SpriteBank bank = data::SpriteBank::load(so);
  const data::BackgroundBank backgrounds(o.backgrounds);
  const auto& cats = bank.categories();
  const std::vector<int> usable = bank.usable_categories({"train", "val", "test"}, 1);
  if (usable.empty()) throw Error("action set: no category has sprites in train, val and test");
  data::prepare_set_dir(o.out_dir, owned, o.overwrite, "action set");

  const int S = o.frame_size, T = o.frames;
  const int64_t counts[3] = {o.train_clips, o.val_clips, o.test_clips};
  std::string manifest_all;
  std::map<std::string, std::string> manifest_split;
  std::map<std::string, int64_t> failures;
  nlohmann::json per_split = nlohmann::json::object();
  for (int si = 0; si < 3; ++si) {
    const std::string split = kSplits[si];
    const fs::path dir = fs::path(o.out_dir) / "clips" / split;
    fs::create_directories(dir);
    std::vector<ClipResult> results(static_cast<size_t>(counts[si]));
    data::parallel_for_index(results.size(), o.threads, [&](size_t i) {
      std::mt19937_64 rng(data::item_seed(o.seed, "actions/" + split, i));
      ClipResult& r = results[i];
      r.action = actions[i % actions.size()];  // balanced classes; everything else is drawn
      const cv::Mat bg = backgrounds.make(S, S, split, rng, &r.background);
      data::SceneCanvas still(bg);
      const int n_distract = int(uniform_int(rng, uint64_t(o.max_distractors + 1)));
      const int cat = usable[uniform_int(rng, usable.size())];
      for (int k = 0; k < n_distract && usable.size() > 1; ++k) {
        int dc = cat;
        while (dc == cat) dc = usable[uniform_int(rng, usable.size())];
        const size_t ds = data::draw_sprite(bank, dc, split, rng);
        const cv::Mat img = data::scaled_sprite(bank.sprites()[ds].rgba, uniform_range(rng, 0.2, 0.35) * S, uniform01(rng) < 0.5);
        if (data::place_sprite(still, img, 0.5, 10, rng) >= 0) r.distractors.push_back(bank.sprites()[ds].key);
      }
      r.sprite = data::draw_sprite(bank, cat, split, rng);
      const data::Sprite& sp = bank.sprites()[r.sprite];
      const bool resize_action = r.action == "grow" || r.action == "shrink";
      const double L = (resize_action ? uniform_range(rng, 0.4, 0.55) : uniform_range(rng, 0.3, 0.45)) * S;
      const bool flip = uniform01(rng) < 0.5;
      const cv::Mat base = data::scaled_sprite(sp.rgba, L, flip);
      const auto poses = plan_action(r.action, T, S, base.cols, base.rows, rng);
      std::vector<cv::Mat> frames;
      for (const auto& q : poses) {
        data::SceneCanvas c(still.image());
        cv::Mat img = q.scale == 1.0 ? base : data::scaled_sprite(sp.rgba, L * q.scale, flip);
        if (q.angle != 0.0) img = data::rotate_sprite(img, q.angle);
        if (q.opacity > 0)
          c.paste(img, int(std::lround(q.cx - 0.5 * img.cols)), int(std::lround(q.cy - 0.5 * img.rows)), q.opacity);
        frames.push_back(c.image());
      }
      r.caption = action_caption(r.action, sp.name, sp.colour.share >= 0.4 ? sp.colour.name : "");
      try {
        write_clip((dir / fmt::format("{:06d}.avi", i)).string(), frames, o.fps, o.jpeg_quality);
      } catch (const Error& e) {
        r.failure = "write_failed";
        r.detail = e.what();
        return;
      }
      r.ok = true;
    });
    int64_t n = 0;
    std::map<std::string, int64_t> per_action, per_category;
    for (size_t i = 0; i < results.size(); ++i) {
      const ClipResult& r = results[i];
      if (!r.ok) {
        ++failures[r.failure];
        spdlog::warn("action set: {} clip {}: {}: {}", split, i, r.failure, r.detail);
        continue;
      }
      const data::Sprite& sp = bank.sprites()[r.sprite];
      const int64_t label = std::find(actions.begin(), actions.end(), r.action) - actions.begin();
      const nlohmann::json row = {{"path", fmt::format("clips/{}/{:06d}.avi", split, i)},
                                  {"caption", r.caption},
                                  {"action", r.action},
                                  {"label", label},
                                  {"sprite", sp.key},
                                  {"sprite_name", sp.name},
                                  {"category", cats[size_t(sp.category)].name},
                                  {"color", sp.colour.share >= 0.4 ? sp.colour.name : ""},
                                  {"split", split},
                                  {"frames", T},
                                  {"fps", o.fps},
                                  {"width", S},
                                  {"height", S},
                                  {"background", r.background},
                                  {"distractors", r.distractors}};
      manifest_all += row.dump() + "\n";
      manifest_split[split] += row.dump() + "\n";
      ++n, ++per_action[r.action], ++per_category[cats[size_t(sp.category)].name];
    }
    per_split[split] = {{"clips", n}, {"actions", per_action}, {"categories", per_category}};
    if (o.progress) spdlog::info("action set: {}: {} clips", split, n);
  }
  for (const char* s : kSplits) core::write_text_atomic(fs::path(o.out_dir) / (std::string(s) + ".jsonl"), manifest_split[s]);
  core::write_text_atomic(fs::path(o.out_dir) / "manifest.jsonl", manifest_all);
  std::string classes;
  for (const auto& a : actions) classes += a + "\n";
  core::write_text_atomic(fs::path(o.out_dir) / "classes.txt", classes);
  nlohmann::json summary = {
      {"set", "actions"},
      {"out_dir", o.out_dir},
      {"options",
       {{"frame_size", S}, {"frames", T}, {"fps", o.fps}, {"clips", {o.train_clips, o.val_clips, o.test_clips}},
        {"max_distractors", o.max_distractors}, {"seed", o.seed}}},
      {"actions", actions},
      {"splits", per_split},
      {"sprites", bank.summary()},
      {"backgrounds", backgrounds.summary()},
      {"failures", failures},
      {"seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()}};
  core::write_text_atomic(fs::path(o.out_dir) / "summary.json", summary.dump(2));
  return summary;
}

}  // namespace florence::video
