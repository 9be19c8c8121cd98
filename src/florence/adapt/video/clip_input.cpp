// Clip input shared by the video tasks; see clip_input.h.
#include "florence/adapt/video/clip_input.h"

#include <algorithm>
#include <numeric>

#include <spdlog/spdlog.h>

#include "florence/core/error.h"
#include "florence/data/video.h"
#include "florence/train/seeding.h"

namespace florence::video {

std::vector<ActionClip> subset(std::vector<ActionClip> all, int64_t n, uint64_t seed) {
  if (n <= 0 || n >= int64_t(all.size())) return all;
  std::vector<size_t> idx(all.size());
  std::iota(idx.begin(), idx.end(), size_t(0));
  std::mt19937_64 rng(seed);
  std::shuffle(idx.begin(), idx.end(), rng);
  idx.resize(size_t(n));
  std::sort(idx.begin(), idx.end());
  std::vector<ActionClip> out;
  for (size_t i : idx) out.push_back(std::move(all[i]));
  return out;
}

nlohmann::json InputSpec::preprocess_json() const {
  return {{"image_size", image_size}, {"crop_pct", 1.0}, {"mean", mean}, {"std", std}};
}

nlohmann::json InputSpec::to_json() const {
  return {{"input", input}, {"frames", frames}, {"tube", tube}, {"preprocess", preprocess_json()}};
}

InputSpec InputSpec::from_json(const nlohmann::json& j) {
  InputSpec s;
  s.input = j.at("input").get<std::string>();
  s.frames = j.at("frames").get<int>();
  s.tube = j.at("tube").get<int>();
  const auto& p = j.at("preprocess");
  s.image_size = p.at("image_size").get<int>();
  s.mean = p.at("mean").get<std::array<float, 3>>();
  s.std = p.at("std").get<std::array<float, 3>>();
  return s;
}

data::TransformOptions InputSpec::transform(bool train_crop) const {
  data::TransformOptions t;
  t.image_size = image_size;
  t.crop_pct = 1.0;  // the whole frame: actors move up to the frame's edges
  t.train = train_crop;
  t.hflip = false;  // a flip turns move_left into move_right, rotate_cw into rotate_ccw
  t.scale_min = 0.5;
  t.scale_max = 1.0;
  t.mean = mean;
  t.std = std;
  return t;
}

InputSpec input_spec(const VideoTrainOptions& o, const nlohmann::json& preprocess, int tower_size) {
  InputSpec in;
  try {
    in.image_size = preprocess.value("image_size", tower_size);
    if (preprocess.contains("mean")) in.mean = preprocess["mean"].get<std::array<float, 3>>();
    if (preprocess.contains("std")) in.std = preprocess["std"].get<std::array<float, 3>>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("video train: bad preprocess entry for '{}': {}", o.checkpoint, e.what()));
  }
  in.input = o.input;
  in.frames = o.frames;
  return in;
}

torch::Tensor to_model_input(torch::Tensor frames, const InputSpec& in) {
  if (in.single()) frames = frames.expand({in.tube, frames.size(1), frames.size(2), frames.size(3)});
  return frames.permute({1, 0, 2, 3}).contiguous();
}

torch::Tensor read_train_clip(const std::string& path, const InputSpec& in, const data::ImageTransform& tf,
                              std::mt19937_64& rng) {
  data::ClipSampling s;
  s.frames = in.sampled();
  const int offset = int(rng() % kTrainOffsets);
  const data::DecodedVideo d =
      data::decode_frames(path, [&](int64_t total) { return data::sample_indices(total, s, offset, kTrainOffsets); });
  const int64_t S = in.image_size;
  torch::Tensor frames = torch::empty({int64_t(d.frames.size()), 3, S, S}, torch::kFloat32);
  const std::mt19937_64 start = rng;
  for (size_t i = 0; i < d.frames.size(); ++i) {
    std::mt19937_64 r = start;
    tf.apply_into(d.frames[i], r, frames[int64_t(i)].data_ptr<float>());
  }
  return to_model_input(frames, in);
}

torch::Tensor read_test_views(const std::string& path, const InputSpec& in, int clips, int crops) {
  data::ViewOptions v;
  v.sampling.frames = in.sampled();
  v.num_clips = clips;
  v.num_crops = crops;
  v.transform = in.transform(false);
  torch::Tensor views = data::read_views(path, v).views;  // [V, T', 3, S, S]
  if (in.single()) views = views.expand({views.size(0), in.tube, views.size(2), views.size(3), views.size(4)});
  return views.permute({0, 2, 1, 3, 4}).contiguous();
}

int64_t for_each_view_group(const std::vector<ActionClip>& clips, const InputSpec& in, int num_clips, int num_crops,
                            data::SkipCounts& skipped,
                            const std::function<void(const torch::Tensor&, const std::vector<size_t>&)>& fn,
                            int group) {
  std::vector<torch::Tensor> pending;
  std::vector<size_t> idx;
  int64_t done = 0;
  auto flush = [&] {
    if (pending.empty()) return;
    fn(torch::cat(pending, 0), idx);
    done += int64_t(idx.size());
    pending.clear();
    idx.clear();
  };
  for (size_t i = 0; i < clips.size(); ++i) {
    try {
      pending.push_back(read_test_views(clips[i].path, in, num_clips, num_crops));
      idx.push_back(i);
    } catch (const data::VideoError& e) {
      ++skipped[e.reason()];
      spdlog::warn("video: skipping {} ({})", clips[i].path, e.what());
      continue;
    }
    if (int(pending.size()) >= group) flush();
  }
  flush();
  return done;
}

std::vector<ActionClip> captioned_clips(std::vector<ActionClip> clips, data::SkipCounts& skipped, const std::string& what) {
  std::vector<ActionClip> out;
  int64_t dropped = 0;
  for (auto& c : clips)
    if (!c.caption.empty()) out.push_back(std::move(c));
    else ++dropped;
  if (dropped > 0) {
    skipped["no_caption"] += dropped;
    spdlog::warn("{}: {} clip(s) without a caption left out", what, dropped);
  }
  return out;
}

bool sidecar_is_video_text(const nlohmann::json& side, const std::string& where) {
  if (!side.is_object() || !side.contains("video_text")) return false;
  const auto& v = side["video_text"];
  if (!v.is_boolean())
    throw Error(fmt::format("{}: \"video_text\" must be true or false, got {}", where.empty() ? "sidecar" : where,
                            v.dump()));
  return v.get<bool>();
}

void check_resume_input(const nlohmann::json& side, const InputSpec& in, const std::string& ckpt) {
  const nlohmann::json v = side.value("video", nlohmann::json::object());
  const std::string input = v.contains("input") && v["input"].is_string() ? v["input"].get<std::string>() : "";
  const int frames = v.contains("frames") && v["frames"].is_number_integer() ? v["frames"].get<int>() : -1;
  if (input != in.input || frames != in.frames)
    throw Error(fmt::format("resume: '{}' was trained with --input {} --frames {}; this run asks for --input {} "
                            "--frames {} (start a new run to change them)",
                            ckpt, input, frames, in.input, in.frames));
}

void validate_input_spec(const InputSpec& in, const std::string& where) {
  if (in.input != "video" && in.input != "single-frame")
    throw Error(fmt::format("{}: input must be video or single-frame, got '{}'", where, in.input));
  if (in.frames < 1 || in.tube < 1 || in.image_size < 1)
    throw Error(fmt::format("{}: frames ({}), tube ({}) and image_size ({}) must be >= 1", where, in.frames, in.tube,
                            in.image_size));
}

void validate_clip_options(const VideoTrainOptions& o) {
  if (o.data.empty()) throw Error("video train: --data (an action set root) is required");
  if (o.input != "video" && o.input != "single-frame")
    throw Error(fmt::format("--input must be video or single-frame, got '{}'", o.input));
  if (o.augment != "none" && o.augment != "crop")
    throw Error(fmt::format("--augment must be none or crop, got '{}'", o.augment));
  if (o.frames < 1) throw Error(fmt::format("--frames must be >= 1, got {}", o.frames));
  if (o.test_clips < 1 || o.test_crops < 1) throw Error("--test-clips and --test-crops must be >= 1");
  if (o.max_train_clips < 0 || o.max_eval_clips < 0) throw Error("--max-train-clips / --max-eval-clips must be >= 0");
}

void ClipBatches::open(size_t n, uint64_t seed, const train::Position& pos, int64_t batch) {
  seed_ = seed;
  batch_ = batch;
  order_.resize(n);
  std::iota(order_.begin(), order_.end(), size_t(0));
  std::mt19937_64 rng(train::seed_mix({order_tag_, seed, uint64_t(pos.epoch)}));
  std::shuffle(order_.begin(), order_.end(), rng);
  cur_.item = cur_.start(pos, batch);
  cur_.epoch = pos.epoch;
  ahead_ = Batch{};
  ahead_valid_ = false;
}

ClipBatches::Batch ClipBatches::read_batch(int64_t from, const std::vector<ActionClip>& clips, const InputSpec& in,
                                           const data::ImageTransform& tf) {
  Batch b;
  b.end = from;
  std::vector<torch::Tensor> xs;
  while (int64_t(xs.size()) < batch_) {
    // Too few clips left to fill the batch: the epoch ends here, without decoding them.
    if (int64_t(order_.size()) - b.end < batch_ - int64_t(xs.size())) return b;
    const int64_t at = b.end++;
    const size_t i = order_[size_t(at)];
    std::mt19937_64 rng(train::seed_mix({clip_tag_, seed_, uint64_t(cur_.epoch), uint64_t(at)}));
    try {
      xs.push_back(read_train_clip(clips[i].path, in, tf, rng));
      b.read.push_back(i);
      ++read_here_;
    } catch (const data::VideoError& e) {
      ++b.skipped;
      ++failed_here_;
      if (read_here_ == 0 && failed_here_ >= 64)
        throw Error(fmt::format("video train: the first {} training clips tried could not be read (the last: {}: {}); "
                                "check that this build's OpenCV (FFmpeg backend) decodes these files",
                                failed_here_, clips[i].path, e.what()));
      if (failed_here_ <= 20 || failed_here_ % 100 == 0)
        spdlog::warn("video train: skipping {} ({}); the next clip takes its place{}", clips[i].path, e.what(),
                     failed_here_ == 20 ? " (from now on every 100th skip is logged; all are counted)" : "");
    }
  }
  b.x = torch::stack(xs, 0);
  b.ok = true;
  return b;
}

void ClipBatches::read_ahead(const std::vector<ActionClip>& clips, const InputSpec& in, const data::ImageTransform& tf) {
  ahead_ = read_batch(cur_.item, clips, in, tf);
  ahead_valid_ = true;
  if (!ahead_.ok) {  // the epoch's tail: passed for good, so its skips count now (once, resumed or not)
    cur_.item = ahead_.end;
    cur_.skipped += ahead_.skipped;
  }
}

bool ClipBatches::next(const std::vector<ActionClip>& clips, const InputSpec& in, const data::ImageTransform& tf,
                       torch::Tensor& x, std::vector<size_t>& read) {
  if (!ahead_valid_) read_ahead(clips, in, tf);
  if (!ahead_.ok) return false;
  Batch b = std::move(ahead_);
  cur_.item = b.end;
  cur_.skipped += b.skipped;
  x = b.x;
  read = std::move(b.read);
  read_ahead(clips, in, tf);
  return true;
}

}  // namespace florence::video
