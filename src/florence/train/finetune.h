#pragma once
// `florence finetune`: end-to-end transfer of a (pretrained) Florence model.
//
// Task "classify" (image classification, Florence §4 "fine-tuning" / the Swin fine-tuning recipe):
//   * model: the image tower (CoSwin) of the checkpoint with a new linear head on its pooled
//     feature, i.e. vision::SwinTransformer with num_classes = C (state-dict names `patch_embed.*`,
//     `layers.*`, `norm.*`, `head.*`: a classification checkpoint of the reference Swin layout);
//     the head is freshly initialised (Swin init). Without a checkpoint: a seeded random init of
//     the `model` config (the no-pretraining baseline);
//   * loss: cross entropy with label smoothing eps (Szegedy et al. 2016):
//       L = (1 - eps) * CE(p, y) + eps * mean_c(-log p_c);
//   * AdamW (decoupled weight decay, same no-decay rule as pretraining, schedule.h) with optional
//     layer-wise lr decay (BEiT, Bao et al. 2021; Swin's SimMIM fine-tuning code): parameter
//     layer ids patch_embed -> 0, block j of stage i -> 1 + sum(depths[:i]) + j, the downsample at
//     the end of stage i -> sum(depths[:i+1]), everything else (final norm, head) ->
//     L - 1 with L = sum(depths) + 2; lr scale layer_decay^(L - 1 - id);
//   * data: the classes (data/relabel.h rule: meta `class_field`, ...) of the train split;
//     val/test samples of other classes are dropped (counted). Train augmentation "rrc"
//     (RandomResizedCrop + flip) or "none" (resize + full centre crop, crop_pct 1);
//     evaluation with the eval transform (resize to image_size / crop_pct, centre crop);
//   * evaluation: top-1 / top-5 / per-class on the test split (metrics JSON keys as
//     eval::ClassificationMetrics, same pessimistic tie rule as eval/metrics.h), val top-1 at
//     every epoch end (metrics.jsonl "val_top1").
// Task "retrieval" (fine-tuned retrieval, Florence §4.3): the whole two-tower model continues
//   UniCL training (loss/unicl.h, GradCache step of grad_cache.h) on the image-text pairs of the
//   train split with the original texts (pretraining stage-2 texts: identical cleaned texts are
//   positives). The R@K evaluation on the test split is done by eval::retrieval on the result
//   (the `florence finetune` command runs it).
//
// Both tasks share the pretraining run layout (trainer.h): RUN/config.json, RUN/metrics.jsonl
// (step, epoch, loss, lr, grad_norm, img_per_s, data_wait_fraction, time [, val_top1]),
// RUN/checkpoints/step_NNNNNNN.{safetensors,json,optim.safetensors} + `latest` (optimizer state by
// parameter name, generator state; written optimizer, weights, sidecar, then `latest`), resume
// that restores weights, optimizer, generator, step and the position in the epoch (the loader's
// order is a function of (seed, epoch)), SIGINT/SIGTERM -> checkpoint and stop, a NaN guard, and
// the final weights in RUN/model.safetensors whose sidecar holds "preprocess" (image_size,
// crop_pct, mean, std), "classes" (classify) and "vocab" (retrieval) so `florence eval` reads
// them back.
#include <torch/types.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "florence/data/readers.h"

namespace florence::train {

struct FinetuneOptions {
  std::string task = "classify";  ///< "classify" | "retrieval"
  std::string checkpoint;         ///< initial weights (two-tower or vision checkpoint); empty = random init
  /// Random weights for the checkpoint's config (its spec, preprocessing and vocabulary are still
  /// used): the no-pretraining baseline of the same model.
  bool random_init = false;
  std::string model;              ///< name / JSON; empty = the checkpoint's own spec
  std::string vocab;              ///< retrieval: BPE file; empty = the checkpoint's run (sidecar / RUN/vocab.bpe[.gz])
  std::string data;               ///< corpus root (split folders) or a data spec
  std::string train_split = "train", val_split = "val", test_split = "test";  ///< "" = none
  std::string class_field = "category";
  std::string out_dir;            ///< RUN_DIR (required)
  std::string device = "cpu";

  int64_t batch_size = 64;
  int64_t steps = 0;   ///< total optimiser steps (>= 1); 0 = epochs * full batches per epoch
  int64_t epochs = 0;  ///< (>= 1) used when steps is 0; exactly one of steps / epochs must be set
  double lr = 1e-3;           ///< peak lr of the head / top layer
  double min_lr = 1e-6;
  int64_t warmup_steps = -1;  ///< >= 0, or -1: 5% of the steps (other negatives are errors)
  double weight_decay = 0.05;
  double beta1 = 0.9, beta2 = 0.999, adam_eps = 1e-8;
  double layer_decay = 1.0;       ///< 1 = off (classify only)
  double label_smoothing = 0.1;   ///< classify only
  double grad_clip = 5.0;         ///< global L2 norm; <= 0 disables (Swin fine-tuning clips at 5)
  double drop_path = -1;          ///< < 0: the config's drop_path_rate
  std::string augment = "rrc";    ///< "rrc" | "none"
  int image_size = 0;             ///< 0: the init run's image_size, else the config's
  double crop_pct = 0;            ///< eval crop; 0: the init run's, else 0.875
  uint64_t seed = 0;
  int threads = 0, workers = 0;
  int64_t max_train_samples = 0;  ///< seeded random subset of train (0 = all; >= 0)
  int64_t max_eval_samples = 0;   ///< seeded random subset of val / test (0 = all; >= 0)
  int64_t ckpt_every = 0;         ///< >= 0; 0: only at the end / on a signal / at stop_after_steps
  int keep_checkpoints = 2;       ///< checkpoints kept in RUN/checkpoints (>= 0; 0 = all)
  int64_t log_every = 10;         ///< >= 1
  std::string resume;             ///< RUN_DIR or checkpoint to continue
  int64_t stop_after_steps = 0;   ///< >= 0; 0 = run to the end
  bool handle_signals = true;

  nlohmann::json to_json() const;
  /// Unknown keys throw florence::Error naming the key.
  static FinetuneOptions from_json(const nlohmann::json& j);
};

/// Data given as sources instead of specs (tests, library users): the train / val / test sources
/// (val / test may be null).
struct FinetuneSources {
  std::shared_ptr<const data::SampleSource> train, val, test;
};

struct FinetuneResult {
  std::string run_dir;
  std::string final_weights;  ///< RUN/model.safetensors ("" when interrupted)
  int64_t start_step = 0, steps_done = 0, total_steps = 0;
  bool interrupted = false;
  double first_loss = 0, last_loss = 0;
  /// Mean loss of the first / last min(10, steps) steps of this call.
  double first_loss_mean = 0, last_loss_mean = 0;
  /// classify: {"task": "finetune", "set", "init", "classes", "num_train", "steps", "epochs",
  ///   "options", "metrics": {"num_samples", "num_classes", "top1", "top5", "mean_per_class",
  ///   "per_class", "support", "classes", "chance": {...}}, "val_top1", "train_loss", "seconds"};
  /// retrieval: {"task": "finetune-retrieval-train", "init", "num_train", "steps", ...}.
  /// Empty when interrupted.
  nlohmann::json result;
  double seconds = 0;
};

/// Runs (or resumes) a fine-tuning run with the data of `options.data`. Throws florence::Error for
/// bad options (naming the option; also negative steps / epochs / subset sizes / checkpoint
/// counts), a missing or folder `checkpoint`, unreadable data / checkpoints, training data with
/// fewer than 2 classes (counted after the max_train_samples subset), no full batch, or a
/// non-finite loss / gradient (naming the step and the last good checkpoint). Classes of the train
/// split that the subset misses keep their head output; they are logged as a warning and listed in
/// result["data"]["classes_without_train_samples"].
FinetuneResult finetune(const FinetuneOptions& options);
/// Same with explicit sources (options.data is ignored).
FinetuneResult finetune(const FinetuneOptions& options, const FinetuneSources& sources);

/// Layer id of a Swin/CoSwin parameter for layer-wise lr decay (rule at the top of this file).
int layer_id(const std::string& name, const std::vector<int>& depths);

/// Top-k accuracy with eval/metrics.h's pessimistic ties (rank = 1 + #{c != y : s_c >= s_y}):
/// scores [N, C], labels [N] -> fraction of rows with rank <= k.
double topk_accuracy(const torch::Tensor& scores, const torch::Tensor& labels, int64_t k);

/// Label-smoothed cross entropy (formula at the top of this file), mean over rows.
/// logits [N, C], labels [N] int64.
torch::Tensor smoothed_cross_entropy(const torch::Tensor& logits, const torch::Tensor& labels, double eps);

/// The options a fine-tuning run was started with (RUN_DIR/config.json or a checkpoint sidecar).
FinetuneOptions load_finetune_options(const std::string& run_dir_or_checkpoint);

}  // namespace florence::train
