#pragma once
// `florence detect train`: the Florence object-level adapter (CoSwin -> FPN -> DyHead -> ATSS,
// detector.h) trained on a COCO-format set as a task on the shared run layer (train/run.h).
//
//   * model: the named detector config (detector_config.h; default dyhead-nano) with its backbone
//     replaced by the --checkpoint's image tower config and weights (a florence pretraining run's
//     model.safetensors, or a bare tower); without --checkpoint a seeded random init (the
//     no-pretraining baseline). --freeze-backbone trains FPN + head only; --backbone-lr-scale
//     multiplies the backbone's learning rate;
//   * data: ROOT/annotations/instances_{train_split}.json + its images (detect_data.h: resize by
//     the longer side to --image-size, pad to a square, optional horizontal flip), epoch order a
//     seeded permutation of (seed, epoch), so resume continues the same order;
//   * step: the ATSS losses (atss.h: focal + GIoU x centerness + centerness BCE), metrics.jsonl
//     fields loss_cls, loss_box, loss_ctr, num_pos;
//   * evaluation: COCO mAP (coco_eval.h, pycocotools' numbers) on the val split every --val-every
//     steps (metrics.jsonl "val_AP", "val_AP50") and on the test split at the end, beside the
//     box-prior baseline (detect_eval.h) on the same images:
//       RUN/eval/detection_{test}.json        {"task": "detection", metrics, baseline, ...}
//       RUN/eval/detections_{test}.json       the detections as a COCO results file
//       RUN/result.json                       the run summary (same metrics);
//   * checkpoints / resume / signals / NaN guard / progress: the engine's. The final sidecar holds
//     "detector", "categories", "preprocess" (detect_eval.h) so eval / predict load it alone.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

#include "florence/train/options.h"
#include "florence/train/run.h"

namespace florence::detect {

/// Options: the engine's (RunOptions; defaults here: AdamW lr 2e-4 (DyHead's Swin configs use
/// 1e-4 at batch 16), weight decay 0.05, clip 1.0 (detectron2 full-model clipping), batch 8,
/// checkpoints at the end, 2 kept) plus these.
struct DetectOptions : train::TaskOptions<DetectOptions> {
  std::string data;                  ///< set root (detect_data.h layout)
  std::string train_split = "train", val_split = "val", test_split = "test";  ///< "" = none (val/test)
  std::string detector = "dyhead-nano";  ///< detector config name or JSON
  std::string checkpoint;            ///< backbone weights (florence run or tower); "" = random init
  bool freeze_backbone = false;
  double backbone_lr_scale = 1.0;
  int image_size = 0;                ///< 0: the detector config's image_size
  bool class_agnostic = false;       ///< one "object" class (proposals; zero-shot detection)
  std::string augment = "flip";      ///< "flip" (horizontal, p 0.5) | "none"
  int64_t eval_batch_size = 16;
  int64_t max_train_images = 0;      ///< first N images of train (0 = all)
  int64_t max_eval_images = 0;       ///< first N images of val / test (0 = all)
  int64_t val_every = 0;             ///< steps between val mAP evaluations (0 = none during training)
  int64_t baseline_boxes = 100;      ///< baseline boxes per image (box prior; class-agnostic: random boxes; 0 = none)

  DetectOptions() {
    lr = 2e-4;
    min_lr = 0;
    batch_size = 8;
    weight_decay = 0.05;
    grad_clip = 1.0;
    beta2 = 0.999;
    adam_eps = 1e-8;
    ckpt_every = 0;
    keep_checkpoints = 2;
  }

 public:
  static constexpr const char* kWhat = "detect options";  ///< names the struct in from_json errors

 private:
  friend struct train::TaskOptions<DetectOptions>;
  template <class S, class F>
  static void visit_fields(S& s, F& f) {
    using train::Field;
    f(Field{"data", "--data", "Detection set root (annotations/instances_SPLIT.json + images/SPLIT/)"}, s.data);
    f(Field{"train_split", "--train-split", "Training split (e.g. train, train_seen)"}, s.train_split);
    f(Field{"val_split", "--val-split", "Validation split ('' = none)"}, s.val_split);
    f(Field{"test_split", "--test-split", "Test split evaluated at the end ('' = none)"}, s.test_split);
    f(Field{"detector", "--detector", "Detector config: dyhead-nano, conv-nano, dyhead-t, dyhead-h or a JSON file"},
      s.detector);
    f(Field{"checkpoint", "--checkpoint", "Backbone weights: a florence run's model.safetensors (none: random init)"},
      s.checkpoint);
    f(Field{"freeze_backbone", "--freeze-backbone", "Train the FPN and head only"}, s.freeze_backbone);
    f(Field{"backbone_lr_scale", "--backbone-lr-scale", "Backbone learning rate = lr x this", Field::kNonNegative},
      s.backbone_lr_scale);
    f(Field{"image_size", "--image-size", "Input canvas side in pixels (default: the detector config's)",
            Field::kNonNegative},
      s.image_size);
    f(Field{"class_agnostic", "--class-agnostic", "One 'object' class (class-agnostic proposals)"}, s.class_agnostic);
    f(Field{"augment", "--augment", "flip (random horizontal flip) | none"}, s.augment);
    f(Field{"eval_batch_size", "--eval-batch-size", "Images per evaluation batch", Field::kPositive}, s.eval_batch_size);
    f(Field{"max_train_images", "--max-train-images", "Only the first N training images (0 = all)", Field::kNonNegative},
      s.max_train_images);
    f(Field{"max_eval_images", "--max-eval-images", "Only the first N val / test images (0 = all)", Field::kNonNegative},
      s.max_eval_images);
    f(Field{"val_every", "--val-every", "Steps between val mAP evaluations (0 = none)", Field::kNonNegative},
      s.val_every);
    f(Field{"baseline_boxes", "--baseline-boxes", "Baseline boxes per test image: the box prior (--class-agnostic: random training boxes; 0 = none)",
            Field::kNonNegative},
      s.baseline_boxes);
  }
};

/// Trains (or resumes) a detector; RunResult::result is RUN/result.json: {"task": "detection-train",
/// "detector", "init", "steps", "train_loss", "data", "test": DetectEvalResult JSON (with
/// "baseline": the box prior's metrics), "seconds"}. Throws florence::Error for bad options
/// (naming the flag), a missing set / split / checkpoint, a backbone that does not fit the
/// checkpoint, no full batch, a non-finite loss (engine), and what the data readers throw.
train::RunResult train_detector(const DetectOptions& options);

/// The options a detection run was started with (RUN_DIR/config.json or a checkpoint sidecar).
DetectOptions load_detect_options(const std::string& run_dir_or_checkpoint);

}  // namespace florence::detect
