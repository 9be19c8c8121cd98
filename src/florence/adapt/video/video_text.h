#pragma once
// `florence video train --task retrieval`: video-text contrastive training (UniCL, Florence §2.1,
// with clips in place of images) on an action set's captions, as a task on the shared run layer
// (train/run.h), and the model it trains.
//
//   * model: VideoTextModel below: Video CoSwin inflated from a two-tower checkpoint's image tower
//     (or, with --video-init, the tower of a `video train` checkpoint of either task) with the checkpoint's
//     image projection, and the checkpoint's text tower, text projection and temperature;
//     --random-init: the same config with random weights (the vocabulary kept);
//   * batch: B training clips (clip_input.h: frames, jitter, --augment) and their captions; clips
//     whose captions are identical are positives of each other (the UniCL target);
//   * loss: loss::unicl_loss (L_v2t + L_t2v) in float32 (also under --precision amp_bf16);
//   * evaluation: text-to-video and video-to-text R@1/5/10 (retrieval.h caption_retrieval): the
//     val split with one view at every epoch end (metrics.jsonl "val_t2v_r1"), the test split with
//     --test-clips x --test-crops views averaged at the end (RUN/result.json).
//
// The final RUN/model.safetensors holds the model's state dict (names as FlorenceModel's, with
// the 3D tower under image_encoder.*); its sidecar holds "model" (the two-tower spec), "video"
// (the Video CoSwin config and the input), "video_text": true, "preprocess" and "vocab" (RUN/vocab.bpe,
// a copy), so `florence video retrieval --checkpoint RUN/model.safetensors` ranks with it.
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <vector>

#include "florence/adapt/video/action_train.h"
#include "florence/adapt/video/clip_input.h"
#include "florence/model/florence.h"
#include "florence/text/text_transformer.h"
#include "florence/vision/video_swin.h"

namespace florence::text {
class Tokenizer;
}

namespace florence::video {

/// Video tower + text tower in one joint space. Parameter names mirror model::FlorenceModel
/// (image_encoder, text_encoder, image_projection [C_last, D], text_projection [W, D], logit_scale).
class VideoTextModelImpl : public torch::nn::Module {
 public:
  /// video.num_classes must be 0. Throws florence::Error for invalid configs.
  VideoTextModelImpl(const vision::VideoSwinConfig& video, const model::FlorenceConfig& two_tower);
  /// clips [B, 3, T, H, W] normalised frames -> [B, D] float32 L2-normalised embeddings.
  torch::Tensor encode_video(const torch::Tensor& clips);
  /// ids [M, L] int64 token ids -> [M, D] float32 L2-normalised embeddings.
  torch::Tensor encode_text(const torch::Tensor& ids);
  /// exp(logit_scale) clamped at logit_scale_max (0-d).
  torch::Tensor temperature() const;
  /// Copies a two-tower model's weights: its image tower inflated (vision::load_inflated), its
  /// projections, text tower and logit scale as they are. Throws florence::Error when a shape
  /// does not fit.
  void load_from(model::FlorenceModel& florence);

  const vision::VideoSwinConfig& video_config() const { return video_; }
  const model::FlorenceConfig& config() const { return cfg_; }

  vision::VideoSwinTransformer image_encoder{nullptr};
  text::TextTransformer text_encoder{nullptr};
  torch::Tensor image_projection, text_projection, logit_scale;

 private:
  vision::VideoSwinConfig video_;
  model::FlorenceConfig cfg_;
};
TORCH_MODULE(VideoTextModel);

/// A trained video-text checkpoint, loaded for evaluation (eval mode, on `device`).
struct LoadedVideoText {
  VideoTextModel model{nullptr};
  std::shared_ptr<const text::Tokenizer> tokenizer;
  InputSpec input;
  std::string vocab;
};

/// True when `checkpoint`'s sidecar says it was written by `video train --task retrieval`.
bool is_video_text_checkpoint(const std::string& checkpoint);

/// Loads a `video train --task retrieval` checkpoint. Throws florence::Error for a missing or
/// foreign sidecar, a missing vocabulary, or weights that do not fit (strict load).
/// `vocab` overrides the vocabulary (else the sidecar's, else RUN/vocab.bpe[.gz]).
LoadedVideoText load_video_text(const std::string& checkpoint, const torch::Device& device,
                                const std::string& vocab = "");

/// Text-to-video / video-to-text retrieval of `clips` against their distinct captions: each clip's
/// views (clips x crops, clip_input.h) embedded, averaged and re-normalised; the captions through
/// the text tower; then caption_retrieval (retrieval.h). Unreadable clips are skipped and counted
/// in `skipped`. Leaves the model in the train / eval mode it was in. Throws florence::Error when
/// no clip can be read.
nlohmann::json rank_clips(VideoTextModel& net, const text::Tokenizer& tok, const std::vector<ActionClip>& clips,
                          const InputSpec& in, int num_clips, int num_crops, const torch::Device& device,
                          data::SkipCounts& skipped);

/// Runs (or resumes) video-text contrastive training (options.task == "retrieval"; the options
/// that only classification uses, --label-smoothing and --freeze-tower, are refused or ignored as
/// documented in `florence video train --help`). RunResult::result: {"task": "video-text", "set",
/// "init", "video_init", "input", "precision", "model", "weights", "num_train", "steps", "epochs",
/// "train_loss", "val_t2v_r1", "test": {caption_retrieval JSON}, "views", "options", "data",
/// "seconds"}, also RUN/result.json. Throws florence::Error for bad options, a checkpoint without a
/// text tower or vocabulary, a split without captions, or what the engine throws.
train::RunResult train_video_text(const VideoTrainOptions& options);

}  // namespace florence::video
