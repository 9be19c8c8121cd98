// The pretraining loop; the design (stages, checkpoints, resume) is described in trainer.h.
#include "florence/train/trainer.h"

#include <ATen/Context.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <signal.h>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <sstream>
#include <type_traits>

#include "florence/core/checkpoint.h"
#include "florence/core/error.h"
#include "florence/core/files.h"
#include "florence/core/threads.h"
#include "florence/data/loader.h"
#include "florence/dist/dist.h"
#include "florence/model/io.h"
#include "florence/model/registry.h"
#include "florence/text/tokenizer.h"
#include "florence/train/run_state.h"
#include "florence/train/grad_cache.h"
#include "florence/train/mixture.h"
#include "florence/train/prompts.h"
#include "florence/train/schedule.h"
#include "florence/train/seeding.h"

namespace florence::train {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// ---------------------------------------------------------------------------------------------
// Options <-> JSON
// ---------------------------------------------------------------------------------------------

nlohmann::json TrainOptions::to_json() const {
  nlohmann::json data_j = nlohmann::json::array();
  for (const auto& d : data) data_j.push_back({{"flag", d.flag}, {"spec", d.spec}, {"weight", d.weight}});
  return {{"model", model},
          {"vocab", vocab},
          {"data", data_j},
          {"out_dir", out_dir},
          {"device", device},
          {"batch_size", batch_size},
          {"accum_steps", accum_steps},
          {"local_loss", local_loss},
          {"dist_timeout_s", dist_timeout_s},
          {"lr", lr},
          {"min_lr", min_lr},
          {"warmup_steps", warmup_steps},
          {"weight_decay", weight_decay},
          {"beta1", beta1},
          {"beta2", beta2},
          {"adam_eps", adam_eps},
          {"grad_clip", grad_clip},
          {"average_directions", average_directions},
          {"steps", steps},
          {"epochs", epochs},
          {"stage1_steps", stage1_steps},
          {"stage2_steps", stage2_steps},
          {"stage3_steps", stage3_steps},
          {"stage3_image_size", stage3_image_size},
          {"image_size", image_size},
          {"augment", augment},
          {"tag_sampling", tag_sampling},
          {"seed", seed},
          {"threads", threads},
          {"workers", workers},
          {"ckpt_every", ckpt_every},
          {"keep_checkpoints", keep_checkpoints},
          {"log_every", log_every},
          {"resume", resume},
          {"stop_after_steps", stop_after_steps},
          {"debug_nan_at_step", debug_nan_at_step},
          {"handle_signals", handle_signals},
          {"progress", progress}};
}

TrainOptions TrainOptions::from_json(const nlohmann::json& j) {
  if (!j.is_object()) throw Error("train options: expected a JSON object");
  TrainOptions o;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    const nlohmann::json& v = it.value();
    try {
      if (key == "model") o.model = v.get<std::string>();
      else if (key == "vocab") o.vocab = v.get<std::string>();
      else if (key == "data") {
        o.data.clear();
        for (const auto& d : v) o.data.push_back({d.at("flag").get<std::string>(), d.at("spec").get<std::string>(),
                                                  d.value("weight", -1.0)});
      } else if (key == "out_dir") o.out_dir = v.get<std::string>();
      else if (key == "device") o.device = v.get<std::string>();
      else if (key == "batch_size") o.batch_size = v.get<int64_t>();
      else if (key == "accum_steps") o.accum_steps = v.get<int>();
      else if (key == "local_loss") o.local_loss = v.get<bool>();
      else if (key == "dist_timeout_s") o.dist_timeout_s = v.get<double>();
      else if (key == "lr") o.lr = v.get<double>();
      else if (key == "min_lr") o.min_lr = v.get<double>();
      else if (key == "warmup_steps") o.warmup_steps = v.get<int64_t>();
      else if (key == "weight_decay") o.weight_decay = v.get<double>();
      else if (key == "beta1") o.beta1 = v.get<double>();
      else if (key == "beta2") o.beta2 = v.get<double>();
      else if (key == "adam_eps") o.adam_eps = v.get<double>();
      else if (key == "grad_clip") o.grad_clip = v.get<double>();
      else if (key == "average_directions") o.average_directions = v.get<bool>();
      else if (key == "steps") o.steps = v.get<int64_t>();
      else if (key == "epochs") o.epochs = v.get<int64_t>();
      else if (key == "stage1_steps") o.stage1_steps = v.get<int64_t>();
      else if (key == "stage2_steps") o.stage2_steps = v.get<int64_t>();
      else if (key == "stage3_steps") o.stage3_steps = v.get<int64_t>();
      else if (key == "stage3_image_size") o.stage3_image_size = v.get<int>();
      else if (key == "image_size") o.image_size = v.get<int>();
      else if (key == "augment") o.augment = v.get<std::string>();
      else if (key == "tag_sampling") o.tag_sampling = v.get<double>();
      else if (key == "seed") o.seed = v.get<uint64_t>();
      else if (key == "threads") o.threads = v.get<int>();
      else if (key == "workers") o.workers = v.get<int>();
      else if (key == "ckpt_every") o.ckpt_every = v.get<int64_t>();
      else if (key == "keep_checkpoints") o.keep_checkpoints = v.get<int>();
      else if (key == "log_every") o.log_every = v.get<int64_t>();
      else if (key == "resume") o.resume = v.get<std::string>();
      else if (key == "stop_after_steps") o.stop_after_steps = v.get<int64_t>();
      else if (key == "debug_nan_at_step") o.debug_nan_at_step = v.get<int64_t>();
      else if (key == "handle_signals") o.handle_signals = v.get<bool>();
      else if (key == "progress") o.progress = v.get<int>();
      else throw Error(fmt::format("train options: unknown key '{}'", key));
    } catch (const nlohmann::json::exception& e) {
      throw Error(fmt::format("train options: bad value for '{}': {}", key, e.what()));
    }
  }
  return o;
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

namespace {

// Ranks other than 0 log warnings and errors only (their info lines would repeat rank 0's).
class QuietScope {
 public:
  explicit QuietScope(bool quiet) : quiet_(quiet), old_(spdlog::get_level()) {
    if (quiet_ && old_ < spdlog::level::warn) spdlog::set_level(spdlog::level::warn);
  }
  ~QuietScope() {
    if (quiet_) spdlog::set_level(old_);
  }

 private:
  bool quiet_;
  spdlog::level::level_enum old_;
};

// ---------------------------------------------------------------------------------------------
// Progress line
// ---------------------------------------------------------------------------------------------

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const int64_t t = int64_t(s + 0.5);
  if (t >= 3600) return fmt::format("{}h{:02d}m", t / 3600, (t % 3600) / 60);
  return fmt::format("{}m{:02d}s", t / 60, t % 60);
}

struct Position {
  int64_t step = 0;              // completed steps
  int64_t epoch = 0;
  int64_t batches_in_epoch = 0;  // batches of `epoch` consumed
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Resume helpers
// ---------------------------------------------------------------------------------------------

std::string resolve_resume_checkpoint(const std::string& arg) {
  std::error_code ec;
  if (fs::is_directory(arg, ec)) {
    fs::path latest = fs::path(arg) / "checkpoints" / "latest";
    if (!fs::exists(latest)) latest = fs::path(arg) / "latest";
    if (!fs::exists(latest)) throw Error(fmt::format("--resume: no checkpoint in '{}' (no checkpoints/latest)", arg));
    std::string name = core::read_text_file(latest);
    while (!name.empty() && (name.back() == '\n' || name.back() == '\r' || name.back() == ' ')) name.pop_back();
    const fs::path ckpt = latest.parent_path() / name;
    if (!fs::exists(ckpt)) throw Error(fmt::format("--resume: '{}' names '{}', which does not exist", latest.string(),
                                                   ckpt.string()));
    return ckpt.string();
  }
  if (fs::is_regular_file(arg, ec)) {
    fs::path p(arg);
    if (p.extension() == ".json") p.replace_extension(".safetensors");
    if (!fs::exists(p)) throw Error(fmt::format("--resume: checkpoint '{}' does not exist", p.string()));
    return p.string();
  }
  throw Error(fmt::format("--resume: '{}' is neither a run directory nor a checkpoint file", arg));
}

TrainOptions load_run_options(const std::string& arg) {
  std::error_code ec;
  if (fs::is_directory(arg, ec) && fs::exists(fs::path(arg) / "config.json")) {
    const auto j = core::read_json_file(fs::path(arg) / "config.json");
    if (!j.contains("options")) throw Error(fmt::format("'{}/config.json' has no \"options\"", arg));
    return TrainOptions::from_json(j.at("options"));
  }
  const std::string ckpt = resolve_resume_checkpoint(arg);
  const auto side = core::read_json_file(model::sidecar_path(ckpt));
  if (!side.contains("train_state") || !side["train_state"].contains("options")) {
    throw Error(fmt::format("'{}' has no training state (not a pretraining checkpoint)", model::sidecar_path(ckpt)));
  }
  return TrainOptions::from_json(side["train_state"]["options"]);
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

namespace {

class Run {
 public:
  explicit Run(const TrainOptions& o) : o_(o), device_(o.device) {}
  TrainResult go();

 private:
  void validate();
  void setup_model();
  std::shared_ptr<MixtureSource> mixture_for_epoch(int64_t epoch) const;
  int64_t count_steps_per_epoch() const;
  void open_loader(int64_t epoch, int64_t skip_batches, int image_size);
  bool next_batch(data::Batch& b, double& wait_s);
  void save(const Position& pos, double loss, bool stage_end);
  void prune_checkpoints();
  void resume_from(const std::string& ckpt);
  void write_config();
  nlohmann::json preprocess_json() const;  // image_size, mean/std, augment, eval crop_pct
  int image_size_for_stage(int stage) const {
    return stage == 3 ? o_.stage3_image_size : image_size_;
  }

  TrainOptions o_;
  torch::Device device_;
  dist::DistContext dist_;     // single process unless a launcher's environment says otherwise
  int64_t local_batch_ = 0;    // rows of the global batch this process computes
  fs::path run_dir_, ckpt_dir_;
  model::ModelSpec spec_;
  model::FlorenceModel model_{nullptr};
  std::shared_ptr<text::Tokenizer> tokenizer_;
  std::unique_ptr<torch::optim::AdamW> opt_;
  std::vector<MixtureInput> inputs_;
  std::unique_ptr<data::Loader> loader_;
  int loader_image_size_ = 0;
  int image_size_ = 0;
  StagePlan plan_;
  LrSchedule sched_;
  int64_t steps_per_epoch_ = -1;
  Position pos_;
  std::vector<std::string> periodic_ckpts_;
  std::string last_ckpt_;
};

void Run::validate() {
  if (o_.out_dir.empty()) throw Error("--out RUN_DIR is required");
  if (o_.vocab.empty()) throw Error("--vocab FILE (BPE merges, e.g. from `florence tokenizer train`) is required");
  if (o_.data.empty()) throw Error("no training data: give --shards, --manifest and/or --labelled");
  if (o_.batch_size < 2) throw Error(fmt::format("--batch-size must be >= 2 (contrastive), got {}", o_.batch_size));
  if (o_.accum_steps < 1 || o_.accum_steps > o_.batch_size) {
    throw Error(fmt::format("--accum-steps must be in [1, batch size {}], got {}", o_.batch_size, o_.accum_steps));
  }
  if (!(o_.lr > 0)) throw Error(fmt::format("--lr must be > 0, got {}", o_.lr));
  if (o_.min_lr < 0 || o_.min_lr > o_.lr) throw Error(fmt::format("--min-lr must be in [0, lr], got {}", o_.min_lr));
  if (o_.weight_decay < 0) throw Error(fmt::format("--weight-decay must be >= 0, got {}", o_.weight_decay));
  if (o_.augment != "rrc" && o_.augment != "none") {
    throw Error(fmt::format("--augment must be 'rrc' or 'none', got '{}'", o_.augment));
  }
  if (o_.stage3_steps > 0 && o_.stage3_image_size <= 0) {
    throw Error("--stage3-steps needs --stage3-image-size");
  }
  if (!(o_.tag_sampling >= 0.0 && o_.tag_sampling <= 1.0)) {
    throw Error(fmt::format("--tag-sampling must be a probability in [0, 1], got {}", o_.tag_sampling));
  }
  if (o_.log_every < 1) o_.log_every = 1;
}

void Run::setup_model() {
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
  torch::manual_seed(seed_mix({kTagInit, o_.seed}) >> 1);
  model_ = model::FlorenceModel(cfg);
  model_->to(device_);
  model_->train();
  image_size_ = o_.image_size > 0 ? o_.image_size : cfg.vision.image_size;

  ParamGroups g = split_param_groups(*model_);
  auto base = torch::optim::AdamWOptions(o_.lr)
                  .betas(std::make_tuple(o_.beta1, o_.beta2))
                  .eps(o_.adam_eps)
                  .weight_decay(o_.weight_decay);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(g.decay, std::make_unique<torch::optim::AdamWOptions>(base));
  auto nd = base;
  nd.weight_decay(0.0);
  groups.emplace_back(g.no_decay, std::make_unique<torch::optim::AdamWOptions>(nd));
  opt_ = std::make_unique<torch::optim::AdamW>(std::move(groups), base);
  int64_t n_decay = 0, n_nodecay = 0;
  for (auto& t : g.decay) n_decay += t.numel();
  for (auto& t : g.no_decay) n_nodecay += t.numel();
  spdlog::info("model {}: {:.2f}M parameters ({} tensors / {:.2f}M with weight decay, {} tensors / {:.2f}M without)",
               cfg.name, double(n_decay + n_nodecay) / 1e6, g.decay.size(), double(n_decay) / 1e6,
               g.no_decay.size(), double(n_nodecay) / 1e6);
}

std::shared_ptr<MixtureSource> Run::mixture_for_epoch(int64_t epoch) const {
  return std::make_shared<MixtureSource>(inputs_, seed_mix({o_.seed, uint64_t(epoch)}));
}

int64_t Run::count_steps_per_epoch() const {
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

void Run::open_loader(int64_t epoch, int64_t skip_batches, int image_size) {
  loader_.reset();
  data::LoaderOptions lo;
  lo.batch_size = o_.batch_size;
  lo.image_size = image_size;
  lo.train = o_.augment == "rrc";
  lo.hflip = o_.augment == "rrc";
  lo.crop_pct = 1.0;
  lo.seed = o_.seed;
  lo.num_workers = o_.workers;
  lo.drop_last = true;
  lo.require_text = true;
  lo.context_length = spec_.florence->text.context_length;
  loader_ = std::make_unique<data::Loader>(mixture_for_epoch(epoch), lo, nullptr);
  loader_image_size_ = image_size;
  loader_->start_epoch(epoch);
  if (epoch == 0 && skip_batches == 0) spdlog::info("data: {}", loader_->source().describe());
  data::Batch skip;
  for (int64_t i = 0; i < skip_batches; ++i) {
    if (!loader_->next(skip)) {
      throw Error(fmt::format("resume: epoch {} has only {} batches, the checkpoint consumed {}", epoch, i,
                              skip_batches));
    }
  }
  if (skip_batches > 0) spdlog::info("data: epoch {} restarted, {} consumed batches skipped", epoch, skip_batches);
}

bool Run::next_batch(data::Batch& b, double& wait_s) {
  const auto t0 = Clock::now();
  bool ok = loader_->next(b);
  wait_s = std::chrono::duration<double>(Clock::now() - t0).count();
  return ok;
}

nlohmann::json Run::preprocess_json() const {
  // The resolution of the last stage that runs (stage 3 trains at a higher one).
  return {{"image_size", plan_.stage_steps[2] > 0 ? image_size_for_stage(3) : image_size_},
          {"mean", data::kImageNetMean},
          {"std", data::kImageNetStd},
          {"augment", o_.augment},
          // What eval should crop: exactly the training view for "none" (the loader's full
          // center crop); timm's 0.875 after RandomResizedCrop.
          {"crop_pct", o_.augment == "none" ? 1.0 : 0.875}};
}

void Run::write_config() {
  nlohmann::json j = {{"options", o_.to_json()},
                      {"model", model::spec_to_json(spec_)},
                      {"stages", {plan_.stage_steps[0], plan_.stage_steps[1], plan_.stage_steps[2]}},
                      {"total_steps", plan_.total},
                      {"schedule",
                       {{"peak_lr", sched_.peak_lr},
                        {"min_lr", sched_.min_lr},
                        {"warmup_steps", sched_.warmup_steps},
                        {"total_steps", sched_.total_steps}}},
                      {"image_size", image_size_},
                      {"preprocess", preprocess_json()},
                      {"prompt_templates", prompt_templates()},
                      {"steps_per_epoch", steps_per_epoch_},
                      {"world_size", dist_.world_size()},
                      {"distributed", dist_.describe()}};
  core::write_text_atomic(run_dir_ / "config.json", j.dump(2) + "\n");
}

void Run::save(const Position& pos, double loss, bool stage_end) {
  const std::string name = fmt::format("step_{:07d}", pos.step);
  const std::string weights = (ckpt_dir_ / (name + ".safetensors")).string();
  if (!dist_.is_main()) {  // rank 0 writes; the others only know the path (same state on all ranks)
    last_ckpt_ = weights;
    return;
  }
  fs::create_directories(ckpt_dir_);
  core::TensorMap optim = adamw_state_dict(*opt_, *model_);
  optim["rng.torch"] = rng_state(device_);
  core::save_safetensors(optim_path(weights), optim, {{"format", "florence.adamw"}});
  nlohmann::json state = {{"step", pos.step},
                          {"stage", plan_.stage_of(std::max<int64_t>(0, pos.step - 1))},
                          {"epoch", pos.epoch},
                          {"batches_in_epoch", pos.batches_in_epoch},
                          {"schedule",
                           {{"peak_lr", sched_.peak_lr},
                            {"min_lr", sched_.min_lr},
                            {"warmup_steps", sched_.warmup_steps},
                            {"total_steps", sched_.total_steps}}},
                          {"stages", {plan_.stage_steps[0], plan_.stage_steps[1], plan_.stage_steps[2]}},
                          {"steps_per_epoch", steps_per_epoch_},
                          {"global_batch_size", o_.batch_size},
                          {"world_size", dist_.world_size()},
                          {"seed", o_.seed},
                          {"rng", "rng.torch in " + fs::path(optim_path(weights)).filename().string()},
                          {"loss", loss},
                          {"stage_end", stage_end},
                          {"options", o_.to_json()}};
  model::save_checkpoint(*model_, spec_, weights, torch::kFloat, {{"train_state", state}});
  core::write_text_atomic(ckpt_dir_ / "latest", fs::path(weights).filename().string() + "\n");
  last_ckpt_ = weights;
  if (!stage_end) periodic_ckpts_.push_back(weights);
  prune_checkpoints();
  spdlog::info("checkpoint {} (step {}/{})", weights, pos.step, plan_.total);
}

void Run::prune_checkpoints() {
  if (o_.keep_checkpoints <= 0) return;
  while (int(periodic_ckpts_.size()) > o_.keep_checkpoints) {
    const std::string old = periodic_ckpts_.front();
    periodic_ckpts_.erase(periodic_ckpts_.begin());
    if (old == last_ckpt_) continue;
    std::error_code ec;
    fs::remove(old, ec);
    fs::remove(model::sidecar_path(old), ec);
    fs::remove(optim_path(old), ec);
  }
}

void Run::resume_from(const std::string& ckpt) {
  const auto side = core::read_json_file(model::sidecar_path(ckpt));
  if (!side.contains("train_state")) throw Error(fmt::format("'{}' is not a pretraining checkpoint", ckpt));
  const auto& st = side["train_state"];
  core::load_state_dict(*model_, model::read_weights(ckpt, spec_));
  const auto optim = core::load_safetensors(optim_path(ckpt));
  const int64_t restored = load_adamw_state_dict(*opt_, *model_, optim.tensors, optim_path(ckpt));
  spdlog::info("restored optimizer state of {} parameters from {}", restored, optim_path(ckpt));
  auto it = optim.tensors.find("rng.torch");
  if (it != optim.tensors.end()) set_rng_state(device_, it->second);
  pos_.step = st.at("step").get<int64_t>();
  pos_.epoch = st.at("epoch").get<int64_t>();
  pos_.batches_in_epoch = st.at("batches_in_epoch").get<int64_t>();
  const auto& sc = st.at("schedule");
  if (sc.at("total_steps").get<int64_t>() != sched_.total_steps ||
      sc.at("warmup_steps").get<int64_t>() != sched_.warmup_steps ||
      sc.at("peak_lr").get<double>() != sched_.peak_lr) {
    spdlog::warn("resume: the schedule differs from the checkpoint's ({}); continuing with the new one",
                 sc.dump());
  }
  last_ckpt_ = ckpt;
  spdlog::info("resumed from {} at step {} (epoch {}, {} batches into it)", ckpt, pos_.step, pos_.epoch,
               pos_.batches_in_epoch);
}

TrainResult Run::go() {
  validate();
  const auto t_start = Clock::now();
  // Join the process group first: a missing peer is reported before any expensive setup.
  dist_ = dist::init_from_env({o_.dist_timeout_s, o_.device});
  QuietScope quiet(!dist_.is_main());
  const int64_t W = dist_.world_size();
  if (dist_.distributed()) {
    spdlog::info("distributed: {}", dist_.describe());
    if (o_.batch_size % W != 0) {
      throw Error(fmt::format("--batch-size {} (the global batch) must be divisible by the {} processes", o_.batch_size,
                              W));
    }
    if (device_.is_cuda() && !device_.has_index()) device_ = torch::Device(torch::kCUDA, dist_.local_rank());
  }
  if (o_.local_loss && !dist_.distributed()) {
    spdlog::warn("--local-loss has no effect in a single process (it changes only how a distributed run splits "
                 "the loss)");
  }
  local_batch_ = o_.batch_size / W;
  if (o_.accum_steps > local_batch_) {
    throw Error(fmt::format("--accum-steps {} exceeds the {} rows each of the {} processes computes", o_.accum_steps,
                            local_batch_, W));
  }
  florence::configure_threads(o_.threads);
  run_dir_ = o_.out_dir;
  ckpt_dir_ = run_dir_ / "checkpoints";
  fs::create_directories(run_dir_);

  setup_model();
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
  sched_.peak_lr = o_.lr;
  sched_.min_lr = o_.min_lr;
  sched_.total_steps = plan_.total;
  sched_.warmup_steps = o_.warmup_steps >= 0 ? std::min(o_.warmup_steps, plan_.total)
                                             : int64_t(std::llround(0.05 * double(plan_.total)));
  spdlog::info("plan: {} steps (stage 1: {}, stage 2: {}, stage 3: {}), batch {} ({} micro-batches), lr {} "
               "warm-up {} then cosine to {}",
               plan_.total, plan_.stage_steps[0], plan_.stage_steps[1], plan_.stage_steps[2], o_.batch_size,
               o_.accum_steps, sched_.peak_lr, sched_.warmup_steps, sched_.min_lr);
  if (o_.tag_sampling > 0) spdlog::info("plan: stage-1 tag sampling p = {}", o_.tag_sampling);

  // Fresh run vs resume.
  std::error_code ec;
  if (!o_.resume.empty()) {
    resume_from(resolve_resume_checkpoint(o_.resume));
  } else if (fs::exists(ckpt_dir_ / "latest", ec)) {
    throw Error(fmt::format("'{}' already holds checkpoints; pass --resume to continue that run or choose another "
                            "--out",
                            run_dir_.string()));
  }
  // Same starting point on every rank (fresh: same seed already; resumed: same file), enforced.
  dist::broadcast_parameters(dist_, *model_);
  if (dist_.is_main()) {  // keep a copy of the vocabulary with the run
    const std::string ext = fs::path(o_.vocab).extension() == ".gz" ? ".bpe.gz" : ".bpe";
    const fs::path dst = run_dir_ / ("vocab" + ext);
    if (!fs::exists(dst, ec) || !fs::equivalent(dst, o_.vocab, ec)) fs::copy_file(o_.vocab, dst, fs::copy_options::overwrite_existing, ec);
    write_config();
  }

  // metrics.jsonl: on resume, drop lines past the checkpoint's step (they would be replayed).
  const fs::path metrics_path = run_dir_ / "metrics.jsonl";
  if (!dist_.is_main()) {
    // rank 0 alone owns metrics.jsonl
  } else if (!o_.resume.empty() && fs::exists(metrics_path, ec)) {
    std::ifstream in(metrics_path);
    std::string line, kept;
    while (std::getline(in, line)) {
      try {
        auto j = nlohmann::json::parse(line);
        if (j.value("step", int64_t(0)) <= pos_.step) kept += line + "\n";
      } catch (const nlohmann::json::exception&) {
      }
    }
    core::write_text_atomic(metrics_path, kept);
  } else if (o_.resume.empty()) {
    fs::remove(metrics_path, ec);
  }
  std::ofstream metrics;
  if (dist_.is_main()) {
    metrics.open(metrics_path, std::ios::app);
    if (!metrics) throw Error(fmt::format("cannot write '{}'", metrics_path.string()));
  }

  const bool bar = dist_.is_main() && (o_.progress == 1 || (o_.progress < 0 && isatty(STDERR_FILENO)));
  bool bar_open = false;  // a progress line without its newline is on stderr
  StopSignalScope signals(o_.handle_signals);
  TrainResult res;
  res.run_dir = run_dir_.string();
  res.start_step = pos_.step;
  res.total_steps = plan_.total;
  res.rank = dist_.rank();
  res.world_size = int(W);
  const loss::UniCLOptions loss_opt{o_.average_directions};

  data::Batch batch;
  bool first = true;
  double ema_rate = 0;
  const auto t_loop = Clock::now();
  int64_t steps_this_call = 0;
  while (pos_.step < plan_.total) {
    const int stage = plan_.stage_of(pos_.step);
    const int want_size = image_size_for_stage(stage);
    if (!loader_ || loader_image_size_ != want_size) {
      if (loader_ && loader_image_size_ != want_size) {
        spdlog::info("stage {}: image size {} -> {}", stage, loader_image_size_, want_size);
      }
      open_loader(pos_.epoch, pos_.batches_in_epoch, want_size);
    }
    const auto t0 = Clock::now();
    double wait_s = 0;
    if (!next_batch(batch, wait_s)) {
      const auto stats = loader_->stats();
      spdlog::info("data: {}", stats.summary());
      if (pos_.batches_in_epoch == 0) {
        throw Error(fmt::format("the data yields no full batch of {} (epoch {}: {})", o_.batch_size, pos_.epoch,
                                stats.summary()));
      }
      ++pos_.epoch;
      pos_.batches_in_epoch = 0;
      open_loader(pos_.epoch, 0, want_size);
      double w2 = 0;
      if (!next_batch(batch, w2)) throw Error(fmt::format("epoch {} yields no full batch", pos_.epoch));
      wait_s += w2;
    }
    const int64_t batch_index = pos_.batches_in_epoch;

    // Texts, labels, tokens.
    std::vector<int64_t> class_labels(size_t(batch.size()));
    {
      auto acc = batch.labels.accessor<int64_t, 1>();
      for (int64_t i = 0; i < batch.size(); ++i) class_labels[size_t(i)] = acc[i];
    }
    // Texts and labels of the whole global batch (the same on every rank); this rank's rows of it.
    BatchTexts bt = make_batch_texts(batch.texts, class_labels, stage, o_.seed, pos_.epoch, batch_index, o_.tag_sampling);
    if (batch.size() != local_batch_ * W) {
      throw Error(fmt::format("internal: batch of {} rows, expected {}", batch.size(), local_batch_ * W));
    }
    const int64_t row0 = dist_.rank() * local_batch_;
    const std::vector<std::string> my_texts(bt.texts.begin() + row0, bt.texts.begin() + row0 + local_batch_);
    torch::Tensor ids = tokenizer_->tokenize(my_texts, spec_.florence->text.context_length).to(device_);
    torch::Tensor labels = torch::tensor(bt.labels, torch::kInt64).to(device_);  // global [B]
    torch::Tensor images = batch.images.narrow(0, row0, local_batch_).to(device_);
    const double comm_before = dist_.stats().seconds;

    const double lr = sched_.at(pos_.step);
    for (auto& group : opt_->param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
    opt_->zero_grad();
    const bool poison = o_.debug_nan_at_step > 0 && pos_.step + 1 == o_.debug_nan_at_step;
    // UniCL over the global batch: this rank's features u, v ([B/W, D]) are gathered with
    // gradient; local loss: this rank's rows against all columns.
    const FeatureLoss loss_fn = [&](const torch::Tensor& u, const torch::Tensor& v, const torch::Tensor& tau) {
      if (!dist_.distributed()) return loss::unicl_loss(u, v, labels, tau, loss_opt);
      const int64_t D = u.size(1);
      torch::Tensor uv = dist::gather_with_grad(dist_, torch::cat({u, v}, 1));
      torch::Tensor U = uv.narrow(1, 0, D), V = uv.narrow(1, D, v.size(1));
      if (o_.local_loss) return loss::unicl_loss_local(u, v, U, V, labels, row0, tau, loss_opt);
      return loss::unicl_loss(U, V, labels, tau, loss_opt);
    };
    ContrastiveStep cs = contrastive_backward(model_, images, ids, o_.accum_steps, loss_fn, poison);
    const double tau = cs.tau.item<double>();
    // Mean loss over ranks (the global loss; identical ranks' values for the global form) and
    // whether any rank was asked to stop, in one collective.
    bool stop_requested = StopSignalScope::signal() != 0;
    double loss = cs.loss.item<double>();
    if (dist_.distributed()) {
      std::vector<torch::Tensor> agree{torch::tensor({loss, stop_requested ? 1.0 : 0.0}, torch::kFloat64)};
      dist_.allreduce(agree, dist::ReduceOp::kSum);
      loss = agree[0][0].item<double>() / double(W);
      stop_requested = agree[0][1].item<double>() > 0;
    }
    const std::string latest_msg =
        last_ckpt_.empty() ? std::string("no checkpoint was written yet") : "latest good checkpoint: " + last_ckpt_;
    if (!std::isfinite(loss)) {
      throw Error(fmt::format("non-finite loss ({}) at step {} (stage {}, epoch {}); stopping without an optimizer "
                              "step. {}. Lower --lr or raise --warmup-steps and --resume.",
                              loss, pos_.step + 1, stage, pos_.epoch, latest_msg));
    }
    dist::allreduce_gradients(dist_, model_->parameters());  // mean over ranks (no-op alone)
    std::vector<torch::Tensor> params;
    for (auto& p : model_->parameters()) {
      if (p.grad().defined()) params.push_back(p);
    }
    double gnorm;
    if (o_.grad_clip > 0) {
      gnorm = torch::nn::utils::clip_grad_norm_(params, o_.grad_clip);
    } else {
      std::vector<torch::Tensor> norms;
      for (auto& p : params) norms.push_back(p.grad().norm());
      gnorm = torch::stack(norms).norm().item<double>();
    }
    if (!std::isfinite(gnorm)) {
      throw Error(fmt::format("non-finite gradient norm at step {} (loss {}); stopping without an optimizer step. {}.",
                              pos_.step + 1, loss, latest_msg));
    }
    opt_->step();
    ++pos_.step;
    ++pos_.batches_in_epoch;
    ++steps_this_call;

    const double step_s = std::chrono::duration<double>(Clock::now() - t0).count();
    const double comm_s = dist_.stats().seconds - comm_before;
    const double img_s = double(batch.size()) / std::max(step_s, 1e-9);
    ema_rate = first ? step_s : 0.9 * ema_rate + 0.1 * step_s;
    if (first) res.first_loss = loss;
    first = false;
    res.last_loss = loss;
    const double elapsed = std::chrono::duration<double>(Clock::now() - t_loop).count();
    nlohmann::json m = {{"step", pos_.step},
                        {"stage", stage},
                        {"epoch", pos_.epoch},
                        {"loss", loss},
                        {"lr", lr},
                        {"logit_scale", tau},
                        {"grad_norm", gnorm},
                        {"img_per_s", img_s},
                        {"data_wait_fraction", std::min(1.0, wait_s / std::max(step_s, 1e-9))},
                        {"world_size", W},
                        {"comm_s", comm_s},
                        {"augmented_texts", bt.augmented},
                        {"tagged_texts", bt.tagged},
                        {"time", elapsed},
                        {"unix_time", double(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                 std::chrono::system_clock::now().time_since_epoch())
                                                 .count()) /
                                          1000.0}};
    if (dist_.is_main()) {
      metrics << m.dump() << "\n";
      metrics.flush();
    }
    const double eta = ema_rate * double(plan_.total - pos_.step);
    if (bar) {
      const int width = 24;
      const int filled = int(double(width) * double(pos_.step) / double(plan_.total));
      std::fprintf(stderr, "\r[%s%s] %lld/%lld stage %d  loss %.4f  %.1f img/s  ETA %s   ",
                   std::string(size_t(filled), '#').c_str(), std::string(size_t(width - filled), '.').c_str(),
                   (long long)pos_.step, (long long)plan_.total, stage, loss, img_s, format_duration(eta).c_str());
      std::fflush(stderr);
      bar_open = true;
    } else if (pos_.step % o_.log_every == 0 || pos_.step == plan_.total || steps_this_call == 1) {
      spdlog::info("step {}/{} stage {} epoch {}: loss {:.4f} lr {:.3g} tau {:.2f} {:.1f} img/s data-wait {:.0f}% "
                   "ETA {}",
                   pos_.step, plan_.total, stage, pos_.epoch, loss, lr, tau, img_s,
                   100.0 * std::min(1.0, wait_s / std::max(step_s, 1e-9)), format_duration(eta));
    }

    const bool stage_end = plan_.is_stage_end(pos_.step);
    const bool signalled = stop_requested;
    const bool stop_here = o_.stop_after_steps > 0 && pos_.step >= o_.stop_after_steps && pos_.step < plan_.total;
    const bool periodic = o_.ckpt_every > 0 && pos_.step % o_.ckpt_every == 0;
    if (stage_end || signalled || stop_here || periodic) {
      if (bar_open) std::fprintf(stderr, "\n");
      bar_open = false;
      save(pos_, loss, stage_end);
    }
    if (signalled || stop_here) {
      if (signalled) {
        spdlog::warn("stop requested (signal {} here{}): stopped after step {} with checkpoint {}",
                     StopSignalScope::signal(), dist_.distributed() ? ", or on another rank" : "", pos_.step, last_ckpt_);
      }
      res.interrupted = true;
      break;
    }
  }
  if (bar_open) std::fprintf(stderr, "\n");
  if (loader_) loader_->stop();
  if (!res.interrupted && dist_.is_main()) {
    model::save_checkpoint(*model_, spec_, (run_dir_ / "model.safetensors").string(), torch::kFloat,
                           {{"train_state", {{"step", pos_.step}, {"options", o_.to_json()}}},
                            {"preprocess", preprocess_json()}});
    spdlog::info("done: {} steps, final weights in {}", pos_.step, (run_dir_ / "model.safetensors").string());
  }
  res.steps_done = pos_.step;
  res.last_checkpoint = last_ckpt_;
  res.comm_seconds = dist_.stats().seconds;
  res.seconds = std::chrono::duration<double>(Clock::now() - t_start).count();
  return res;
}

}  // namespace

TrainResult pretrain(const TrainOptions& options) {
  Run run(options);
  return run.go();
}

}  // namespace florence::train
