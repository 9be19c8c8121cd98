#pragma once
// `florence video train|eval`: action recognition with Video CoSwin on an action set
// (action_set.h), as a task on the shared run layer (train/run.h).
//
//   * model: vision::VideoSwinTransformer with a linear `head` [C_last -> classes] on the pooled
//     clip feature. Initial weights: the image tower of a Florence (or bare CoSwin) checkpoint
//     inflated to 3D (vision::load_inflated: conv kernels repeated along time / kt, bias tables
//     copied along time), the head freshly initialised; without a checkpoint (or with
//     --random-init) a seeded random init of the config (the no-pretraining baseline). The video
//     fields (tube, merging, windows) come from --video-config (configs.h), applied to the
//     checkpoint's tower with with_image_tower;
//   * input (--input): "video": `frames` frames uniformly sampled over the clip (data/video.h,
//     segment centres; a train clip draws its offset inside each segment); "single-frame": one frame
//     sampled the same way with frames = 1 (training: a random frame; test: one frame per temporal
//     view, e.g. frames 4 and 12 of 16 for two views) repeated `tube` times (one temporal token), which the inflated tower
//     maps to exactly the image tower's feature of that frame: the single-frame baseline of the
//     same tower (it cannot tell left from right);
//   * --freeze-tower: only the head is trained (a linear probe of the inflated tower: the
//     "inflated model without video training" baseline);
//   * loss: label-smoothed cross entropy (train/finetune.h smoothed_cross_entropy);
//   * augmentation (--augment): "none" (resize + centre crop, crop_pct 1) or "crop" (one
//     RandomResizedCrop box per clip, area U(0.5, 1), aspect U(3/4, 4/3)). Never a horizontal
//     flip: it would turn move_left into move_right and rotate_cw into rotate_ccw;
//   * evaluation: top-1 / top-5 / per class (eval::ClassificationMetrics) on the test split with
//     multi-view testing (--test-clips temporal clips x --test-crops spatial crops, logits
//     averaged: video_model.h average_views); val top-1 (one view) at every epoch end
//     (metrics.jsonl "val_top1").
//
// Run folder as every task's (train/run.h); the final sidecar RUN/model.json holds "video"
// {"config": VideoSwinConfig JSON, "classes", "preprocess", "input", "frames"} so `florence video
// eval` rebuilds the model from the weights file alone.
#include <torch/types.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "florence/data/readers.h"
#include "florence/train/options.h"
#include "florence/train/run.h"

namespace florence::video {

/// One labelled clip of an action set.
struct ActionClip {
  std::string path;     ///< absolute path of the video file
  int64_t label = 0;    ///< index into the set's classes
  std::string action;   ///< class name
  std::string caption;  ///< "a red car moves to the left"
};

/// One split of an action set.
struct ActionSplit {
  std::vector<std::string> classes;  ///< ROOT/classes.txt, label order
  std::vector<ActionClip> clips;     ///< manifest order
  data::SkipCounts skipped;          ///< manifest lines dropped, by reason ("bad_json", "bad_label", "missing_file")
};

/// Reads ROOT/classes.txt and ROOT/<split>.jsonl (action_set.h layout). A line that is not a JSON
/// object with "path" and an in-range integer "label", or whose file is missing, is skipped,
/// counted and logged. Throws florence::Error when classes.txt or the split file is missing or
/// unreadable, or classes.txt has fewer than 2 classes.
ActionSplit read_action_split(const std::string& root, const std::string& split);

/// Options of `florence video train`: the engine's (train::RunOptions, with these defaults:
/// batch 16, lr 3e-4 (1e-3 stayed at chance on the action set: docs/video.md), min lr 1e-6, AdamW
/// betas (0.9, 0.999), eps 1e-8, clip 5, weight decay 0.05, checkpoints at the end only, 2 kept)
/// plus the fields below.
struct VideoTrainOptions : train::TaskOptions<VideoTrainOptions> {
  std::string data;               ///< action set root (action_set.h layout)
  std::string task = "actions";   ///< "actions" (a classification head) | "retrieval" (video-text contrastive: video_text.h)
  std::string checkpoint;         ///< initial weights: a Florence or CoSwin checkpoint; empty = random init
  bool random_init = false;       ///< random weights for the checkpoint's config (its preprocessing kept)
  std::string model;              ///< model name / JSON; empty = the checkpoint's own spec
  std::string video_config = "video-nano";  ///< video fields (configs.h name or JSON)
  std::string input = "video";    ///< "video" | "single-frame"
  int frames = 8;                 ///< frames per clip (input "video")
  bool freeze_tower = false;      ///< train the head only (linear probe)
  std::string video_init;         ///< --task retrieval: a `video train` checkpoint whose tower starts the video side
  std::string vocab;              ///< --task retrieval: BPE vocabulary ("" = the checkpoint's)
  double label_smoothing = 0.1;
  std::string augment = "none";   ///< "none" | "crop"
  int test_clips = 2;             ///< temporal views at test time
  int test_crops = 1;             ///< spatial views at test time
  std::string train_split = "train", val_split = "val", test_split = "test";  ///< "" = none (val / test)
  int64_t max_train_clips = 0;    ///< seeded random subset of train (0 = all)
  int64_t max_eval_clips = 0;     ///< seeded random subset of val / test (0 = all)

  VideoTrainOptions() {
    batch_size = 16;
    lr = 3e-4;
    min_lr = 1e-6;
    beta2 = 0.999;
    adam_eps = 1e-8;
    grad_clip = 5.0;
    ckpt_every = 0;
    keep_checkpoints = 2;
  }

 public:
  static constexpr const char* kWhat = "video train options";  ///< names the struct in from_json errors

 private:
  friend struct train::TaskOptions<VideoTrainOptions>;
  template <class S, class F>
  static void visit_fields(S& s, F& f) {
    using train::Field;
    f(Field{"data", "--data", "Action set root (florence data build actions)"}, s.data);
    f(Field{"task", "--task", "actions (a classification head) | retrieval (video-text contrastive on the captions)"},
      s.task);
    f(Field{"checkpoint", "--checkpoint",
            "Initial weights: a Florence / CoSwin checkpoint whose image tower is inflated (--task retrieval: a "
            "two-tower Florence checkpoint with its vocabulary)"},
      s.checkpoint);
    f(Field{"random_init", "--random-init", "Random weights for the --checkpoint's config (baseline)"}, s.random_init);
    f(Field{"model", "--model", "Model config (name / JSON); without --checkpoint: random init"}, s.model);
    f(Field{"video_config", "--video-config", "Video fields: video-nano, video-coswin-h or a JSON file"}, s.video_config);
    f(Field{"input", "--input", "video | single-frame (one frame per view, repeated: the image-tower baseline)"}, s.input);
    f(Field{"frames", "--frames", "Frames per clip (uniform sampling)", Field::kPositive}, s.frames);
    f(Field{"freeze_tower", "--freeze-tower", "Train the head only (linear probe of the inflated tower)"},
      s.freeze_tower);
    f(Field{"video_init", "--video-init",
            "--task retrieval: start the video tower from this `video train` checkpoint (either task)"},
      s.video_init);
    f(Field{"vocab", "--vocab", "--task retrieval: the BPE vocabulary (default: the checkpoint's)"}, s.vocab);
    f(Field{"label_smoothing", "--label-smoothing", "Label smoothing epsilon (--task actions)", Field::kProbability},
      s.label_smoothing);
    f(Field{"augment", "--augment", "none | crop (one random resized crop per clip; never a flip)"}, s.augment);
    f(Field{"test_clips", "--test-clips", "Temporal views averaged at test time", Field::kPositive}, s.test_clips);
    f(Field{"test_crops", "--test-crops", "Spatial views averaged at test time", Field::kPositive}, s.test_crops);
    f(Field{"train_split", "--train-split", "Training split"}, s.train_split);
    f(Field{"val_split", "--val-split", "Validation split ('' = none)"}, s.val_split);
    f(Field{"test_split", "--test-split", "Test split ('' = none)"}, s.test_split);
    f(Field{"max_train_clips", "--max-train-clips", "Seeded random subset of train (0 = all)", Field::kNonNegative},
      s.max_train_clips);
    f(Field{"max_eval_clips", "--max-eval-clips", "Seeded random subset of val / test (0 = all)", Field::kNonNegative},
      s.max_eval_clips);
  }
};

/// Runs (or resumes) action-recognition training. RunResult::result: {"task": "video-actions",
/// "set", "init", "input", "model", "weights", "num_train", "steps", "epochs", "train_loss",
/// "val_top1", "metrics" (test: eval::ClassificationMetrics JSON with class names), "views",
/// "data", "options", "seconds"}, also written to RUN/result.json. Throws florence::Error for bad
/// options (naming the flag), unreadable data or checkpoints, fewer training clips than one
/// batch, no readable test clip, or a non-finite loss (the engine's guard).
train::RunResult train_actions(const VideoTrainOptions& options);

/// The options a video training run was started with (RUN_DIR/config.json or a checkpoint sidecar).
VideoTrainOptions load_video_train_options(const std::string& run_dir_or_checkpoint);

/// `florence video eval`: a trained action model on one split.
struct VideoEvalOptions {
  std::string checkpoint;  ///< RUN/model.safetensors (or a checkpoint) of `florence video train`
  std::string data;        ///< action set root
  std::string split = "test";
  int clips = 2, crops = 1;      ///< multi-view testing
  int64_t max_clips = 0;         ///< first N clips of the split (0 = all)
  std::string device = "cpu";
  std::string precision = "fp32";  ///< fp32 | amp_bf16 (florence::adapter_autocast)
};

/// Top-1 / top-5 with multi-view testing. Returns {"task": "video-actions-eval", "checkpoint",
/// "split", "views", "input", "metrics" (eval::ClassificationMetrics JSON), "skipped", "seconds"}.
/// Unreadable clips are skipped and counted. Throws florence::Error for a checkpoint without the
/// "video" sidecar entry, classes that differ from the set's, or no readable clip.
nlohmann::json evaluate_actions(const VideoEvalOptions& options);

}  // namespace florence::video
