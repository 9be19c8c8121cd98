#pragma once
// The run layer every training task shares (pretraining, fine-tuning, detection, VQA, video, ...).
// A task (TrainTask below) is its model, its data and its batch -> loss step; the engine
// (run_task) owns everything around the step, once:
//   * the run folder: RUN/config.json (the engine's fields + the task's), RUN/metrics.jsonl (one
//     JSON object per step; on resume the lines past the checkpoint's step are dropped, a fresh
//     run starts it empty), RUN/checkpoints/, RUN/model.safetensors (+ .json) at the end;
//   * AdamW over the task's parameter groups (decoupled weight decay per group, a per-group lr
//     scale), the warm-up + cosine schedule (schedule.h) applied in one place;
//   * optimizer_step: global-norm clipping, the non-finite guard, the step;
//   * checkpoints (Checkpointer): optimizer state + generator, weights + sidecar, then `latest`,
//     each file written to a temporary name and renamed, so `latest` never names a checkpoint that
//     is not complete; every `ckpt_every` steps, at the task's milestones (pretraining's stage
//     ends: never pruned), at the end, on SIGINT/SIGTERM (finish the step, save, stop) and at
//     `stop_after_steps`; periodic ones beyond `keep_checkpoints` are removed;
//   * resume: weights, optimizer state, generator state, step, epoch and batches consumed are
//     restored and the task re-opens that epoch skipping the consumed batches; a task whose data
//     order is a function of (seed, epoch) and whose random choices are seeded by the position
//     therefore continues exactly as the uninterrupted run;
//   * the NaN guard: a non-finite loss or gradient norm throws florence::Error before the optimizer
//     step, naming the step and the latest good checkpoint (nothing on disk changes);
//   * data parallelism (when the task joins a process group): the loss reported is the mean over
//     ranks, gradients are averaged over ranks, parameters are broadcast from rank 0 at the start,
//     a stop request on any rank stops all after the same step, rank 0 alone writes;
//   * progress: a bar on a terminal, else a log line every `log_every` steps.
//
// Checkpoint files (RUN/checkpoints/):
//   step_NNNNNNN.safetensors        weights (float32), model::save_checkpoint
//   step_NNNNNNN.json               sidecar {"model": spec, "train_state": {step, epoch,
//                                   batches_in_epoch, total_steps, loss, seed, world_size,
//                                   schedule{peak_lr, min_lr, warmup_steps, total_steps}, rng,
//                                   options, + the task's}, + the task's top-level keys}
//   step_NNNNNNN.optim.safetensors  AdamW state by parameter name (run_state.h) + "rng.torch"
//   latest                          the file name of the newest complete checkpoint
#include <torch/types.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "florence/dist/dist.h"
#include "florence/model/registry.h"
#include "florence/train/options.h"
#include "florence/train/schedule.h"

namespace torch::nn {
class Module;
}
namespace torch::optim {
class AdamW;
}

namespace florence::train {

/// Where a run stands: completed optimizer steps, the epoch, and the batches of it consumed.
struct Position {
  int64_t step = 0;
  int64_t epoch = 0;
  int64_t batches_in_epoch = 0;
};

/// Where a task's reader stands inside an epoch, for a task that replaces an unreadable item by
/// the next one in its order (so it may consume more than batches x batch items). The task saves
/// it in the checkpoint's train_state (to_json, under "data_cursor") and reads it back in
/// check_resume; a resumed run then opens the epoch at the same item instead of at
/// batches_in_epoch x batch.
struct DataCursor {
  int64_t epoch = -1;   ///< the epoch `item` belongs to (-1: none)
  int64_t item = 0;     ///< items of that epoch consumed (read or skipped)
  int64_t skipped = 0;  ///< unreadable items skipped since the run started (all epochs)
  /// The item epoch pos.epoch starts at: `item` when this cursor belongs to that epoch (a resumed
  /// run's first open), else pos.batches_in_epoch * batch.
  int64_t start(const Position& pos, int64_t batch) const;
  nlohmann::json to_json() const;
  /// The "data_cursor" of a checkpoint sidecar's train_state; absent (a checkpoint written before
  /// it existed): a cursor of epoch -1. Throws florence::Error naming `where` when an entry is not
  /// a non-negative integer.
  static DataCursor from_sidecar(const nlohmann::json& sidecar, const std::string& where);
};

// ---------------------------------------------------------------------------------------------
// Optimizer
// ---------------------------------------------------------------------------------------------

/// Parameters that share AdamW settings: weight decay on or off, lr = schedule(step) * lr_scale.
struct ParamGroup {
  std::vector<torch::Tensor> params;
  bool weight_decay = true;
  double lr_scale = 1.0;
};

/// The two groups of schedule.h's rule (decay / no decay), both at `lr_scale`.
std::vector<ParamGroup> decay_groups(const torch::nn::Module& module, double lr_scale = 1.0);

/// AdamW (decoupled weight decay) over `groups` with the options' betas, eps and weight decay,
/// plus each group's lr scale.
class GroupedAdamW {
 public:
  GroupedAdamW(const std::vector<ParamGroup>& groups, double lr, double weight_decay, double beta1, double beta2,
               double eps);
  ~GroupedAdamW();
  /// Sets every group's learning rate to lr * its scale.
  void set_lr(double lr);
  torch::optim::AdamW& adamw() { return *opt_; }

 private:
  std::unique_ptr<torch::optim::AdamW> opt_;
  std::vector<double> scale_;
};

/// GroupedAdamW with the run options' settings.
std::unique_ptr<GroupedAdamW> make_adamw(const std::vector<ParamGroup>& groups, const RunOptions& o);

/// Clears the gradients before a step more cheaply than opt.zero_grad(): each parameter of `opt`
/// holding a gradient loses it (the parameters are returned), so the backward stores its gradient
/// rather than adding it to a buffer of zeros (LibTorch 1.13's zero_grad fills zeros and
/// AccumulateGrad then adds: two passes over every gradient). After the backward,
/// zero_missing_grads(returned) gives zeros to those that got no gradient, as zero_grad() would have
/// left them, so AdamW treats them as before (their moments decay, weight decay applies). With
/// FLORENCE_FUSED_KERNELS=0 (core/fused.h) it calls opt.zero_grad() and returns nothing.
std::vector<torch::Tensor> release_grads(torch::optim::AdamW& opt);
void zero_missing_grads(const std::vector<torch::Tensor>& released);

/// Clips the gradients of `params` (those with a gradient, in order) to global L2 norm
/// `grad_clip` (<= 0: no clipping), then steps `opt`. Returns the norm before clipping. Throws
/// florence::Error "non-finite gradient norm <context>; stopping without an optimizer step" when
/// it is NaN or Inf (the parameters are then untouched).
double optimizer_step(torch::optim::AdamW& opt, const std::vector<torch::Tensor>& params, double grad_clip,
                      const std::string& context);

/// The warm-up + cosine schedule of a run of `total_steps` (warmup_steps < 0: 5% of the total).
LrSchedule make_schedule(const RunOptions& o, int64_t total_steps);

// ---------------------------------------------------------------------------------------------
// Checkpoints
// ---------------------------------------------------------------------------------------------

/// Resolves a resume argument to a checkpoint .safetensors path: RUN_DIR -> its
/// checkpoints/latest (or RUN_DIR/latest), a sidecar .json -> its weights. Throws florence::Error
/// when there is none.
std::string resolve_resume_checkpoint(const std::string& run_dir_or_checkpoint);

/// Which run `load_saved_options` accepts.
struct SavedRunKind {
  std::string config_kind;   ///< RUN_DIR/config.json "kind" must equal this ("" = any)
  std::string sidecar_key;   ///< a checkpoint's sidecar must hold this key ("" = no check)
  std::string sidecar_kind;  ///< a checkpoint's sidecar "kind" must equal this ("" = any)
  std::string what;          ///< the run named in errors: "detection", "fine-tuning", ...
};

/// The options JSON a run was started with, for `--resume` (flags given on resume then override
/// it): RUN_DIR/config.json "options" when RUN_DIR holds a config.json, else the
/// "train_state"."options" of the checkpoint resolve_resume_checkpoint names. Throws
/// florence::Error "'PATH' is not a WHAT run|checkpoint" when the kind or key does not match or the
/// options are missing, and what resolve_resume_checkpoint and the JSON reader throw. Its "out_dir"
/// is the run folder given (or the one holding the checkpoint given), so a copied or moved run
/// continues where it now is.
nlohmann::json load_saved_options(const std::string& run_dir_or_checkpoint, const SavedRunKind& kind);

class Checkpointer {
 public:
  /// `writer`: this process writes (rank 0); others only track the names.
  Checkpointer(std::filesystem::path dir, int keep_periodic, bool writer);

  /// Writes checkpoint `step` (file layout at the top of this file): optimizer state and the
  /// device's generator, the weights of `module` with the sidecar {"model": spec, extra...}, then
  /// `latest`; removes periodic checkpoints beyond the newest `keep_periodic` (milestones are
  /// kept). Returns the weights path.
  std::string save(int64_t step, const torch::nn::Module& module, const model::ModelSpec& spec,
                   torch::optim::AdamW& opt, const torch::Device& device, const nlohmann::json& extra,
                   bool milestone);

  /// Loads weights (strict), optimizer state and the generator state of checkpoint `ckpt` into
  /// `module` / `opt`; returns its sidecar. Throws florence::Error for missing or mismatched files.
  nlohmann::json restore(const std::string& ckpt, torch::nn::Module& module, const model::ModelSpec& spec,
                         torch::optim::AdamW& opt, const torch::Device& device);

  /// The weights path of checkpoint `step`: DIR/step_NNNNNNN.safetensors.
  std::string path_for(int64_t step) const;

  /// The newest checkpoint written or restored ("" before any).
  const std::string& latest() const { return latest_; }

 private:
  std::filesystem::path dir_;
  int keep_;
  bool writer_;
  std::vector<std::string> periodic_;
  std::string latest_;
};

// ---------------------------------------------------------------------------------------------
// The task interface and the engine
// ---------------------------------------------------------------------------------------------

/// What the engine tells a task while setting it up.
struct RunContext {
  torch::Device device{torch::kCPU};
  dist::DistContext* dist = nullptr;  ///< this process's group (single process: world size 1)
  std::filesystem::path run_dir;
  bool writer = true;  ///< this process writes the run folder (rank 0)
  std::chrono::steady_clock::time_point start;
  /// The precision that runs: "fp32" or "amp_bf16" (--precision after the CPU check of
  /// core/precision.h; a resumed run's own flag).
  std::string precision = "fp32";
};

/// One step's result, from TrainTask::step.
struct StepOutput {
  double loss = 0;          ///< this process's loss (the engine averages it over ranks)
  int64_t samples = 0;      ///< samples in the step (for samples/s)
  nlohmann::json metrics = nlohmann::json::object();  ///< extra fields of the metrics.jsonl line
  std::string tag;          ///< words after "step N/T" in logs ("stage 1")
  std::string extra;        ///< words after the lr in logs ("tau 12.3")
};

struct RunResult {
  std::string run_dir;
  std::string final_weights;  ///< RUN/model.safetensors ("" when interrupted)
  int64_t start_step = 0;     ///< steps already done when this call started (resume)
  int64_t steps_done = 0;     ///< total completed steps at return
  int64_t total_steps = 0;
  bool interrupted = false;   ///< stopped by a signal or stop_after_steps before total_steps
  double first_loss = 0, last_loss = 0;            ///< first / last step of this call (0 when it ran none)
  /// Mean of the first / last min(10, n) steps of the whole run: on rank 0 a resumed run's earlier
  /// steps count too (read back from RUN/metrics.jsonl); other ranks see only this call's steps.
  double first_loss_mean = 0, last_loss_mean = 0;
  std::string last_checkpoint;                     ///< newest checkpoint (.safetensors)
  double seconds = 0;
  int rank = 0, world_size = 1;
  double comm_seconds = 0;  ///< time blocked in collectives (distributed)
  nlohmann::json result;    ///< the task's result (TrainTask::finish); empty when interrupted
};

class TrainTask {
 public:
  virtual ~TrainTask() = default;
  /// Name in messages and logs ("pretraining", "fine-tuning", ...).
  virtual std::string name() const = 0;
  /// The engine's options (the task's options struct derives from RunOptions) and all of the
  /// task's options as JSON (options_to_json of the derived struct: saved in config.json and in
  /// every checkpoint, read back on resume).
  virtual const RunOptions& options() const = 0;
  virtual nlohmann::json options_json() const = 0;
  /// Range checks of the task's options (florence::Error naming the flag), before anything runs.
  virtual void validate() = 0;
  /// The process group to train in (default: a single process).
  virtual dist::DistContext join_process_group(const torch::Device& device);
  /// Builds model and data. Returns the total number of optimizer steps of the run.
  virtual int64_t setup(const RunContext& ctx) = 0;
  /// The trained module (its state dict is what checkpoints hold) and its spec.
  virtual torch::nn::Module& module() = 0;
  virtual const model::ModelSpec& spec() const = 0;
  /// Parameter groups for AdamW (default: decay_groups(module())).
  virtual std::vector<ParamGroup> param_groups();
  /// One line for the plan log (stage lengths, ...), may be empty.
  virtual std::string plan() const { return {}; }

  /// Starts epoch pos.epoch, skipping the pos.batches_in_epoch batches a resumed run consumed.
  virtual void open_epoch(const Position& pos) = 0;
  /// Fetches the next batch of the epoch into the task; false at the end of the epoch.
  virtual bool next_batch(const Position& pos) = 0;
  /// One line about the data read so far (for the "no full batch" error and epoch-end logs).
  virtual std::string data_summary() const { return {}; }
  /// Forward and backward of the current batch at `pos` (gradients were zeroed). Runs under
  /// bfloat16 autocast with --precision amp_bf16 (then the loss must be computed in float32).
  virtual StepOutput step(const Position& pos) = 0;
  /// Whether step() is written for --precision amp_bf16 (its loss in float32); others refuse it.
  virtual bool supports_amp() const { return false; }
  /// After the optimizer step that made pos.step: may add fields to the metrics line (e.g. a
  /// validation score at the end of an epoch).
  virtual void after_step(const Position& pos, nlohmann::json& metrics) {}
  /// True when `steps_done` completes a milestone (a stage end): checkpoint kept for good.
  virtual bool is_milestone(int64_t steps_done) const { return false; }

  /// Extra fields of RUN/config.json.
  virtual nlohmann::json config() const { return nlohmann::json::object(); }
  /// Extra fields of a checkpoint's train_state, and extra top-level sidecar keys.
  virtual nlohmann::json train_state(const Position& pos) const { return nlohmann::json::object(); }
  virtual nlohmann::json checkpoint_extra() const { return nlohmann::json::object(); }
  /// Resume: refuse a checkpoint of another kind (throw florence::Error), read the task's state.
  virtual void check_resume(const nlohmann::json& sidecar, const std::string& ckpt) {}
  /// Extra top-level sidecar keys of the final RUN/model.safetensors.
  virtual nlohmann::json final_extra() const { return checkpoint_extra(); }
  /// Writes run-folder files of its own before training (rank 0), e.g. a copy of the vocabulary.
  virtual void write_files() {}
  /// After a complete run (not interrupted): evaluation, RUN/result.json; sets r.result.
  virtual void finish(RunResult& r) {}
};

/// Runs (or resumes) `task` with its options(). Throws florence::Error for bad options, a fresh
/// run whose folder already holds checkpoints, data without a full batch, a non-finite loss or
/// gradient norm, and what the task throws.
RunResult run_task(TrainTask& task);

}  // namespace florence::train
