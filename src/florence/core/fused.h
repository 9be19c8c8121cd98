#pragma once
// Fused elementwise kernels: one pass over memory where LibTorch 1.13 takes several.
//
// Profiled on florence-t (docs/performance.md): QuickGELU as x * sigmoid(1.702 x) is three passes
// forward and about six backward (25% of the text tower); AdamW's per-tensor update is ~8 passes
// per parameter (~22% of a training step). Here each is one loop over the data, spread over
// LibTorch's intra-op threads and compiled for AVX-512, AVX2+FMA and baseline x86-64 (chosen at run
// time by the CPU; GCC target_clones). Results follow LibTorch's to float rounding, not bit for bit.
#include <torch/types.h>

#include <cstdint>

namespace florence::core {

/// Whether the fused paths below are used: true unless the environment variable
/// FLORENCE_FUSED_KERNELS is "0" when first asked (read once per process). With it off,
/// quick_gelu / quick_gelu_ / linear compute the composite LibTorch expressions and
/// train::adamw_step / train::release_grads call opt.step() / opt.zero_grad(): the LibTorch paths
/// of before, for comparison (docs/performance.md) or to rule the kernels out when debugging.
bool fused_kernels_enabled();

/// QuickGELU, x * sigmoid(1.702 x) (CLIP's clip/model.py `QuickGELU`; the 1.702 is its constant),
/// on a tensor of any shape -> the same shape and dtype. Float32 and bfloat16 CPU tensors take the
/// fused kernel (forward one pass, backward one pass, saving only x; bfloat16 is computed in float32
/// and rounded once); other dtypes and devices (float64, CUDA) use the composite torch expression.
/// Differentiable once: the backward is a kernel, not a graph, and throws florence::Error under
/// create_graph (double backward). The kernel's exp
/// is a degree-6 polynomial after range reduction; the float32 result follows the float32 composite
/// to 1e-6 relative, the bfloat16 one is within one bfloat16 rounding of the exact value
/// (tests/unit/core/test_fused.cpp).
torch::Tensor quick_gelu(const torch::Tensor& x);

/// In place, for inference: x = quick_gelu(x) in one pass (float32 or bfloat16 CPU, contiguous; the
/// composite otherwise);
/// returns x. Throws florence::Error when x needs a gradient (use quick_gelu there).
torch::Tensor& quick_gelu_(torch::Tensor& x);

/// y = x W^T + b for x [..., in], W [out, in], b [out] or undefined -> [..., out]. A contiguous x of
/// more than two dimensions is multiplied as one [rows, in] matrix with the bias added inside the
/// product (addmm). LibTorch 1.13's linear does that for 2-D and contiguous 3-D x only; for 4-D
/// and 5-D x (Swin's and Video Swin's MLP on [B, H, W, C] maps) it runs matmul and then a separate
/// add_ pass over the output. Everything else goes to torch::linear. Differentiable; values equal
/// torch::linear's to float rounding (tests/unit/core/test_fused.cpp).
torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias);

/// One AdamW step (decoupled weight decay, no AMSGrad) over n float32 elements in place, as
/// LibTorch's torch::optim::AdamW computes it per element:
///   p *= 1 - lr * weight_decay
///   m  = beta1 * m + (1 - beta1) * g
///   v  = beta2 * v + (1 - beta2) * g * g
///   p -= lr / bias_correction1 * m / (sqrt(v) / sqrt(bias_correction2) + eps)
/// with bias_correction_i = 1 - beta_i^step. `step` is the step count after this update (>= 1).
/// Single-threaded; the caller splits the work (train::adamw_step spreads all parameters over the
/// intra-op threads).
struct AdamWScalars {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
  int64_t step = 1;
};
void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, const AdamWScalars& s);

}  // namespace florence::core
