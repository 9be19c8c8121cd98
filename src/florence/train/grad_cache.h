#pragma once
// Gradient of the UniCL loss of one whole contrastive batch, optionally computed in micro-batches
// with GradCache (Gao et al., "Scaling Deep Contrastive Learning Batch Size under Memory Limited
// Setup", 2021), so that accumulation never shrinks the set of negatives:
//   1. forward every micro-batch WITHOUT autograd (train mode) -> u_m, v_m; concatenate to U, V;
//   2. loss = UniCL(U, V, y, tau) with U, V as leaf tensors requiring grad; backward gives
//      dL/dU, dL/dV (and dL/dlogit_scale, accumulated into the parameter directly: tau depends on
//      it alone);
//   3. for each micro-batch again WITH autograd: recompute u_m, v_m and backward
//      sum(u_m * dL/du_m) + sum(v_m * dL/dv_m), which accumulates exactly dL/dtheta by the chain rule.
// Random ops in the towers (dropout, stochastic depth) must draw the same numbers in passes 1 and 3,
// or the cached features would not be the ones differentiated. The default generator of the
// images' device is therefore snapshotted before each micro-batch of pass 1 and restored before
// the same micro-batch of pass 3; after pass 3 it is where pass 1 left it, as if each
// micro-batch had run once. (With stochastic layers the micro-batch split itself changes which
// random numbers each sample gets, so results equal the one-batch ones only with dropout and
// drop path off - which is how the unit test compares them.)
// Cost: one extra forward pass (about +1/3 compute); peak activation memory is one micro-batch.
//
// Distributed training passes the loss as a function of this rank's features (FeatureLoss): it
// gathers every rank's features with gradient (dist::gather_with_grad) and evaluates UniCL over
// the global batch, so step 2 differentiates the global loss w.r.t. the local features (the
// gather's backward all-reduces the feature gradients) and steps 1 and 3 stay local.
#include <torch/types.h>

#include <functional>

#include "florence/loss/unicl.h"
#include "florence/model/florence.h"

namespace florence::train {

struct ContrastiveStep {
  torch::Tensor loss;  ///< 0-d, detached
  torch::Tensor tau;   ///< 0-d, detached: the temperature used (exp(logit_scale), clamped)
};

/// Loss of a contrastive batch from this process's features: u [n, D] image features, v [n, D]
/// text features (rows paired), tau the 0-d temperature; returns a 0-d tensor differentiable
/// w.r.t. all three.
using FeatureLoss = std::function<torch::Tensor(const torch::Tensor& u, const torch::Tensor& v, const torch::Tensor& tau)>;

/// As below with the loss given as a function of the features (distributed training). `images`
/// and `ids` are this process's rows.
ContrastiveStep contrastive_backward(model::FlorenceModel& model, const torch::Tensor& images,
                                     const torch::Tensor& ids, int accum_steps, const FeatureLoss& loss_fn);

/// Accumulates d loss / d parameters into the parameters' .grad (clear them before: zero_grad, or
/// train::release_grads) and returns the loss of the whole batch.
///   images: [B, 3, S, S] float32 normalised pixels on the model's device.
///   ids:    [B, L] int64 token ids (each row with the EOT token), same device.
///   labels: [B] int64 UniCL labels, same device.
///   accum_steps: number of micro-batches (1 = plain forward/backward of the full batch); the
///     micro-batch size is ceil(B / accum_steps), the last one may be smaller.
/// Throws florence::Error if accum_steps < 1 or the leading sizes disagree.
ContrastiveStep contrastive_backward(model::FlorenceModel& model, const torch::Tensor& images,
                                     const torch::Tensor& ids, const torch::Tensor& labels, int accum_steps,
                                     const loss::UniCLOptions& loss_options = {});

}  // namespace florence::train
