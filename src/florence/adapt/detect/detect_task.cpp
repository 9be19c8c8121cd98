// The detection training task on the shared run layer; see detect_task.h.
#include "florence/adapt/detect/detect_task.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <numeric>
#include <random>

#include "florence/adapt/detect/detect_data.h"
#include "florence/adapt/detect/detect_eval.h"
#include "florence/adapt/detect/detector.h"
#include "florence/core/error.h"
#include "florence/core/files.h"
#include "florence/data/transforms.h"
#include "florence/model/io.h"
#include "florence/model/run_artifacts.h"
#include "florence/train/schedule.h"
#include "florence/train/seeding.h"

namespace florence::detect {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

// Seed streams of this task (train/seeding.h tags 11-13 are the engine's and pretraining's).
constexpr uint64_t kTagOrder = 31, kTagFlip = 32, kTagBaseline = 33;

class DetectTask : public train::TrainTask {
 public:
  explicit DetectTask(const DetectOptions& o) : o_(o) {}
  std::string name() const override { return "detection"; }
  const train::RunOptions& options() const override { return o_; }
  nlohmann::json options_json() const override { return o_.to_json(); }
  void validate() override;
  int64_t setup(const train::RunContext& ctx) override;
  torch::nn::Module& module() override { return *model_; }
  const model::ModelSpec& spec() const override { return spec_; }
  std::vector<train::ParamGroup> param_groups() override;
  std::string plan() const override;
  void open_epoch(const train::Position& pos) override;
  bool next_batch(const train::Position& pos) override;
  std::string data_summary() const override {
    return fmt::format("{} training images, {} boxes read", train_.coco.images.size(), read_.boxes);
  }
  train::StepOutput step(const train::Position& pos) override;
  void after_step(const train::Position& pos, nlohmann::json& metrics) override;
  nlohmann::json config() const override;
  nlohmann::json checkpoint_extra() const override { return detector_checkpoint_extra(cfg_, labels_, pre_); }
  void check_resume(const nlohmann::json& side, const std::string& ckpt) override;
  nlohmann::json train_state(const train::Position&) const override { return {{"data_cursor", cur_.to_json()}}; }
  nlohmann::json final_extra() const override {
    nlohmann::json e = checkpoint_extra();
    e["init"] = init_desc();
    return e;
  }
  void finish(train::RunResult& run) override;

 private:
  std::string init_desc() const { return o_.checkpoint.empty() ? "random init" : o_.checkpoint; }

  DetectOptions o_;
  train::RunContext ctx_;
  DetectorConfig cfg_;
  model::ModelSpec spec_;
  Detector model_{nullptr};
  LabelMap labels_;
  BatchOptions pre_;
  DetectionSplit train_;
  std::vector<int64_t> order_;
  train::DataCursor cur_;  // where next_batch stands in order_ (saved in checkpoints: resume is exact)
  DetectionBatch batch_;
  BatchStats read_;
  int64_t steps_per_epoch_ = 0, total_ = 0;
  nlohmann::json last_val_;
};

void DetectTask::validate() {
  o_.validate_run(/*steps_or_epochs=*/true);
  if (o_.data.empty() && o_.resume.empty()) throw Error("detect train: --data is required");
  if (o_.train_split.empty()) throw Error("detect train: --train-split must not be empty");
  if (o_.augment != "flip" && o_.augment != "none") throw Error("--augment must be 'flip' or 'none', got '" + o_.augment + "'");
  if (o_.image_size != 0 && o_.image_size < 32) throw Error(fmt::format("--image-size must be >= 32, got {}", o_.image_size));
  if (o_.eval_batch_size < 1) throw Error("--eval-batch-size must be >= 1");
  if (o_.backbone_lr_scale < 0) throw Error("--backbone-lr-scale must be >= 0");
  if (o_.max_train_images < 0 || o_.max_eval_images < 0 || o_.val_every < 0 || o_.baseline_boxes < 0)
    throw Error("--max-train-images, --max-eval-images, --val-every and --baseline-boxes must be >= 0");
  if (o_.baseline_boxes > kMaxBaselineBoxes)
    throw Error(fmt::format("--baseline-boxes must be <= {}, got {}", kMaxBaselineBoxes, o_.baseline_boxes));
  if (!o_.checkpoint.empty()) {
    std::error_code ec;
    if (!fs::is_regular_file(o_.checkpoint, ec))
      throw Error(fmt::format("--checkpoint '{}' is not a weights file{}", o_.checkpoint,
                              fs::is_directory(o_.checkpoint, ec) ? " (pass RUN/model.safetensors)" : ""));
  }
  cfg_ = resolve_detector(o_.detector);  // names the known configs when unknown
}

int64_t DetectTask::setup(const train::RunContext& ctx) {
  ctx_ = ctx;
  // Backbone: the checkpoint's tower config (its weights must load), at our input size.
  if (!o_.checkpoint.empty()) {
    const model::ModelSpec init = model::resolve_spec("", o_.checkpoint);
    vision::SwinConfig vc = init.florence ? init.florence->vision : *init.vision;
    vc.image_size = cfg_.backbone.image_size;
    vc.num_classes = 0;
    cfg_.backbone = vc;
    const model::RunArtifacts art = model::find_run_artifacts(o_.checkpoint);
    try {
      if (art.preprocess.contains("mean")) pre_.mean = art.preprocess["mean"].get<std::array<float, 3>>();
      if (art.preprocess.contains("std")) pre_.std = art.preprocess["std"].get<std::array<float, 3>>();
    } catch (const nlohmann::json::exception& e) {
      throw Error(fmt::format("detect train: bad preprocess entry for '{}': {}", o_.checkpoint, e.what()));
    }
  }
  if (o_.image_size > 0) cfg_.image_size = o_.image_size, cfg_.backbone.image_size = o_.image_size;
  pre_.image_size = cfg_.image_size;
  pre_.class_agnostic = o_.class_agnostic;
  cfg_.class_agnostic = o_.class_agnostic;

  train_ = open_detection_split(o_.data, o_.train_split, o_.max_train_images);
  labels_ = LabelMap::from_categories(train_.coco.categories);
  if (labels_.category_ids.empty()) throw Error(fmt::format("detect train: '{}' has no categories", train_.ann_file));
  cfg_.num_classes = int64_t(labels_.category_ids.size());
  cfg_.class_names = o_.class_agnostic ? std::vector<std::string>{} : labels_.names;
  if (o_.class_agnostic) cfg_.num_classes = 1, cfg_.class_names = {"object"};
  cfg_.validate();
  steps_per_epoch_ = int64_t(train_.coco.images.size()) / o_.batch_size;
  if (steps_per_epoch_ == 0)
    throw Error(fmt::format("detect train: {} training images do not fill one batch of {}", train_.coco.images.size(),
                            o_.batch_size));
  total_ = o_.steps > 0 ? o_.steps : o_.epochs * steps_per_epoch_;

  train::seed_model_init(o_.seed);
  model_ = Detector(cfg_);
  if (!o_.checkpoint.empty() && o_.resume.empty()) {
    model::ModelSpec init = model::resolve_spec("", o_.checkpoint);
    try {
      model_->load_backbone(model::read_weights(o_.checkpoint, init));
    } catch (const Error& e) {
      throw Error(fmt::format("detect train: loading the backbone from '{}': {}", o_.checkpoint, e.what()));
    }
  }
  if (o_.freeze_backbone) model_->set_backbone_trainable(false);
  model_->to(ctx.device);
  model_->train();
  spec_ = model::ModelSpec{};
  spec_.name = cfg_.name;
  spec_.vision = cfg_.backbone;
  spdlog::info("detect train: {} ({} classes{}), {} training images ({} boxes), {} batches of {} per epoch, init {}",
               cfg_.name, cfg_.classes(), o_.class_agnostic ? ", class-agnostic" : "", train_.coco.images.size(),
               train_.coco.annotations.size(), steps_per_epoch_, o_.batch_size, init_desc());
  return total_;
}

std::vector<train::ParamGroup> DetectTask::param_groups() {
  // (backbone?, decay?) groups; frozen parameters are left out.
  std::map<std::pair<bool, bool>, std::vector<torch::Tensor>> by;
  for (const auto& item : model_->named_parameters(true)) {
    if (!item.value().requires_grad()) continue;
    const bool bb = item.key().rfind("backbone.", 0) == 0;
    by[{bb, train::uses_weight_decay(item.key(), item.value().dim())}].push_back(item.value());
  }
  std::vector<train::ParamGroup> groups;
  for (auto& [key, params] : by) groups.push_back({params, key.second, key.first ? o_.backbone_lr_scale : 1.0});
  return groups;
}

std::string DetectTask::plan() const {
  return fmt::format("detection: {} on '{}' split {}, backbone {}{}", cfg_.name, o_.data, o_.train_split, init_desc(),
                     o_.freeze_backbone ? " (frozen)" : "");
}

void DetectTask::open_epoch(const train::Position& pos) {
  order_.resize(train_.coco.images.size());
  std::iota(order_.begin(), order_.end(), int64_t(0));
  std::mt19937_64 rng(train::seed_mix({kTagOrder, o_.seed, uint64_t(pos.epoch)}));
  for (size_t i = order_.size(); i > 1; --i) std::swap(order_[i - 1], order_[size_t(data::uniform_int(rng, i))]);
  cur_.item = cur_.start(pos, o_.batch_size);
  cur_.epoch = pos.epoch;
}

bool DetectTask::next_batch(const train::Position& pos) {
  while (cur_.item + o_.batch_size <= int64_t(order_.size())) {
    const int64_t batch_index = cur_.item / o_.batch_size;
    std::vector<int64_t> idx(order_.begin() + cur_.item, order_.begin() + cur_.item + o_.batch_size);
    cur_.item += o_.batch_size;
    std::vector<bool> flip(idx.size(), false);
    if (o_.augment == "flip") {
      std::mt19937_64 rng(train::seed_mix({kTagFlip, o_.seed, uint64_t(pos.epoch), uint64_t(batch_index)}));
      for (size_t i = 0; i < flip.size(); ++i) flip[i] = (rng() >> 63) != 0;
    }
    batch_ = load_detection_batch(train_, idx, labels_, pre_, flip);
    read_.add(batch_.stats);
    cur_.skipped += batch_.stats.unreadable;
    if (batch_.stats.images > 0) return true;
    spdlog::warn("detect train: batch {} of epoch {} has no readable image; skipped", batch_index, pos.epoch);
  }
  return false;
}

train::StepOutput DetectTask::step(const train::Position& pos) {
  train::StepOutput out;
  out.samples = batch_.stats.images;
  std::vector<DetectionTarget> targets = batch_.targets;
  for (auto& t : targets) t.boxes = t.boxes.to(ctx_.device), t.labels = t.labels.to(ctx_.device);
  const DetectionLosses l = model_->losses(batch_.images.to(ctx_.device), targets);
  out.loss = l.total.item<double>();
  if (std::isfinite(out.loss)) l.total.backward();
  const double cls = l.cls.item<double>(), box = l.box.item<double>(), ctr = l.centerness.item<double>();
  out.metrics = {{"loss_cls", cls}, {"loss_box", box}, {"loss_ctr", ctr}, {"num_pos", l.num_pos}};
  out.extra = fmt::format("cls {:.3f} box {:.3f} ctr {:.3f}", cls, box, ctr);
  return out;
}

void DetectTask::after_step(const train::Position& pos, nlohmann::json& metrics) {
  if (o_.val_every <= 0 || o_.val_split.empty() || (pos.step % o_.val_every != 0 && pos.step != total_)) return;
  const DetectionSplit val = open_detection_split(o_.data, o_.val_split, o_.max_eval_images);
  DetectEvalOptions eo;
  eo.batch_size = o_.eval_batch_size;
  const DetectEvalResult r = evaluate_detector(model_, val, labels_, pre_, eo, ctx_.device);
  metrics["val_AP"] = r.metrics.ap;
  metrics["val_AP50"] = r.metrics.ap50;
  last_val_ = {{"AP", r.metrics.ap}, {"AP50", r.metrics.ap50}, {"step", pos.step}};
  spdlog::info("step {}: val AP {:.4f} AP50 {:.4f} ({} images, {:.1f} s)", pos.step, r.metrics.ap, r.metrics.ap50,
               val.coco.images.size(), r.seconds);
}

nlohmann::json DetectTask::config() const {
  return {{"kind", "detection"},
          {"init", init_desc()},
          {"steps_per_epoch", steps_per_epoch_},
          {"detector", detector_config_to_json(cfg_)},
          {"categories", labels_.to_json()}};
}

void DetectTask::check_resume(const nlohmann::json& side, const std::string& ckpt) {
  if (!side.contains("detector")) throw Error(fmt::format("'{}' is not a detection checkpoint", ckpt));
  if (side.contains("categories") && side["categories"] != labels_.to_json())
    throw Error(fmt::format("resume: the categories of '{}' differ from the training split's", ckpt));
  cur_ = train::DataCursor::from_sidecar(side, ckpt);
}

void DetectTask::finish(train::RunResult& run) {
  nlohmann::json r = {{"task", "detection-train"},
                      {"detector", cfg_.name},
                      {"init", init_desc()},
                      {"freeze_backbone", o_.freeze_backbone},
                      {"weights", run.final_weights},
                      {"train_images", train_.coco.images.size()},
                      {"steps", run.steps_done},
                      {"epochs", double(run.steps_done) / double(steps_per_epoch_)},
                      {"train_loss", {{"first10", run.first_loss_mean}, {"last10", run.last_loss_mean}}},
                      {"train_seconds", std::chrono::duration<double>(Clock::now() - ctx_.start).count()},
                      {"data", read_.to_json()},
                      {"options", o_.to_json()}};
  if (!last_val_.is_null()) r["val"] = last_val_;
  if (!o_.test_split.empty()) {
    const DetectionSplit test = open_detection_split(o_.data, o_.test_split, o_.max_eval_images);
    DetectEvalOptions eo;
    eo.batch_size = o_.eval_batch_size;
    const DetectEvalResult ev = evaluate_detector(model_, test, labels_, pre_, eo, ctx_.device);
    nlohmann::json e = ev.to_json(test);
    e["detector"] = cfg_.name;
    e["init"] = init_desc();
    e["weights"] = run.final_weights;
    // A baseline that cannot be drawn (the test split has a category training never saw) is a
    // warning in the result, not the loss of the trained run's evaluation.
    if (o_.baseline_boxes > 0 &&
        record_detection_baseline(
            e, [&]() -> const DetectionSplit& { return train_; }, test, o_.baseline_boxes, train::seed_mix({kTagBaseline, o_.seed}),
            o_.class_agnostic ? BaselineKind::random_boxes_pooled : BaselineKind::box_prior))
      spdlog::info("detect: baseline on {}, {}: AP {:.4f} AP50 {:.4f}", o_.test_split,
                   e["baseline"]["name"].get<std::string>(), e["baseline"]["metrics"]["AP"].get<double>(),
                   e["baseline"]["metrics"]["AP50"].get<double>());
    const fs::path eval_dir = ctx_.run_dir / "eval";
    fs::create_directories(eval_dir);
    write_coco_results((eval_dir / ("detections_" + o_.test_split + ".json")).string(), ev.results);
    core::write_text_atomic(eval_dir / ("detection_" + o_.test_split + ".json"), e.dump(2) + "\n");
    spdlog::info("detect: {} AP {:.4f} AP50 {:.4f} AP75 {:.4f} ({} images, {:.1f} s)\n{}", o_.test_split, ev.metrics.ap,
                 ev.metrics.ap50, ev.metrics.ap75, test.coco.images.size(), ev.seconds, ev.metrics.summary());
    r["test"] = e;
  }
  r["seconds"] = std::chrono::duration<double>(Clock::now() - ctx_.start).count();
  run.result = r;
  core::write_text_atomic(ctx_.run_dir / "result.json", r.dump(2) + "\n");
}

}  // namespace

train::RunResult train_detector(const DetectOptions& o) {
  DetectTask task(o);
  return train::run_task(task);
}

DetectOptions load_detect_options(const std::string& arg) {
  return DetectOptions::from_json(train::load_saved_options(arg, {"detection", "detector", "", "detection"}));
}

}  // namespace florence::detect
