#pragma once
// `florence pretrain`: UniCL pretraining of the two-tower Florence model (Florence §2.1, §2.4).
//
// One run:
//   * model from `--model NAME|CONFIG.json`; its text vocabulary (vocab_size, SOT, EOT) is set
//     from the BPE merges file `--vocab` (the saved config records them; the file is copied to
//     RUN_DIR/vocab.bpe[.gz]);
//   * data: a weighted mixture (mixture.h) of image-text sources and classification sources,
//     read by the deterministic threaded data::Loader (one mixture + loader per epoch, seeded by
//     (seed, epoch)); full batches only (drop_last), texts tokenized here after prompt templates
//     (prompts.h);
//   * stages (Florence §2.4): stage 1 all data with short texts prompt-augmented, stage 2
//     original texts only, optional stage 3 like stage 2 at `stage3_image_size`. Stage lengths:
//     see resolve_stages();
//   * the step (a task on the shared run layer, run.h): GradCache accumulation (grad_cache.h) of
//     the distributed UniCL loss (contrastive.h); AdamW with decoupled weight decay on two
//     parameter groups and the warm-up + cosine schedule over the whole run, clipping, the NaN
//     guard, checkpoints (run.h's format; the sidecar's train_state adds stage, stages[3],
//     steps_per_epoch, global_batch_size, stage_end), resume, signals and the run folder are the
//     engine's. Stage ends are milestones: their checkpoints are never pruned;
//   * RUN_DIR/metrics.jsonl adds per step: stage, logit_scale (the temperature tau =
//     exp(logit_scale param), clamped), augmented_texts, tagged_texts;
//   * resume: the loader restarts the checkpoint's epoch (its order is a function of (seed,
//     epoch)) and skips the consumed batches, and the prompt templates are seeded by (seed, epoch,
//     batch, row), so the continued run reproduces the uninterrupted one (the e2e test checks
//     <= 1e-6 on the weights).
//
// Data parallelism over processes and hosts (c10d, dist/dist.h). pretrain() joins the process
// group described by the launcher's environment (`florence launch`, torchrun, Slurm's srun; none:
// a single process) before anything else. With W processes:
//   * `batch_size` is the GLOBAL contrastive batch (every process sees all of its rows as
//     negatives); each process computes the towers on its own B/W rows (B % W == 0 required;
//     `accum_steps` micro-batches per process). Keeping the options global makes a run's
//     hyper-parameters, schedule, checkpoints and data position independent of W.
//   * Data: every process runs the same deterministic loader over the global batch (loader rank
//     0 of 1, so decoding and augmentation draws equal the 1-process run's) and keeps rows
//     [rank * B/W, (rank + 1) * B/W); the prompt templates and UniCL labels are computed for the
//     whole batch on every process (no label exchange needed). So a run on W processes sees at
//     every step exactly the samples, augmentations and texts of a 1-process run with the same
//     global batch. The price: image decoding is repeated on every process (cheap next to the
//     towers for the models here; a loader that decodes only its rows is future work).
//   * Loss: image and text features of all processes are gathered with gradient
//     (dist::gather_with_grad) and UniCL is computed over the global batch on every process
//     (identical values); `local_loss` computes only this process's rows against all columns
//     (loss::unicl_loss_local), whose mean over processes is the global loss. Gradients are
//     averaged over processes (bucketed all-reduce), so both forms give the 1-process gradient;
//     parameters are broadcast from rank 0 at start. GradCache works on the local micro-batches
//     with the gathered features in its loss step.
//   * The loss reported is the mean over processes (= the global loss); a stop request (signal)
//     on any process stops all of them after the same step (exchanged with the loss).
//   * Rank 0 alone writes config.json, metrics.jsonl, checkpoints, model.safetensors and the
//     progress bar; other ranks log warnings and errors only. The run directory and the data must
//     be visible to every rank under the same paths (a shared filesystem across hosts): all ranks
//     read the checkpoint on resume. Checkpoints hold global state only (plus world_size and
//     global_batch_size for information), so a run resumes on any number of processes.
//   * A peer that dies or hangs fails the next collective within `dist_timeout_s`; pretrain()
//     then throws florence::Error("distributed: ...") and the last checkpoint stays the latest.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "florence/train/options.h"
#include "florence/train/run.h"

namespace florence::train {

struct DataSpec {
  std::string flag;   ///< "shards" (image-text shards), "manifest" (image-text manifest), "labelled"
  std::string spec;   ///< path / pattern (mixture.h open_source)
  double weight = -1; ///< < 0: not given
};
void to_json(nlohmann::json& j, const DataSpec& d);
void from_json(const nlohmann::json& j, DataSpec& d);  ///< "weight" optional (-1)

/// Pretraining options: the engine's (RunOptions, pretraining defaults) plus these.
struct TrainOptions : TaskOptions<TrainOptions> {
  std::string model = "florence-nano";  ///< registered name or config JSON path
  std::string vocab;                    ///< BPE merges file (required)
  std::vector<DataSpec> data;           ///< at least one (CLI: --shards / --manifest / --labelled)

  /// Micro-batches per process (GradCache). `batch_size` is the GLOBAL contrastive batch (all
  /// negatives); distributed, it is split evenly over the processes, and each process's share
  /// into accum_steps micro-batches.
  int accum_steps = 1;
  /// Distributed: UniCL over this process's rows against all gathered columns (open_clip's
  /// --local-loss) instead of the whole global batch on every process. Same gradient; less
  /// memory and compute for the logits ([B/W, B] instead of [B, B]).
  bool local_loss = false;
  /// Distributed: seconds a collective (or the rendezvous) may wait for the other processes
  /// before the run stops with an error (`--dist-timeout`).
  double dist_timeout_s = 600;
  bool average_directions = false;  ///< UniCL sum (false) or CLIP mean of the two directions

  int64_t stage1_steps = -1, stage2_steps = -1, stage3_steps = 0;  ///< -1: derived (resolve_stages)
  int stage3_image_size = 0;
  int image_size = 0;  ///< stages 1-2; 0: the model's nominal vision.image_size
  /// "rrc": RandomResizedCrop(0.08-1) + flip (data::Loader train mode); "none": resize + full
  /// center crop (crop_pct 1.0), no flip - better for small centred clip-art corpora.
  std::string augment = "rrc";
  /// Stage-1 probability of training on one tag of a list text instead of the whole text
  /// (train::make_batch_texts; not in the Florence paper). 0: off.
  double tag_sampling = 0.0;


 public:
  static constexpr const char* kWhat = "train options";  ///< names the struct in from_json errors

 private:
  friend struct TaskOptions<TrainOptions>;
  template <class S, class F>
  static void visit_fields(S& s, F& f) {
    f(Field{"model", "--model", "Model: registered name (florence-nano, florence-t, ...) or config JSON"}, s.model);
    f(Field{"vocab", "--vocab",
            "BPE merges file (CLIP format, e.g. from `florence tokenizer train`); sets the model's text vocab_size / "
            "SOT / EOT, recorded in the saved config"},
      s.vocab);
    f(Field{"data"}, s.data);
    f(Field{"accum_steps", "--accum-steps", "Micro-batches per batch (GradCache: the contrastive batch stays whole)",
            Field::kPositive},
      s.accum_steps);
    f(Field{"local_loss", "--local-loss",
            "Distributed: UniCL of this process's rows against all gathered columns (same gradient, smaller logits) "
            "instead of the whole global batch on every process"},
      s.local_loss);
    f(Field{"dist_timeout_s", "--dist-timeout",
            "Distributed: seconds to wait for the other processes (rendezvous, each collective) before stopping with "
            "an error",
            Field::kPositive},
      s.dist_timeout_s);
    f(Field{"average_directions", "--average-directions",
            "Loss = mean of the two directions (CLIP) instead of their sum (UniCL)"},
      s.average_directions);
    f(Field{"stage1_steps", "--stage1-steps", "Stage-1 steps (default: the total minus stages 2 and 3)"},
      s.stage1_steps);
    f(Field{"stage2_steps", "--stage2-steps",
            "Stage-2 steps (default: 180/1180 of the steps before stage 3, Florence's ratio)"},
      s.stage2_steps);
    f(Field{"stage3_steps", "--stage3-steps", "Stage-3 (high resolution) steps"}, s.stage3_steps);
    f(Field{"stage3_image_size", "--stage3-image-size", "Stage-3 image size"}, s.stage3_image_size);
    f(Field{"image_size", "--image-size", "Image size of stages 1-2 (default: the model's)"}, s.image_size);
    f(Field{"augment", "--augment", "rrc: RandomResizedCrop + flip; none: resize + full center crop"}, s.augment);
    f(Field{"tag_sampling", "--tag-sampling",
            "Stage-1 probability of training on one tag of a list text (pieces split at ', ' and '. '; same tag = "
            "positives) instead of the whole text; not in the Florence paper",
            Field::kProbability},
      s.tag_sampling);
  }
};

/// Stage lengths and total steps.
struct StagePlan {
  int64_t stage_steps[3] = {0, 0, 0};
  int64_t total = 0;
  int stage_of(int64_t step) const;  ///< stage (1..3) of the 0-based step
  /// True when `done` completed steps end a non-empty stage.
  bool is_stage_end(int64_t done) const;
};

/// Stage rules, with T the total from `steps` (or epochs * steps_per_epoch):
///   * neither stage1 nor stage2 given: stage 2 = round((T - stage3) * 180/1180) (Florence: 180k
///     stage-2 iterations after 1M stage-1 ones), stage 1 the rest;
///   * one of them given: the other is T - given - stage3;
///   * both given: they (plus stage3) must sum to T;
///   * no T: T = stage1 + stage2 + stage3 (unset ones 0).
/// Throws florence::Error for a negative stage, a sum mismatch or T == 0.
StagePlan resolve_stages(const TrainOptions& o, int64_t steps_per_epoch);

using TrainResult = RunResult;

/// Runs (or resumes) a pretraining run. Throws florence::Error for bad options (naming the
/// option), unreadable data/vocab/checkpoints, a data mixture without a full batch, and a
/// non-finite loss or gradient norm (message names the step and the latest good checkpoint).
TrainResult pretrain(const TrainOptions& options);

/// The options a run was started with (RUN_DIR/config.json, or the `options` saved in a
/// checkpoint's sidecar when given a .safetensors path).
TrainOptions load_run_options(const std::string& run_dir_or_checkpoint);

}  // namespace florence::train
