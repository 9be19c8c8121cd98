#pragma once
// UniCL: bidirectional supervised contrastive loss in image-text-label space.
//
// Source: Yang et al., "Unified Contrastive Learning in Image-Text-Label Space", CVPR 2022
// (arXiv 2204.03610), Sec. 3 (the bidirectional objective). Florence (arXiv 2111.11432) §2.1
// uses it with the label of an image-text pair defined as a hash of its exact (cleaned) text,
// so pairs with identical text are positives of each other. With all labels distinct it
// reduces to CLIP's symmetric InfoNCE.
//
// For a batch of N pairs with L2-normalised image features u_i, text features v_j, labels y
// and temperature tau (logits = tau * u v^T):
//   P(i)  = {k : y_k = y_i}                                  (always contains i itself)
//   L_i2t = -(1/N) sum_i 1/|P(i)| sum_{k in P(i)} log softmax_k(tau * u_i . v_1..N)
//   L_t2i = -(1/N) sum_j 1/|P(j)| sum_{k in P(j)} log softmax_k(tau * v_j . u_1..N)
//   L     = L_i2t + L_t2i                   (UniCLOptions::average_directions == false, default)
//   L     = (L_i2t + L_t2i) / 2             (average_directions == true: CLIP's convention)
//
// Sum vs mean of the two directions. The default is the SUM, as the UniCL paper (Sec. 3) and
// Florence §2.1 write it. The public reference code does not settle it: microsoft/UniCL
// `main.py` (train_one_epoch) only applies a one-directional cross entropy to tau*u v^T, and the
// maintainers confirm in microsoft/UniCL issue #6 that the bidirectional training loss was never
// released ("our code only supports inference"). CLIP (Radford et al. 2021, Fig. 3 pseudocode)
// and its common re-implementations average the two directions, so `average_directions = true`
// gives values directly comparable with CLIP losses (ln N for a uniform model instead of 2 ln N).
// The choice only rescales the loss and its gradients by 2; AdamW is (up to its eps) invariant
// to that.
#include <torch/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace florence::loss {

struct UniCLOptions {
  /// false (default): L = L_i2t + L_t2i (UniCL paper Sec. 3, Florence §2.1).
  /// true: L = (L_i2t + L_t2i) / 2 (CLIP's symmetric cross entropy convention).
  bool average_directions = false;
};

/// UniCL loss over one (global) batch.
///   image_features: [N, D] float32/float64, L2-normalised rows u_i (not re-normalised here).
///   text_features:  [N, D] same dtype and device, L2-normalised rows v_i; row i pairs with u_i.
///   labels:         [N] int64 on the same device; equal labels are positives of each other.
///                   Use text_label() for image-text pairs, class ids (>= 0) for image-label data.
///   tau:            0-d (or 1-element) tensor, the logit scale exp(logit_scale) as the model
///                   already clamped it (at 100, CLIP/UniCL); gradients flow into it. Floating.
/// Returns a 0-d tensor (dtype of the features). Numerically stable (log_softmax), no host syncs,
/// works on any device.
/// Throws florence::Error when a features tensor is not 2-D, the two disagree in shape, dtype or
/// device, N == 0, dtype is not float32/float64, labels are not a 1-D int64 tensor of length N
/// on the same device, or tau has more than one element.
torch::Tensor unicl_loss(const torch::Tensor& image_features, const torch::Tensor& text_features,
                         const torch::Tensor& labels, const torch::Tensor& tau,
                         const UniCLOptions& options = {});

/// UniCL loss for the rows one rank owns, against the whole (gathered) batch: the `--local-loss`
/// form of distributed training. The global batch has N rows; this rank owns rows
/// [offset, offset + n).
///   local_image_features:  [n, D] u_i of the local rows (the grad-carrying tensors).
///   local_text_features:   [n, D] v_j of the local rows.
///   global_image_features: [N, D] all ranks' u, in global row order (local rows included).
///   global_text_features:  [N, D] all ranks' v, in the same order.
///   global_labels:         [N] int64; the local rows' labels are global_labels[offset : offset+n].
///   offset:                index of the first local row in the global batch.
/// Computes, over local rows only (softmax and positive sets |P(i)| over all N columns):
///   l_i2t = -(1/n) sum_{i local} 1/|P(i)| sum_{k in P(i)} log softmax_k(tau u_i . V_global)
///   l_t2i = -(1/n) sum_{j local} 1/|P(j)| sum_{k in P(j)} log softmax_k(tau v_j . U_global)
/// combined as in unicl_loss (sum, or mean with average_directions).
///
/// Normalisation: by the LOCAL row count n (a mean over this rank's rows), so that
///   * world = 1 (n = N, offset = 0) gives exactly unicl_loss;
///   * for any sharding, sum_r (n_r / N) * loss_r = unicl_loss on the global batch; with equal
///     shards (n_r = N / W, e.g. a drop-last sampler) the plain MEAN over ranks equals the
///     global loss. That mean is what DDP's gradient averaging computes, so when the gathered
///     features carry gradients back to their owners (an all_gather whose backward sums the
///     gradients over ranks), the averaged parameter gradient equals the gradient of the global
///     loss: the learning rate does not depend on the world size. If the other ranks' rows are
///     detached instead, only the row-side gradient terms reach this rank's features (the usual
///     local-loss approximation) and the loss value is unchanged.
/// Throws florence::Error on the shape/dtype/device problems listed for unicl_loss, when the
/// local and global feature widths differ, or when [offset, offset + n) is not inside [0, N).
torch::Tensor unicl_loss_local(const torch::Tensor& local_image_features,
                               const torch::Tensor& local_text_features,
                               const torch::Tensor& global_image_features,
                               const torch::Tensor& global_text_features,
                               const torch::Tensor& global_labels, int64_t offset,
                               const torch::Tensor& tau, const UniCLOptions& options = {});

/// UniCL label of an image-text pair: a stable 64-bit FNV-1a hash (FNV prime 0x100000001b3,
/// offset basis 0xcbf29ce484222325; Fowler-Noll-Vo) of the exact bytes of the cleaned text, with
/// the top bit forced to 1. Label space scheme (so the two kinds never collide):
///   * class labels (image-label data) are class ids >= 0;
///   * text labels are negative, in [INT64_MIN, -2]; -1 is never produced (a hash that would
///     give -1 maps to INT64_MIN) because the data layer uses -1 for "no class".
/// The caller cleans the text (whitespace, case policy) before hashing; the hash itself does no
/// normalisation, so two texts are positives iff their cleaned bytes are identical (Florence
/// §2.1). Stable across runs, machines and endianness.
int64_t text_label(std::string_view cleaned_text);

/// text_label() of each text: [texts.size()] int64 CPU tensor (move it to the features' device).
torch::Tensor text_labels(const std::vector<std::string>& cleaned_texts);

/// Positive mask of UniCL: targets[i][k] = 1 if row_labels[i] == col_labels[k] else 0.
///   row_labels: [n] int64, col_labels: [N] int64 on the same device -> [n, N] of `dtype`
///   (float32 or float64) on that device.
/// Throws florence::Error when a labels tensor is not 1-D int64, the devices differ, or dtype is
/// not a floating type.
torch::Tensor labels_to_targets(const torch::Tensor& row_labels, const torch::Tensor& col_labels,
                                torch::ScalarType dtype = torch::kFloat32);

/// Square form: labels [N] -> [N, N] 0/1 matrix (symmetric, ones on the diagonal).
torch::Tensor labels_to_targets(const torch::Tensor& labels,
                                torch::ScalarType dtype = torch::kFloat32);

}  // namespace florence::loss
