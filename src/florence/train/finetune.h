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
// Both tasks are tasks on the shared run layer (run.h): its run folder (RUN/config.json,
// RUN/metrics.jsonl with val_top1 at epoch ends for classify), checkpoints, resume (the loader's
// order is a function of (seed, epoch)), SIGINT/SIGTERM, NaN guard and progress. The final
// weights' sidecar RUN/model.json holds "preprocess" (image_size, crop_pct, mean, std), "classes"
// (classify) and "vocab" (retrieval) so `florence eval` reads them back.
#include <torch/types.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "florence/data/readers.h"
#include "florence/train/options.h"
#include "florence/train/run.h"

namespace florence::train {

/// Fine-tuning options: the engine's (RunOptions, with the fine-tuning defaults set in the
/// constructor: lr 1e-3, min lr 1e-6, AdamW betas (0.9, 0.999), eps 1e-8 (PyTorch's), clip 5
/// (Swin fine-tuning), checkpoints only at the end, 2 kept) plus these.
struct FinetuneOptions : TaskOptions<FinetuneOptions> {
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
  double layer_decay = 1.0;       ///< 1 = off (classify only)
  double label_smoothing = 0.1;   ///< classify only
  double drop_path = -1;          ///< < 0: the config's drop_path_rate
  std::string augment = "rrc";    ///< "rrc" | "none"
  int image_size = 0;             ///< 0: the init run's image_size, else the config's
  double crop_pct = 0;            ///< eval crop; 0: the init run's, else 0.875
  int64_t max_train_samples = 0;  ///< seeded random subset of train (0 = all; >= 0)
  int64_t max_eval_samples = 0;   ///< seeded random subset of val / test (0 = all; >= 0)

  FinetuneOptions() {
    lr = 1e-3;
    min_lr = 1e-6;
    beta2 = 0.999;
    adam_eps = 1e-8;
    grad_clip = 5.0;
    ckpt_every = 0;
    keep_checkpoints = 2;
  }

 public:
  static constexpr const char* kWhat = "finetune options";  ///< names the struct in from_json errors

 private:
  friend struct TaskOptions<FinetuneOptions>;
  template <class S, class F>
  static void visit_fields(S& s, F& f) {
    f(Field{"task", "--task", "classify | retrieval"}, s.task);
    f(Field{"checkpoint", "--checkpoint", "Initial weights (a pretraining run's model.safetensors)"}, s.checkpoint);
    f(Field{"random_init", "--random-init",
            "Random weights for the --checkpoint's config (its preprocessing / vocabulary kept): the baseline"},
      s.random_init);
    f(Field{"model", "--model", "Model config (name / JSON); without --checkpoint: random init (baseline)"}, s.model);
    f(Field{"vocab", "--vocab", "retrieval: BPE merges file (default: the checkpoint's run)"}, s.vocab);
    f(Field{"data", "--data", "Corpus root with split folders (train/val/test)"}, s.data);
    f(Field{"train_split", "--train-split", "Training split folder"}, s.train_split);
    f(Field{"val_split", "--val-split", "Validation split ('' = none)"}, s.val_split);
    f(Field{"test_split", "--test-split", "Test split ('' = none)"}, s.test_split);
    f(Field{"class_field", "--class-field", "Sample meta field holding the class name"}, s.class_field);
    f(Field{"layer_decay", "--layer-decay", "Layer-wise lr decay factor per block (1 = off; BEiT/SimMIM use 0.65-0.9)"},
      s.layer_decay);
    f(Field{"label_smoothing", "--label-smoothing", "Label smoothing epsilon (classify)"}, s.label_smoothing);
    f(Field{"drop_path", "--drop-path", "Stochastic depth rate (default: the config's)"}, s.drop_path);
    f(Field{"augment", "--augment", "rrc: RandomResizedCrop + flip; none: resize + full centre crop"}, s.augment);
    f(Field{"image_size", "--image-size", "Input size (default: the checkpoint run's)"}, s.image_size);
    f(Field{"crop_pct", "--crop-pct", "Eval resize = size / crop_pct then centre crop (default: the run's, else 0.875)"},
      s.crop_pct);
    f(Field{"max_train_samples", "--max-train-samples", "Seeded random subset of train (0 = all)"}, s.max_train_samples);
    f(Field{"max_eval_samples", "--max-eval-samples", "Seeded random subset of val / test (0 = all)"},
      s.max_eval_samples);
  }
};

/// Data given as sources instead of specs (tests, library users): the train / val / test sources
/// (val / test may be null).
struct FinetuneSources {
  std::shared_ptr<const data::SampleSource> train, val, test;
};

/// RunResult::result of a fine-tuning run:
///   classify: {"task": "finetune", "set", "init", "classes", "num_train", "steps", "epochs",
///   "options", "metrics": eval::ClassificationMetrics JSON of the test split, "val_top1",
///   "train_loss", "data", "seconds"};
///   retrieval: {"task": "finetune-retrieval-train", "init", "num_train", "steps", ...}.
using FinetuneResult = RunResult;

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
