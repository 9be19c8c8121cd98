// Swin / CoSwin building blocks; see swin_layers.h for the contracts and references.
#include "florence/vision/swin_layers.h"

#include "florence/core/error.h"

#include <c10/core/InferenceMode.h>
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
  const int64_t pad_b = (ws - H % ws) % ws, pad_r = (ws - W % ws) % ws;
  torch::Tensor t = (pad_b || pad_r) ? torch::constant_pad_nd(x, {0, 0, 0, pad_r, 0, pad_b}, 0) : x;
  const int64_t ph = H + pad_b, pw = W + pad_r;
  const int64_t sh = effective_shift(ph, ws, options.shift), sw = effective_shift(pw, ws, options.shift);
  const bool shifted = sh > 0 || sw > 0;
  if (shifted) t = torch::roll(t, {-sh, -sw}, {1, 2});

  const int64_t nwh = ph / ws, nww = pw / ws, nw = nwh * nww, n = ws * ws;
  t = t.reshape({B, nwh, ws, nww, ws, C}).permute({0, 1, 3, 2, 4, 5}).reshape({B * nw, n, C});

  auto qkv_out = qkv(t).reshape({B * nw, n, 3, heads, hd}).permute({2, 0, 3, 1, 4});
  auto q = qkv_out[0] * (1.0 / std::sqrt(static_cast<double>(hd)));
  auto k = qkv_out[1];
  auto v = qkv_out[2];
  auto attn = torch::matmul(q, k.transpose(-2, -1));  // [B*nW, heads, N, N]
  auto bias = relative_position_bias();               // [heads, N, N]
  if (shifted) {
    auto mask = cached_mask(ph, pw, sh, sw, attn.options());  // [nW, N, N]
    auto bm = bias.unsqueeze(0) + mask.unsqueeze(1);           // [nW, heads, N, N]
    attn = attn.view({B, nw, heads, n, n}).add_(bm.unsqueeze(0)).view({B * nw, heads, n, n});
  } else {
    attn.add_(bias.unsqueeze(0));
  }
  attn = torch::softmax(attn, -1);
  if (options.attn_drop > 0.0) attn = F::dropout(attn, F::DropoutFuncOptions().p(options.attn_drop).training(is_training()));

  auto out = torch::matmul(attn, v).transpose(1, 2).reshape({B * nw, n, C});
  out = proj(out);
  if (options.proj_drop > 0.0) out = F::dropout(out, F::DropoutFuncOptions().p(options.proj_drop).training(is_training()));

  out = out.view({B, nwh, nww, ws, ws, C}).permute({0, 1, 3, 2, 4, 5}).reshape({B, ph, pw, C});
  if (shifted) out = torch::roll(out, {sh, sw}, {1, 2});
  if (pad_b || pad_r) out = out.slice(1, 0, H).slice(2, 0, W).contiguous();
  return out;
}

// ---------------------------------------------------------------------------------------------

MlpImpl::MlpImpl(int64_t dim, int64_t hidden, double drop_) : drop(drop_) {
  fc1 = register_module("fc1", torch::nn::Linear(dim, hidden));
  fc2 = register_module("fc2", torch::nn::Linear(hidden, dim));
}

torch::Tensor MlpImpl::forward(const torch::Tensor& x) {
  auto h = torch::gelu(fc1(x));  // exact (erf) GELU, approximate = "none"
  if (drop > 0.0) h = F::dropout(h, F::DropoutFuncOptions().p(drop).training(is_training()));
  h = fc2(h);
  if (drop > 0.0) h = F::dropout(h, F::DropoutFuncOptions().p(drop).training(is_training()));
  return h;
}

SwinBlockImpl::SwinBlockImpl(const SwinBlockOptions& o) : options(o) {
  const int64_t dim = o.attn.dim;
  auto ln = [&](int64_t d) { return torch::nn::LayerNorm(torch::nn::LayerNormOptions({d}).eps(o.norm_eps)); };
  norm1 = register_module("norm1", ln(dim));
  attn = register_module("attn", WindowAttention(o.attn));
  norm2 = register_module("norm2", ln(dim));
  mlp = register_module("mlp", Mlp(dim, static_cast<int64_t>(static_cast<double>(dim) * o.mlp_ratio), o.drop));
  if (o.layer_scale_init > 0.0) {
    gamma_1 = register_parameter("gamma_1", torch::full({dim}, o.layer_scale_init));
    gamma_2 = register_parameter("gamma_2", torch::full({dim}, o.layer_scale_init));
  }
}

torch::Tensor SwinBlockImpl::forward(const torch::Tensor& x) {
  auto h = attn(norm1(x));
  if (gamma_1.defined()) h = h * gamma_1;
  auto y = x + drop_path(h, options.drop_path, is_training());
  h = mlp(norm2(y));
  if (gamma_2.defined()) h = h * gamma_2;
  return y + drop_path(h, options.drop_path, is_training());
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
