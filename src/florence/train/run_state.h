#pragma once
// State shared by the training loops (pretraining, trainer.h; fine-tuning, finetune.h): the
// optimizer state by parameter name, the default generator's state, checkpoint file names, and
// the SIGINT/SIGTERM "stop after this step" request.
#include <torch/types.h>

#include <atomic>
#include <csignal>
#include <string>

#include "florence/core/checkpoint.h"

namespace torch::nn {
class Module;
}
namespace torch::optim {
class AdamW;
}

namespace florence::train {

/// The optimizer-state file beside a checkpoint: "X/step_0000010.safetensors" ->
/// "X/step_0000010.optim.safetensors" (any other name gets ".optim.safetensors" appended).
std::string optim_path(const std::string& weights_path);

/// AdamW's per-parameter state keyed by parameter name: NAME.exp_avg, NAME.exp_avg_sq ([same shape
/// as the parameter]) and NAME.step (0-d int64). Parameters without state (never stepped) are
/// absent. LibTorch keys the state by the parameter's TensorImpl (a string of the pointer in 1.x,
/// the pointer in 2.x); both forms are handled. Throws florence::Error when state exists but
/// matches no parameter of `module`.
core::TensorMap adamw_state_dict(torch::optim::AdamW& opt, const torch::nn::Module& module);

/// Replaces `opt`'s state by `saved` (adamw_state_dict's layout), moved to each parameter's device
/// and dtype; returns how many parameters got state. Throws florence::Error naming `origin` and the
/// parameter when an entry is incomplete or its shape differs from the parameter's.
int64_t load_adamw_state_dict(torch::optim::AdamW& opt, const torch::nn::Module& module, const core::TensorMap& saved,
                              const std::string& origin);

/// One AdamW step of `opt`, as opt.step() computes it (decoupled weight decay, each group's lr,
/// betas, eps and weight decay; state created on a parameter's first step, keyed as LibTorch keys
/// it, so adamw_state_dict and a later opt.step() see the same state). When every parameter with a
/// gradient is a float32 CPU tensor with contiguous parameter, gradient and state, none is listed
/// twice, no group uses AMSGrad and FLORENCE_FUSED_KERNELS is not 0 (core/fused.h), the update is
/// one pass per element (core::adamw_update) over all parameters at once, spread over the intra-op
/// threads; otherwise it calls opt.step() (and logs why, once per process). Results equal
/// opt.step()'s to float rounding (tests/unit FusedOps.AdamWStepFollowsLibTorch). Throws
/// c10::Error for a sparse gradient, as opt.step() does.
void adamw_step(torch::optim::AdamW& opt);

/// State of the default generator of `device` (uint8 tensor), and its inverse.
torch::Tensor rng_state(const torch::Device& device);
void set_rng_state(const torch::Device& device, const torch::Tensor& state);

/// While alive (and enabled), SIGINT and SIGTERM only record a stop request, which the training
/// loop reads after each step (checkpoint, then return); a second signal takes the default action
/// at once. The previous handlers come back on destruction. One scope at a time per process.
class StopSignalScope {
 public:
  explicit StopSignalScope(bool enable);
  ~StopSignalScope();
  StopSignalScope(const StopSignalScope&) = delete;
  StopSignalScope& operator=(const StopSignalScope&) = delete;

  /// The signal number received, 0 when none.
  static int signal();

 private:
  bool enabled_;
  struct sigaction old_int_ {}, old_term_ {};
};

}  // namespace florence::train
