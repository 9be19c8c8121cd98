// Video-text contrastive training on an action set's captions; see video_text.h.
#include "florence/adapt/video/video_text.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <set>

#include "florence/adapt/video/configs.h"
#include "florence/adapt/video/retrieval.h"
#include "florence/core/checkpoint.h"
#include "florence/core/device.h"
#include "florence/core/error.h"
#include "florence/core/files.h"
#include "florence/core/precision.h"
#include "florence/data/video.h"
#include "florence/loss/unicl.h"
#include "florence/model/io.h"
#include "florence/model/registry.h"
#include "florence/model/run_artifacts.h"
#include "florence/text/tokenizer.h"
#include "florence/train/seeding.h"

namespace florence::video {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// ---------------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------------

VideoTextModelImpl::VideoTextModelImpl(const vision::VideoSwinConfig& video, const model::FlorenceConfig& two_tower)
    : video_(video), cfg_(two_tower) {
  cfg_.validate();
  if (video_.num_classes != 0) throw Error("VideoTextModel: the video config has a classification head");
  image_encoder = register_module("image_encoder", vision::VideoSwinTransformer(video_));
  text_encoder = register_module("text_encoder", text::TextTransformer(cfg_.text));
  // As FlorenceModel (UniCL's trunc_normal(std 0.02) projections, logit scale log(1/0.07)).
  image_projection = register_parameter(
      "image_projection",
      torch::empty({video_.image.num_features(), cfg_.embed_dim}).normal_(0.0, 0.02).clamp_(-0.04, 0.04));
  text_projection = register_parameter(
      "text_projection", torch::empty({cfg_.text.width, cfg_.embed_dim}).normal_(0.0, 0.02).clamp_(-0.04, 0.04));
  logit_scale = register_parameter("logit_scale", torch::full({}, cfg_.logit_scale_init));
}

namespace {
torch::Tensor unit_rows(torch::Tensor f) {
  if (f.scalar_type() != torch::kFloat && f.scalar_type() != torch::kDouble) f = f.to(torch::kFloat);
  return torch::nn::functional::normalize(f, torch::nn::functional::NormalizeFuncOptions().dim(-1));
}
}  // namespace

torch::Tensor VideoTextModelImpl::encode_video(const torch::Tensor& clips) {
  return unit_rows(torch::matmul(image_encoder(clips), image_projection));
}

torch::Tensor VideoTextModelImpl::encode_text(const torch::Tensor& ids) {
  return unit_rows(torch::matmul(text_encoder->forward(ids), text_projection));
}

torch::Tensor VideoTextModelImpl::temperature() const { return logit_scale.exp().clamp_max(cfg_.logit_scale_max); }

void VideoTextModelImpl::load_from(model::FlorenceModel& florence) {
  vision::load_inflated(image_encoder, core::state_dict(*florence->image_encoder));
  core::load_state_dict(*text_encoder, core::state_dict(*florence->text_encoder));
  torch::NoGradGuard ng;
  auto copy = [](torch::Tensor& dst, const torch::Tensor& src, const char* name) {
    if (dst.sizes() != src.sizes())
      throw Error(fmt::format("VideoTextModel::load_from: {} has shape {} in the checkpoint, {} here", name,
                              fmt::format("{}", src.sizes()), fmt::format("{}", dst.sizes())));
    dst.copy_(src.detach().to(dst.device(), dst.scalar_type()));
  };
  copy(image_projection, florence->image_projection, "image_projection");
  copy(text_projection, florence->text_projection, "text_projection");
  copy(logit_scale, florence->logit_scale, "logit_scale");
}

// ---------------------------------------------------------------------------------------------
// Loading a trained checkpoint
// ---------------------------------------------------------------------------------------------

bool is_video_text_checkpoint(const std::string& checkpoint) {
  std::error_code ec;
  const std::string side = model::sidecar_path(checkpoint);
  if (!fs::is_regular_file(side, ec)) return false;
  const nlohmann::json j = nlohmann::json::parse(core::read_text_file(side), nullptr, false);
  return sidecar_is_video_text(j, side);
}

LoadedVideoText load_video_text(const std::string& checkpoint, const torch::Device& device, const std::string& vocab) {
  std::error_code ec;
  if (!fs::is_regular_file(checkpoint, ec)) throw Error(fmt::format("checkpoint '{}' is not a file", checkpoint));
  const std::string side_path = model::sidecar_path(checkpoint);
  if (!fs::is_regular_file(side_path, ec)) throw Error(fmt::format("'{}' has no sidecar '{}'", checkpoint, side_path));
  const nlohmann::json side = core::read_json_file(side_path);
  if (!sidecar_is_video_text(side, side_path) || !side.contains("video") || !side.contains("model"))
    throw Error(fmt::format("'{}' is not a `video train --task retrieval` checkpoint", side_path));
  LoadedVideoText r;
  vision::VideoSwinConfig vc;
  try {
    r.input = InputSpec::from_json(side["video"]);
    vc = vision::VideoSwinConfig::from_json(side["video"].at("config"));
    vc.validate();
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("bad \"video\" entry in '{}': {}", side_path, e.what()));
  }
  validate_input_spec(r.input, fmt::format("the \"video\" entry of '{}'", side_path));
  const model::ModelSpec spec = model::spec_from_json(side["model"], side_path);
  if (!spec.florence) throw Error(fmt::format("'{}': the \"model\" entry is not a two-tower config", side_path));
  const model::RunArtifacts art = model::find_run_artifacts(checkpoint, vocab);
  if (art.vocab.empty())
    throw Error(fmt::format("'{}': no vocabulary found{}; pass --vocab FILE", checkpoint,
                            art.vocab_problem.empty() ? std::string() : " (" + art.vocab_problem + ")"));
  r.vocab = art.vocab;
  r.tokenizer = std::make_shared<text::Tokenizer>(text::Tokenizer::from_file(art.vocab));
  r.model = VideoTextModel(vc, *spec.florence);
  core::load_state_dict(*r.model, model::read_weights(checkpoint, model::ModelSpec{}));
  r.model->to(device);
  r.model->eval();
  return r;
}

// ---------------------------------------------------------------------------------------------
// The task
// ---------------------------------------------------------------------------------------------

nlohmann::json rank_clips(VideoTextModel& net, const text::Tokenizer& tok, const std::vector<ActionClip>& clips,
                          const InputSpec& in, int num_clips, int num_crops, const torch::Device& device,
                          data::SkipCounts& skipped) {
  const bool was_training = net->is_training();
  net->eval();
  torch::NoGradGuard ng;
  const int64_t V = int64_t(num_clips) * num_crops;
  std::vector<torch::Tensor> rows;
  std::vector<std::string> row_captions;
  for_each_view_group(clips, in, num_clips, num_crops, skipped,
                      [&](const torch::Tensor& views, const std::vector<size_t>& idx) {
                        torch::Tensor e = net->encode_video(views.to(device)).to(torch::kCPU, torch::kFloat);
                        rows.push_back(unit_rows(e.view({int64_t(idx.size()), V, -1}).mean(1)));
                        for (size_t i : idx) row_captions.push_back(clips[i].caption);
                      });
  if (rows.empty()) {
    if (was_training) net->train();
    throw Error(fmt::format("video-text: none of the {} clips could be read (see the log)", clips.size()));
  }
  const std::vector<std::string> captions = distinct_captions(row_captions);
  std::vector<torch::Tensor> text;
  const int ctx = net->config().text.context_length;
  for (size_t s = 0; s < captions.size(); s += 256) {
    const std::vector<std::string> part(captions.begin() + long(s),
                                        captions.begin() + long(std::min(captions.size(), s + 256)));
    text.push_back(net->encode_text(tok.tokenize(part, ctx).to(device)).to(torch::kCPU, torch::kFloat));
  }
  if (was_training) net->train();
  return caption_retrieval(torch::cat(rows, 0), row_captions, torch::cat(text, 0), captions);
}

namespace {

constexpr uint64_t kTagSubset = 51, kTagOrder = 52, kTagClip = 53;

class VideoTextTask : public train::TrainTask {
 public:
  explicit VideoTextTask(const VideoTrainOptions& o) : o_(o) {}
  std::string name() const override { return "video-text training"; }
  const train::RunOptions& options() const override { return o_; }
  nlohmann::json options_json() const override { return o_.to_json(); }
  void validate() override;
  int64_t setup(const train::RunContext& ctx) override;
  torch::nn::Module& module() override { return *net_; }
  const model::ModelSpec& spec() const override { return spec_; }
  std::string plan() const override {
    return fmt::format("video-text (UniCL on captions): {} input, {} frames of {} px, video tower from {}", o_.input,
                       in_.model_frames(), in_.image_size, video_init_desc());
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
  void write_files() override;
  nlohmann::json final_extra() const override {
    nlohmann::json e = checkpoint_extra();
    e["init"] = init_desc();
    e["vocab"] = fs::absolute(ctx_.run_dir / vocab_name()).string();
    return e;
  }
  void finish(train::RunResult& run) override;

 private:
  bool pretrained() const { return !o_.random_init; }
  std::string init_desc() const {
    return pretrained() ? o_.checkpoint : fmt::format("random init ({}, seed {})", init_spec_.name, o_.seed);
  }
  std::string video_init_desc() const {
    if (!o_.video_init.empty()) return o_.video_init + " (its video tower)";
    return pretrained() ? o_.checkpoint + " (inflated)" : "random init";
  }
  std::string vocab_name() const { return fs::path(vocab_).extension() == ".gz" ? "vocab.bpe.gz" : "vocab.bpe"; }
  void setup_data();
  void setup_model();

  VideoTrainOptions o_;
  train::RunContext ctx_;
  model::ModelSpec init_spec_, spec_;
  vision::VideoSwinConfig cfg_;
  VideoTextModel net_{nullptr};
  std::shared_ptr<text::Tokenizer> tok_;
  std::string vocab_;
  InputSpec in_;
  std::unique_ptr<data::ImageTransform> train_tf_;
  std::vector<ActionClip> train_, val_, test_;
  nlohmann::json data_summary_;
  int64_t steps_per_epoch_ = 0, total_ = 0;
  ClipBatches batches_{kTagOrder, kTagClip};
  torch::Tensor batch_x_;
  std::vector<std::string> batch_captions_;
  double last_val_ = -1;
};

void VideoTextTask::validate() {
  o_.validate_run(true);
  validate_clip_options(o_);
  if (o_.task != "retrieval") throw Error(fmt::format("video train: the video-text task got --task '{}'", o_.task));
  if (o_.checkpoint.empty())
    throw Error("video train --task retrieval: --checkpoint (a two-tower Florence checkpoint: its text tower and "
                "vocabulary) is required");
  if (o_.freeze_tower) throw Error("--freeze-tower is for --task actions (a linear probe)");
  if (o_.label_smoothing != VideoTrainOptions{}.label_smoothing)
    throw Error("--label-smoothing is for --task actions (the contrastive loss has no label smoothing)");
  if (o_.batch_size < 2)
    throw Error(fmt::format("--task retrieval needs --batch-size >= 2 (in-batch negatives), got {}", o_.batch_size));
  std::error_code ec;
  for (const auto& [flag, path] : {std::pair{"--checkpoint", o_.checkpoint}, std::pair{"--video-init", o_.video_init}}) {
    if (path.empty()) continue;
    if (!fs::exists(path, ec)) throw Error(fmt::format("{} '{}' does not exist", flag, path));
    if (fs::is_directory(path, ec))
      throw Error(fmt::format("{} '{}' is a directory; pass the weights file (e.g. {})", flag, path,
                              (fs::path(path) / "model.safetensors").string()));
  }
  if (o_.resume.empty() && is_video_text_checkpoint(o_.checkpoint))
    throw Error(fmt::format("--checkpoint '{}' is a video-text model already: continue its run with --resume RUN_DIR, "
                            "or start from it with --video-init (its video tower) and the two-tower --checkpoint it "
                            "came from",
                            o_.checkpoint));
}

void VideoTextTask::setup_data() {
  nlohmann::json skipped;
  // A split's clips with a caption; the manifest's skips and the uncaptioned clips counted.
  auto read = [&](const std::string& split) {
    ActionSplit s = read_action_split(o_.data, split);
    std::vector<ActionClip> c = captioned_clips(std::move(s.clips), s.skipped, "video train: split '" + split + "'");
    skipped[split] = s.skipped;
    return c;
  };
  train_ = subset(read(o_.train_split), o_.max_train_clips, train::seed_mix({kTagSubset, o_.seed, 0}));
  const uint64_t s_eval = train::seed_mix({kTagSubset, o_.seed, 1});
  if (!o_.val_split.empty()) val_ = subset(read(o_.val_split), o_.max_eval_clips, s_eval);
  if (!o_.test_split.empty()) test_ = subset(read(o_.test_split), o_.max_eval_clips, s_eval);
  if (train_.empty()) throw Error(fmt::format("video train: split '{}' of '{}' has no captioned clip", o_.train_split, o_.data));
  steps_per_epoch_ = int64_t(train_.size()) / o_.batch_size;
  if (steps_per_epoch_ == 0)
    throw Error(fmt::format("video train: {} training clips do not fill one batch of {}", train_.size(), o_.batch_size));
  total_ = o_.steps > 0 ? o_.steps : o_.epochs * steps_per_epoch_;
  data_summary_ = {{"train", train_.size()}, {"val", val_.size()}, {"test", test_.size()}, {"manifest_skipped", skipped}};
  spdlog::info("video train (retrieval): {} captioned train clips ({} batches of {} per epoch), {} val, {} test",
               train_.size(), steps_per_epoch_, o_.batch_size, val_.size(), test_.size());
}

void VideoTextTask::setup_model() {
  init_spec_ = model::resolve_spec(o_.model, o_.checkpoint);
  if (!init_spec_.florence)
    throw Error(fmt::format("video train --task retrieval: '{}' is not a two-tower (Florence) model", init_spec_.name));
  model::FlorenceConfig fc = *init_spec_.florence;
  if (fc.vision.variant != "coswin")
    throw Error(fmt::format("video train: the image tower of '{}' is '{}', not a CoSwin tower", init_spec_.name,
                            fc.vision.variant));
  const model::RunArtifacts art = model::find_run_artifacts(o_.checkpoint, o_.vocab);
  if (art.vocab.empty())
    throw Error(fmt::format("video train --task retrieval: no vocabulary found for '{}'{}; pass --vocab FILE",
                            o_.checkpoint, art.vocab_problem.empty() ? std::string() : " (" + art.vocab_problem + ")"));
  vocab_ = fs::absolute(art.vocab).string();
  tok_ = std::make_shared<text::Tokenizer>(text::Tokenizer::from_file(vocab_));
  if (tok_->vocab_size() > fc.text.vocab_size)
    throw Error(fmt::format("vocabulary '{}' has {} tokens but the text tower only {}", vocab_, tok_->vocab_size(),
                            fc.text.vocab_size));
  in_ = input_spec(o_, art.preprocess, fc.vision.image_size);

  vision::SwinConfig tower = fc.vision;
  tower.num_classes = 0;
  cfg_ = with_image_tower(resolve_video_config(o_.video_config), tower);
  in_.tube = cfg_.tube;
  cfg_.num_frames = in_.model_frames();
  cfg_.num_classes = 0;
  if (in_.model_frames() < cfg_.tube)
    throw Error(fmt::format("--frames {} is fewer than the tokenizer's tube of {} frames", in_.model_frames(), cfg_.tube));

  train::seed_model_init(o_.seed);
  net_ = VideoTextModel(cfg_, fc);
  if (o_.resume.empty()) {
    if (pretrained()) {
      model::FlorenceModel two(fc);
      core::load_state_dict(*two, model::read_weights(o_.checkpoint, init_spec_));
      try {
        net_->load_from(two);
      } catch (const Error& e) {
        throw Error(fmt::format("loading '{}' into the video-text model: {}", o_.checkpoint, e.what()));
      }
      spdlog::info("video train: towers of {} (image tower inflated to {} frames)", o_.checkpoint, cfg_.num_frames);
    }
    if (!o_.video_init.empty()) {
      // The tower of an action model: its config's tower must be this one (same image tower and video fields).
      const std::string side_path = model::sidecar_path(o_.video_init);
      std::error_code ec;
      if (!fs::is_regular_file(side_path, ec))
        throw Error(fmt::format("--video-init '{}' has no sidecar '{}' (a `video train` checkpoint has one)",
                                o_.video_init, side_path));
      const nlohmann::json side = core::read_json_file(side_path);
      if (!side.contains("video") || !side["video"].contains("config"))
        throw Error(fmt::format("--video-init '{}' is not a `video train` action checkpoint (no \"video\" entry)",
                                o_.video_init));
      vision::VideoSwinConfig theirs = vision::VideoSwinConfig::from_json(side["video"]["config"]);
      theirs.num_classes = 0;
      theirs.num_frames = cfg_.num_frames;
      if (theirs.to_json() != cfg_.to_json())
        throw Error(fmt::format("--video-init '{}': its Video CoSwin config {} differs from this run's {}", o_.video_init,
                                theirs.to_json().dump(), cfg_.to_json().dump()));
      // An action model's tower is the whole file less its head; a video-text model's is image_encoder.*.
      const bool vt = sidecar_is_video_text(side, side_path);
      const std::string prefix = vt ? "image_encoder." : "";
      core::TensorMap w;
      for (auto& [k, t] : model::read_weights(o_.video_init, model::ModelSpec{}))
        if (k.rfind(prefix, 0) == 0 && k.rfind("head.", 0) != 0) w[k.substr(prefix.size())] = t;
      try {
        core::load_state_dict(*net_->image_encoder, w);
      } catch (const Error& e) {
        throw Error(fmt::format("--video-init '{}': {}", o_.video_init, e.what()));
      }
      // The weights do not depend on the clip length, but a tower trained on other input may transfer worse.
      const nlohmann::json& v = side["video"];
      if (v.value("frames", nlohmann::json()) != nlohmann::json(in_.frames) ||
          v.value("input", nlohmann::json()) != nlohmann::json(in_.input))
        spdlog::warn("--video-init '{}' was trained with --input {} --frames {}; this run uses --input {} --frames {}",
                     o_.video_init, v.value("input", nlohmann::json()).dump(), v.value("frames", nlohmann::json()).dump(),
                     in_.input, in_.frames);
      spdlog::info("video train: video tower from {}", o_.video_init);
    }
  }
  net_->to(ctx_.device);
  net_->train();

  spec_ = init_spec_;
  spec_.name = init_spec_.name + "-video-text";
  train_tf_ = std::make_unique<data::ImageTransform>(in_.transform(o_.augment == "crop"));
}

int64_t VideoTextTask::setup(const train::RunContext& ctx) {
  ctx_ = ctx;
  setup_data();
  setup_model();
  return total_;
}

void VideoTextTask::open_epoch(const train::Position& pos) {
  batches_.open(train_.size(), o_.seed, pos, o_.batch_size);
}

bool VideoTextTask::next_batch(const train::Position&) {
  std::vector<size_t> read;
  if (!batches_.next(train_, in_, *train_tf_, batch_x_, read)) return false;
  batch_captions_.clear();
  for (size_t i : read) batch_captions_.push_back(train_[i].caption);
  return true;
}

train::StepOutput VideoTextTask::step(const train::Position& pos) {
  train::StepOutput out;
  out.samples = batch_x_.size(0);
  // Identical captions are positives of each other (UniCL's target).
  std::map<std::string, int64_t> id;
  std::vector<int64_t> labels;
  for (const auto& c : batch_captions_) labels.push_back(id.emplace(c, int64_t(id.size())).first->second);
  const torch::Tensor ids = tok_->tokenize(batch_captions_, net_->config().text.context_length).to(ctx_.device);
  torch::Tensor u = net_->encode_video(batch_x_.to(ctx_.device));
  torch::Tensor v = net_->encode_text(ids);
  NoAutocastGuard fp32_loss;  // --precision amp_bf16: the loss in float32
  const torch::Tensor tau = net_->temperature().to(torch::kFloat);
  torch::Tensor l = loss::unicl_loss(u.to(torch::kFloat), v.to(torch::kFloat), torch::tensor(labels, torch::kLong).to(ctx_.device),
                                     tau);
  out.loss = l.item<double>();
  if (std::isfinite(out.loss)) l.backward();
  const double t = tau.item<double>();
  out.metrics["tau"] = t;
  out.extra = fmt::format("tau {:.1f}", t);
  return out;
}

void VideoTextTask::after_step(const train::Position& pos, nlohmann::json& metrics) {
  // At the end of each pass over the clips (an unreadable clip can end it before steps_per_epoch_).
  if (val_.empty() || (!batches_.epoch_done() && pos.step != total_)) return;
  data::SkipCounts skipped;
  const nlohmann::json r = rank_clips(net_, *tok_, val_, in_, 1, 1, ctx_.device, skipped);
  last_val_ = r["t2v"]["R@1"].get<double>();
  metrics["val_t2v_r1"] = last_val_;
  spdlog::info("step {} (epoch {} end): val text->video R@1 {:.2f} % (chance {:.2f} %)", pos.step, pos.epoch,
               100 * last_val_, 100 * r["t2v"]["chance"]["R@1"].get<double>());
}

nlohmann::json VideoTextTask::config() const {
  return {{"kind", "video-text"},
          {"init", init_desc()},
          {"video_init", video_init_desc()},
          {"steps_per_epoch", steps_per_epoch_},
          {"video", checkpoint_extra()["video"]},
          {"data", data_summary_}};
}

nlohmann::json VideoTextTask::checkpoint_extra() const {
  nlohmann::json v = in_.to_json();
  v["config"] = cfg_.to_json();
  return {{"video", v}, {"video_text", true}, {"preprocess", in_.preprocess_json()}, {"vocab", vocab_}};
}

void VideoTextTask::check_resume(const nlohmann::json& side, const std::string& ckpt) {
  if (!sidecar_is_video_text(side, ckpt))
    throw Error(fmt::format("'{}' is not a `video train --task retrieval` checkpoint", ckpt));
  check_resume_input(side, in_, ckpt);
  batches_.restore(train::DataCursor::from_sidecar(side, ckpt));
}

void VideoTextTask::write_files() {
  const fs::path dst = ctx_.run_dir / vocab_name();
  std::error_code ec;
  if (!fs::exists(dst, ec) || !fs::equivalent(dst, vocab_, ec)) core::write_text_atomic(dst, core::read_text_file(vocab_));
}

void VideoTextTask::finish(train::RunResult& run) {
  std::string set = fs::path(o_.data).lexically_normal().filename().string();
  if (set.empty()) set = fs::path(o_.data).lexically_normal().parent_path().filename().string();
  nlohmann::json r = {{"task", "video-text"},
                      {"set", set},
                      {"init", init_desc()},
                      {"video_init", video_init_desc()},
                      {"input", o_.input},
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
  if (last_val_ >= 0) r["val_t2v_r1"] = last_val_;
  if (!test_.empty()) {
    data::SkipCounts skipped;
    r["test"] = rank_clips(net_, *tok_, test_, in_, o_.test_clips, o_.test_crops, ctx_.device, skipped);
    r["views"] = {{"clips", o_.test_clips}, {"crops", o_.test_crops}, {"average", "L2-normalised embeddings"}};
    r["test_skipped"] = skipped;
    const auto& t = r["test"]["t2v"];
    spdlog::info("video train: test text->video R@1 {:.2f} % (chance {:.2f} %), R@10 {:.2f} %, median rank {}",
                 100 * t["R@1"].get<double>(), 100 * t["chance"]["R@1"].get<double>(), 100 * t["R@10"].get<double>(),
                 t["median_rank"].dump());
  } else {
    spdlog::warn("video train: no test split: no test metrics");
  }
  r["seconds"] = std::chrono::duration<double>(Clock::now() - ctx_.start).count();
  run.result = r;
  if (ctx_.writer) core::write_text_atomic(ctx_.run_dir / "result.json", r.dump(2) + "\n");
}

}  // namespace

train::RunResult train_video_text(const VideoTrainOptions& options) {
  VideoTextTask task(options);
  return train::run_task(task);
}

}  // namespace florence::video
