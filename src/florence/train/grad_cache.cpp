#include "florence/train/grad_cache.h"

#include <ATen/autocast_mode.h>

#include "florence/core/error.h"
#include "florence/train/run_state.h"

namespace florence::train {

ContrastiveStep contrastive_backward(model::FlorenceModel& model, const torch::Tensor& images,
                                     const torch::Tensor& ids, const torch::Tensor& labels, int accum_steps,
                                     const loss::UniCLOptions& loss_options) {
  if (labels.size(0) != images.size(0)) {
    throw Error(fmt::format("contrastive step: batch sizes differ (images {}, labels {})", images.size(0),
                            labels.size(0)));
  }
  return contrastive_backward(
      model, images, ids, accum_steps,
      [&](const torch::Tensor& u, const torch::Tensor& v, const torch::Tensor& tau) {
        return loss::unicl_loss(u, v, labels, tau, loss_options);
      });
}

ContrastiveStep contrastive_backward(model::FlorenceModel& model, const torch::Tensor& images,
                                     const torch::Tensor& ids, int accum_steps, const FeatureLoss& loss_fn) {
  if (accum_steps < 1) throw Error(fmt::format("accum_steps must be >= 1, got {}", accum_steps));
  const int64_t B = images.size(0);
  if (ids.size(0) != B) {
    throw Error(fmt::format("contrastive step: batch sizes differ (images {}, ids {})", B, ids.size(0)));
  }
  if (B == 0) throw Error("contrastive step: empty batch");

  if (accum_steps == 1) {
    torch::Tensor u = model->encode_image(images);
    torch::Tensor v = model->encode_text(ids);
    torch::Tensor tau = model->temperature();
    torch::Tensor loss = loss_fn(u, v, tau);
    loss.backward();
    return {loss.detach(), tau.detach()};
  }

  const int64_t micro = (B + accum_steps - 1) / accum_steps;
  const torch::Device device = images.device();
  std::vector<torch::Tensor> rng_states, us, vs;
  // Pass 1: features without autograd.
  {
    torch::NoGradGuard no_grad;
    for (int64_t start = 0; start < B; start += micro) {
      const int64_t len = std::min(micro, B - start);
      rng_states.push_back(rng_state(device));
      us.push_back(model->encode_image(images.narrow(0, start, len)));
      vs.push_back(model->encode_text(ids.narrow(0, start, len)));
    }
  }
  // Under autocast, LibTorch 1.13 caches the bfloat16 copy of each float32 leaf parameter it casts
  // (weights, biases) until the autocast region ends, even when the cast ran without autograd as
  // here; pass 3 would reuse those graph-less copies and the parameters would get no gradient
  // (PyTorch issue #65766, fixed after 1.13). Drop them (a no-op without autocast).
  at::autocast::clear_cache();
  const torch::Tensor rng_after = rng_state(device);
  // Pass 2: the loss of the whole batch, differentiated w.r.t. the cached features.
  torch::Tensor U = torch::cat(us).detach().requires_grad_(true);
  torch::Tensor V = torch::cat(vs).detach().requires_grad_(true);
  us.clear();
  vs.clear();
  torch::Tensor tau = model->temperature();
  torch::Tensor loss = loss_fn(U, V, tau);
  loss.backward();
  const torch::Tensor gU = U.grad(), gV = V.grad();
  // Pass 3: recompute each micro-batch with autograd and push the cached feature gradients through.
  size_t m = 0;
  for (int64_t start = 0; start < B; start += micro, ++m) {
    const int64_t len = std::min(micro, B - start);
    set_rng_state(device, rng_states[m]);
    torch::Tensor u = model->encode_image(images.narrow(0, start, len));
    torch::Tensor v = model->encode_text(ids.narrow(0, start, len));
    torch::Tensor surrogate = (u * gU.narrow(0, start, len)).sum() + (v * gV.narrow(0, start, len)).sum();
    surrogate.backward();
  }
  set_rng_state(device, rng_after);
  return {loss.detach(), tau.detach()};
}

}  // namespace florence::train
