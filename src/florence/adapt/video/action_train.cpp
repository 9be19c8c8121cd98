// Action recognition with Video CoSwin as a task on the shared run layer; see action_train.h.
#include "florence/adapt/video/action_train.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>
#include <sstream>

#include "florence/adapt/video/configs.h"
#include "florence/core/checkpoint.h"
#include "florence/core/device.h"
#include "florence/core/error.h"
#include "florence/core/files.h"
#include "florence/core/precision.h"
#include "florence/data/transforms.h"
#include "florence/data/video.h"
#include "florence/eval/metrics.h"
#include "florence/model/io.h"
#include "florence/model/registry.h"
#include "florence/model/run_artifacts.h"
#include "florence/train/finetune.h"
#include "florence/train/seeding.h"
#include "florence/vision/video_swin.h"

namespace florence::video {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

ActionSplit read_action_split(const std::string& root, const std::string& split) {
  const fs::path dir(root);
  const fs::path classes_file = dir / "classes.txt", split_file = dir / (split + ".jsonl");
  std::error_code ec;
  if (!fs::is_regular_file(classes_file, ec))
    throw Error(fmt::format("action set '{}': no classes.txt (build one with `florence data build actions`)", root));
  if (!fs::is_regular_file(split_file, ec)) throw Error(fmt::format("action set '{}': no split file '{}'", root, split_file.string()));
  ActionSplit s;
  {
    std::istringstream in(core::read_text_file(classes_file));
    for (std::string line; std::getline(in, line);) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (!line.empty()) s.classes.push_back(line);
    }
  }
  if (s.classes.size() < 2)
    throw Error(fmt::format("action set '{}': classes.txt lists {} class(es); need at least 2", root, s.classes.size()));
  std::istringstream in(core::read_text_file(split_file));
  int64_t line_no = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_no;
    if (line.empty() || line == "\r") continue;
    auto skip = [&](const std::string& reason, const std::string& why) {
      ++s.skipped[reason];
      spdlog::warn("action set: {} line {}: {} (skipped)", split_file.string(), line_no, why);
    };
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("path") || !j["path"].is_string()) {
      skip("bad_json", "not a JSON object with a \"path\"");
      continue;
    }
    if (!j.contains("label") || !j["label"].is_number_integer() || j["label"].get<int64_t>() < 0 ||
        j["label"].get<int64_t>() >= int64_t(s.classes.size())) {
      skip("bad_label", fmt::format("label missing or outside [0, {})", s.classes.size()));
      continue;
    }
    ActionClip c;
    const fs::path p(j["path"].get<std::string>());
    c.path = (p.is_absolute() ? p : dir / p).string();
    c.label = j["label"].get<int64_t>();
    c.action = s.classes[size_t(c.label)];
    if (j.contains("caption") && j["caption"].is_string()) c.caption = j["caption"].get<std::string>();
    if (!fs::is_regular_file(c.path, ec)) {
      skip("missing_file", fmt::format("'{}' does not exist", c.path));
      continue;
    }
    s.clips.push_back(std::move(c));
  }
  return s;
}

namespace {

constexpr uint64_t kTagVideoSubset = 41, kTagVideoOrder = 42, kTagVideoClip = 43;
constexpr int kTrainOffsets = 4;  // temporal jitter: the offset inside each sampling segment, of 4

/// Seeded random subset of n clips (0 or >= size: all), kept in manifest order.
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

/// How clips become model input (shared by training, validation, test and `video eval`).
struct InputSpec {
  std::string input = "video";  ///< "video" | "single-frame"
  int frames = 8;               ///< T of "video"
  int tube = 2;                 ///< the tokenizer's temporal kernel: single-frame repeats the frame this often
  int image_size = 64;
  std::array<float, 3> mean = data::kImageNetMean, std = data::kImageNetStd;

  bool single() const { return input == "single-frame"; }
  /// Frames sampled from the video.
  int sampled() const { return single() ? 1 : frames; }
  /// Frames the model sees.
  int model_frames() const { return single() ? tube : frames; }
  nlohmann::json preprocess_json() const {
    return {{"image_size", image_size}, {"crop_pct", 1.0}, {"mean", mean}, {"std", std}};
  }
  nlohmann::json to_json() const {
    return {{"input", input}, {"frames", frames}, {"tube", tube}, {"preprocess", preprocess_json()}};
  }
  static InputSpec from_json(const nlohmann::json& j) {
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
  data::TransformOptions transform(bool train_crop) const {
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
};

/// [T', 3, S, S] (T' sampled frames) -> [3, T, S, S] model layout, repeating a single frame.
torch::Tensor to_model_input(torch::Tensor frames, const InputSpec& in) {
  if (in.single()) frames = frames.expand({in.tube, frames.size(1), frames.size(2), frames.size(3)});
  return frames.permute({1, 0, 2, 3}).contiguous();
}

/// One training clip: frames at a random offset inside each sampling segment, one geometry (crop
/// box) for the whole clip, both drawn from `rng`. [3, T, S, S].
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

/// All test views of one clip: [V, 3, T, S, S], V = clips x crops (data::read_views).
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

/// Class probabilities of each readable clip, averaged over its views (softmax, then the mean:
/// Video Swin's test setting average_clips='prob'), and its label. Unreadable clips are skipped,
/// counted in `skipped` by data::VideoError::reason and logged. Clips go through the model in
/// groups of `group`. Returns {scores [N, C], labels [N]} (N = 0: undefined tensors).
std::pair<torch::Tensor, torch::Tensor> predict_clips(vision::VideoSwinTransformer& net,
                                                      const std::vector<ActionClip>& clips, const InputSpec& in,
                                                      int num_clips, int num_crops, const torch::Device& device,
                                                      data::SkipCounts& skipped, int group = 8) {
  const bool was_training = net->is_training();
  net->eval();
  torch::NoGradGuard ng;
  std::vector<torch::Tensor> scores;
  std::vector<int64_t> labels;
  std::vector<torch::Tensor> pending;
  std::vector<int64_t> pending_labels;
  const int64_t V = int64_t(num_clips) * num_crops;
  auto flush = [&] {
    if (pending.empty()) return;
    torch::Tensor x = torch::cat(pending, 0).to(device);
    torch::Tensor p = torch::softmax(net->forward(x).to(torch::kCPU, torch::kFloat), 1);
    scores.push_back(p.view({int64_t(pending.size()), V, -1}).mean(1));
    labels.insert(labels.end(), pending_labels.begin(), pending_labels.end());
    pending.clear();
    pending_labels.clear();
  };
  for (const auto& c : clips) {
    try {
      pending.push_back(read_test_views(c.path, in, num_clips, num_crops));
      pending_labels.push_back(c.label);
    } catch (const data::VideoError& e) {
      ++skipped[e.reason()];
      spdlog::warn("video: skipping {} ({})", c.path, e.what());
      continue;
    }
    if (int(pending.size()) >= group) flush();
  }
  flush();
  if (was_training) net->train();
  if (scores.empty()) return {};
  return {torch::cat(scores, 0), torch::tensor(labels, torch::kLong)};
}

nlohmann::json views_json(int clips, int crops) {
  return {{"clips", clips}, {"crops", crops}, {"average", "softmax probabilities"}};
}

// ---------------------------------------------------------------------------------------------
// The task
// ---------------------------------------------------------------------------------------------

class ActionTask : public train::TrainTask {
 public:
  explicit ActionTask(const VideoTrainOptions& o) : o_(o) {}
  std::string name() const override { return "video action training"; }
  const train::RunOptions& options() const override { return o_; }
  nlohmann::json options_json() const override { return o_.to_json(); }
  void validate() override;
  int64_t setup(const train::RunContext& ctx) override;
  torch::nn::Module& module() override { return *net_; }
  const model::ModelSpec& spec() const override { return spec_; }
  std::string plan() const override {
    return fmt::format("video actions: {} input, {} frames of {} px, {} classes, label smoothing {}{}", o_.input,
                       in_.model_frames(), in_.image_size, classes_.size(), o_.label_smoothing,
                       o_.freeze_tower ? ", tower frozen (head only)" : "");
  }
  void open_epoch(const train::Position& pos) override;
  bool next_batch(const train::Position& pos) override;
  std::string data_summary() const override {
    return fmt::format("{} train clips, {} unreadable so far", train_.size(), train_skips_);
  }
  train::StepOutput step(const train::Position& pos) override;
  bool supports_amp() const override { return true; }
  void after_step(const train::Position& pos, nlohmann::json& metrics) override;
  nlohmann::json config() const override;
  nlohmann::json checkpoint_extra() const override;
  void check_resume(const nlohmann::json& sidecar, const std::string& ckpt) override;
  nlohmann::json final_extra() const override {
    nlohmann::json e = checkpoint_extra();
    e["init"] = init_desc();
    return e;
  }
  void finish(train::RunResult& run) override;

 private:
  bool pretrained() const { return !o_.checkpoint.empty() && !o_.random_init; }
  std::string init_desc() const {
    if (pretrained()) return o_.checkpoint;
    return fmt::format("random init ({}, seed {})", init_spec_.name, o_.seed);
  }
  void setup_data();
  void setup_model();
  double val_top1();

  VideoTrainOptions o_;
  train::RunContext ctx_;
  model::ModelSpec init_spec_, spec_;
  vision::VideoSwinConfig cfg_;
  vision::VideoSwinTransformer net_{nullptr};
  InputSpec in_;
  std::unique_ptr<data::ImageTransform> train_tf_;
  std::vector<std::string> classes_;
  std::vector<ActionClip> train_, val_, test_;
  nlohmann::json data_summary_;
  int64_t steps_per_epoch_ = 0, total_ = 0;
  std::vector<size_t> order_;
  int64_t cursor_ = 0, epoch_ = 0;
  torch::Tensor batch_x_, batch_y_;
  int64_t train_skips_ = 0;
  double last_val_ = -1;
};

void ActionTask::validate() {
  o_.validate_run(true);
  if (o_.data.empty()) throw Error("video train: --data (an action set root) is required");
  if (o_.input != "video" && o_.input != "single-frame")
    throw Error(fmt::format("--input must be video or single-frame, got '{}'", o_.input));
  if (o_.augment != "none" && o_.augment != "crop")
    throw Error(fmt::format("--augment must be none or crop, got '{}'", o_.augment));
  if (o_.frames < 1) throw Error(fmt::format("--frames must be >= 1, got {}", o_.frames));
  if (o_.test_clips < 1 || o_.test_crops < 1) throw Error("--test-clips and --test-crops must be >= 1");
  if (o_.label_smoothing < 0 || o_.label_smoothing >= 1)
    throw Error(fmt::format("--label-smoothing must be in [0, 1), got {}", o_.label_smoothing));
  if (o_.max_train_clips < 0 || o_.max_eval_clips < 0) throw Error("--max-train-clips / --max-eval-clips must be >= 0");
  if (o_.random_init && o_.checkpoint.empty()) throw Error("--random-init needs --checkpoint (whose config it uses)");
  if (o_.checkpoint.empty() && o_.model.empty())
    throw Error("video train: give --checkpoint (a pretrained Florence run) or --model NAME (random init)");
  if (!o_.checkpoint.empty()) {
    std::error_code ec;
    if (!fs::exists(o_.checkpoint, ec)) throw Error(fmt::format("checkpoint '{}' does not exist", o_.checkpoint));
    if (fs::is_directory(o_.checkpoint, ec))
      throw Error(fmt::format("checkpoint '{}' is a directory; pass the weights file (e.g. {})", o_.checkpoint,
                              (fs::path(o_.checkpoint) / "model.safetensors").string()));
  }
}

void ActionTask::setup_data() {
  ActionSplit tr = read_action_split(o_.data, o_.train_split);
  classes_ = tr.classes;
  train_ = subset(std::move(tr.clips), o_.max_train_clips, train::seed_mix({kTagVideoSubset, o_.seed, 0}));
  nlohmann::json skipped = {{"train", tr.skipped}};
  const uint64_t s_eval = train::seed_mix({kTagVideoSubset, o_.seed, 1});
  if (!o_.val_split.empty()) {
    ActionSplit v = read_action_split(o_.data, o_.val_split);
    val_ = subset(std::move(v.clips), o_.max_eval_clips, s_eval);
    skipped["val"] = v.skipped;
  }
  if (!o_.test_split.empty()) {
    ActionSplit t = read_action_split(o_.data, o_.test_split);
    if (t.classes != classes_) throw Error(fmt::format("action set '{}': the test split's classes differ", o_.data));
    test_ = subset(std::move(t.clips), o_.max_eval_clips, s_eval);
    skipped["test"] = t.skipped;
  }
  steps_per_epoch_ = int64_t(train_.size()) / o_.batch_size;
  if (steps_per_epoch_ == 0)
    throw Error(fmt::format("video train: {} training clips do not fill one batch of {}", train_.size(), o_.batch_size));
  total_ = o_.steps > 0 ? o_.steps : o_.epochs * steps_per_epoch_;
  data_summary_ = {{"train", train_.size()}, {"val", val_.size()}, {"test", test_.size()}, {"manifest_skipped", skipped}};
  spdlog::info("video train: {} train clips ({} batches of {} per epoch), {} val, {} test, {} classes", train_.size(),
               steps_per_epoch_, o_.batch_size, val_.size(), test_.size(), classes_.size());
}

void ActionTask::setup_model() {
  init_spec_ = o_.checkpoint.empty() ? model::resolve_model(o_.model) : model::resolve_spec(o_.model, o_.checkpoint);
  if (!init_spec_.florence && !init_spec_.vision)
    throw Error(fmt::format("video train: model '{}' has no image tower", init_spec_.name));
  vision::SwinConfig tower = init_spec_.florence ? init_spec_.florence->vision : *init_spec_.vision;
  tower.num_classes = 0;
  if (tower.variant != "coswin")
    throw Error(fmt::format("video train: the image tower of '{}' is '{}', not a CoSwin tower", init_spec_.name,
                            tower.variant));

  // Preprocessing: the checkpoint's (model/run_artifacts.h), else the tower's size and ImageNet statistics.
  const model::RunArtifacts art = model::find_run_artifacts(o_.checkpoint);
  try {
    in_.image_size = art.preprocess.value("image_size", tower.image_size);
    if (art.preprocess.contains("mean")) in_.mean = art.preprocess["mean"].get<std::array<float, 3>>();
    if (art.preprocess.contains("std")) in_.std = art.preprocess["std"].get<std::array<float, 3>>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("video train: bad preprocess entry for '{}': {}", o_.checkpoint, e.what()));
  }
  in_.input = o_.input;
  in_.frames = o_.frames;

  cfg_ = with_image_tower(resolve_video_config(o_.video_config), tower);
  in_.tube = cfg_.tube;
  cfg_.num_frames = in_.model_frames();
  cfg_.num_classes = int(classes_.size());
  if (in_.model_frames() < cfg_.tube)
    throw Error(fmt::format("--frames {} is fewer than the tokenizer's tube of {} frames", in_.model_frames(), cfg_.tube));

  train::seed_model_init(o_.seed);
  net_ = vision::VideoSwinTransformer(cfg_);
  if (pretrained() && o_.resume.empty()) {
    const core::TensorMap w = model::read_weights(o_.checkpoint, init_spec_);
    const std::string prefix = init_spec_.florence ? "image_encoder." : "";
    core::TensorMap tower_state;
    for (const auto& [k, t] : w) {
      if (k.rfind(prefix, 0) != 0) continue;
      const std::string name = k.substr(prefix.size());
      if (name.rfind("head.", 0) == 0) continue;  // a new head for the actions
      tower_state[name] = t;
    }
    try {
      vision::load_inflated(net_, tower_state);
    } catch (const Error& e) {
      throw Error(fmt::format("inflating the image tower of '{}': {}", o_.checkpoint, e.what()));
    }
    spdlog::info("video train: image tower of {} inflated to {} frames, new {}-class head", o_.checkpoint,
                 cfg_.num_frames, classes_.size());
  }
  if (o_.freeze_tower)
    for (auto& p : net_->named_parameters(true))
      if (p.key().rfind("head.", 0) != 0) p.value().set_requires_grad(false);
  net_->to(ctx_.device);
  net_->train();

  spec_ = model::ModelSpec{};
  spec_.name = fmt::format("{}-video-cls{}", init_spec_.name, classes_.size());
  spec_.vision = cfg_.image;
  train_tf_ = std::make_unique<data::ImageTransform>(in_.transform(o_.augment == "crop"));
}

int64_t ActionTask::setup(const train::RunContext& ctx) {
  ctx_ = ctx;
  setup_data();
  setup_model();
  return total_;
}

void ActionTask::open_epoch(const train::Position& pos) {
  epoch_ = pos.epoch;
  order_.resize(train_.size());
  std::iota(order_.begin(), order_.end(), size_t(0));
  std::mt19937_64 rng(train::seed_mix({kTagVideoOrder, o_.seed, uint64_t(pos.epoch)}));
  std::shuffle(order_.begin(), order_.end(), rng);
  cursor_ = pos.batches_in_epoch * o_.batch_size;  // the order is a function of (seed, epoch): skip by index
}

bool ActionTask::next_batch(const train::Position& pos) {
  // Batch b of the epoch is the window [b * B, (b + 1) * B) of the epoch's order (the last partial
  // window is dropped); an unreadable clip leaves its batch one sample short (counted, logged).
  if (cursor_ + o_.batch_size > int64_t(order_.size())) return false;
  std::vector<torch::Tensor> xs;
  std::vector<int64_t> ys;
  for (int64_t k = 0; k < o_.batch_size; ++k, ++cursor_) {
    const ActionClip& c = train_[order_[size_t(cursor_)]];
    std::mt19937_64 rng(train::seed_mix({kTagVideoClip, o_.seed, uint64_t(epoch_), uint64_t(cursor_)}));
    try {
      xs.push_back(read_train_clip(c.path, in_, *train_tf_, rng));
      ys.push_back(c.label);
    } catch (const data::VideoError& e) {
      ++train_skips_;
      spdlog::warn("video train: skipping {} ({})", c.path, e.what());
    }
  }
  if (xs.empty())
    throw Error(fmt::format("video train: no clip of batch {} of epoch {} could be read (see the log)",
                            pos.batches_in_epoch, pos.epoch));
  batch_x_ = torch::stack(xs, 0);
  batch_y_ = torch::tensor(ys, torch::kLong);
  return true;
}

train::StepOutput ActionTask::step(const train::Position& pos) {
  train::StepOutput out;
  out.samples = batch_x_.size(0);
  torch::Tensor logits = net_->forward(batch_x_.to(ctx_.device));
  torch::Tensor y = batch_y_.to(ctx_.device);
  NoAutocastGuard fp32_loss;  // --precision amp_bf16: the loss in float32
  logits = logits.to(torch::kFloat);
  torch::Tensor l = train::smoothed_cross_entropy(logits, y, o_.label_smoothing);
  out.loss = l.item<double>();
  if (std::isfinite(out.loss)) l.backward();
  const double acc = logits.argmax(1).eq(y).to(torch::kDouble).mean().item<double>();
  out.metrics["train_acc"] = acc;
  out.extra = fmt::format("acc {:.2f}", acc);
  return out;
}

double ActionTask::val_top1() {
  data::SkipCounts skipped;
  auto [s, l] = predict_clips(net_, val_, in_, 1, 1, ctx_.device, skipped);
  if (!s.defined()) throw Error("video train: no validation clip could be read");
  return train::topk_accuracy(s, l, 1);
}

void ActionTask::after_step(const train::Position& pos, nlohmann::json& metrics) {
  if (val_.empty() || (pos.batches_in_epoch != steps_per_epoch_ && pos.step != total_)) return;
  last_val_ = val_top1();
  metrics["val_top1"] = last_val_;
  spdlog::info("step {} (epoch {} end): val top-1 {:.2f} %", pos.step, pos.epoch, 100 * last_val_);
}

nlohmann::json ActionTask::config() const {
  return {{"kind", "video-actions"},  {"init", init_desc()}, {"steps_per_epoch", steps_per_epoch_},
          {"video", checkpoint_extra()["video"]}, {"data", data_summary_}};
}

nlohmann::json ActionTask::checkpoint_extra() const {
  nlohmann::json v = in_.to_json();
  v["config"] = cfg_.to_json();
  v["classes"] = classes_;
  return {{"video", v}, {"preprocess", in_.preprocess_json()}, {"classes", classes_}};
}

void ActionTask::check_resume(const nlohmann::json& side, const std::string& ckpt) {
  if (!side.contains("video")) throw Error(fmt::format("'{}' is not a video training checkpoint", ckpt));
  if (side["video"].value("classes", std::vector<std::string>{}) != classes_)
    throw Error(fmt::format("resume: the classes of '{}' differ from the data's", ckpt));
}

void ActionTask::finish(train::RunResult& run) {
  std::string set = fs::path(o_.data).lexically_normal().filename().string();
  if (set.empty()) set = fs::path(o_.data).lexically_normal().parent_path().filename().string();
  nlohmann::json r = {{"task", "video-actions"},
                      {"set", set},
                      {"init", init_desc()},
                      {"input", o_.input},
                      {"freeze_tower", o_.freeze_tower},
                      {"precision", ctx_.precision},  // training's; val and test run in float32
                      {"model", spec_.name},
                      {"weights", run.final_weights},
                      {"num_train", train_.size()},
                      {"steps", run.steps_done},
                      {"epochs", double(run.steps_done) / double(steps_per_epoch_)},
                      {"train_loss", {{"first10", run.first_loss_mean}, {"last10", run.last_loss_mean}}},
                      {"train_unreadable", train_skips_},
                      {"options", o_.to_json()},
                      {"data", data_summary_}};
  if (!val_.empty()) {
    if (last_val_ < 0) last_val_ = val_top1();
    r["val_top1"] = last_val_;
  }
  if (!test_.empty()) {
    data::SkipCounts skipped;
    auto [s, l] = predict_clips(net_, test_, in_, o_.test_clips, o_.test_crops, ctx_.device, skipped);
    if (!s.defined()) throw Error("video train: no test clip could be read (see the log)");
    r["metrics"] = eval::classification_metrics(s, l).to_json(classes_);
    r["views"] = views_json(o_.test_clips, o_.test_crops);
    r["test_skipped"] = skipped;
    spdlog::info("video train: test top-1 {:.2f} %, top-5 {:.2f} % ({} clips, {} views each)",
                 100 * r["metrics"]["top1"].get<double>(), 100 * r["metrics"]["top5"].get<double>(), s.size(0),
                 o_.test_clips * o_.test_crops);
  } else {
    spdlog::warn("video train: no test split: no test metrics");
  }
  r["seconds"] = std::chrono::duration<double>(Clock::now() - ctx_.start).count();
  run.result = r;
  if (ctx_.writer) core::write_text_atomic(ctx_.run_dir / "result.json", r.dump(2) + "\n");
}

}  // namespace

train::RunResult train_actions(const VideoTrainOptions& options) {
  ActionTask task(options);
  return train::run_task(task);
}

VideoTrainOptions load_video_train_options(const std::string& arg) {
  return VideoTrainOptions::from_json(train::load_saved_options(arg, {"video-actions", "video", "", "video training"}));
}

nlohmann::json evaluate_actions(const VideoEvalOptions& o) {
  const auto t0 = Clock::now();
  if (o.checkpoint.empty()) throw Error("video eval: --checkpoint is required");
  if (o.data.empty()) throw Error("video eval: --data is required");
  if (o.clips < 1 || o.crops < 1) throw Error("video eval: --clips and --crops must be >= 1");
  std::error_code ec;
  if (!fs::is_regular_file(o.checkpoint, ec)) throw Error(fmt::format("checkpoint '{}' is not a file", o.checkpoint));
  const std::string side_path = model::sidecar_path(o.checkpoint);
  if (!fs::is_regular_file(side_path, ec))
    throw Error(fmt::format("video eval: '{}' has no sidecar '{}' (train one with `florence video train`)", o.checkpoint,
                            side_path));
  const nlohmann::json side = core::read_json_file(side_path);
  if (!side.contains("video") || !side["video"].contains("config"))
    throw Error(fmt::format("video eval: '{}' is not a video action checkpoint (no \"video\" entry)", side_path));
  InputSpec in;
  vision::VideoSwinConfig cfg;
  std::vector<std::string> classes;
  try {
    in = InputSpec::from_json(side["video"]);
    cfg = vision::VideoSwinConfig::from_json(side["video"]["config"]);
    cfg.validate();
    classes = side["video"].at("classes").get<std::vector<std::string>>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("video eval: bad \"video\" entry in '{}': {}", side_path, e.what()));
  }
  if (int(classes.size()) != cfg.num_classes)
    throw Error(fmt::format("video eval: '{}' lists {} classes for a {}-class head", side_path, classes.size(),
                            cfg.num_classes));
  const ActionSplit split = read_action_split(o.data, o.split);
  if (split.classes != classes)
    throw Error(fmt::format("video eval: the classes of '{}' differ from those the checkpoint was trained on", o.data));
  std::vector<ActionClip> clips = split.clips;
  if (o.max_clips > 0 && int64_t(clips.size()) > o.max_clips) clips.resize(size_t(o.max_clips));

  const torch::Device device = parse_device(o.device);
  const bool autocast = adapter_autocast(o.precision, device, "video eval");
  vision::VideoSwinTransformer net(cfg);
  core::load_state_dict(*net, model::read_weights(o.checkpoint, model::ModelSpec{}));
  net->to(device);
  data::SkipCounts skipped = split.skipped;
  torch::Tensor s, l;
  {
    AutocastGuard guard(autocast, device);  // predict_clips returns float32 scores
    std::tie(s, l) = predict_clips(net, clips, in, o.clips, o.crops, device, skipped);
  }
  if (!s.defined()) throw Error(fmt::format("video eval: none of the {} clips could be read (see the log)", clips.size()));
  return {{"task", "video-actions-eval"},
          {"checkpoint", o.checkpoint},
          {"set", fs::path(o.data).lexically_normal().filename().string()},
          {"split", o.split},
          {"input", in.input},
          {"frames", in.model_frames()},
          {"views", views_json(o.clips, o.crops)},
          {"precision", autocast ? "amp_bf16" : "fp32"},
          {"metrics", eval::classification_metrics(s, l).to_json(classes)},
          {"skipped", skipped},
          {"seconds", std::chrono::duration<double>(Clock::now() - t0).count()}};
}

}  // namespace florence::video
