// Fine-tuning runs: image classification with a linear head, and UniCL retrieval fine-tuning
// (see finetune.h).
#include "florence/train/finetune.h"

#include <ATen/Context.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <signal.h>
#include <sstream>
#include <type_traits>
#include <unordered_map>

#include "florence/core/checkpoint.h"
#include "florence/core/error.h"
#include "florence/core/files.h"
#include "florence/core/threads.h"
#include "florence/data/loader.h"
#include "florence/data/relabel.h"
#include "florence/data/transforms.h"
#include "florence/model/florence.h"
#include "florence/model/io.h"
#include "florence/model/registry.h"
#include "florence/text/tokenizer.h"
#include "florence/train/grad_cache.h"
#include "florence/train/mixture.h"
#include "florence/train/prompts.h"
#include "florence/train/run_state.h"
#include "florence/train/schedule.h"
#include "florence/train/seeding.h"
#include "florence/train/trainer.h"
#include "florence/vision/swin.h"

namespace florence::train {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// ---------------------------------------------------------------------------------------------
// Options <-> JSON
// ---------------------------------------------------------------------------------------------

nlohmann::json FinetuneOptions::to_json() const {
  return {{"task", task},
          {"checkpoint", checkpoint},
          {"random_init", random_init},
          {"model", model},
          {"vocab", vocab},
          {"data", data},
          {"train_split", train_split},
          {"val_split", val_split},
          {"test_split", test_split},
          {"class_field", class_field},
          {"out_dir", out_dir},
          {"device", device},
          {"batch_size", batch_size},
          {"steps", steps},
          {"epochs", epochs},
          {"lr", lr},
          {"min_lr", min_lr},
          {"warmup_steps", warmup_steps},
          {"weight_decay", weight_decay},
          {"beta1", beta1},
          {"beta2", beta2},
          {"adam_eps", adam_eps},
          {"layer_decay", layer_decay},
          {"label_smoothing", label_smoothing},
          {"grad_clip", grad_clip},
          {"drop_path", drop_path},
          {"augment", augment},
          {"image_size", image_size},
          {"crop_pct", crop_pct},
          {"seed", seed},
          {"threads", threads},
          {"workers", workers},
          {"max_train_samples", max_train_samples},
          {"max_eval_samples", max_eval_samples},
          {"ckpt_every", ckpt_every},
          {"keep_checkpoints", keep_checkpoints},
          {"log_every", log_every},
          {"resume", resume},
          {"stop_after_steps", stop_after_steps},
          {"handle_signals", handle_signals}};
}

FinetuneOptions FinetuneOptions::from_json(const nlohmann::json& j) {
  if (!j.is_object()) throw Error("finetune options: expected a JSON object");
  FinetuneOptions o;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    const nlohmann::json& v = it.value();
    try {
      if (k == "task") o.task = v.get<std::string>();
      else if (k == "checkpoint") o.checkpoint = v.get<std::string>();
      else if (k == "random_init") o.random_init = v.get<bool>();
      else if (k == "model") o.model = v.get<std::string>();
      else if (k == "vocab") o.vocab = v.get<std::string>();
      else if (k == "data") o.data = v.get<std::string>();
      else if (k == "train_split") o.train_split = v.get<std::string>();
      else if (k == "val_split") o.val_split = v.get<std::string>();
      else if (k == "test_split") o.test_split = v.get<std::string>();
      else if (k == "class_field") o.class_field = v.get<std::string>();
      else if (k == "out_dir") o.out_dir = v.get<std::string>();
      else if (k == "device") o.device = v.get<std::string>();
      else if (k == "batch_size") o.batch_size = v.get<int64_t>();
      else if (k == "steps") o.steps = v.get<int64_t>();
      else if (k == "epochs") o.epochs = v.get<int64_t>();
      else if (k == "lr") o.lr = v.get<double>();
      else if (k == "min_lr") o.min_lr = v.get<double>();
      else if (k == "warmup_steps") o.warmup_steps = v.get<int64_t>();
      else if (k == "weight_decay") o.weight_decay = v.get<double>();
      else if (k == "beta1") o.beta1 = v.get<double>();
      else if (k == "beta2") o.beta2 = v.get<double>();
      else if (k == "adam_eps") o.adam_eps = v.get<double>();
      else if (k == "layer_decay") o.layer_decay = v.get<double>();
      else if (k == "label_smoothing") o.label_smoothing = v.get<double>();
      else if (k == "grad_clip") o.grad_clip = v.get<double>();
      else if (k == "drop_path") o.drop_path = v.get<double>();
      else if (k == "augment") o.augment = v.get<std::string>();
      else if (k == "image_size") o.image_size = v.get<int>();
      else if (k == "crop_pct") o.crop_pct = v.get<double>();
      else if (k == "seed") o.seed = v.get<uint64_t>();
      else if (k == "threads") o.threads = v.get<int>();
      else if (k == "workers") o.workers = v.get<int>();
      else if (k == "max_train_samples") o.max_train_samples = v.get<int64_t>();
      else if (k == "max_eval_samples") o.max_eval_samples = v.get<int64_t>();
      else if (k == "ckpt_every") o.ckpt_every = v.get<int64_t>();
      else if (k == "keep_checkpoints") o.keep_checkpoints = v.get<int>();
      else if (k == "log_every") o.log_every = v.get<int64_t>();
      else if (k == "resume") o.resume = v.get<std::string>();
      else if (k == "stop_after_steps") o.stop_after_steps = v.get<int64_t>();
      else if (k == "handle_signals") o.handle_signals = v.get<bool>();
      else throw Error(fmt::format("finetune options: unknown key '{}'", k));
    } catch (const nlohmann::json::exception& e) {
      throw Error(fmt::format("finetune options: bad value for '{}': {}", k, e.what()));
    }
  }
  return o;
}

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
  torch::Tensor true_score = scores.gather(1, labels.unsqueeze(1));                 // [N, 1]
  torch::Tensor others_ge = scores.ge(true_score).sum(1) - 1;                        // excludes the true class
  return (others_ge + 1).le(k).to(torch::kDouble).mean().item<double>();
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
// Data
// ---------------------------------------------------------------------------------------------

/// The data spec of one split: DATA/<split> when that folder exists; DATA itself when split is
/// "" ; otherwise "" (no such split).
std::string split_spec(const std::string& data, const std::string& split) {
  if (split.empty()) return data;
  std::error_code ec;
  if (fs::is_directory(fs::path(data) / split, ec)) return (fs::path(data) / split).string();
  return {};
}

std::shared_ptr<const data::SampleSource> open_split(const std::string& data, const std::string& split, bool pairs) {
  const std::string spec = split_spec(data, split);
  if (spec.empty()) return nullptr;
  const std::string ext = fs::path(spec).extension().string();
  if (pairs && (ext == ".jsonl" || ext == ".json" || ext == ".tsv")) return open_source("manifest", spec);
  return open_source(pairs ? "shards" : "labelled", spec);
}

struct ClassView {
  std::shared_ptr<const data::SampleSource> source;
  int64_t size = 0;
  data::SkipCounts skipped;
  std::vector<int64_t> class_counts;  ///< kept samples per class id (classify views only)
};

/// Samples of `src` whose class is in `classes` (ids into it), optionally a seeded subset.
ClassView class_view(std::shared_ptr<const data::SampleSource> src, const std::string& class_field,
                     const std::vector<std::string>& classes, int64_t max_samples, uint64_t seed) {
  ClassView v;
  const data::ClassIndex idx = data::index_classes(*src, class_field);
  v.skipped = idx.skipped;
  std::map<std::string, int64_t> ids;
  for (size_t i = 0; i < classes.size(); ++i) ids[classes[i]] = int64_t(i);
  data::ClassIndex mapped;
  mapped.classes = classes;
  for (size_t i = 0; i < idx.keys.size(); ++i) {
    auto it = ids.find(idx.classes[size_t(idx.labels[i])]);
    if (it == ids.end()) {
      ++v.skipped["class_not_in_train"];
      continue;
    }
    mapped.keys.push_back(idx.keys[i]);
    mapped.labels.push_back(it->second);
  }
  std::vector<size_t> subset;
  if (max_samples > 0 && size_t(max_samples) < mapped.keys.size())
    subset = data::seeded_subset(mapped.keys.size(), size_t(max_samples), seed);
  v.size = subset.empty() ? int64_t(mapped.keys.size()) : int64_t(subset.size());
  v.class_counts.assign(classes.size(), 0);
  if (subset.empty())
    for (int64_t l : mapped.labels) ++v.class_counts[size_t(l)];
  else
    for (size_t i : subset) ++v.class_counts[size_t(mapped.labels[i])];
  if (v.size > 0) v.source = data::relabelled_view(std::move(src), mapped, subset);
  return v;
}

/// Image-text view for retrieval fine-tuning: samples with a non-empty text (label -1).
ClassView pair_view(std::shared_ptr<const data::SampleSource> src, int64_t max_samples, uint64_t seed) {
  ClassView v;
  data::ClassIndex idx;
  for (size_t p = 0; p < src->num_parts(); ++p)
    src->read_part(
        p,
        [&](data::Sample& s) {
          if (s.text.find_first_not_of(" \t\r\n") == std::string::npos) {
            ++v.skipped["empty_text"];
            return true;
          }
          idx.keys.push_back(s.key);
          idx.labels.push_back(-1);
          return true;
        },
        v.skipped);
  std::vector<size_t> subset;
  if (max_samples > 0 && size_t(max_samples) < idx.keys.size())
    subset = data::seeded_subset(idx.keys.size(), size_t(max_samples), seed);
  v.size = subset.empty() ? int64_t(idx.keys.size()) : int64_t(subset.size());
  if (v.size > 0) v.source = data::relabelled_view(std::move(src), idx, subset);
  return v;
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

struct Position {
  int64_t step = 0, epoch = 0, batches_in_epoch = 0;
};

constexpr uint64_t kTagSubset = 21;  // seed stream of the train / eval subsets

class Finetune {
 public:
  Finetune(const FinetuneOptions& o, FinetuneSources s) : o_(o), src_(std::move(s)), device_(torch::kCPU) {}
  FinetuneResult go();

 private:
  bool classify() const { return o_.task == "classify"; }
  bool pretrained() const { return !o_.checkpoint.empty() && !o_.random_init; }
  void validate();
  void resolve_init();
  void setup_data();
  void setup_model();
  void setup_optimizer();
  void open_loader(int64_t epoch, int64_t skip);
  void save(double loss);
  void resume_from(const std::string& ckpt);
  data::LoaderOptions eval_loader_options() const;
  /// Logits [N, C] and labels [N] of a labelled view (eval transform).
  std::pair<torch::Tensor, torch::Tensor> predict(const std::shared_ptr<const data::SampleSource>& src);
  nlohmann::json test_metrics(const torch::Tensor& scores, const torch::Tensor& labels) const;
  nlohmann::json preprocess_json() const;
  torch::nn::Module& module() {
    if (classify()) return *tower_;
    return *two_tower_;
  }
  std::string init_desc() const {
    return pretrained() ? o_.checkpoint : fmt::format("random (seed {})", o_.seed);
  }

  FinetuneOptions o_;
  FinetuneSources src_;
  torch::Device device_;
  fs::path run_dir_, ckpt_dir_;
  model::ModelSpec init_spec_, spec_;  // the checkpoint's spec, the spec of what is trained
  vision::SwinTransformer tower_{nullptr};
  model::FlorenceModel two_tower_{nullptr};
  std::shared_ptr<text::Tokenizer> tokenizer_;
  std::string vocab_path_;
  std::unique_ptr<torch::optim::AdamW> opt_;
  std::vector<double> group_scale_;
  std::vector<std::string> classes_;
  std::vector<std::string> classes_without_train_;  // classes the (subset of the) train split misses
  ClassView train_, val_, test_;
  std::unique_ptr<data::Loader> loader_;
  int image_size_ = 0;
  double crop_pct_ = 0.875;
  std::array<float, 3> mean_ = data::kImageNetMean, std_ = data::kImageNetStd;
  int64_t steps_per_epoch_ = 0, total_ = 0;
  LrSchedule sched_;
  Position pos_;
  std::vector<std::string> periodic_;
  std::string last_ckpt_;
  nlohmann::json data_summary_;
};

void Finetune::validate() {
  if (o_.task != "classify" && o_.task != "retrieval")
    throw Error(fmt::format("--task must be 'classify' or 'retrieval', got '{}'", o_.task));
  if (o_.out_dir.empty()) throw Error("--out RUN_DIR is required");
  if (o_.checkpoint.empty() && o_.model.empty() && o_.resume.empty())
    throw Error("give --checkpoint (pretrained weights) or --model (random init)");
  if (o_.batch_size < (classify() ? 1 : 2))
    throw Error(fmt::format("--batch-size must be >= {}, got {}", classify() ? 1 : 2, o_.batch_size));
  if (!(o_.lr > 0)) throw Error(fmt::format("--lr must be > 0, got {}", o_.lr));
  if (o_.min_lr < 0 || o_.min_lr > o_.lr) throw Error(fmt::format("--min-lr must be in [0, lr], got {}", o_.min_lr));
  if (o_.weight_decay < 0) throw Error("--weight-decay must be >= 0");
  if (!(o_.layer_decay > 0 && o_.layer_decay <= 1)) throw Error("--layer-decay must be in (0, 1]");
  if (!classify() && o_.layer_decay != 1.0) throw Error("--layer-decay applies to --task classify only");
  if (o_.label_smoothing < 0 || o_.label_smoothing >= 1) throw Error("--label-smoothing must be in [0, 1)");
  if (o_.augment != "rrc" && o_.augment != "none") throw Error("--augment must be 'rrc' or 'none'");
  if (o_.steps < 0) throw Error(fmt::format("--steps must be >= 1, got {}", o_.steps));
  if (o_.epochs < 0) throw Error(fmt::format("--epochs must be >= 1, got {}", o_.epochs));
  if (o_.steps > 0 && o_.epochs > 0) throw Error("give either --steps or --epochs, not both");
  if (o_.steps == 0 && o_.epochs == 0) throw Error("give --steps N or --epochs N (N >= 1)");
  if (o_.warmup_steps < -1)
    throw Error(fmt::format("--warmup-steps must be >= 0 (or -1: 5% of the steps), got {}", o_.warmup_steps));
  if (o_.max_train_samples < 0)
    throw Error(fmt::format("--max-train-samples must be >= 0 (0 = all), got {}", o_.max_train_samples));
  if (o_.max_eval_samples < 0)
    throw Error(fmt::format("--max-eval-samples must be >= 0 (0 = all), got {}", o_.max_eval_samples));
  if (o_.ckpt_every < 0) throw Error(fmt::format("--ckpt-every must be >= 0 (0 = at the end only), got {}", o_.ckpt_every));
  if (o_.keep_checkpoints < 0)
    throw Error(fmt::format("--keep-checkpoints must be >= 0 (0 = all), got {}", o_.keep_checkpoints));
  if (o_.stop_after_steps < 0)
    throw Error(fmt::format("--stop-after-steps must be >= 0 (0 = run to the end), got {}", o_.stop_after_steps));
  if (o_.log_every < 1) throw Error(fmt::format("--log-every must be >= 1, got {}", o_.log_every));
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
  try {
    device_ = torch::Device(o_.device);
  } catch (const c10::Error& e) {
    throw Error(fmt::format("bad --device '{}': {}", o_.device, e.what_without_backtrace()));
  }
}

// Spec, preprocessing and vocabulary of the initial weights.
void Finetune::resolve_init() {
  init_spec_ = model::resolve_spec(o_.model, o_.checkpoint);
  nlohmann::json side, run_cfg;
  fs::path run_dir;
  if (!o_.checkpoint.empty()) {
    const std::string sp = model::sidecar_path(o_.checkpoint);
    if (fs::is_regular_file(sp)) side = core::read_json_file(sp);
    // Pretraining runs keep config.json next to model.safetensors and above checkpoints/.
    fs::path parent = fs::absolute(o_.checkpoint).parent_path();
    for (const fs::path& cand : {parent, parent.parent_path()}) {
      if (run_cfg.is_null() && fs::is_regular_file(cand / "config.json") &&
          (cand == parent || parent.filename() == "checkpoints")) {
        try {
          run_cfg = core::read_json_file(cand / "config.json");
          run_dir = cand;
        } catch (const Error& e) {
          spdlog::warn("finetune: ignoring {}", e.what());
        }
      }
    }
  }
  nlohmann::json pre = nlohmann::json::object();
  if (side.is_object() && side.contains("preprocess") && side["preprocess"].is_object()) pre = side["preprocess"];
  else if (run_cfg.is_object() && run_cfg.contains("preprocess") && run_cfg["preprocess"].is_object()) {
    pre = run_cfg["preprocess"];
    if (!pre.contains("image_size") && run_cfg.contains("image_size")) pre["image_size"] = run_cfg["image_size"];
  }
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
    std::string v = o_.vocab;
    if (v.empty() && side.is_object() && side.contains("vocab") && side["vocab"].is_string())
      v = side["vocab"].get<std::string>();
    if (v.empty() && !run_dir.empty())
      for (const char* n : {"vocab.bpe.gz", "vocab.bpe"})
        if (v.empty() && fs::is_regular_file(run_dir / n)) v = (run_dir / n).string();
    const nlohmann::json::json_pointer ptr("/train_state/options/vocab");
    if (v.empty() && side.is_object() && side.contains(ptr) && side[ptr].is_string()) v = side[ptr].get<std::string>();
    if (v.empty()) throw Error("--task retrieval needs the BPE vocabulary: pass --vocab FILE");
    vocab_path_ = fs::absolute(v).string();
    tokenizer_ = std::make_shared<text::Tokenizer>(text::Tokenizer::from_file(vocab_path_));
  }
}

void Finetune::setup_data() {
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

void Finetune::setup_model() {
  torch::manual_seed(seed_mix({kTagInit, o_.seed}) >> 1);
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
    tower_->to(device_);
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
    two_tower_->to(device_);
    two_tower_->train();
  }
}

void Finetune::setup_optimizer() {
  auto base = torch::optim::AdamWOptions(o_.lr)
                  .betas(std::make_tuple(o_.beta1, o_.beta2))
                  .eps(o_.adam_eps)
                  .weight_decay(o_.weight_decay);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  group_scale_.clear();
  if (classify()) {
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
    for (auto& [key, params] : by_group) {
      auto go = base;
      if (!key.second) go.weight_decay(0.0);
      groups.emplace_back(params, std::make_unique<torch::optim::AdamWOptions>(go));
      group_scale_.push_back(std::pow(o_.layer_decay, double(L - 1 - key.first)));
    }
  } else {
    ParamGroups g = split_param_groups(*two_tower_);
    groups.emplace_back(g.decay, std::make_unique<torch::optim::AdamWOptions>(base));
    auto nd = base;
    nd.weight_decay(0.0);
    groups.emplace_back(g.no_decay, std::make_unique<torch::optim::AdamWOptions>(nd));
    group_scale_ = {1.0, 1.0};
  }
  opt_ = std::make_unique<torch::optim::AdamW>(std::move(groups), base);
  sched_.peak_lr = o_.lr;
  sched_.min_lr = o_.min_lr;
  sched_.total_steps = total_;
  sched_.warmup_steps =
      o_.warmup_steps >= 0 ? std::min(o_.warmup_steps, total_) : int64_t(std::llround(0.05 * double(total_)));
}

void Finetune::open_loader(int64_t epoch, int64_t skip) {
  loader_.reset();
  data::LoaderOptions lo;
  lo.batch_size = o_.batch_size;
  lo.image_size = image_size_;
  lo.train = o_.augment == "rrc";
  lo.hflip = o_.augment == "rrc";
  lo.crop_pct = 1.0;
  lo.mean = mean_;
  lo.std = std_;
  lo.seed = o_.seed;
  lo.num_workers = o_.workers;
  lo.drop_last = true;
  lo.require_text = !classify();
  if (!classify()) lo.context_length = spec_.florence->text.context_length;
  loader_ = std::make_unique<data::Loader>(train_.source, lo, nullptr);
  loader_->start_epoch(epoch);
  data::Batch b;
  for (int64_t i = 0; i < skip; ++i)
    if (!loader_->next(b))
      throw Error(fmt::format("resume: epoch {} has only {} batches, the checkpoint consumed {}", epoch, i, skip));
}

data::LoaderOptions Finetune::eval_loader_options() const {
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

std::pair<torch::Tensor, torch::Tensor> Finetune::predict(const std::shared_ptr<const data::SampleSource>& src) {
  data::Loader loader(src, eval_loader_options(), nullptr);
  std::vector<torch::Tensor> scores, labels;
  const bool was_training = tower_->is_training();
  tower_->eval();
  {
    torch::NoGradGuard ng;
    loader.start_epoch(0);
    data::Batch b;
    while (loader.next(b)) {
      scores.push_back(tower_->forward(b.images.to(device_)).to(torch::kCPU, torch::kFloat));
      labels.push_back(b.labels.clone());
    }
    loader.stop();
  }
  if (was_training) tower_->train();
  if (scores.empty()) throw Error("finetune: no evaluation image could be decoded");
  return {torch::cat(scores, 0), torch::cat(labels, 0)};
}

nlohmann::json Finetune::test_metrics(const torch::Tensor& scores, const torch::Tensor& labels) const {
  const int64_t C = int64_t(classes_.size()), N = scores.size(0);
  const int64_t k5 = std::min<int64_t>(5, C);
  nlohmann::json per_class = nlohmann::json::object(), support = nlohmann::json::object();
  double sum = 0;
  int64_t present = 0;
  // Per-class accuracy with the pessimistic tie rule: rank 1 means no other class scores >= it.
  torch::Tensor true_score = scores.gather(1, labels.unsqueeze(1));
  torch::Tensor rank1 = (scores.ge(true_score).sum(1) - 1).eq(0);
  for (int64_t c = 0; c < C; ++c) {
    torch::Tensor mask = labels.eq(c);
    const int64_t n = mask.sum().item<int64_t>();
    support[classes_[size_t(c)]] = n;
    if (n == 0) {
      per_class[classes_[size_t(c)]] = nullptr;
      continue;
    }
    const double a = rank1.masked_select(mask).to(torch::kDouble).mean().item<double>();
    per_class[classes_[size_t(c)]] = a;
    sum += a;
    ++present;
  }
  return {{"num_samples", N},
          {"num_classes", C},
          {"classes", classes_},
          {"top1", topk_accuracy(scores, labels, 1)},
          {"top5", topk_accuracy(scores, labels, k5)},
          {"mean_per_class", present > 0 ? sum / double(present) : 0.0},
          {"per_class", per_class},
          {"support", support},
          {"chance", {{"top1", 1.0 / double(C)}, {"top5", double(k5) / double(C)}, {"mean_per_class", 1.0 / double(C)}}}};
}

nlohmann::json Finetune::preprocess_json() const {
  return {{"image_size", image_size_}, {"crop_pct", crop_pct_}, {"mean", mean_}, {"std", std_}};
}

void Finetune::save(double loss) {
  fs::create_directories(ckpt_dir_);
  const std::string name = fmt::format("step_{:07d}", pos_.step);
  const std::string weights = (ckpt_dir_ / (name + ".safetensors")).string();
  core::TensorMap optim = adamw_state_dict(*opt_, module());
  optim["rng.torch"] = rng_state(device_);
  core::save_safetensors(optim_path(weights), optim, {{"format", "florence.adamw"}});
  nlohmann::json state = {{"step", pos_.step},
                          {"epoch", pos_.epoch},
                          {"batches_in_epoch", pos_.batches_in_epoch},
                          {"total_steps", total_},
                          {"loss", loss},
                          {"options", o_.to_json()}};
  nlohmann::json extra = {{"train_state", state}, {"preprocess", preprocess_json()}, {"finetune", o_.task}};
  if (classify()) extra["classes"] = classes_;
  else extra["vocab"] = vocab_path_;
  model::save_checkpoint(module(), spec_, weights, torch::kFloat, extra);
  core::write_text_atomic(ckpt_dir_ / "latest", fs::path(weights).filename().string() + "\n");
  last_ckpt_ = weights;
  periodic_.push_back(weights);
  while (o_.keep_checkpoints > 0 && int(periodic_.size()) > o_.keep_checkpoints) {
    const std::string old = periodic_.front();
    periodic_.erase(periodic_.begin());
    std::error_code ec;
    fs::remove(old, ec);
    fs::remove(model::sidecar_path(old), ec);
    fs::remove(optim_path(old), ec);
  }
  spdlog::info("checkpoint {} (step {}/{})", weights, pos_.step, total_);
}

void Finetune::resume_from(const std::string& ckpt) {
  const auto side = core::read_json_file(model::sidecar_path(ckpt));
  if (!side.contains("train_state") || !side.contains("finetune"))
    throw Error(fmt::format("'{}' is not a fine-tuning checkpoint", ckpt));
  const auto& st = side["train_state"];
  if (classify() && side.contains("classes") && side["classes"].get<std::vector<std::string>>() != classes_)
    throw Error(fmt::format("resume: the classes of '{}' differ from the data's", ckpt));
  core::load_state_dict(module(), model::read_weights(ckpt, spec_));
  const auto optim = core::load_safetensors(optim_path(ckpt));
  load_adamw_state_dict(*opt_, module(), optim.tensors, optim_path(ckpt));
  auto it = optim.tensors.find("rng.torch");
  if (it != optim.tensors.end()) set_rng_state(device_, it->second);
  pos_.step = st.at("step").get<int64_t>();
  pos_.epoch = st.at("epoch").get<int64_t>();
  pos_.batches_in_epoch = st.at("batches_in_epoch").get<int64_t>();
  last_ckpt_ = ckpt;
  spdlog::info("resumed from {} at step {} (epoch {}, {} batches into it)", ckpt, pos_.step, pos_.epoch,
               pos_.batches_in_epoch);
}

FinetuneResult Finetune::go() {
  validate();
  const auto t_start = Clock::now();
  florence::configure_threads(o_.threads);
  run_dir_ = o_.out_dir;
  ckpt_dir_ = run_dir_ / "checkpoints";
  fs::create_directories(run_dir_);
  std::error_code ec;
  if (o_.resume.empty() && fs::exists(ckpt_dir_ / "latest", ec))
    throw Error(fmt::format("'{}' already holds checkpoints; pass --resume to continue that run or choose another --out",
                            run_dir_.string()));

  resolve_init();
  setup_data();
  setup_model();
  setup_optimizer();
  if (!o_.resume.empty()) resume_from(resolve_resume_checkpoint(o_.resume));
  core::write_text_atomic(run_dir_ / "config.json",
                    nlohmann::json({{"options", o_.to_json()},
                                    {"kind", "finetune"},
                                    {"model", model::spec_to_json(spec_)},
                                    {"init", init_desc()},
                                    {"total_steps", total_},
                                    {"steps_per_epoch", steps_per_epoch_},
                                    {"schedule",
                                     {{"peak_lr", sched_.peak_lr},
                                      {"min_lr", sched_.min_lr},
                                      {"warmup_steps", sched_.warmup_steps},
                                      {"total_steps", sched_.total_steps}}},
                                    {"image_size", image_size_},
                                    {"preprocess", preprocess_json()},
                                    {"classes", classes_},
                                    {"data", data_summary_}})
                            .dump(2) +
                        "\n");
  spdlog::info("finetune ({}): {} steps, batch {}, lr {} (warm-up {}, cosine to {}), layer decay {}, label smoothing {}",
               o_.task, total_, o_.batch_size, o_.lr, sched_.warmup_steps, o_.min_lr, o_.layer_decay,
               classify() ? o_.label_smoothing : 0.0);

  const fs::path metrics_path = run_dir_ / "metrics.jsonl";
  if (!o_.resume.empty() && fs::exists(metrics_path, ec)) {
    std::ifstream in(metrics_path);
    std::string line, kept;
    while (std::getline(in, line)) {
      try {
        if (nlohmann::json::parse(line).value("step", int64_t(0)) <= pos_.step) kept += line + "\n";
      } catch (const nlohmann::json::exception&) {
      }
    }
    core::write_text_atomic(metrics_path, kept);
  } else if (o_.resume.empty()) {
    fs::remove(metrics_path, ec);
  }
  std::ofstream metrics(metrics_path, std::ios::app);
  if (!metrics) throw Error(fmt::format("cannot write '{}'", metrics_path.string()));

  StopSignalScope signals(o_.handle_signals);
  FinetuneResult res;
  res.run_dir = run_dir_.string();
  res.start_step = pos_.step;
  res.total_steps = total_;
  std::vector<double> losses;
  double last_val = -1;
  data::Batch batch;
  const auto t_loop = Clock::now();
  while (pos_.step < total_) {
    if (!loader_) open_loader(pos_.epoch, pos_.batches_in_epoch);
    const auto t0 = Clock::now();
    if (!loader_->next(batch)) {
      if (pos_.batches_in_epoch == 0) throw Error(fmt::format("epoch {} yields no full batch", pos_.epoch));
      ++pos_.epoch;
      pos_.batches_in_epoch = 0;
      open_loader(pos_.epoch, 0);
      if (!loader_->next(batch)) throw Error(fmt::format("epoch {} yields no full batch", pos_.epoch));
    }
    const double wait_s = std::chrono::duration<double>(Clock::now() - t0).count();
    const double lr = sched_.at(pos_.step);
    auto& groups = opt_->param_groups();
    for (size_t g = 0; g < groups.size(); ++g)
      static_cast<torch::optim::AdamWOptions&>(groups[g].options()).lr(lr * group_scale_[g]);
    opt_->zero_grad();
    double loss;
    torch::Tensor images = batch.images.to(device_);
    if (classify()) {
      torch::Tensor logits = tower_->forward(images);
      torch::Tensor l = smoothed_cross_entropy(logits, batch.labels.to(device_), o_.label_smoothing);
      loss = l.item<double>();
      if (std::isfinite(loss)) l.backward();
    } else {
      std::vector<int64_t> labels(size_t(batch.size()), -1);
      BatchTexts bt = make_batch_texts(batch.texts, labels, /*stage=*/2, o_.seed, pos_.epoch, pos_.batches_in_epoch);
      torch::Tensor ids = tokenizer_->tokenize(bt.texts, spec_.florence->text.context_length).to(device_);
      ContrastiveStep cs = contrastive_backward(two_tower_, images, ids, torch::tensor(bt.labels, torch::kInt64).to(device_), 1);
      loss = cs.loss.item<double>();
    }
    const std::string latest = last_ckpt_.empty() ? std::string("no checkpoint was written yet")
                                                  : "latest good checkpoint: " + last_ckpt_;
    if (!std::isfinite(loss))
      throw Error(fmt::format("non-finite loss ({}) at step {}; stopping without an optimizer step. {}. Lower --lr.", loss,
                              pos_.step + 1, latest));
    std::vector<torch::Tensor> params;
    for (auto& p : module().parameters())
      if (p.grad().defined()) params.push_back(p);
    double gnorm;
    if (o_.grad_clip > 0) {
      gnorm = torch::nn::utils::clip_grad_norm_(params, o_.grad_clip);
    } else {
      std::vector<torch::Tensor> norms;
      for (auto& p : params) norms.push_back(p.grad().norm());
      gnorm = torch::stack(norms).norm().item<double>();
    }
    if (!std::isfinite(gnorm))
      throw Error(fmt::format("non-finite gradient norm at step {} (loss {}); stopping without an optimizer step. {}.",
                              pos_.step + 1, loss, latest));
    opt_->step();
    ++pos_.step;
    ++pos_.batches_in_epoch;
    losses.push_back(loss);
    const double step_s = std::chrono::duration<double>(Clock::now() - t0).count();
    nlohmann::json line = {{"step", pos_.step},
                           {"epoch", pos_.epoch},
                           {"loss", loss},
                           {"lr", lr},
                           {"grad_norm", gnorm},
                           {"img_per_s", double(batch.size()) / std::max(step_s, 1e-9)},
                           {"data_wait_fraction", std::min(1.0, wait_s / std::max(step_s, 1e-9))},
                           {"time", std::chrono::duration<double>(Clock::now() - t_loop).count()}};
    if (classify() && val_.source && (pos_.batches_in_epoch == steps_per_epoch_ || pos_.step == total_)) {
      auto [s, l] = predict(val_.source);
      last_val = topk_accuracy(s, l, 1);
      line["val_top1"] = last_val;
      spdlog::info("step {} (epoch {} end): val top-1 {:.2f} %", pos_.step, pos_.epoch, 100 * last_val);
    }
    metrics << line.dump() << "\n";
    metrics.flush();
    if (pos_.step % o_.log_every == 0 || pos_.step == total_ || losses.size() == 1)
      spdlog::info("step {}/{} epoch {}: loss {:.4f} lr {:.3g} grad {:.3g} {:.1f} img/s", pos_.step, total_, pos_.epoch,
                   loss, lr, gnorm, double(batch.size()) / std::max(step_s, 1e-9));
    const bool signalled = StopSignalScope::signal() != 0;
    const bool stop_here = o_.stop_after_steps > 0 && pos_.step >= o_.stop_after_steps && pos_.step < total_;
    const bool periodic = o_.ckpt_every > 0 && pos_.step % o_.ckpt_every == 0;
    if (signalled || stop_here || periodic || pos_.step == total_) save(loss);
    if (signalled || stop_here) {
      if (signalled) spdlog::warn("received signal {}: stopped after step {} with checkpoint {}", StopSignalScope::signal(), pos_.step, last_ckpt_);
      res.interrupted = true;
      break;
    }
  }
  if (loader_) loader_->stop();
  res.steps_done = pos_.step;
  if (!losses.empty()) {
    const size_t n = std::min<size_t>(10, losses.size());
    res.first_loss = losses.front();
    res.last_loss = losses.back();
    for (size_t i = 0; i < n; ++i) {
      res.first_loss_mean += losses[i] / double(n);
      res.last_loss_mean += losses[losses.size() - 1 - i] / double(n);
    }
  }
  if (!res.interrupted) {
    const std::string final_path = (run_dir_ / "model.safetensors").string();
    nlohmann::json extra = {{"train_state", {{"step", pos_.step}, {"options", o_.to_json()}}},
                            {"preprocess", preprocess_json()},
                            {"finetune", o_.task},
                            {"init", init_desc()}};
    if (classify()) extra["classes"] = classes_;
    else extra["vocab"] = vocab_path_;
    model::save_checkpoint(module(), spec_, final_path, torch::kFloat, extra);
    res.final_weights = final_path;
    std::string set = fs::path(o_.data).lexically_normal().filename().string();
    if (set.empty()) set = fs::path(o_.data).lexically_normal().parent_path().filename().string();
    nlohmann::json r = {{"set", pretrained() ? set : set + " [random init]"},
                        {"init", init_desc()},
                        {"model", spec_.name},
                        {"weights", final_path},
                        {"num_train", train_.size},
                        {"steps", pos_.step},
                        {"epochs", double(pos_.step) / double(steps_per_epoch_)},
                        {"train_loss", {{"first10", res.first_loss_mean}, {"last10", res.last_loss_mean}}},
                        {"options", o_.to_json()},
                        {"data", data_summary_}};
    if (classify()) {
      r["task"] = "finetune";
      r["classes"] = classes_;
      if (val_.source) {
        if (last_val < 0) {
          auto [s, l] = predict(val_.source);
          last_val = topk_accuracy(s, l, 1);
        }
        r["val_top1"] = last_val;
      }
      if (test_.source) {
        auto [s, l] = predict(test_.source);
        r["metrics"] = test_metrics(s, l);
        spdlog::info("finetune: test top-1 {:.2f} %, top-5 {:.2f} % ({} images)", 100 * r["metrics"]["top1"].get<double>(),
                     100 * r["metrics"]["top5"].get<double>(), s.size(0));
      } else {
        spdlog::warn("finetune: no '{}' split: no test metrics", o_.test_split);
      }
    } else {
      r["task"] = "finetune-retrieval-train";
      r["vocab"] = vocab_path_;
    }
    res.seconds = std::chrono::duration<double>(Clock::now() - t_start).count();
    r["seconds"] = res.seconds;
    res.result = r;
    core::write_text_atomic(run_dir_ / "result.json", r.dump(2) + "\n");
  }
  return res;
}

}  // namespace

FinetuneOptions load_finetune_options(const std::string& arg) {
  std::error_code ec;
  if (fs::is_directory(arg, ec) && fs::exists(fs::path(arg) / "config.json")) {
    const auto j = core::read_json_file(fs::path(arg) / "config.json");
    if (j.value("kind", "") != "finetune" || !j.contains("options"))
      throw Error(fmt::format("'{}/config.json' is not a fine-tuning run", arg));
    return FinetuneOptions::from_json(j.at("options"));
  }
  const std::string ckpt = resolve_resume_checkpoint(arg);
  const auto side = core::read_json_file(model::sidecar_path(ckpt));
  const nlohmann::json::json_pointer ptr("/train_state/options");
  if (!side.contains("finetune") || !side.contains(ptr))
    throw Error(fmt::format("'{}' is not a fine-tuning checkpoint", model::sidecar_path(ckpt)));
  return FinetuneOptions::from_json(side[ptr]);
}

FinetuneResult finetune(const FinetuneOptions& o, const FinetuneSources& sources) {
  Finetune f(o, sources);
  return f.go();
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
