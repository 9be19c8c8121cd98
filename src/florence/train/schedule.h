#pragma once
// Optimisation pieces of pretraining: the learning-rate schedule and the AdamW parameter groups.
//
// Schedule (open_clip training/scheduler.py `cosine_lr` convention, used by CLIP-style trainers):
//   step s in [0, total), W = warmup_steps, T = total_steps, peak = lr:
//     s <  W:  lr(s) = peak * (s + 1) / W                       (linear warm-up, reaches peak at s = W-1)
//     s >= W:  lr(s) = min + 0.5 * (1 + cos(pi * (s - W) / (T - W))) * (peak - min)
//   so lr(W) = peak, lr at the cosine midpoint s = W + (T-W)/2 is (peak + min) / 2, and
//   lr(T) = min (the value after the last step). One schedule spans all stages of the run.
//
// Weight decay (AdamW, Loshchilov & Hutter 2019, decoupled): applied to weight matrices and
// conv kernels only. No decay, as in Swin/CLIP/UniCL training code, on
//   * every tensor with fewer than 2 dimensions: LayerNorm weights and biases, all biases,
//     layer-scale gammas, the scalar `logit_scale`;
//   * embeddings: `token_embedding.weight`, `positional_embedding` (text tower);
//   * `relative_position_bias_table` (Swin's no_weight_decay_keywords) and `absolute_pos_embed`.
#include <torch/nn/module.h>
#include <torch/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace florence::train {

struct LrSchedule {
  double peak_lr = 5e-4;
  double min_lr = 0.0;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;

  /// Learning rate for optimiser step `step` (0-based), see the formula above. Steps past the
  /// end return min_lr. Throws florence::Error if total_steps < 1, warmup_steps < 0 or a rate is
  /// negative.
  double at(int64_t step) const;
};

/// True when parameter `name` (dotted state-dict name) with `ndim` dimensions gets weight decay
/// under the rule above.
bool uses_weight_decay(const std::string& name, int64_t ndim);

struct ParamGroups {
  std::vector<std::string> decay_names, no_decay_names;  ///< sorted as named_parameters() lists them
  std::vector<torch::Tensor> decay, no_decay;            ///< same order as the names
};

/// Splits the module's trainable parameters (requires_grad) into the two groups.
ParamGroups split_param_groups(const torch::nn::Module& module);

}  // namespace florence::train
