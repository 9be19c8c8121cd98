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
//   * AdamW with decoupled weight decay on two parameter groups, warm-up + cosine schedule over
//     the whole run (schedule.h), global-norm gradient clipping, GradCache accumulation
//     (grad_cache.h);
//   * checkpoints (checkpoint format below) every `ckpt_every` steps, at each stage end, at the
//     end, on SIGINT/SIGTERM (finish the step, save, return interrupted = true) and at
//     `stop_after_steps`;
//   * a non-finite loss or gradient norm throws florence::Error before the optimiser step: the
//     bad step changes nothing on disk, the last checkpoint stays the latest;
//   * RUN_DIR/config.json (options, model, stages, schedule), RUN_DIR/metrics.jsonl (one JSON
//     object per step: step, stage, epoch, loss, lr, logit_scale (the temperature
//     tau = exp(logit_scale param), clamped), img_per_s, data_wait_fraction, time), a progress
//     bar on a terminal (stderr) or a log line every `log_every` steps.
//
// Checkpoint format (RUN_DIR/checkpoints/, each file written to a temporary name and renamed):
//   step_NNNNNNN.safetensors        model weights (float32), model::save_checkpoint
//   step_NNNNNNN.json               sidecar: {"model": spec, "train_state": {...}} where
//                                   train_state = {step, stage, epoch, batches_in_epoch,
//                                   schedule{peak_lr, min_lr, warmup_steps, total_steps},
//                                   stages[3], steps_per_epoch, seed, options{...}, loss}
//   step_NNNNNNN.optim.safetensors  AdamW state by parameter name: "<name>.exp_avg",
//                                   "<name>.exp_avg_sq", "<name>.step" (int64 scalar), plus
//                                   "rng.torch" (uint8 state of the device's default generator)
//   latest                          one line: the file name of the newest complete checkpoint
// The order (optimizer state, weights, sidecar, then `latest`) means `latest` never names a
// checkpoint that is not fully written. The final weights are also written as
// RUN_DIR/model.safetensors (+ model.json) for `florence eval` / `embed`.
//
// Resume: the weights, optimiser state, generator state, step, epoch and batches consumed are
// restored; the loader restarts that epoch (its order is a function of (seed, epoch)) and skips
// the consumed batches, and the prompt templates are seeded by (seed, epoch, batch, row), so the
// continued run reproduces the uninterrupted one (the e2e test checks <= 1e-6 on the weights).
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

namespace florence::train {

struct DataSpec {
  std::string flag;   ///< "shards" (image-text shards), "manifest" (image-text manifest), "labelled"
  std::string spec;   ///< path / pattern (mixture.h open_source)
  double weight = -1; ///< < 0: not given
};

struct TrainOptions {
  std::string model = "florence-nano";  ///< registered name or config JSON path
  std::string vocab;                    ///< BPE merges file (required)
  std::vector<DataSpec> data;           ///< at least one
  std::string out_dir;                  ///< RUN_DIR (required)
  std::string device = "cpu";           ///< torch device string ("cpu", "cuda", "cuda:1")

  /// Global contrastive batch (all negatives). Distributed: split evenly over the processes;
  /// each process's share is further split into accum_steps micro-batches (GradCache).
  int64_t batch_size = 64;
  int accum_steps = 1;
  /// Distributed: UniCL over this process's rows against all gathered columns (open_clip's
  /// --local-loss) instead of the whole global batch on every process. Same gradient; less
  /// memory and compute for the logits ([B/W, B] instead of [B, B]).
  bool local_loss = false;
  /// Distributed: seconds a collective (or the rendezvous) may wait for the other processes
  /// before the run stops with an error (`--dist-timeout`).
  double dist_timeout_s = 600;
  double lr = 5e-4;           ///< peak learning rate
  double min_lr = 0.0;        ///< end of the cosine
  int64_t warmup_steps = -1;  ///< < 0: 5% of the total steps
  double weight_decay = 0.05; ///< Swin / UniCL's AdamW weight decay
  double beta1 = 0.9, beta2 = 0.98, adam_eps = 1e-6;  ///< CLIP §2.5 (large-batch Adam settings)
  double grad_clip = 1.0;     ///< global L2 norm; <= 0 disables
  bool average_directions = false;  ///< UniCL sum (false) or CLIP mean of the two directions

  int64_t steps = 0;   ///< total optimiser steps (0: from epochs or stage lengths)
  int64_t epochs = 0;  ///< alternative to steps: epochs * full batches per epoch (counted once)
  int64_t stage1_steps = -1, stage2_steps = -1, stage3_steps = 0;  ///< -1: derived (resolve_stages)
  int stage3_image_size = 0;
  int image_size = 0;  ///< stages 1-2; 0: the model's nominal vision.image_size
  /// "rrc": RandomResizedCrop(0.08-1) + flip (data::Loader train mode); "none": resize + full
  /// center crop (crop_pct 1.0), no flip - better for small centred clip-art corpora.
  std::string augment = "rrc";
  /// Stage-1 probability of training on one tag of a list text instead of the whole text
  /// (train::make_batch_texts; not in the Florence paper). 0: off.
  double tag_sampling = 0.0;

  uint64_t seed = 0;
  int threads = 0;  ///< intra-op threads (0: OMP_NUM_THREADS, else all cores)
  int workers = 0;  ///< loader decode threads (0: all cores)
  int64_t ckpt_every = 1000;  ///< 0: only at stage ends, the end and on interruption
  int keep_checkpoints = 3;   ///< periodic checkpoints kept (stage-end ones always kept); 0: keep all
  int64_t log_every = 10;
  /// Resume from a run directory (its checkpoints/latest) or a checkpoint .safetensors; empty: a
  /// fresh run (which refuses an out_dir that already holds checkpoints).
  std::string resume;
  /// Stop (writing a checkpoint) once this many steps are done, keeping the full run's schedule
  /// (time-slicing a long run; the resume test). 0: no early stop.
  int64_t stop_after_steps = 0;
  /// TEST HOOK: the loss of this 1-based step is made NaN (`--debug-nan-at-step`), to exercise
  /// the NaN guard. 0: off.
  int64_t debug_nan_at_step = 0;
  bool handle_signals = true;  ///< SIGINT/SIGTERM finish the step, checkpoint, return interrupted
  int progress = -1;           ///< progress bar: 1 on, 0 off, -1 when stderr is a terminal

  nlohmann::json to_json() const;
  /// Unknown keys throw florence::Error naming the key.
  static TrainOptions from_json(const nlohmann::json& j);
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

struct TrainResult {
  std::string run_dir;
  int64_t start_step = 0;   ///< steps already done when this call started (resume)
  int64_t steps_done = 0;   ///< total completed steps at return
  int64_t total_steps = 0;
  bool interrupted = false; ///< stopped by a signal or stop_after_steps before total_steps
  double first_loss = 0, last_loss = 0;  ///< loss of the first / last step of this call
  std::string last_checkpoint;           ///< path of the newest checkpoint (.safetensors)
  double seconds = 0;
  int rank = 0, world_size = 1;          ///< this process in a distributed run
  double comm_seconds = 0;               ///< time blocked in collectives (distributed)
};

/// Runs (or resumes) a pretraining run. Throws florence::Error for bad options (naming the
/// option), unreadable data/vocab/checkpoints, a data mixture without a full batch, and a
/// non-finite loss or gradient norm (message names the step and the latest good checkpoint).
TrainResult pretrain(const TrainOptions& options);

/// The options a run was started with (RUN_DIR/config.json, or the `options` saved in a
/// checkpoint's sidecar when given a .safetensors path).
TrainOptions load_run_options(const std::string& run_dir_or_checkpoint);

/// Resolves a resume argument to a checkpoint .safetensors path (RUN_DIR -> checkpoints/latest).
/// Throws florence::Error when there is none.
std::string resolve_resume_checkpoint(const std::string& run_dir_or_checkpoint);

}  // namespace florence::train
