// Fine-tuning runs as tasks on the shared run layer (run.h): image classification with a linear
// head, and UniCL retrieval fine-tuning (see finetune.h).
#include "florence/train/finetune.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <sstream>

#include "florence/core/checkpoint.h"
#include "florence/core/error.h"
#include "florence/core/files.h"
#include "florence/core/precision.h"
#include "florence/data/loader.h"
#include "florence/data/relabel.h"
#include "florence/data/transforms.h"
#include "florence/eval/metrics.h"
#include "florence/model/florence.h"
#include "florence/model/io.h"
#include "florence/model/registry.h"
#include "florence/model/run_artifacts.h"
#include "florence/text/tokenizer.h"
#include "florence/train/contrastive.h"
#include "florence/train/finetune_data.h"
#include "florence/train/grad_cache.h"
#include "florence/train/seeding.h"
#include "florence/vision/swin.h"

namespace florence::train {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// ---------------------------------------------------------------------------------------------
// Building blocks
// ---------------------------------------------------------------------------------------------

int layer_id(const std::string& name, const std::vector<int>& depths) {
  int total = 0;
  for (int d : depths) total += d;
  const int last = total + 1;  // L - 1 with L = sum(depths) + 2
  if (name.rfind("patch_embed", 0) == 0) return 0;
  if (name.rfind("layers.", 0) == 0) {
    std::vector<std::string> parts;
    std::stringstream ss(name);
    std::string p;
    while (std::getline(ss, p, '.')) parts.push_back(p);
    if (parts.size() >= 3) {
      const int stage = std::stoi(parts[1]);
      int before = 0;
      for (int i = 0; i < stage && i < int(depths.size()); ++i) before += depths[size_t(i)];
      if (parts[2] == "downsample") return before + depths.at(size_t(stage));
      if (parts[2] == "blocks" && parts.size() >= 4) return before + std::stoi(parts[3]) + 1;
    }
  }
  return last;
}

double topk_accuracy(const torch::Tensor& scores_in, const torch::Tensor& labels_in, int64_t k) {
  torch::Tensor scores = scores_in.to(torch::kCPU, torch::kDouble);
  torch::Tensor labels = labels_in.to(torch::kCPU, torch::kLong);
  if (scores.dim() != 2 || labels.dim() != 1 || labels.size(0) != scores.size(0) || scores.size(0) == 0)
    throw Error("topk_accuracy: scores must be [N, C] and labels [N] with N > 0");
  const torch::Tensor relevant = torch::one_hot(labels, scores.size(1)).to(torch::kBool);
  return eval::first_relevant_ranks(scores, relevant).le(k).to(torch::kDouble).mean().item<double>();
}

torch::Tensor smoothed_cross_entropy(const torch::Tensor& logits, const torch::Tensor& labels, double eps) {
  torch::Tensor logp = torch::log_softmax(logits, 1);
  torch::Tensor nll = -logp.gather(1, labels.unsqueeze(1)).squeeze(1);
  if (eps <= 0) return nll.mean();
  torch::Tensor uniform = -logp.mean(1);
  return ((1.0 - eps) * nll + eps * uniform).mean();
}

namespace {

// ---------------------------------------------------------------------------------------------
// The task
// ---------------------------------------------------------------------------------------------

constexpr uint64_t kTagSubset = 21;  // seed stream of the train / eval subsets

class FinetuneTask : public TrainTask {
 public:
  FinetuneTask(const FinetuneOptions& o, FinetuneSources s) : o_(o), src_(std::move(s)) {}
  std::string name() const override { return "fine-tuning"; }
  const RunOptions& options() const override { return o_; }
  nlohmann::json options_json() const override { return o_.to_json(); }
  void validate() override;
  int64_t setup(const RunContext& ctx) override;
  torch::nn::Module& module() override {
    if (classify()) return *tower_;
    return *two_tower_;
  }
  const model::ModelSpec& spec() const override { return spec_; }
  std::vector<ParamGroup> param_groups() override;
  std::string plan() const override;
  void open_epoch(const Position& pos) override { open_loader(pos.epoch, pos.batches_in_epoch); }
  bool next_batch(const Position&) override { return loader_->next(batch_); }
  std::string data_summary() const override { return loader_ ? loader_->stats().summary() : std::string(); }
  StepOutput step(const Position& pos) override;
  bool supports_amp() const override { return true; }
  void after_step(const Position& pos, nlohmann::json& metrics) override;
  nlohmann::json config() const override;
  nlohmann::json checkpoint_extra() const override;
  void check_resume(const nlohmann::json& sidecar, const std::string& ckpt) override;
  nlohmann::json final_extra() const override {
    nlohmann::json e = checkpoint_extra();
    e["init"] = init_desc();
    return e;
  }
  void finish(RunResult& run) override;

 private:
  bool classify() const { return o_.task == "classify"; }
  bool pretrained() const { return !o_.checkpoint.empty() && !o_.random_init; }
  void resolve_init();
  void setup_data();
  void setup_model();
  void open_loader(int64_t epoch, int64_t skip);
  data::LoaderOptions eval_loader_options() const;
  /// Logits [N, C] and labels [N] of a labelled view (eval transform).
  std::pair<torch::Tensor, torch::Tensor> predict(const std::shared_ptr<const data::SampleSource>& src);
  nlohmann::json preprocess_json() const;
  std::string init_desc() const {
    return pretrained() ? o_.checkpoint : fmt::format("random (seed {})", o_.seed);
  }

  FinetuneOptions o_;
  FinetuneSources src_;
  RunContext ctx_;
  model::ModelSpec init_spec_, spec_;  // the checkpoint's spec, the spec of what is trained
  vision::SwinTransformer tower_{nullptr};
  model::FlorenceModel two_tower_{nullptr};
  std::shared_ptr<text::Tokenizer> tokenizer_;
  std::unique_ptr<DistributedUniCL> loss_;
  std::string vocab_path_;
  std::vector<std::string> classes_;
  std::vector<std::string> classes_without_train_;  // classes the (subset of the) train split misses
  ClassView train_, val_, test_;
  std::unique_ptr<data::Loader> loader_;
  data::Batch batch_;
  int image_size_ = 0;
  double crop_pct_ = 0.875;
  std::array<float, 3> mean_ = data::kImageNetMean, std_ = data::kImageNetStd;
  int64_t steps_per_epoch_ = 0, total_ = 0;
  double last_val_ = -1;
  nlohmann::json data_summary_;
};

void FinetuneTask::validate() {
  o_.validate_run(/*steps_or_epochs=*/true);
  if (o_.task != "classify" && o_.task != "retrieval")
    throw Error(fmt::format("--task must be 'classify' or 'retrieval', got '{}'", o_.task));
  if (o_.checkpoint.empty() && o_.model.empty() && o_.resume.empty())
    throw Error("give --checkpoint (pretrained weights) or --model (random init)");
  if (o_.batch_size < (classify() ? 1 : 2))
    throw Error(fmt::format("--batch-size must be >= {}, got {}", classify() ? 1 : 2, o_.batch_size));
  if (!(o_.layer_decay > 0 && o_.layer_decay <= 1)) throw Error("--layer-decay must be in (0, 1]");
  if (!classify() && o_.layer_decay != 1.0) throw Error("--layer-decay applies to --task classify only");
  if (o_.label_smoothing < 0 || o_.label_smoothing >= 1) throw Error("--label-smoothing must be in [0, 1)");
  if (o_.augment != "rrc" && o_.augment != "none") throw Error("--augment must be 'rrc' or 'none'");
  if (o_.max_train_samples < 0)
    throw Error(fmt::format("--max-train-samples must be >= 0 (0 = all), got {}", o_.max_train_samples));
  if (o_.max_eval_samples < 0)
    throw Error(fmt::format("--max-eval-samples must be >= 0 (0 = all), got {}", o_.max_eval_samples));
  if (o_.crop_pct < 0 || o_.crop_pct > 1) throw Error("--crop-pct must be in (0, 1] (0 = the run's)");
  if (!o_.checkpoint.empty()) {
    // Name a missing / folder checkpoint here: the spec lookup would only report "no sidecar JSON".
    std::error_code ec;
    const fs::file_status st = fs::status(o_.checkpoint, ec);
    if (!fs::exists(st)) throw Error(fmt::format("checkpoint '{}' does not exist", o_.checkpoint));
    if (fs::is_directory(st))
      throw Error(fmt::format("checkpoint '{}' is a directory; pass the weights file (e.g. {})", o_.checkpoint,
                              (fs::path(o_.checkpoint) / "model.safetensors").string()));
  }
}

// Spec, preprocessing and vocabulary of the initial weights (model/run_artifacts.h).
void FinetuneTask::resolve_init() {
  init_spec_ = model::resolve_spec(o_.model, o_.checkpoint);
  const model::RunArtifacts art = model::find_run_artifacts(o_.checkpoint, classify() ? "" : o_.vocab);
  const nlohmann::json& pre = art.preprocess;
  const vision::SwinConfig& vc = init_spec_.florence ? init_spec_.florence->vision : *init_spec_.vision;
  try {
    image_size_ = o_.image_size > 0 ? o_.image_size : pre.value("image_size", vc.image_size);
    crop_pct_ = o_.crop_pct > 0 ? o_.crop_pct : pre.value("crop_pct", 0.875);
    if (pre.contains("mean")) mean_ = pre["mean"].get<std::array<float, 3>>();
    if (pre.contains("std")) std_ = pre["std"].get<std::array<float, 3>>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("finetune: bad preprocess entry for '{}': {}", o_.checkpoint, e.what()));
  }
  if (!classify()) {
    if (art.vocab.empty())
      throw Error("--task retrieval needs the BPE vocabulary: " +
                  (art.vocab_problem.empty() ? std::string() : art.vocab_problem + "; ") + "pass --vocab FILE");
    vocab_path_ = fs::absolute(art.vocab).string();
    tokenizer_ = std::make_shared<text::Tokenizer>(text::Tokenizer::from_file(vocab_path_));
  }
}

void FinetuneTask::setup_data() {
  const uint64_t s_train = seed_mix({kTagSubset, o_.seed, 0}), s_eval = seed_mix({kTagSubset, o_.seed, 1});
  if (!src_.train) throw Error(fmt::format("finetune: no '{}' split in '{}'", o_.train_split, o_.data));
  if (classify()) {
    const data::ClassIndex idx = data::index_classes(*src_.train, o_.class_field);
    classes_ = idx.classes;
    if (classes_.size() < 2)
      throw Error(fmt::format("finetune: the train data has {} class(es) (meta '{}'); need at least 2", classes_.size(),
                              o_.class_field));
    train_ = class_view(src_.train, o_.class_field, classes_, o_.max_train_samples, s_train);
    // The head keeps every class of the split (so val / test do not depend on the subset), but a
    // subset may hold fewer: at least 2 must have training samples.
    std::vector<std::string> missing;
    for (size_t c = 0; c < classes_.size(); ++c)
      if (train_.class_counts[c] == 0) missing.push_back(classes_[c]);
    const size_t present = classes_.size() - missing.size();
    if (present < 2)
      throw Error(fmt::format("finetune: the training data ({} samples{}) has {} class(es) of the split's {}; need at "
                              "least 2 (raise --max-train-samples)",
                              train_.size,
                              o_.max_train_samples > 0 ? fmt::format(", --max-train-samples {}", o_.max_train_samples)
                                                       : std::string(),
                              present, classes_.size()));
    if (!missing.empty())
      spdlog::warn("finetune: {} of {} classes have no training sample ({}); their val / test images count as errors",
                   missing.size(), classes_.size(), nlohmann::json(missing).dump());
    classes_without_train_ = missing;
    if (src_.val) val_ = class_view(src_.val, o_.class_field, classes_, o_.max_eval_samples, s_eval);
    if (src_.test) test_ = class_view(src_.test, o_.class_field, classes_, o_.max_eval_samples, s_eval);
  } else {
    train_ = pair_view(src_.train, o_.max_train_samples, s_train);
  }
  if (train_.size == 0) throw Error("finetune: the train split has no usable sample");
  steps_per_epoch_ = train_.size / o_.batch_size;
  if (steps_per_epoch_ == 0)
    throw Error(fmt::format("finetune: {} training samples do not fill one batch of {}", train_.size, o_.batch_size));
  total_ = o_.steps > 0 ? o_.steps : o_.epochs * steps_per_epoch_;
  data_summary_ = {{"train", train_.size}, {"val", val_.size}, {"test", test_.size},
                   {"skipped", {{"train", train_.skipped}, {"val", val_.skipped}, {"test", test_.skipped}}}};
  if (classify()) data_summary_["classes_without_train_samples"] = classes_without_train_;
  spdlog::info("finetune: {} train samples ({} full batches of {} per epoch), {} val, {} test{}", train_.size,
               steps_per_epoch_, o_.batch_size, val_.size, test_.size,
               classify() ? fmt::format(", {} classes", classes_.size()) : std::string());
}

void FinetuneTask::setup_model() {
  seed_model_init(o_.seed);
  if (classify()) {
    vision::SwinConfig vc = init_spec_.florence ? init_spec_.florence->vision : *init_spec_.vision;
    vc.num_classes = int(classes_.size());
    if (o_.drop_path >= 0) vc.drop_path_rate = o_.drop_path;
    spec_ = model::ModelSpec{};
    spec_.name = init_spec_.name + "-cls" + std::to_string(classes_.size());
    spec_.vision = vc;
    tower_ = vision::SwinTransformer(vc);
    if (pretrained() && o_.resume.empty()) {
      const core::TensorMap w = model::read_weights(o_.checkpoint, init_spec_);
      core::TensorMap mine;
      const std::string prefix = init_spec_.florence ? "image_encoder." : "";
      for (const auto& [k, t] : w) {
        if (k.rfind(prefix, 0) != 0) continue;
        const std::string name = k.substr(prefix.size());
        if (name.rfind("head.", 0) == 0) continue;  // a new head for the new classes
        mine[name] = t;
      }
      for (const auto& [k, t] : core::state_dict(*tower_))
        if (k.rfind("head.", 0) == 0) mine[k] = t;
      try {
        core::load_state_dict(*tower_, mine);
      } catch (const Error& e) {
        throw Error(fmt::format("loading the image tower of '{}': {}", o_.checkpoint, e.what()));
      }
      spdlog::info("finetune: image tower from {}, new {}-class head", o_.checkpoint, classes_.size());
    }
    tower_->to(ctx_.device);
    tower_->train();
  } else {
    if (!init_spec_.florence) throw Error("--task retrieval needs a two-tower (Florence) model");
    spec_ = init_spec_;
    auto& cfg = *spec_.florence;
    if (o_.checkpoint.empty()) {  // config by name: the text tower takes the vocabulary's size, as in pretraining
      cfg.text.vocab_size = int(tokenizer_->vocab_size());
      cfg.text.sot_token = tokenizer_->sot_id();
      cfg.text.eot_token = tokenizer_->eot_id();
    } else if (tokenizer_->vocab_size() > cfg.text.vocab_size) {
      throw Error(fmt::format("vocabulary '{}' has {} tokens but the text tower only {}", vocab_path_,
                              tokenizer_->vocab_size(), cfg.text.vocab_size));
    }
    if (o_.drop_path >= 0) cfg.vision.drop_path_rate = o_.drop_path;
    spec_.vision = cfg.vision;
    spec_.text = cfg.text;
    two_tower_ = model::FlorenceModel(cfg);
    if (pretrained() && o_.resume.empty()) {
      try {
        core::load_state_dict(*two_tower_, model::read_weights(o_.checkpoint, init_spec_));
      } catch (const Error& e) {
        throw Error(fmt::format("loading '{}': {}", o_.checkpoint, e.what()));
      }
    }
    two_tower_->to(ctx_.device);
    two_tower_->train();
  }
}

std::vector<ParamGroup> FinetuneTask::param_groups() {
  if (!classify()) return decay_groups(*two_tower_);
  // Groups by (layer id, weight decay), in that order; lr scale layer_decay^(L - 1 - id).
  const auto& depths = spec_.vision->depths;
  int total = 0;
  for (int d : depths) total += d;
  const int L = total + 2;
  std::map<std::pair<int, bool>, std::vector<torch::Tensor>> by_group;
  for (const auto& item : tower_->named_parameters(true)) {
    if (!item.value().requires_grad()) continue;
    const int id = o_.layer_decay < 1.0 ? layer_id(item.key(), depths) : L - 1;
    by_group[{id, uses_weight_decay(item.key(), item.value().dim())}].push_back(item.value());
  }
  std::vector<ParamGroup> groups;
  for (auto& [key, params] : by_group)
    groups.push_back(ParamGroup{params, key.second, std::pow(o_.layer_decay, double(L - 1 - key.first))});
  return groups;
}

void FinetuneTask::open_loader(int64_t epoch, int64_t skip) {
  loader_.reset();
  data::LoaderOptions lo = training_loader_options(o_, o_.augment, image_size_);
  lo.mean = mean_;
  lo.std = std_;
  lo.require_text = !classify();
  if (!classify()) lo.context_length = spec_.florence->text.context_length;
  loader_ = std::make_unique<data::Loader>(train_.source, lo, nullptr);
  start_epoch_after(*loader_, epoch, skip);
}

data::LoaderOptions FinetuneTask::eval_loader_options() const {
  data::LoaderOptions lo;
  lo.batch_size = std::max<int64_t>(o_.batch_size, 64);
  lo.image_size = image_size_;
  lo.train = false;
  lo.crop_pct = crop_pct_;
  lo.mean = mean_;
  lo.std = std_;
  lo.num_workers = o_.workers;
  lo.shuffle = false;
  lo.require_text = false;
  lo.drop_last = false;
  return lo;
}

std::pair<torch::Tensor, torch::Tensor> FinetuneTask::predict(const std::shared_ptr<const data::SampleSource>& src) {
  data::Loader loader(src, eval_loader_options(), nullptr);
  std::vector<torch::Tensor> scores, labels;
  const bool was_training = tower_->is_training();
  tower_->eval();
  {
    torch::NoGradGuard ng;
    loader.start_epoch(0);
    data::Batch b;
    while (loader.next(b)) {
      scores.push_back(tower_->forward(b.images.to(ctx_.device)).to(torch::kCPU, torch::kFloat));
      labels.push_back(b.labels.clone());
    }
    loader.stop();
  }
  if (was_training) tower_->train();
  if (scores.empty()) throw Error("finetune: no evaluation image could be decoded");
  return {torch::cat(scores, 0), torch::cat(labels, 0)};
}

nlohmann::json FinetuneTask::preprocess_json() const {
  return {{"image_size", image_size_}, {"crop_pct", crop_pct_}, {"mean", mean_}, {"std", std_}};
}

int64_t FinetuneTask::setup(const RunContext& ctx) {
  ctx_ = ctx;
  resolve_init();
  setup_data();
  setup_model();
  if (!classify()) loss_ = std::make_unique<DistributedUniCL>(*ctx.dist, loss::UniCLOptions{}, false);
  return total_;
}

std::string FinetuneTask::plan() const {
  return fmt::format("fine-tuning ({}), layer decay {}, label smoothing {}", o_.task, o_.layer_decay,
                     classify() ? o_.label_smoothing : 0.0);
}

StepOutput FinetuneTask::step(const Position& pos) {
  StepOutput out;
  out.samples = batch_.size();
  if (classify()) {
    torch::Tensor logits = tower_->forward(batch_.images.to(ctx_.device));
    NoAutocastGuard fp32_loss;  // --precision amp_bf16: the loss in float32
    torch::Tensor l = smoothed_cross_entropy(logits.to(torch::kFloat), batch_.labels.to(ctx_.device), o_.label_smoothing);
    out.loss = l.item<double>();
    if (std::isfinite(out.loss)) l.backward();
  } else {
    // Stage-2 texts (the originals): identical cleaned texts are positives.
    const ContrastiveBatch cb = contrastive_batch(batch_, *tokenizer_, spec_.florence->text.context_length, 2, o_.seed,
                                                  pos.epoch, pos.batches_in_epoch, 0.0, 0, 1, ctx_.device);
    out.loss = contrastive_backward(two_tower_, cb.images, cb.ids, 1, loss_->bind(cb)).loss.item<double>();
  }
  return out;
}

void FinetuneTask::after_step(const Position& pos, nlohmann::json& metrics) {
  if (!classify() || !val_.source || (pos.batches_in_epoch != steps_per_epoch_ && pos.step != total_)) return;
  auto [s, l] = predict(val_.source);
  last_val_ = topk_accuracy(s, l, 1);
  metrics["val_top1"] = last_val_;
  spdlog::info("step {} (epoch {} end): val top-1 {:.2f} %", pos.step, pos.epoch, 100 * last_val_);
}

nlohmann::json FinetuneTask::config() const {
  return {{"kind", "finetune"},        {"init", init_desc()},           {"steps_per_epoch", steps_per_epoch_},
          {"image_size", image_size_}, {"preprocess", preprocess_json()}, {"classes", classes_},
          {"data", data_summary_}};
}

nlohmann::json FinetuneTask::checkpoint_extra() const {
  nlohmann::json extra = {{"preprocess", preprocess_json()}, {"finetune", o_.task}};
  if (classify()) extra["classes"] = classes_;
  else extra["vocab"] = vocab_path_;
  return extra;
}

void FinetuneTask::check_resume(const nlohmann::json& side, const std::string& ckpt) {
  if (!side.contains("finetune")) throw Error(fmt::format("'{}' is not a fine-tuning checkpoint", ckpt));
  if (classify() && side.contains("classes") && side["classes"].get<std::vector<std::string>>() != classes_)
    throw Error(fmt::format("resume: the classes of '{}' differ from the data's", ckpt));
}

void FinetuneTask::finish(RunResult& run) {
  std::string set = fs::path(o_.data).lexically_normal().filename().string();
  if (set.empty()) set = fs::path(o_.data).lexically_normal().parent_path().filename().string();
  nlohmann::json r = {{"set", pretrained() ? set : set + " [random init]"},
                      {"init", init_desc()},
                      {"model", spec_.name},
                      {"weights", run.final_weights},
                      {"num_train", train_.size},
                      {"steps", run.steps_done},
                      {"epochs", double(run.steps_done) / double(steps_per_epoch_)},
                      {"train_loss", {{"first10", run.first_loss_mean}, {"last10", run.last_loss_mean}}},
                      {"options", o_.to_json()},
                      {"data", data_summary_}};
  if (classify()) {
    r["task"] = "finetune";
    r["classes"] = classes_;
    if (val_.source) {
      if (last_val_ < 0) {
        auto [s, l] = predict(val_.source);
        last_val_ = topk_accuracy(s, l, 1);
      }
      r["val_top1"] = last_val_;
    }
    if (test_.source) {
      auto [s, l] = predict(test_.source);
      r["metrics"] = eval::classification_metrics(s, l).to_json(classes_);
      spdlog::info("finetune: test top-1 {:.2f} %, top-5 {:.2f} % ({} images)", 100 * r["metrics"]["top1"].get<double>(),
                   100 * r["metrics"]["top5"].get<double>(), s.size(0));
    } else {
      spdlog::warn("finetune: no '{}' split: no test metrics", o_.test_split);
    }
  } else {
    r["task"] = "finetune-retrieval-train";
    r["vocab"] = vocab_path_;
  }
  r["seconds"] = std::chrono::duration<double>(Clock::now() - ctx_.start).count();
  run.result = r;
  core::write_text_atomic(ctx_.run_dir / "result.json", r.dump(2) + "\n");
}

}  // namespace

FinetuneOptions load_finetune_options(const std::string& arg) {
  return FinetuneOptions::from_json(load_saved_options(arg, {"finetune", "finetune", "", "fine-tuning"}));
}

FinetuneResult finetune(const FinetuneOptions& o, const FinetuneSources& sources) {
  FinetuneTask task(o, sources);
  return run_task(task);
}

FinetuneResult finetune(const FinetuneOptions& o) {
  if (o.data.empty()) throw Error("finetune: --data is required");
  std::error_code ec;
  if (!fs::exists(o.data, ec)) throw Error(fmt::format("finetune: data '{}' does not exist", o.data));
  const bool pairs = o.task == "retrieval";
  FinetuneSources s;
  s.train = open_split(o.data, o.train_split, pairs);
  if (!s.train)
    throw Error(fmt::format("finetune: '{}' has no '{}' split folder (pass --train-split '' to use it as it is)", o.data,
                            o.train_split));
  if (!pairs) {
    if (!o.val_split.empty()) s.val = open_split(o.data, o.val_split, false);
    if (!o.test_split.empty()) s.test = open_split(o.data, o.test_split, false);
  }
  return finetune(o, s);
}

}  // namespace florence::train
