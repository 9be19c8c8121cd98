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

#include "florence/adapt/video/clip_input.h"
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
    if (c.caption.find_first_not_of(" \t\r\n") == std::string::npos) c.caption.clear();  // blank = no caption
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
  const int64_t V = int64_t(num_clips) * num_crops;
  for_each_view_group(
      clips, in, num_clips, num_crops, skipped,
      [&](const torch::Tensor& views, const std::vector<size_t>& idx) {
        torch::Tensor p = torch::softmax(net->forward(views.to(device)).to(torch::kCPU, torch::kFloat), 1);
        scores.push_back(p.view({int64_t(idx.size()), V, -1}).mean(1));
        for (size_t i : idx) labels.push_back(clips[i].label);
      },
      group);
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
    return fmt::format("{} train clips, {} unreadable so far", train_.size(), batches_.cursor().skipped);
  }
  train::StepOutput step(const train::Position& pos) override;
  bool supports_amp() const override { return true; }
  void after_step(const train::Position& pos, nlohmann::json& metrics) override;
  nlohmann::json config() const override;
  nlohmann::json checkpoint_extra() const override;
  void check_resume(const nlohmann::json& sidecar, const std::string& ckpt) override;
  nlohmann::json train_state(const train::Position&) const override {
    return {{"data_cursor", batches_.cursor().to_json()}};
  }
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
  ClipBatches batches_{kTagVideoOrder, kTagVideoClip};
  torch::Tensor batch_x_, batch_y_;
  double last_val_ = -1;
};

void ActionTask::validate() {
  o_.validate_run(true);
  validate_clip_options(o_);
  if (o_.task != "actions") throw Error(fmt::format("video train: the action task got --task '{}'", o_.task));
  if (!o_.video_init.empty()) throw Error("--video-init is for --task retrieval (actions: use --checkpoint)");
  if (!o_.vocab.empty()) throw Error("--vocab is for --task retrieval (an action model has no text tower)");
  if (o_.label_smoothing < 0 || o_.label_smoothing >= 1)
    throw Error(fmt::format("--label-smoothing must be in [0, 1), got {}", o_.label_smoothing));
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
  in_ = input_spec(o_, art.preprocess, tower.image_size);

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
  batches_.open(train_.size(), o_.seed, pos, o_.batch_size);
}

bool ActionTask::next_batch(const train::Position&) {
  std::vector<size_t> read;
  if (!batches_.next(train_, in_, *train_tf_, batch_x_, read)) return false;
  std::vector<int64_t> ys;
  for (size_t i : read) ys.push_back(train_[i].label);
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
  // At the end of each pass over the clips (an unreadable clip can end it before steps_per_epoch_).
  if (val_.empty() || (!batches_.epoch_done() && pos.step != total_)) return;
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
  if (sidecar_is_video_text(side, ckpt))
    throw Error(fmt::format("'{}' is a video-text run (--task retrieval), not an action run", ckpt));
  check_resume_input(side, in_, ckpt);
  batches_.restore(train::DataCursor::from_sidecar(side, ckpt));
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
                      {"train_unreadable", batches_.cursor().skipped},
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
  // A run folder's config.json says which task ("video-actions" | "video-text"); a checkpoint's
  // sidecar holds "video" either way (its options say the task).
  std::error_code ec;
  const fs::path cfg = fs::path(arg) / "config.json";
  if (fs::is_regular_file(cfg, ec)) {
    const nlohmann::json j = nlohmann::json::parse(core::read_text_file(cfg), nullptr, false);
    if (j.is_object() && j.value("kind", "") == "video-text")
      return VideoTrainOptions::from_json(train::load_saved_options(arg, {"video-text", "video", "", "video training"}));
  }
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
  if (sidecar_is_video_text(side, side_path))
    throw Error(fmt::format("video eval: '{}' is a video-text model (video train --task retrieval); rank it with "
                            "`florence video retrieval --checkpoint {}`",
                            o.checkpoint, o.checkpoint));
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
