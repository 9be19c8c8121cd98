#include "florence/train/schedule.h"

#include <cmath>

#include "florence/core/error.h"
#include "florence/core/strings.h"

namespace florence::train {

double LrSchedule::at(int64_t step) const {
  if (total_steps < 1) throw Error(fmt::format("lr schedule: total_steps must be >= 1, got {}", total_steps));
  if (warmup_steps < 0) throw Error(fmt::format("lr schedule: warmup_steps must be >= 0, got {}", warmup_steps));
  if (peak_lr < 0 || min_lr < 0) {
    throw Error(fmt::format("lr schedule: learning rates must be >= 0 (lr {}, min_lr {})", peak_lr, min_lr));
  }
  if (step < 0) step = 0;
  if (step >= total_steps) return min_lr;
  if (step < warmup_steps) return peak_lr * double(step + 1) / double(warmup_steps);
  const double span = double(total_steps - warmup_steps);
  const double progress = double(step - warmup_steps) / span;
  return min_lr + 0.5 * (1.0 + std::cos(M_PI * progress)) * (peak_lr - min_lr);
}

bool uses_weight_decay(const std::string& name, int64_t ndim) {
  if (ndim < 2) return false;
  for (const char* suffix : {"token_embedding.weight", "positional_embedding", "relative_position_bias_table",
                             "absolute_pos_embed", "logit_scale"}) {
    if (core::ends_with(name, suffix)) return false;
  }
  return true;
}

ParamGroups split_param_groups(const torch::nn::Module& module) {
  ParamGroups g;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) {
    const torch::Tensor& p = item.value();
    if (!p.requires_grad()) continue;
    if (uses_weight_decay(item.key(), p.dim())) {
      g.decay_names.push_back(item.key());
      g.decay.push_back(p);
    } else {
      g.no_decay_names.push_back(item.key());
      g.no_decay.push_back(p);
    }
  }
  return g;
}

}  // namespace florence::train
