// Swin / CoSwin building blocks; see swin_layers.h for the contracts and references.
#include "florence/vision/swin_layers.h"

#include "florence/core/batched_matmul.h"
#include "florence/core/fused.h"
#include "florence/core/error.h"

#include <c10/core/InferenceMode.h>
#include <torch/csrc/autograd/custom_function.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <vector>

namespace florence::vision {

namespace F = torch::nn::functional;

namespace {
constexpr size_t kMaxCachedMasks = 32;  // distinct (padded size, shift, device, dtype) per block
}  // namespace

void trunc_normal_(torch::Tensor& t, double std) {
  // Inverse-CDF sampling of N(0, 1) restricted to [-2, 2], then scaled: the same scheme as
  // torch.nn.init.trunc_normal_ (which the Swin reference calls with std 0.02).
  torch::NoGradGuard no_grad;
  const double lo = 0.5 * (1.0 + std::erf(-2.0 / std::sqrt(2.0)));
  const double hi = 0.5 * (1.0 + std::erf(2.0 / std::sqrt(2.0)));
  t.uniform_(2.0 * lo - 1.0, 2.0 * hi - 1.0);
  t.erfinv_();
  t.mul_(std * std::sqrt(2.0));
  t.clamp_(-2.0 * std, 2.0 * std);
}

torch::Tensor relative_position_index(int64_t window, torch::Device device) {
  if (window < 1) throw Error(fmt::format("relative_position_index: window must be >= 1, got {}", window));
  const int64_t n = window * window;
  const int64_t span = 2 * window - 1;
  std::vector<int64_t> idx(static_cast<size_t>(n * n));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t hi = i / window, wi = i % window;
    for (int64_t j = 0; j < n; ++j) {
      const int64_t hj = j / window, wj = j % window;
      idx[static_cast<size_t>(i * n + j)] = (hi - hj + window - 1) * span + (wi - wj + window - 1);
    }
  }
  return torch::tensor(idx, torch::kLong).view({n, n}).to(device);
}

torch::Tensor shifted_window_mask(int64_t pad_h, int64_t pad_w, int64_t window, int64_t shift_h,
                                  int64_t shift_w, const torch::TensorOptions& options) {
  if (window < 1 || pad_h < window || pad_w < window || pad_h % window || pad_w % window) {
    throw Error(fmt::format("shifted_window_mask: map {}x{} is not a positive multiple of window {}",
                            pad_h, pad_w, window));
  }
  if (shift_h < 0 || shift_h >= window || shift_w < 0 || shift_w >= window) {
    throw Error(fmt::format("shifted_window_mask: shift ({}, {}) outside [0, {})", shift_h, shift_w, window));
  }
  // Region label per row / column of the rolled map (three bands per shifted dimension).
  auto band = [window](int64_t pos, int64_t size, int64_t shift) -> int64_t {
    if (shift == 0) return 0;
    if (pos < size - window) return 0;
    if (pos < size - shift) return 1;
    return 2;
  };
  const int64_t nwh = pad_h / window, nww = pad_w / window;
  const int64_t nw = nwh * nww, n = window * window;
  std::vector<int64_t> label(static_cast<size_t>(nw * n));
  for (int64_t a = 0; a < nwh; ++a)
    for (int64_t b = 0; b < nww; ++b)
      for (int64_t r = 0; r < window; ++r)
        for (int64_t c = 0; c < window; ++c) {
          const int64_t row = a * window + r, col = b * window + c;
          label[static_cast<size_t>((a * nww + b) * n + r * window + c)] =
              band(row, pad_h, shift_h) * 3 + band(col, pad_w, shift_w);
        }
  std::vector<float> mask(static_cast<size_t>(nw * n * n));
  for (int64_t w = 0; w < nw; ++w)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j)
        mask[static_cast<size_t>((w * n + i) * n + j)] =
            label[static_cast<size_t>(w * n + i)] == label[static_cast<size_t>(w * n + j)] ? 0.0f : -100.0f;
  auto opts = options.dtype_opt().has_value() ? options : options.dtype(torch::kFloat32);
  return torch::tensor(mask, torch::kFloat32).view({nw, n, n}).to(opts);
}

torch::Tensor drop_path(const torch::Tensor& x, double p, bool training) {
  if (!training || p <= 0.0) return x;
  const double keep = 1.0 - p;
  std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
  shape[0] = x.size(0);
  auto noise = torch::empty(shape, x.options()).bernoulli_(keep);
  if (keep > 0.0) noise.div_(keep);
  return x * noise;
}

namespace {

// x [R, C] -> [K, C] by index (R = a zero row).
torch::Tensor take_rows(const torch::Tensor& x, const torch::Tensor& index, bool zero_row) {
  const torch::Tensor src = zero_row ? torch::cat({x, torch::zeros({1, x.size(1)}, x.options())}, 0) : x.contiguous();
  return src.index_select(0, index);
}

struct GatherRows : torch::autograd::Function<GatherRows> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& index, const torch::Tensor& inverse) {
    const int64_t rows = x.size(0), out_rows = index.size(0);
    ctx->save_for_backward({inverse});
    ctx->saved_data["zero_row_back"] = inverse.numel() > 0 && inverse.max().item<int64_t>() >= out_rows;
    return take_rows(x, index, index.numel() > 0 && index.max().item<int64_t>() >= rows);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    const auto saved = ctx->get_saved_variables();
    return {take_rows(grad[0], saved[0], ctx->saved_data["zero_row_back"].toBool()), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor gather_rows(const torch::Tensor& x, const torch::Tensor& index, const torch::Tensor& inverse) {
  if (x.dim() != 2) throw Error(fmt::format("gather_rows: expected a 2-D [R, C] tensor, got {}-D", x.dim()));
  if (index.dim() != 1 || inverse.dim() != 1 || index.scalar_type() != torch::kLong || inverse.scalar_type() != torch::kLong)
    throw Error("gather_rows: index and inverse must be 1-D int64 tensors");
  if (inverse.size(0) != x.size(0))
    throw Error(fmt::format("gather_rows: inverse has {} entries for {} rows", inverse.size(0), x.size(0)));
  if (torch::GradMode::is_enabled() && x.requires_grad()) return GatherRows::apply(x, index, inverse);
  return take_rows(x, index, index.numel() > 0 && index.max().item<int64_t>() >= x.size(0));
}

WindowPlan window_plan(int64_t B, int64_t H, int64_t W, int64_t window, int64_t shift, torch::Device device) {
  if (B < 1 || H < 1 || W < 1 || window < 1)
    throw Error(fmt::format("window_plan: bad layout B={} H={} W={} window={}", B, H, W, window));
  WindowPlan p;
  p.ph = H + (window - H % window) % window;
  p.pw = W + (window - W % window) % window;
  p.shift_h = effective_shift(p.ph, window, shift);
  p.shift_w = effective_shift(p.pw, window, shift);
  const int64_t nwh = p.ph / window, nww = p.pw / window, n = window * window;
  const int64_t map_rows = B * H * W, win_rows = B * nwh * nww * n;
  std::vector<int64_t> to_win(static_cast<size_t>(win_rows)), to_map(static_cast<size_t>(map_rows), win_rows);
  int64_t k = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t a = 0; a < nwh; ++a)
      for (int64_t c = 0; c < nww; ++c)
        for (int64_t r = 0; r < window; ++r)
          for (int64_t q = 0; q < window; ++q, ++k) {
            // Rolling by -shift: the token at rolled (y, x) is the padded map's ((y + sh) % ph, ...).
            const int64_t y = (a * window + r + p.shift_h) % p.ph, x = (c * window + q + p.shift_w) % p.pw;
            if (y < H && x < W) {
              const int64_t row = (b * H + y) * W + x;
              to_win[static_cast<size_t>(k)] = row;
              to_map[static_cast<size_t>(row)] = k;
            } else {
              to_win[static_cast<size_t>(k)] = map_rows;  // zero padding
            }
          }
  p.to_windows = torch::tensor(to_win, torch::kLong).to(device);
  p.to_map = torch::tensor(to_map, torch::kLong).to(device);
  return p;
}

// ---------------------------------------------------------------------------------------------

WindowAttentionImpl::WindowAttentionImpl(const WindowAttentionOptions& o) : options(o) {
  if (o.dim % o.num_heads != 0) {
    throw Error(fmt::format("WindowAttention: dim {} not divisible by num_heads {}", o.dim, o.num_heads));
  }
  qkv = register_module("qkv", torch::nn::Linear(torch::nn::LinearOptions(o.dim, 3 * o.dim).bias(o.qkv_bias)));
  proj = register_module("proj", torch::nn::Linear(o.dim, o.dim));
  const int64_t span = 2 * o.window - 1;
  relative_position_bias_table =
      register_parameter("relative_position_bias_table", torch::zeros({span * span, o.num_heads}));
  trunc_normal_(relative_position_bias_table, 0.02);
}

torch::Tensor WindowAttentionImpl::cached_index(const torch::Device& device) {
  std::lock_guard<std::mutex> lock(cache_mutex_);
  const std::string key = device.str();
  auto it = index_cache_.find(key);
  if (it != index_cache_.end()) return it->second;
  // Built outside inference mode so the cached tensor is also usable under autograd.
  c10::InferenceMode normal_mode(false);
  auto idx = relative_position_index(options.window, device).view(-1);
  index_cache_.emplace(key, idx);
  return idx;
}

torch::Tensor WindowAttentionImpl::cached_mask(int64_t pad_h, int64_t pad_w, int64_t sh, int64_t sw,
                                               const torch::TensorOptions& opts) {
  std::lock_guard<std::mutex> lock(cache_mutex_);
  auto key = std::make_tuple(pad_h, pad_w, sh, sw, opts.device().str(),
                             static_cast<int>(c10::typeMetaToScalarType(opts.dtype())));
  auto it = mask_cache_.find(key);
  if (it != mask_cache_.end()) return it->second;
  // Bounded: multi-scale inputs would otherwise grow the cache without limit.
  if (mask_cache_.size() >= kMaxCachedMasks) mask_cache_.clear();
  c10::InferenceMode normal_mode(false);
  auto m = shifted_window_mask(pad_h, pad_w, options.window, sh, sw, opts);
  mask_cache_.emplace(key, m);
  return m;
}

WindowPlan WindowAttentionImpl::cached_plan(int64_t B, int64_t H, int64_t W, const torch::Device& device) {
  std::lock_guard<std::mutex> lock(cache_mutex_);
  auto key = std::make_tuple(B, H, W, device.str());
  auto it = plan_cache_.find(key);
  if (it != plan_cache_.end()) return it->second;
  if (plan_cache_.size() >= kMaxCachedMasks) plan_cache_.clear();
  c10::InferenceMode normal_mode(false);
  WindowPlan p = window_plan(B, H, W, options.window, options.shift, device);
  plan_cache_.emplace(key, p);
  return p;
}

torch::Tensor WindowAttentionImpl::cached_inference_bias(int64_t ph, int64_t pw, int64_t sh, int64_t sw,
                                                         const torch::TensorOptions& opts) {
  const void* table = relative_position_bias_table.data_ptr();
  const int64_t version = static_cast<int64_t>(relative_position_bias_table._version());
  {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (table != bias_cache_table_ || version != bias_cache_version_) {
      bias_cache_.clear();
      bias_cache_table_ = table;
      bias_cache_version_ = version;
    }
    auto key = std::make_tuple(ph, pw, sh, sw, opts.device().str(),
                               static_cast<int>(c10::typeMetaToScalarType(opts.dtype())));
    auto it = bias_cache_.find(key);
    if (it != bias_cache_.end()) return it->second;
  }
  torch::Tensor bias = relative_position_bias().to(opts).unsqueeze(0);  // [1, heads, N, N]
  if (sh > 0 || sw > 0) bias = bias + cached_mask(ph, pw, sh, sw, opts).unsqueeze(1);  // [nW, heads, N, N]
  bias = bias.contiguous();
  std::lock_guard<std::mutex> lock(cache_mutex_);
  if (bias_cache_.size() >= kMaxCachedMasks) bias_cache_.clear();
  bias_cache_.emplace(std::make_tuple(ph, pw, sh, sw, opts.device().str(),
                                      static_cast<int>(c10::typeMetaToScalarType(opts.dtype()))),
                      bias);
  return bias;
}

torch::Tensor WindowAttentionImpl::relative_position_bias() {
  const int64_t n = options.window * options.window;
  auto idx = cached_index(relative_position_bias_table.device());
  return relative_position_bias_table.index_select(0, idx).view({n, n, options.num_heads}).permute({2, 0, 1});
}

torch::Tensor WindowAttentionImpl::forward(const torch::Tensor& x) {
  if (x.dim() != 4 || x.size(3) != options.dim) {
    throw Error(fmt::format("WindowAttention: expected [B, H, W, {}], got [{}]", options.dim, fmt::join(x.sizes(), ", ")));
  }
  const int64_t B = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
  const int64_t ws = options.window, heads = options.num_heads, hd = C / heads;
  // Pad + roll + window partition as one row gather (see window_plan); the same plan moves the
  // result back (roll back + crop) in one more gather.
  const WindowPlan plan = cached_plan(B, H, W, x.device());
  const int64_t ph = plan.ph, pw = plan.pw, sh = plan.shift_h, sw = plan.shift_w;
  const bool shifted = sh > 0 || sw > 0;
  const int64_t nw = (ph / ws) * (pw / ws), n = ws * ws;
  torch::Tensor t = gather_rows(x.reshape({B * H * W, C}), plan.to_windows, plan.to_map).view({B * nw, n, C});

  auto qkv_out = core::linear(t, qkv->weight, qkv->bias).view({B * nw, n, 3, heads, hd}).permute({2, 0, 3, 1, 4});  // [3, B*nW, heads, N, hd]
  auto q = qkv_out[0].reshape({B * nw * heads, n, hd}).mul_(1.0 / std::sqrt(static_cast<double>(hd)));
  auto k = qkv_out[1].reshape({B * nw * heads, n, hd});
  auto v = qkv_out[2].reshape({B * nw * heads, n, hd});
  // Many small products (one per window and head): core::batched_matmul spreads them over threads.
  auto attn = core::batched_matmul(q, k.transpose(1, 2)).view({B * nw, heads, n, n});
  const bool grad = torch::GradMode::is_enabled() && relative_position_bias_table.requires_grad();
  if (!grad) {
    // Inference: bias + mask [nW or 1, heads, N, N] cached until the table changes.
    auto bm = cached_inference_bias(ph, pw, sh, sw, attn.options());
    attn = attn.view({B, nw, heads, n, n}).add_(bm.unsqueeze(0)).view({B * nw, heads, n, n});
  } else {
    auto bias = relative_position_bias();  // [heads, N, N]
    if (shifted) {
      auto mask = cached_mask(ph, pw, sh, sw, attn.options());  // [nW, N, N]
      auto bm = bias.unsqueeze(0) + mask.unsqueeze(1);           // [nW, heads, N, N]
      attn = attn.view({B, nw, heads, n, n}).add_(bm.unsqueeze(0)).view({B * nw, heads, n, n});
    } else {
      attn.add_(bias.unsqueeze(0));
    }
  }
  attn = torch::softmax(attn, -1);
  if (options.attn_drop > 0.0) attn = F::dropout(attn, F::DropoutFuncOptions().p(options.attn_drop).training(is_training()));

  auto out = core::batched_matmul(attn.view({B * nw * heads, n, n}), v).view({B * nw, heads, n, hd}).transpose(1, 2).reshape({B * nw, n, C});
  out = core::linear(out, proj->weight, proj->bias);
  if (options.proj_drop > 0.0) out = F::dropout(out, F::DropoutFuncOptions().p(options.proj_drop).training(is_training()));
  return gather_rows(out.view({B * nw * n, C}), plan.to_map, plan.to_windows).view({B, H, W, C});
}

// ---------------------------------------------------------------------------------------------

MlpImpl::MlpImpl(int64_t dim, int64_t hidden, double drop_) : drop(drop_) {
  fc1 = register_module("fc1", torch::nn::Linear(dim, hidden));
  fc2 = register_module("fc2", torch::nn::Linear(hidden, dim));
}

torch::Tensor MlpImpl::forward(const torch::Tensor& x) {
  // Exact (erf) GELU, approximate = "none"; in place when no gradient is needed (inference).
  auto h = core::linear(x, fc1->weight, fc1->bias);
  if (torch::GradMode::is_enabled() && h.requires_grad())
    h = torch::gelu(h);
  else
    h = at::gelu_(h);
  if (drop > 0.0) h = F::dropout(h, F::DropoutFuncOptions().p(drop).training(is_training()));
  h = core::linear(h, fc2->weight, fc2->bias);
  if (drop > 0.0) h = F::dropout(h, F::DropoutFuncOptions().p(drop).training(is_training()));
  return h;
}

void init_linears_trunc_normal(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& m : module.modules(/*include_self=*/false)) {
    if (auto* lin = m->as<torch::nn::Linear>()) {
      trunc_normal_(lin->weight, 0.02);
      if (lin->bias.defined()) lin->bias.zero_();
    }
  }
}

SwinBlockImpl::SwinBlockImpl(const SwinBlockOptions& o) : options(o) {
  register_on(*this, attn, WindowAttention(o.attn), o.attn.dim, o.mlp_ratio, o.drop, o.layer_scale_init, o.norm_eps);
}

torch::Tensor SwinBlockImpl::forward(const torch::Tensor& x) {
  return residual(x, [this](const torch::Tensor& t) { return attn(t); }, options.drop_path, is_training());
}

// ---------------------------------------------------------------------------------------------

PatchMergingImpl::PatchMergingImpl(int64_t dim, double eps) {
  norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({4 * dim}).eps(eps)));
  reduction = register_module("reduction", torch::nn::Linear(torch::nn::LinearOptions(4 * dim, 2 * dim).bias(false)));
}

torch::Tensor PatchMergingImpl::forward(const torch::Tensor& x) {
  const int64_t H = x.size(1), W = x.size(2);
  torch::Tensor t = (H % 2 || W % 2) ? torch::constant_pad_nd(x, {0, 0, 0, W % 2, 0, H % 2}, 0) : x;
  using torch::indexing::None;
  using torch::indexing::Slice;
  auto x0 = t.index({Slice(), Slice(0, None, 2), Slice(0, None, 2)});
  auto x1 = t.index({Slice(), Slice(1, None, 2), Slice(0, None, 2)});
  auto x2 = t.index({Slice(), Slice(0, None, 2), Slice(1, None, 2)});
  auto x3 = t.index({Slice(), Slice(1, None, 2), Slice(1, None, 2)});
  return reduction(norm(torch::cat({x0, x1, x2, x3}, -1)));
}

ConvEmbedImpl::ConvEmbedImpl(int64_t in, int64_t out, int64_t kernel_, int64_t stride, int64_t padding_,
                             bool with_norm, double eps)
    : kernel(kernel_), padding(padding_) {
  proj = register_module(
      "proj", torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, kernel).stride(stride).padding(padding).bias(true)));
  if (with_norm) norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({out}).eps(eps)));
}

torch::Tensor ConvEmbedImpl::forward_nchw(const torch::Tensor& x) {
  if (x.dim() != 4) throw Error(fmt::format("ConvEmbed: expected a 4-D [B, C, H, W] tensor, got {}-D", x.dim()));
  if (x.size(2) + 2 * padding < kernel || x.size(3) + 2 * padding < kernel) {
    throw Error(fmt::format("ConvEmbed: map {}x{} is smaller than kernel {} with padding {}", x.size(2), x.size(3),
                            kernel, padding));
  }
  auto y = proj(x).permute({0, 2, 3, 1});
  if (!norm.is_empty()) return norm(y);
  return y.contiguous();
}

torch::Tensor ConvEmbedImpl::forward(const torch::Tensor& x) { return forward_nchw(x.permute({0, 3, 1, 2})); }

}  // namespace florence::vision
