// Pretraining as a task on the shared run layer (run.h); the design (stages, data parallelism,
// resume) is described in trainer.h.
#include "florence/train/trainer.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <map>

#include "florence/core/error.h"
#include "florence/core/files.h"
#include "florence/data/loader.h"
#include "florence/dist/dist.h"
#include "florence/model/io.h"
#include "florence/model/registry.h"
#include "florence/text/tokenizer.h"
#include "florence/train/contrastive.h"
#include "florence/train/finetune_data.h"
#include "florence/train/mixture.h"
#include "florence/train/prompts.h"
#include "florence/train/seeding.h"

namespace florence::train {

namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------------
// Options <-> JSON
// ---------------------------------------------------------------------------------------------

void to_json(nlohmann::json& j, const DataSpec& d) { j = {{"flag", d.flag}, {"spec", d.spec}, {"weight", d.weight}}; }

void from_json(const nlohmann::json& j, DataSpec& d) {
  d.flag = j.at("flag").get<std::string>();
  d.spec = j.at("spec").get<std::string>();
  d.weight = j.value("weight", -1.0);
}

// ---------------------------------------------------------------------------------------------
// Stages
// ---------------------------------------------------------------------------------------------

int StagePlan::stage_of(int64_t step) const {
  if (step < stage_steps[0]) return 1;
  if (step < stage_steps[0] + stage_steps[1]) return 2;
  return 3;
}

bool StagePlan::is_stage_end(int64_t done) const {
  int64_t acc = 0;
  for (int s = 0; s < 3; ++s) {
    acc += stage_steps[s];
    if (stage_steps[s] > 0 && done == acc) return true;
  }
  return false;
}

StagePlan resolve_stages(const TrainOptions& o, int64_t steps_per_epoch) {
  if (o.stage3_steps < 0) throw Error("--stage3-steps must be >= 0");
  if (o.steps > 0 && o.epochs > 0) throw Error("give either --steps or --epochs, not both");
  int64_t T = o.steps > 0 ? o.steps : (o.epochs > 0 ? o.epochs * steps_per_epoch : 0);
  StagePlan p;
  const int64_t s3 = o.stage3_steps;
  const bool g1 = o.stage1_steps >= 0, g2 = o.stage2_steps >= 0;
  if (T > 0) {
    const int64_t rest = T - s3;
    if (rest < 0) throw Error(fmt::format("--stage3-steps {} exceeds the total of {} steps", s3, T));
    int64_t s1, s2;
    if (!g1 && !g2) {
      s2 = int64_t(std::llround(double(rest) * 180.0 / 1180.0));
      s1 = rest - s2;
    } else if (g1 && !g2) {
      s1 = o.stage1_steps;
      s2 = rest - s1;
    } else if (!g1 && g2) {
      s2 = o.stage2_steps;
      s1 = rest - s2;
    } else {
      s1 = o.stage1_steps;
      s2 = o.stage2_steps;
      if (s1 + s2 + s3 != T) {
        throw Error(fmt::format("stage lengths {} + {} + {} do not add up to the {} total steps", s1, s2, s3, T));
      }
    }
    if (s1 < 0 || s2 < 0) {
      throw Error(fmt::format("stage lengths do not fit in {} total steps (stage 1 {}, stage 2 {}, stage 3 {})", T,
                              s1, s2, s3));
    }
    p.stage_steps[0] = s1;
    p.stage_steps[1] = s2;
    p.stage_steps[2] = s3;
    p.total = T;
  } else {
    p.stage_steps[0] = std::max<int64_t>(0, o.stage1_steps);
    p.stage_steps[1] = std::max<int64_t>(0, o.stage2_steps);
    p.stage_steps[2] = s3;
    p.total = p.stage_steps[0] + p.stage_steps[1] + p.stage_steps[2];
  }
  if (p.total <= 0) throw Error("no training steps: give --steps, --epochs or --stage1-steps/--stage2-steps");
  return p;
}

TrainOptions load_run_options(const std::string& arg) {
  return TrainOptions::from_json(load_saved_options(arg, {"", "", "", "pretraining"}));
}

// ---------------------------------------------------------------------------------------------
// The task
// ---------------------------------------------------------------------------------------------

namespace {

class PretrainTask : public TrainTask {
 public:
  explicit PretrainTask(const TrainOptions& o) : o_(o) {}
  std::string name() const override { return "pretraining"; }
  const RunOptions& options() const override { return o_; }
  nlohmann::json options_json() const override { return o_.to_json(); }
  void validate() override;
  dist::DistContext join_process_group(const torch::Device&) override {
    return dist::init_from_env({o_.dist_timeout_s, o_.device});
  }
  int64_t setup(const RunContext& ctx) override;
  torch::nn::Module& module() override { return *model_; }
  const model::ModelSpec& spec() const override { return spec_; }
  std::vector<ParamGroup> param_groups() override;
  std::string plan() const override;
  void open_epoch(const Position& pos) override;
  bool next_batch(const Position& pos) override;
  std::string data_summary() const override { return loader_ ? loader_->stats().summary() : std::string(); }
  StepOutput step(const Position& pos) override;
  bool supports_amp() const override { return true; }
  bool is_milestone(int64_t done) const override { return plan_.is_stage_end(done); }
  nlohmann::json config() const override;
  nlohmann::json train_state(const Position& pos) const override;
  nlohmann::json final_extra() const override { return {{"preprocess", preprocess_json()}}; }
  void write_files() override;

 private:
  void setup_model(const torch::Device& device);
  std::shared_ptr<MixtureSource> mixture_for_epoch(int64_t epoch) const;
  int64_t count_steps_per_epoch() const;
  void open_loader(int64_t epoch, int64_t skip_batches, int image_size);
  nlohmann::json preprocess_json() const;  // image_size, mean/std, augment, eval crop_pct
  int image_size_for_stage(int stage) const { return stage == 3 ? o_.stage3_image_size : image_size_; }

  TrainOptions o_;
  RunContext ctx_;
  int64_t local_batch_ = 0;  // rows of the global batch this process computes
  model::ModelSpec spec_;
  model::FlorenceModel model_{nullptr};
  std::shared_ptr<text::Tokenizer> tokenizer_;
  std::unique_ptr<DistributedUniCL> loss_;
  std::vector<MixtureInput> inputs_;
  std::unique_ptr<data::Loader> loader_;
  data::Batch batch_;
  int loader_image_size_ = 0;
  int image_size_ = 0;
  StagePlan plan_;
  int64_t steps_per_epoch_ = -1;
};

void PretrainTask::validate() {
  o_.validate_run(/*steps_or_epochs=*/false);
  if (o_.vocab.empty()) throw Error("--vocab FILE (BPE merges, e.g. from `florence tokenizer train`) is required");
  if (o_.data.empty()) throw Error("no training data: give --shards, --manifest and/or --labelled");
  if (o_.batch_size < 2) throw Error(fmt::format("--batch-size must be >= 2 (contrastive), got {}", o_.batch_size));
  if (o_.accum_steps < 1 || o_.accum_steps > o_.batch_size) {
    throw Error(fmt::format("--accum-steps must be in [1, batch size {}], got {}", o_.batch_size, o_.accum_steps));
  }
  if (o_.augment != "rrc" && o_.augment != "none") {
    throw Error(fmt::format("--augment must be 'rrc' or 'none', got '{}'", o_.augment));
  }
  if (o_.stage3_steps > 0 && o_.stage3_image_size <= 0) {
    throw Error("--stage3-steps needs --stage3-image-size");
  }
  if (!(o_.tag_sampling >= 0.0 && o_.tag_sampling <= 1.0)) {
    throw Error(fmt::format("--tag-sampling must be a probability in [0, 1], got {}", o_.tag_sampling));
  }
}

int64_t PretrainTask::setup(const RunContext& ctx) {
  ctx_ = ctx;
  const int64_t W = ctx.dist->world_size();
  if (ctx.dist->distributed() && o_.batch_size % W != 0) {
    throw Error(fmt::format("--batch-size {} (the global batch) must be divisible by the {} processes", o_.batch_size,
                            W));
  }
  if (o_.local_loss && !ctx.dist->distributed()) {
    spdlog::warn("--local-loss has no effect in a single process (it changes only how a distributed run splits "
                 "the loss)");
  }
  local_batch_ = o_.batch_size / W;
  if (o_.accum_steps > local_batch_) {
    throw Error(fmt::format("--accum-steps {} exceeds the {} rows each of the {} processes computes", o_.accum_steps,
                            local_batch_, W));
  }
  loss_ = std::make_unique<DistributedUniCL>(*ctx.dist, loss::UniCLOptions{o_.average_directions}, o_.local_loss);
  setup_model(ctx.device);
  for (const auto& d : o_.data) {
    MixtureInput in;
    in.source = open_source(d.flag, d.spec);
    in.weight = d.weight;
    in.kind = d.flag == "labelled" ? SourceKind::kLabelled : SourceKind::kPairs;
    in.spec = "--" + d.flag + " " + d.spec;
    inputs_.push_back(std::move(in));
  }
  if (o_.epochs > 0) steps_per_epoch_ = count_steps_per_epoch();
  if (o_.epochs > 0 && steps_per_epoch_ == 0) {
    throw Error(fmt::format("the data has fewer samples than one batch of {}", o_.batch_size));
  }
  plan_ = resolve_stages(o_, steps_per_epoch_);
  return plan_.total;
}

std::string PretrainTask::plan() const {
  std::string p = fmt::format("stage 1: {}, stage 2: {}, stage 3: {}; {} micro-batches", plan_.stage_steps[0],
                              plan_.stage_steps[1], plan_.stage_steps[2], o_.accum_steps);
  if (o_.tag_sampling > 0) p += fmt::format("; stage-1 tag sampling p = {}", o_.tag_sampling);
  return p;
}

void PretrainTask::setup_model(const torch::Device& device) {
  spec_ = model::resolve_spec(o_.model, "");
  if (!spec_.florence) throw Error(fmt::format("--model '{}' is not a two-tower (Florence) config", o_.model));
  tokenizer_ = std::make_shared<text::Tokenizer>(text::Tokenizer::from_file(o_.vocab));
  auto& cfg = *spec_.florence;
  if (cfg.text.vocab_size != tokenizer_->vocab_size()) {
    spdlog::info("text vocabulary from {}: vocab_size {} (model config had {}), SOT {}, EOT {}", o_.vocab,
                 tokenizer_->vocab_size(), cfg.text.vocab_size, tokenizer_->sot_id(), tokenizer_->eot_id());
  }
  cfg.text.vocab_size = int(tokenizer_->vocab_size());
  cfg.text.sot_token = tokenizer_->sot_id();
  cfg.text.eot_token = tokenizer_->eot_id();
  cfg.validate();
  spec_.text = cfg.text;
  spec_.vision = cfg.vision;
  seed_model_init(o_.seed);
  model_ = model::FlorenceModel(cfg);
  model_->to(device);
  model_->train();
  image_size_ = o_.image_size > 0 ? o_.image_size : cfg.vision.image_size;
}

std::vector<ParamGroup> PretrainTask::param_groups() {
  std::vector<ParamGroup> g = decay_groups(*model_);
  int64_t n_decay = 0, n_nodecay = 0;
  for (auto& t : g[0].params) n_decay += t.numel();
  for (auto& t : g[1].params) n_nodecay += t.numel();
  spdlog::info("model {}: {:.2f}M parameters ({} tensors / {:.2f}M with weight decay, {} tensors / {:.2f}M without)",
               spec_.name, double(n_decay + n_nodecay) / 1e6, g[0].params.size(), double(n_decay) / 1e6,
               g[1].params.size(), double(n_nodecay) / 1e6);
  return g;
}

std::shared_ptr<MixtureSource> PretrainTask::mixture_for_epoch(int64_t epoch) const {
  return std::make_shared<MixtureSource>(inputs_, seed_mix({o_.seed, uint64_t(epoch)}));
}

int64_t PretrainTask::count_steps_per_epoch() const {
  // Counts the samples of epoch 0's mixture by reading every distinct part once.
  auto mix = mixture_for_epoch(0);
  std::map<std::pair<int, size_t>, int64_t> per_part;
  int64_t total = 0;
  data::SkipCounts skips;
  for (size_t i = 0; i < mix->num_parts(); ++i) {
    const auto key = mix->table()[i];
    auto it = per_part.find(key);
    if (it == per_part.end()) {
      int64_t n = 0;
      mix->read_part(i, [&](data::Sample&) {
        ++n;
        return true;
      }, skips);
      it = per_part.emplace(key, n).first;
    }
    total += it->second;
  }
  const int64_t steps = total / o_.batch_size;
  spdlog::info("--epochs: {} samples per epoch -> {} full batches of {}", total, steps, o_.batch_size);
  return steps;
}

void PretrainTask::open_loader(int64_t epoch, int64_t skip_batches, int image_size) {
  loader_.reset();
  data::LoaderOptions lo = training_loader_options(o_, o_.augment, image_size);
  lo.require_text = true;
  lo.context_length = spec_.florence->text.context_length;
  loader_ = std::make_unique<data::Loader>(mixture_for_epoch(epoch), lo, nullptr);
  loader_image_size_ = image_size;
  if (epoch == 0 && skip_batches == 0) spdlog::info("data: {}", loader_->source().describe());
  start_epoch_after(*loader_, epoch, skip_batches);
  if (skip_batches > 0) spdlog::info("data: epoch {} restarted, {} consumed batches skipped", epoch, skip_batches);
}

void PretrainTask::open_epoch(const Position& pos) {
  open_loader(pos.epoch, pos.batches_in_epoch, image_size_for_stage(plan_.stage_of(pos.step)));
}

bool PretrainTask::next_batch(const Position& pos) {
  const int stage = plan_.stage_of(pos.step);
  const int want = image_size_for_stage(stage);
  if (loader_image_size_ != want) {
    spdlog::info("stage {}: image size {} -> {}", stage, loader_image_size_, want);
    open_loader(pos.epoch, pos.batches_in_epoch, want);
  }
  return loader_->next(batch_);
}

StepOutput PretrainTask::step(const Position& pos) {
  const int stage = plan_.stage_of(pos.step);
  const int64_t W = ctx_.dist->world_size();
  if (batch_.size() != local_batch_ * W) {
    throw Error(fmt::format("internal: batch of {} rows, expected {}", batch_.size(), local_batch_ * W));
  }
  const ContrastiveBatch cb =
      contrastive_batch(batch_, *tokenizer_, spec_.florence->text.context_length, stage, o_.seed, pos.epoch,
                        pos.batches_in_epoch, o_.tag_sampling, ctx_.dist->rank(), int(W), ctx_.device);
  const ContrastiveStep cs = contrastive_backward(model_, cb.images, cb.ids, o_.accum_steps, loss_->bind(cb));
  const double tau = cs.tau.item<double>();
  StepOutput out;
  out.loss = cs.loss.item<double>();
  out.samples = batch_.size();
  out.metrics = {{"stage", stage}, {"logit_scale", tau}, {"augmented_texts", cb.augmented}, {"tagged_texts", cb.tagged}};
  out.tag = fmt::format("stage {}", stage);
  out.extra = fmt::format("tau {:.2f}", tau);
  return out;
}

nlohmann::json PretrainTask::preprocess_json() const {
  // The resolution of the last stage that runs (stage 3 trains at a higher one).
  return {{"image_size", plan_.stage_steps[2] > 0 ? image_size_for_stage(3) : image_size_},
          {"mean", data::kImageNetMean},
          {"std", data::kImageNetStd},
          {"augment", o_.augment},
          // What eval should crop: exactly the training view for "none" (the loader's full
          // center crop); timm's 0.875 after RandomResizedCrop.
          {"crop_pct", o_.augment == "none" ? 1.0 : 0.875}};
}

nlohmann::json PretrainTask::config() const {
  return {{"stages", {plan_.stage_steps[0], plan_.stage_steps[1], plan_.stage_steps[2]}},
          {"image_size", image_size_},
          {"preprocess", preprocess_json()},
          {"prompt_templates", prompt_templates()},
          {"steps_per_epoch", steps_per_epoch_}};
}

nlohmann::json PretrainTask::train_state(const Position& pos) const {
  return {{"stage", plan_.stage_of(std::max<int64_t>(0, pos.step - 1))},
          {"stages", {plan_.stage_steps[0], plan_.stage_steps[1], plan_.stage_steps[2]}},
          {"steps_per_epoch", steps_per_epoch_},
          {"global_batch_size", o_.batch_size},
          {"stage_end", plan_.is_stage_end(pos.step)}};
}

void PretrainTask::write_files() {
  // Keep a copy of the vocabulary with the run.
  const std::string ext = fs::path(o_.vocab).extension() == ".gz" ? ".bpe.gz" : ".bpe";
  const fs::path dst = ctx_.run_dir / ("vocab" + ext);
  // Atomically, and a failure is an error: a run folder without (or with half) its vocabulary
  // could not be evaluated later.
  std::error_code ec;
  if (!fs::exists(dst, ec) || !fs::equivalent(dst, o_.vocab, ec))
    core::write_text_atomic(dst, core::read_text_file(o_.vocab));
}

}  // namespace

TrainResult pretrain(const TrainOptions& options) {
  PretrainTask task(options);
  return run_task(task);
}

}  // namespace florence::train
