// ITM + MLM pretraining and VQA fine-tuning of the METER-style model as tasks on the shared run
// layer; see vlp_train.h. VQA evaluation and questions are in vqa_eval.cpp.
#include "florence/adapt/vlp/vlp_train.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <numeric>
#include <random>
#include <sstream>
#include <unordered_map>

#include "florence/adapt/vlp/objectives.h"
#include "florence/adapt/vlp/param_groups.h"
#include "florence/adapt/vlp/vqa_infer.h"
#include "florence/core/checkpoint.h"
#include "florence/core/device.h"
#include "florence/core/error.h"
#include "florence/core/files.h"
#include "florence/data/loader.h"
#include "florence/model/io.h"
#include "florence/model/run_artifacts.h"
#include "florence/text/tokenizer.h"
#include "florence/train/finetune_data.h"
#include "florence/train/mixture.h"
#include "florence/train/seeding.h"

namespace florence::vlp {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using train::Position;
using train::RunContext;
using train::RunResult;
using train::StepOutput;
using train::seed_mix;
using detail::argmax_answers;
using detail::eval_record;
using detail::prior_predictions;
using detail::question_logits;
using detail::split_logits;
using detail::tokenize_questions;

// Seed streams of this file (train/seeding.h tags are 11-13, finetune's 21).
constexpr uint64_t kTagMlm = 31, kTagItm = 32, kTagVqaOrder = 33, kTagEvalMlm = 34, kTagEvalItm = 35;

namespace {
// The engine defaults both tasks share (vlp_train.h): METER's AdamW (weight decay 0.01, betas
// (0.9, 0.98), eps 1e-8), clip 1, checkpoints at the end only.
void meter_run_defaults(train::RunOptions& o) {
  o.lr = 1e-4;
  o.weight_decay = 0.01;
  o.beta2 = 0.98;
  o.adam_eps = 1e-8;
  o.grad_clip = 1.0;
  o.batch_size = 32;
  o.ckpt_every = 0;
  o.keep_checkpoints = 2;
}
}  // namespace

VlpPretrainOptions::VlpPretrainOptions() { meter_run_defaults(*this); }

VqaOptions::VqaOptions() { meter_run_defaults(*this); }

namespace {

// ---------------------------------------------------------------------------------------------
// Initial weights, vocabulary and preprocessing
// ---------------------------------------------------------------------------------------------

struct Init {
  MeterConfig cfg;
  std::string vocab;  // absolute path
  std::shared_ptr<text::Tokenizer> tokenizer;
  VqaImageOptions image;
  bool from_vlp = false;     // checkpoint holds a MeterModel (towers + fusion)
  bool pretrained = false;   // weights are loaded (not --random-init)
  std::string checkpoint;  // the file the weights come from ("" = none)
  std::string desc;
};

Init resolve_init(const MeterInitFields& f, uint64_t seed, bool resuming) {
  Init in;
  in.cfg = resolve_meter_config(f.model);
  nlohmann::json pre = nlohmann::json::object();
  if (!f.checkpoint.empty()) {
    std::error_code ec;
    const fs::file_status st = fs::status(f.checkpoint, ec);
    if (!fs::exists(st)) throw Error(fmt::format("checkpoint '{}' does not exist", f.checkpoint));
    if (fs::is_directory(st))
      throw Error(fmt::format("checkpoint '{}' is a directory; pass the weights file (e.g. {})", f.checkpoint,
                              (fs::path(f.checkpoint) / "model.safetensors").string()));
    const model::RunArtifacts art = model::find_run_artifacts(f.checkpoint, f.vocab);
    if (art.sidecar.is_object() && art.sidecar.contains("meter")) {
      const std::string fusion_name = in.cfg.name;
      in.cfg = MeterConfig::from_json(art.sidecar["meter"]);
      in.from_vlp = true;
      if (f.model != "meter-nano" && f.model != fusion_name)
        spdlog::warn("--model {} ignored: '{}' is a fusion model ({})", f.model, f.checkpoint, in.cfg.name);
    } else {
      const model::ModelSpec spec = model::resolve_spec("", f.checkpoint);
      if (!spec.florence)
        throw Error(fmt::format("'{}' is not a two-tower (Florence) checkpoint nor a `vlp pretrain` one", f.checkpoint));
      in.cfg.towers = *spec.florence;
    }
    pre = art.preprocess;
    if (art.vocab.empty())
      throw Error(fmt::format("no BPE vocabulary found for '{}'{}: pass --vocab FILE", f.checkpoint,
                              art.vocab_problem.empty() ? std::string() : " (" + art.vocab_problem + ")"));
    in.vocab = fs::absolute(art.vocab).string();
    in.pretrained = !f.random_init;
    in.checkpoint = f.checkpoint;
    in.desc = f.random_init ? fmt::format("random (seed {}; config of {})", seed, f.checkpoint) : f.checkpoint;
  } else {
    if (f.vocab.empty()) throw Error("give --checkpoint (pretrained towers) or --vocab with --random-init");
    if (!fs::is_regular_file(f.vocab)) throw Error(fmt::format("vocabulary '{}' does not exist", f.vocab));
    in.vocab = fs::absolute(f.vocab).string();
    in.desc = fmt::format("random (seed {})", seed);
  }
  in.tokenizer = std::make_shared<text::Tokenizer>(text::Tokenizer::from_file(in.vocab));
  auto& t = in.cfg.towers.text;
  if (f.checkpoint.empty()) {
    t.vocab_size = int(in.tokenizer->vocab_size());
    t.sot_token = int(in.tokenizer->sot_id());
    t.eot_token = int(in.tokenizer->eot_id());
  } else if (in.tokenizer->vocab_size() > t.vocab_size || in.tokenizer->eot_id() != t.eot_token) {
    throw Error(fmt::format("vocabulary '{}' ({} tokens, EOT {}) does not fit the text tower ({} tokens, EOT {})",
                            in.vocab, in.tokenizer->vocab_size(), in.tokenizer->eot_id(), t.vocab_size, t.eot_token));
  }
  try {
    in.image.image_size = f.image_size > 0 ? f.image_size : pre.value("image_size", in.cfg.towers.vision.image_size);
    if (pre.contains("mean")) in.image.mean = pre["mean"].get<std::array<float, 3>>();
    if (pre.contains("std")) in.image.std = pre["std"].get<std::array<float, 3>>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("bad preprocess entry for '{}': {}", f.checkpoint, e.what()));
  }
  (void)resuming;
  return in;
}

bool is_head(const std::string& k) {
  return k.rfind("itm_score.", 0) == 0 || k.rfind("mlm_score.", 0) == 0 || k.rfind("vqa_classifier.", 0) == 0;
}

/// Loads a MeterModel checkpoint's weights into `m`: every tower / fusion tensor strictly; heads
/// the file has with the same shape (except the VQA head, always new); others keep their init.
void load_meter_weights(MeterModelImpl& m, const std::string& path) {
  const core::TensorMap w = core::load_safetensors(path).tensors;
  core::TensorMap mine = core::state_dict(m);
  std::vector<std::string> missing;
  for (auto& [k, t] : mine) {
    auto it = w.find(k);
    if (is_head(k)) {
      if (k.rfind("vqa_classifier.", 0) != 0 && it != w.end() && it->second.sizes() == t.sizes()) t = it->second;
      continue;
    }
    if (it == w.end()) {
      missing.push_back(k);
      continue;
    }
    t = it->second;
  }
  if (!missing.empty())
    throw Error(fmt::format("'{}' lacks {} tensor(s) of the fusion model, e.g. {}", path, missing.size(), missing[0]));
  try {
    core::load_state_dict(m, mine);
  } catch (const Error& e) {
    throw Error(fmt::format("loading '{}': {}", path, e.what()));
  }
}

MeterModel build_model(const Init& in, uint64_t seed, bool load) {
  train::seed_model_init(seed);
  MeterModel m(in.cfg);
  if (load && in.pretrained) {
    if (in.from_vlp) load_meter_weights(*m, in.checkpoint);
    else load_towers_from_checkpoint(*m, in.checkpoint);
  }
  return m;
}

nlohmann::json preprocess_json(const VqaImageOptions& im) {
  return {{"image_size", im.image_size}, {"crop_pct", 1.0}, {"mean", im.mean}, {"std", im.std}};
}

std::vector<train::ParamGroup> engine_groups(const torch::nn::Module& m, double fusion, double head) {
  std::vector<train::ParamGroup> out;
  for (auto& g : meter_param_groups(m, fusion, head)) out.push_back(train::ParamGroup{g.params, g.weight_decay, g.lr_scale});
  return out;
}

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string p;
  while (std::getline(ss, p, ','))
    if (!p.empty()) out.push_back(p);
  return out;
}

std::shared_ptr<const data::SampleSource> pair_source(const std::string& data, const std::string& split,
                                                      bool required) {
  std::vector<train::MixtureInput> inputs;
  for (const auto& root : split_list(data)) {
    if (!fs::exists(root)) throw Error(fmt::format("data '{}' does not exist", root));
    auto src = train::open_split(root, split, true);
    if (!src) {
      if (required) throw Error(fmt::format("'{}' has no '{}' split folder", root, split));
      spdlog::warn("vlp: '{}' has no '{}' split; not used", root, split);
      continue;
    }
    inputs.push_back(train::MixtureInput{src, -1, train::SourceKind::kPairs, root + "/" + split});
  }
  if (inputs.empty()) return nullptr;
  return std::make_shared<train::MixtureSource>(std::move(inputs), 0);
}

/// Text labels for ITM negatives: equal for identical texts.
torch::Tensor text_labels(const std::vector<std::string>& texts) {
  std::vector<int64_t> v;
  v.reserve(texts.size());
  for (const auto& t : texts) v.push_back(int64_t(std::hash<std::string>{}(t) >> 1));
  return torch::tensor(v, torch::kLong);
}

MlmOptions mlm_options(const MeterConfig& c, double prob) {
  MlmOptions o;
  o.mask_prob = prob;
  o.sot = c.towers.text.sot_token;
  o.eot = c.towers.text.eot_token;
  o.mask_token = c.mask_token();
  o.vocab = c.mlm_vocab();
  return o;
}

// ---------------------------------------------------------------------------------------------
// ITM + MLM pretraining
// ---------------------------------------------------------------------------------------------

struct PretrainLosses {
  torch::Tensor loss, mlm, itm;
  Accuracy mlm_acc, itm_acc;
  int64_t predicted = 0;
};

/// Both objectives on one batch (images [B,3,S,S], ids [B,L], texts) with the given seeds.
PretrainLosses pretrain_forward(MeterModelImpl& m, const torch::Tensor& images, const torch::Tensor& ids,
                                const std::vector<std::string>& texts, const MlmOptions& mo, uint64_t mlm_seed,
                                uint64_t itm_seed) {
  PretrainLosses r;
  const torch::Tensor img = m.encode_image(images);  // once for both objectives
  const MlmBatch mb = mask_tokens(ids, mo, mlm_seed);
  torch::Tensor mask;
  const torch::Tensor masked_text = m.encode_text(mb.ids, &mask);
  const MeterOutput om = m.fuse(masked_text, mask, img);
  torch::Tensor targets;
  const torch::Tensor ml = m.mlm_logits_at(om, mb.labels, &targets);
  r.mlm = mlm_loss(ml, targets);
  r.mlm_acc = mlm_accuracy(ml, targets);
  r.predicted = mb.predicted;
  const ItmBatch ib = make_itm_batch(text_labels(texts), itm_seed);
  const torch::Tensor text = m.encode_text(ids, &mask);
  const MeterOutput oi = m.fuse(text, mask, img.index_select(0, ib.image_index.to(img.device())));
  const torch::Tensor il = m.itm_logits(oi);
  const torch::Tensor labels = ib.labels.to(il.device());
  r.itm = itm_loss(il, labels);
  r.itm_acc = itm_accuracy(il, labels);
  r.loss = r.mlm + r.itm;
  return r;
}

class VlpPretrainTask : public train::TrainTask {
 public:
  explicit VlpPretrainTask(const VlpPretrainOptions& o) : o_(o) {}
  std::string name() const override { return "vlp pretraining"; }
  const train::RunOptions& options() const override { return o_; }
  nlohmann::json options_json() const override { return o_.to_json(); }
  void validate() override {
    o_.validate_run(false);
    if (o_.steps < 1) throw Error("vlp pretrain: give --steps N (>= 1)");
    if (o_.epochs != 0) throw Error("vlp pretrain: --epochs is not supported (shard sizes are unknown); give --steps");
    if (o_.batch_size < 2) throw Error("--batch-size must be >= 2 (ITM negatives come from the batch)");
    if (o_.data.empty()) throw Error("vlp pretrain: --data is required");
    if (!(o_.mlm_prob > 0 && o_.mlm_prob <= 1)) throw Error("--mlm-prob must be in (0, 1]");
  }
  int64_t setup(const RunContext& ctx) override {
    ctx_ = ctx;
    init_ = resolve_init(o_, o_.seed, !o_.resume.empty());
    init_.cfg.itm_head = true;
    init_.cfg.mlm_head = true;
    init_.cfg.num_answers = 0;
    spec_.name = init_.cfg.name;
    spec_.florence = init_.cfg.towers;
    model_ = build_model(init_, o_.seed, o_.resume.empty());
    model_->to(ctx.device);
    model_->train();
    train_ = pair_source(o_.data, o_.train_split, true);
    if (!o_.test_split.empty()) test_ = pair_source(o_.data, o_.test_split, false);
    mo_ = mlm_options(init_.cfg, o_.mlm_prob);
    spdlog::info("vlp pretrain: {} ({}), towers {}, {} px, text {} tokens, init {}", init_.cfg.name,
                 train_->describe(), init_.cfg.towers.name, init_.image.image_size,
                 init_.cfg.towers.text.context_length, init_.desc);
    return o_.steps;
  }
  torch::nn::Module& module() override { return *model_; }
  const model::ModelSpec& spec() const override { return spec_; }
  std::vector<train::ParamGroup> param_groups() override {
    return engine_groups(*model_, o_.lr_mult_fusion, o_.lr_mult_head);
  }
  std::string plan() const override {
    return fmt::format("ITM + MLM ({:.0f}% masked), lr x{} fusion, x{} heads", 100 * o_.mlm_prob, o_.lr_mult_fusion,
                       o_.lr_mult_head);
  }
  void open_epoch(const Position& pos) override {
    loader_.reset();
    loader_ = std::make_unique<data::Loader>(train_, loader_options(true), init_.tokenizer);
    train::start_epoch_after(*loader_, pos.epoch, pos.batches_in_epoch);
  }
  bool next_batch(const Position&) override { return loader_->next(batch_); }
  std::string data_summary() const override { return loader_ ? loader_->stats().summary() : std::string(); }
  StepOutput step(const Position& pos) override {
    const uint64_t s = uint64_t(pos.step);
    PretrainLosses r = pretrain_forward(*model_, batch_.images.to(ctx_.device), batch_.ids.to(ctx_.device),
                                        batch_.texts, mo_, seed_mix({kTagMlm, o_.seed, s}),
                                        seed_mix({kTagItm, o_.seed, s}));
    StepOutput out;
    out.loss = r.loss.item<double>();
    out.samples = batch_.size();
    const double ml = r.mlm.item<double>(), il = r.itm.item<double>();
    out.metrics = {{"mlm_loss", ml}, {"itm_loss", il}, {"mlm_acc", r.mlm_acc.value()}, {"itm_acc", r.itm_acc.value()}};
    out.extra = fmt::format("mlm {:.3f} itm {:.3f} itm-acc {:.2f}", ml, il, r.itm_acc.value());
    if (std::isfinite(out.loss)) r.loss.backward();
    return out;
  }
  nlohmann::json config() const override {
    return {{"kind", "vlp-pretrain"}, {"init", init_.desc}, {"meter", init_.cfg.to_json()},
            {"preprocess", preprocess_json(init_.image)}};
  }
  nlohmann::json checkpoint_extra() const override {
    return {{"kind", "vlp-pretrain"}, {"meter", init_.cfg.to_json()}, {"vocab", init_.vocab},
            {"preprocess", preprocess_json(init_.image)}, {"init", init_.desc}};
  }
  void check_resume(const nlohmann::json& side, const std::string& ckpt) override {
    if (side.value("kind", "") != "vlp-pretrain") throw Error(fmt::format("'{}' is not a vlp pretrain checkpoint", ckpt));
  }
  void finish(RunResult& run) override {
    nlohmann::json r = {{"task", "vlp-pretrain"},
                        {"init", init_.desc},
                        {"model", init_.cfg.name},
                        {"weights", run.final_weights},
                        {"steps", run.steps_done},
                        {"train_loss", {{"first10", run.first_loss_mean}, {"last10", run.last_loss_mean}}},
                        {"options", o_.to_json()}};
    if (test_) r["eval"] = evaluate();
    r["seconds"] = std::chrono::duration<double>(Clock::now() - ctx_.start).count();
    run.result = r;
    core::write_text_atomic(ctx_.run_dir / "result.json", r.dump(2) + "\n");
  }

 private:
  data::LoaderOptions loader_options(bool train) const {
    data::LoaderOptions lo;
    lo.batch_size = o_.batch_size;
    lo.image_size = init_.image.image_size;
    lo.train = false;  // whole image, resized (crop_pct 1): a crop could cut away what the text names
    lo.crop_pct = 1.0;
    lo.hflip = false;
    lo.mean = init_.image.mean;
    lo.std = init_.image.std;
    lo.seed = o_.seed;
    lo.num_workers = o_.workers;
    lo.drop_last = train;
    lo.shuffle = train;
    lo.require_text = true;
    lo.context_length = init_.cfg.towers.text.context_length;
    return lo;
  }

  nlohmann::json evaluate() {
    data::Loader loader(test_, loader_options(false), init_.tokenizer);
    loader.start_epoch(0);
    model_->eval();
    torch::NoGradGuard ng;
    Accuracy itm, mlm;
    double itm_loss_sum = 0, mlm_loss_sum = 0;
    int64_t pairs = 0, batches = 0, predicted = 0;
    data::Batch b;
    while ((o_.max_eval_samples == 0 || pairs < o_.max_eval_samples) && loader.next(b)) {
      if (b.size() < 2) break;
      PretrainLosses r = pretrain_forward(*model_, b.images.to(ctx_.device), b.ids.to(ctx_.device), b.texts, mo_,
                                          seed_mix({kTagEvalMlm, uint64_t(batches)}),
                                          seed_mix({kTagEvalItm, uint64_t(batches)}));
      itm += r.itm_acc;
      mlm += r.mlm_acc;
      itm_loss_sum += r.itm.item<double>() * double(b.size());
      mlm_loss_sum += r.mlm.item<double>() * double(r.predicted);
      pairs += b.size();
      predicted += r.predicted;
      ++batches;
    }
    loader.stop();
    model_->train();
    if (pairs == 0) throw Error("vlp pretrain: no held-out pair could be read for the evaluation");
    const nlohmann::json e = {{"pairs", pairs},
                              {"itm_accuracy", itm.value()},
                              {"itm_loss", itm_loss_sum / double(pairs)},
                              {"mlm_accuracy", mlm.value()},
                              {"mlm_loss", mlm_loss_sum / double(predicted)},
                              {"mlm_predicted", predicted},
                              {"split", o_.test_split}};
    spdlog::info("vlp pretrain: held-out {} pairs: ITM accuracy {:.2f} % (loss {:.4f}), MLM accuracy {:.2f} % (loss "
                 "{:.4f}, {} tokens)",
                 pairs, 100 * itm.value(), e["itm_loss"].get<double>(), 100 * mlm.value(), e["mlm_loss"].get<double>(),
                 predicted);
    return e;
  }

  VlpPretrainOptions o_;
  RunContext ctx_;
  Init init_;
  model::ModelSpec spec_;
  MeterModel model_{nullptr};
  std::shared_ptr<const data::SampleSource> train_, test_;
  std::unique_ptr<data::Loader> loader_;
  data::Batch batch_;
  MlmOptions mo_;
};

// ---------------------------------------------------------------------------------------------
// VQA
// ---------------------------------------------------------------------------------------------


class VqaTask : public train::TrainTask {
 public:
  explicit VqaTask(const VqaOptions& o) : o_(o) {}
  std::string name() const override { return o_.blind ? "vqa fine-tuning (blind)" : "vqa fine-tuning"; }
  const train::RunOptions& options() const override { return o_; }
  nlohmann::json options_json() const override { return o_.to_json(); }
  void validate() override {
    o_.validate_run(true);
    if (o_.data.empty()) throw Error("vqa train: --data is required");
  }
  int64_t setup(const RunContext& ctx) override {
    ctx_ = ctx;
    init_ = resolve_init(o_, o_.seed, !o_.resume.empty());
    answers_ = load_answer_vocab(o_.data);
    init_.cfg.itm_head = false;
    init_.cfg.mlm_head = false;
    init_.cfg.num_answers = int(answers_.size());
    spec_.name = init_.cfg.name;
    spec_.florence = init_.cfg.towers;
    VqaImageOptions io = init_.image;
    io.max_questions = o_.max_train_questions;
    train_ = load_vqa_split(o_.data, o_.train_split, io);
    io.max_questions = o_.max_eval_questions;
    if (!o_.val_split.empty() && fs::exists(fs::path(o_.data) / (o_.val_split + "_questions.json")))
      val_ = std::make_unique<VqaSplit>(load_vqa_split(o_.data, o_.val_split, io));
    if (!o_.test_split.empty()) test_ = std::make_unique<VqaSplit>(load_vqa_split(o_.data, o_.test_split, io));
    const int ctxlen = init_.cfg.towers.text.context_length;
    train_ids_ = tokenize_questions(*init_.tokenizer, train_, ctxlen);
    if (val_) val_ids_ = tokenize_questions(*init_.tokenizer, *val_, ctxlen);
    if (test_) test_ids_ = tokenize_questions(*init_.tokenizer, *test_, ctxlen);
    std::vector<SoftTarget> st;
    int64_t no_target = 0;
    for (const auto& it : train_.items) {
      st.push_back(soft_target(it.answers, answers_));
      if (st.back().labels.empty()) ++no_target;
    }
    targets_ = soft_target_tensor(st, answers_.size());
    const int64_t n = int64_t(train_.items.size());
    steps_per_epoch_ = n / o_.batch_size;
    if (steps_per_epoch_ == 0)
      throw Error(fmt::format("vqa train: {} training questions do not fill one batch of {}", n, o_.batch_size));
    total_ = o_.steps > 0 ? o_.steps : o_.epochs * steps_per_epoch_;
    data_ = {{"train", {{"questions", n}, {"images", train_.image_ids.size()}, {"skipped", train_.skipped},
                        {"without_target", no_target}}},
             {"answers", answers_.size()}};
    if (val_) data_["val"] = {{"questions", val_->items.size()}, {"skipped", val_->skipped}};
    if (test_) data_["test"] = {{"questions", test_->items.size()}, {"skipped", test_->skipped}};
    spdlog::info("vqa train: {} train questions on {} images ({} batches of {} per epoch; {} without an answer in the "
                 "vocabulary), {} answers, {} val, {} test; init {}{}",
                 n, train_.image_ids.size(), steps_per_epoch_, o_.batch_size, no_target, answers_.size(),
                 val_ ? val_->items.size() : 0, test_ ? test_->items.size() : 0, init_.desc,
                 o_.blind ? "; BLIND (image tokens zeroed)" : "");
    model_ = build_model(init_, o_.seed, o_.resume.empty());
    model_->to(ctx.device);
    model_->train();
    return total_;
  }
  torch::nn::Module& module() override { return *model_; }
  const model::ModelSpec& spec() const override { return spec_; }
  std::vector<train::ParamGroup> param_groups() override {
    return engine_groups(*model_, o_.lr_mult_fusion, o_.lr_mult_head);
  }
  std::string plan() const override {
    return fmt::format("VQA soft-score BCE over {} answers, lr x{} fusion, x{} head{}", answers_.size(),
                       o_.lr_mult_fusion, o_.lr_mult_head, o_.blind ? ", blind" : "");
  }
  void open_epoch(const Position& pos) override {
    // A (seed, epoch) permutation of the images; each image's questions stay together.
    std::vector<int64_t> imgs(train_.by_image.size());
    std::iota(imgs.begin(), imgs.end(), 0);
    std::mt19937_64 rng(seed_mix({kTagVqaOrder, o_.seed, uint64_t(pos.epoch)}));
    for (size_t i = imgs.size(); i > 1; --i) std::swap(imgs[i - 1], imgs[data::uniform_int(rng, i)]);
    order_.clear();
    for (int64_t im : imgs) order_.insert(order_.end(), train_.by_image[size_t(im)].begin(), train_.by_image[size_t(im)].end());
    cursor_ = pos.batches_in_epoch * o_.batch_size;
  }
  bool next_batch(const Position&) override {
    if (cursor_ + o_.batch_size > int64_t(order_.size())) return false;
    rows_.assign(order_.begin() + cursor_, order_.begin() + cursor_ + o_.batch_size);
    cursor_ += o_.batch_size;
    return true;
  }
  StepOutput step(const Position&) override {
    const torch::Tensor logits =
        question_logits(*model_, train_, train_ids_, rows_, o_.blind, init_.image.image_size, ctx_.device);
    const torch::Tensor t = targets_.index_select(0, torch::tensor(rows_, torch::kLong)).to(ctx_.device);
    const torch::Tensor loss = vqa_loss(logits, t);
    StepOutput out;
    out.loss = loss.item<double>();
    out.samples = int64_t(rows_.size());
    const double score = vqa_score_sum(logits.detach(), t) / double(rows_.size());
    out.metrics = {{"vqa_score", score}};
    out.extra = fmt::format("vqa-score {:.3f}", score);
    if (std::isfinite(out.loss)) loss.backward();
    return out;
  }
  void after_step(const Position& pos, nlohmann::json& metrics) override {
    if (!val_ || (pos.batches_in_epoch != steps_per_epoch_ && pos.step != total_)) return;
    last_val_ = accuracy(*val_, val_ids_).overall;
    metrics["val_vqa_accuracy"] = last_val_;
    spdlog::info("step {} (epoch {} end): val VQA accuracy {:.2f}", pos.step, pos.epoch, last_val_);
  }
  nlohmann::json config() const override {
    return {{"kind", "vqa"},        {"init", init_.desc}, {"meter", init_.cfg.to_json()},
            {"blind", o_.blind},    {"steps_per_epoch", steps_per_epoch_},
            {"preprocess", preprocess_json(init_.image)}, {"data", data_}};
  }
  nlohmann::json checkpoint_extra() const override {
    return {{"kind", "vqa"},         {"meter", init_.cfg.to_json()}, {"vocab", init_.vocab},
            {"preprocess", preprocess_json(init_.image)}, {"init", init_.desc}, {"blind", o_.blind},
            {"answers", answers_.answers}};
  }
  void check_resume(const nlohmann::json& side, const std::string& ckpt) override {
    if (side.value("kind", "") != "vqa") throw Error(fmt::format("'{}' is not a vqa checkpoint", ckpt));
    if (side.contains("answers") && side["answers"].get<std::vector<std::string>>() != answers_.answers)
      throw Error(fmt::format("resume: the answer vocabulary of '{}' differs from the data's", ckpt));
  }
  void finish(RunResult& run) override {
    nlohmann::json r = {{"task", "vqa"},
                        {"set", fs::path(o_.data).lexically_normal().filename().string()},
                        {"init", init_.desc},
                        {"blind", o_.blind},
                        {"model", init_.cfg.name},
                        {"weights", run.final_weights},
                        {"steps", run.steps_done},
                        {"epochs", double(run.steps_done) / double(steps_per_epoch_)},
                        {"train_loss", {{"first10", run.first_loss_mean}, {"last10", run.last_loss_mean}}},
                        {"answers", answers_.size()},
                        {"options", o_.to_json()},
                        {"data", data_}};
    if (val_) r["val_vqa_accuracy"] = last_val_ >= 0 ? last_val_ : accuracy(*val_, val_ids_).overall;
    if (test_) {
      const torch::Tensor logits = split_logits(*model_, *test_, test_ids_, o_.blind, init_.image.image_size,
                                                ctx_.device, std::max<int64_t>(64, o_.batch_size));
      const VqaResult res = evaluate_vqa(test_->questions(), argmax_answers(logits, answers_));
      r["test"] = vqa_result_json(res);
      r["test"]["split"] = o_.test_split;
      const PriorBaseline prior = prior_baseline(train_);
      r["prior"] = vqa_result_json(evaluate_vqa(test_->questions(), prior_predictions(prior, *test_)));
      r["prior"]["answer_of_type"] = prior.answer_of_type;
      spdlog::info("vqa train: test VQA accuracy {:.2f} ({} questions); per-question-type prior {:.2f}", res.overall,
                   test_->items.size(), r["prior"]["accuracy"].get<double>());
      // The same numbers where `florence report` and `vqa eval` put them.
      fs::create_directories(ctx_.run_dir / "eval");
      core::write_text_atomic(ctx_.run_dir / "eval" / ("vqa_" + o_.test_split + ".json"),
                              eval_record(run.final_weights, o_.blind, false, o_.data, *test_, r["test"], r["prior"])
                                      .dump(2) +
                                  "\n");
    }
    r["seconds"] = std::chrono::duration<double>(Clock::now() - ctx_.start).count();
    run.result = r;
    core::write_text_atomic(ctx_.run_dir / "result.json", r.dump(2) + "\n");
  }

 private:
  VqaResult accuracy(const VqaSplit& s, const torch::Tensor& ids) {
    const torch::Tensor logits = split_logits(*model_, s, ids, o_.blind, init_.image.image_size, ctx_.device,
                                              std::max<int64_t>(64, o_.batch_size));
    return evaluate_vqa(s.questions(), argmax_answers(logits, answers_));
  }

  VqaOptions o_;
  RunContext ctx_;
  Init init_;
  model::ModelSpec spec_;
  MeterModel model_{nullptr};
  AnswerVocab answers_;
  VqaSplit train_;
  std::unique_ptr<VqaSplit> val_, test_;
  torch::Tensor train_ids_, val_ids_, test_ids_, targets_;
  std::vector<int64_t> order_, rows_;
  int64_t cursor_ = 0, steps_per_epoch_ = 0, total_ = 0;
  double last_val_ = -1;
  nlohmann::json data_;
};

}  // namespace

RunResult vlp_pretrain(const VlpPretrainOptions& o) {
  VlpPretrainTask task(o);
  return train::run_task(task);
}

RunResult vqa_train(const VqaOptions& o) {
  VqaTask task(o);
  return train::run_task(task);
}

VlpPretrainOptions load_vlp_pretrain_options(const std::string& arg) {
  return VlpPretrainOptions::from_json(train::load_saved_options(arg, {"vlp-pretrain", "", "vlp-pretrain", "vlp pretrain"}));
}

VqaOptions load_vqa_options(const std::string& arg) {
  return VqaOptions::from_json(train::load_saved_options(arg, {"vqa", "", "vqa", "vqa"}));
}


}  // namespace florence::vlp
