// Fused elementwise kernels; see fused.h. Compiled with -fno-math-errno (CMakeLists.txt) so that
// sqrt vectorizes; the loops are written for GCC's auto-vectorizer (no calls, no branches).
#include "florence/core/fused.h"

#include "florence/core/error.h"

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace florence::core {

namespace {

#if defined(__GNUC__) && __GNUC__ >= 12 && !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__) && \
    !defined(__SANITIZE_ADDRESS__)
// One copy of each kernel per instruction set, picked at load time by the CPU (x86-64-v4: AVX-512;
// v3: AVX2 + FMA). Needs glibc's ifunc and GCC >= 12 (11.1/11.2 fail on these arch names: GCC bug
// 101696); elsewhere the kernels are compiled once for the build's target.
#define FLORENCE_KERNEL_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FLORENCE_KERNEL_CLONES
#endif

constexpr float kQuickGeluAlpha = 1.702f;  // CLIP clip/model.py QuickGELU
constexpr int64_t kGrain = 16384;          // elements per task for at::parallel_for

// exp(x) for float, written to vectorize: x = n ln2 + r with |r| <= ln2/2, exp(r) by a degree-6
// polynomial (the Cephes expf coefficients), 2^n built in the exponent bits. Inputs are clamped to
// [-87.3, 88.3], so the result stays a normal float (exp(-inf) -> ~1.2e-38, exp(+inf) -> ~2.2e38).
// n is read from the bits of the rounded sum, not cast from float (a NaN cast to int is undefined
// behaviour): NaN passes the clamp, gives some finite scale, and stays NaN through r and y.
inline __attribute__((always_inline)) float exp_approx(float x) {
  x = std::min(std::max(x, -87.3f), 88.3f);
  const float round_magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to the nearest integer
  const float shifted = x * 1.44269504088896341f + round_magic;  // 0x4B400000 + n in the low bits
  const float n = shifted - round_magic;
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  const float r2 = r * r;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r2 + r + 1.0f;
  uint32_t shifted_bits;
  std::memcpy(&shifted_bits, &shifted, sizeof shifted_bits);
  const uint32_t bits = ((shifted_bits - 0x4B400000u + 127u) & 0xFFu) << 23;  // 2^n, n in [-126, 127]
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return y * scale;
}

inline __attribute__((always_inline)) float quick_gelu_value(float x) {
  return x / (1.0f + exp_approx(-kQuickGeluAlpha * x));
}

// Separate in-place kernels: with y == x the out-of-place loop would fail the vectorizer's runtime
// overlap check and run scalar.
FLORENCE_KERNEL_CLONES
void quick_gelu_forward_kernel(const float* __restrict x, float* __restrict y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = quick_gelu_value(x[i]);
}

FLORENCE_KERNEL_CLONES
void quick_gelu_inplace_kernel(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = quick_gelu_value(x[i]);
}

// d/dx [x s(a x)] = s + a x s (1 - s), s = sigmoid(a x).
inline __attribute__((always_inline)) float quick_gelu_grad(float x, float gy) {
  const float s = 1.0f / (1.0f + exp_approx(-kQuickGeluAlpha * x));
  return gy * (s * (1.0f + kQuickGeluAlpha * x * (1.0f - s)));
}

FLORENCE_KERNEL_CLONES
void quick_gelu_backward_kernel(const float* x, const float* gy, float* gx, int64_t n) {
  for (int64_t i = 0; i < n; ++i) gx[i] = quick_gelu_grad(x[i], gy[i]);
}

// bfloat16 is the upper half of a float32: widening is a shift; narrowing rounds to nearest even
// as c10::BFloat16 does (NaN -> the quiet NaN 0x7FC0), written without branches so it vectorizes.
inline __attribute__((always_inline)) float bf16_load(uint16_t h) {
  const uint32_t bits = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
inline __attribute__((always_inline)) uint16_t bf16_store(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  const uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
  return f != f ? uint16_t(0x7FC0) : uint16_t(rounded);
}

// bfloat16 in and out (autocast and --precision bf16), float32 arithmetic inside: one rounding
// per output where the composite rounds after each of its three operations.
FLORENCE_KERNEL_CLONES
void quick_gelu_forward_bf16_kernel(const uint16_t* __restrict x, uint16_t* __restrict y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = bf16_store(quick_gelu_value(bf16_load(x[i])));
}

FLORENCE_KERNEL_CLONES
void quick_gelu_inplace_bf16_kernel(uint16_t* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = bf16_store(quick_gelu_value(bf16_load(x[i])));
}

FLORENCE_KERNEL_CLONES
void quick_gelu_backward_bf16_kernel(const uint16_t* x, const uint16_t* gy, uint16_t* gx, int64_t n) {
  for (int64_t i = 0; i < n; ++i) gx[i] = bf16_store(quick_gelu_grad(bf16_load(x[i]), bf16_load(gy[i])));
}

FLORENCE_KERNEL_CLONES
void adamw_kernel(float* p, const float* g, float* m, float* v, int64_t n, float decay, float beta1, float one_minus_beta1,
                  float beta2, float one_minus_beta2, float sqrt_bc2, float eps, float neg_step) {
  for (int64_t i = 0; i < n; ++i) {
    const float gi = g[i];
    const float mi = m[i] * beta1 + one_minus_beta1 * gi;
    const float vi = v[i] * beta2 + one_minus_beta2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    const float denom = std::sqrt(vi) / sqrt_bc2 + eps;
    p[i] = p[i] * decay + neg_step * (mi / denom);
  }
}

bool kernel_applies(const torch::Tensor& x) {
  return x.device().is_cpu() && (x.scalar_type() == torch::kFloat32 || x.scalar_type() == torch::kBFloat16) &&
         x.layout() == torch::kStrided;
}

uint16_t* bf16_ptr(const torch::Tensor& t) { return reinterpret_cast<uint16_t*>(t.data_ptr<at::BFloat16>()); }

// kernel(offset, count) over [0, n) in chunks of kGrain elements spread over the intra-op threads.
template <typename Kernel>
void for_chunks(int64_t n, const Kernel& kernel) {
  at::parallel_for(0, n, kGrain, [&](int64_t lo, int64_t hi) { kernel(lo, hi - lo); });
}

// y = quick_gelu(x) for contiguous x and y of the same dtype (float32 or bfloat16; y may be x).
void quick_gelu_forward_into(const torch::Tensor& x, const torch::Tensor& y) {
  const bool bf16 = x.scalar_type() == torch::kBFloat16;
  if (x.data_ptr() == y.data_ptr()) {
    if (bf16) {
      uint16_t* xp = bf16_ptr(x);
      for_chunks(x.numel(), [&](int64_t at, int64_t k) { quick_gelu_inplace_bf16_kernel(xp + at, k); });
    } else {
      float* xp = x.data_ptr<float>();
      for_chunks(x.numel(), [&](int64_t at, int64_t k) { quick_gelu_inplace_kernel(xp + at, k); });
    }
  } else if (bf16) {
    const uint16_t* xp = bf16_ptr(x);
    uint16_t* yp = bf16_ptr(y);
    for_chunks(x.numel(), [&](int64_t at, int64_t k) { quick_gelu_forward_bf16_kernel(xp + at, yp + at, k); });
  } else {
    const float* xp = x.data_ptr<float>();
    float* yp = y.data_ptr<float>();
    for_chunks(x.numel(), [&](int64_t at, int64_t k) { quick_gelu_forward_kernel(xp + at, yp + at, k); });
  }
}

torch::Tensor quick_gelu_composite(const torch::Tensor& x) { return x * torch::sigmoid(1.702 * x); }

torch::Tensor quick_gelu_forward_tensor(const torch::Tensor& x) {
  auto xc = x.contiguous();
  auto y = torch::empty_like(xc, torch::MemoryFormat::Contiguous);
  quick_gelu_forward_into(xc, y);
  return y;
}

struct QuickGeluFunction : torch::autograd::Function<QuickGeluFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x) {
    ctx->save_for_backward({x});
    return quick_gelu_forward_tensor(x);
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grad_out) {
    // With create_graph the gradient would need a graph of its own; the kernel has none.
    if (torch::GradMode::is_enabled())
      throw Error("quick_gelu: double backward (create_graph) is not supported; use x * sigmoid(1.702 * x)");
    const auto x = ctx->get_saved_variables()[0].contiguous();
    const auto gy = grad_out[0].to(x.scalar_type()).contiguous();
    auto gx = torch::empty_like(x, torch::MemoryFormat::Contiguous);
    if (x.scalar_type() == torch::kBFloat16) {
      const uint16_t *xp = bf16_ptr(x), *gyp = bf16_ptr(gy);
      uint16_t* gxp = bf16_ptr(gx);
      for_chunks(x.numel(), [&](int64_t at, int64_t k) { quick_gelu_backward_bf16_kernel(xp + at, gyp + at, gxp + at, k); });
    } else {
      const float *xp = x.data_ptr<float>(), *gyp = gy.data_ptr<float>();
      float* gxp = gx.data_ptr<float>();
      for_chunks(x.numel(), [&](int64_t at, int64_t k) { quick_gelu_backward_kernel(xp + at, gyp + at, gxp + at, k); });
    }
    return {gx};
  }
};

}  // namespace

bool fused_kernels_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("FLORENCE_FUSED_KERNELS");
    return v == nullptr || std::string(v) != "0";
  }();
  return enabled;
}

torch::Tensor quick_gelu(const torch::Tensor& x) {
  if (!kernel_applies(x) || !fused_kernels_enabled()) return quick_gelu_composite(x);
  if (torch::GradMode::is_enabled() && x.requires_grad()) return QuickGeluFunction::apply(x);
  return quick_gelu_forward_tensor(x);
}

torch::Tensor& quick_gelu_(torch::Tensor& x) {
  if (torch::GradMode::is_enabled() && x.requires_grad())
    throw Error("quick_gelu_: the input needs a gradient; use quick_gelu");
  // An inference tensor outside InferenceMode: the composite's mul_ refuses it before writing.
  if (!kernel_applies(x) || !x.is_contiguous() || !fused_kernels_enabled() ||
      (x.is_inference() && !c10::InferenceMode::is_enabled())) {
    x.mul_(torch::sigmoid(1.702 * x));
    return x;
  }
  quick_gelu_forward_into(x, x);
  x.unsafeGetTensorImpl()->bump_version();
  return x;
}

torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  const bool fused = fused_kernels_enabled() && x.dim() > 2 && x.numel() > 0 && x.is_contiguous() && bias.defined() &&
                     bias.dim() == 1 && weight.dim() == 2 && x.size(-1) == weight.size(1);
  if (!fused) return torch::linear(x, weight, bias);
  std::vector<int64_t> shape = x.sizes().vec();
  const int64_t in = shape.back();
  shape.back() = weight.size(0);
  return torch::addmm(bias, x.view({-1, in}), weight.t()).view(shape);
}

void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, const AdamWScalars& s) {
  const double step = static_cast<double>(s.step);
  const double bc1 = 1.0 - std::pow(s.beta1, step);
  const double bc2 = 1.0 - std::pow(s.beta2, step);
  adamw_kernel(p, g, m, v, n, static_cast<float>(1.0 - s.lr * s.weight_decay), static_cast<float>(s.beta1),
               static_cast<float>(1.0 - s.beta1), static_cast<float>(s.beta2), static_cast<float>(1.0 - s.beta2),
               static_cast<float>(std::sqrt(bc2)), static_cast<float>(s.eps), static_cast<float>(-s.lr / bc1));
}

}  // namespace florence::core
