// Video CoSwin building blocks; see video_swin_layers.h for the contracts and references.
#include "florence/vision/video_swin_layers.h"

#include "florence/core/batched_matmul.h"
#include "florence/core/error.h"

#include <c10/core/InferenceMode.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <vector>

namespace florence::vision {

namespace F = torch::nn::functional;

namespace {

constexpr size_t kMaxCachedPlans = 32;  // distinct (B, T, H, W, device) per attention module
constexpr int64_t kTimePadLabel = 27;   // one past the largest band label 2*9 + 2*3 + 2

// Band of a position along one rolled, padded axis (the three regions of a shifted axis).
int64_t band(int64_t pos, int64_t padded, int64_t window, int64_t shift) {
  if (shift == 0) return 0;
  if (pos < padded - window) return 0;
  if (pos < padded - shift) return 1;
  return 2;
}

}  // namespace

WindowLayout3d window_layout_3d(const Size3& size, const Size3& window, const Size3& shift) {
  WindowLayout3d l;
  l.size = size;
  for (int a = 0; a < 3; ++a) {
    if (size[a] < 1 || window[a] < 1) {
      throw Error(fmt::format("window_layout_3d: map ({}) and window ({}) must be >= 1 on every axis",
                              fmt::join(size, ", "), fmt::join(window, ", ")));
    }
    if (shift[a] < 0 || shift[a] >= window[a]) {
      throw Error(fmt::format("window_layout_3d: shift ({}) outside [0, window ({}))", fmt::join(shift, ", "),
                              fmt::join(window, ", ")));
    }
    // Video Swin get_window_size: an axis not larger than the window is one window, unshifted.
    const bool shrink = size[a] <= window[a];
    l.window[a] = shrink ? size[a] : window[a];
    l.shift[a] = shrink ? 0 : shift[a];
    l.padded[a] = size[a] + (l.window[a] - size[a] % l.window[a]) % l.window[a];
  }
  return l;
}

torch::Tensor window_region_labels_3d(const WindowLayout3d& l) {
  const int64_t nt = l.padded[0] / l.window[0], nh = l.padded[1] / l.window[1], nw = l.padded[2] / l.window[2];
  const int64_t n = l.volume();
  std::vector<int64_t> label(static_cast<size_t>(l.num_windows() * n));
  size_t k = 0;
  for (int64_t a = 0; a < nt; ++a)
    for (int64_t b = 0; b < nh; ++b)
      for (int64_t c = 0; c < nw; ++c)
        for (int64_t t = 0; t < l.window[0]; ++t)
          for (int64_t y = 0; y < l.window[1]; ++y)
            for (int64_t x = 0; x < l.window[2]; ++x, ++k) {
              const int64_t pt = a * l.window[0] + t, py = b * l.window[1] + y, px = c * l.window[2] + x;
              // Rolled by -shift: rolled position p holds the padded map's (p + shift) % padded.
              const int64_t src_t = (pt + l.shift[0]) % l.padded[0];
              label[k] = src_t >= l.size[0] ? kTimePadLabel
                                            : band(pt, l.padded[0], l.window[0], l.shift[0]) * 9 +
                                                  band(py, l.padded[1], l.window[1], l.shift[1]) * 3 +
                                                  band(px, l.padded[2], l.window[2], l.shift[2]);
            }
  return torch::tensor(label, torch::kLong).view({l.num_windows(), n});
}

torch::Tensor shifted_window_mask_3d(const WindowLayout3d& l, const torch::TensorOptions& options) {
  const auto labels = window_region_labels_3d(l);  // [nW, N]
  auto same = labels.unsqueeze(2).eq(labels.unsqueeze(1));
  auto mask = torch::zeros(same.sizes(), torch::kFloat32).masked_fill_(same.logical_not(), -100.0);
  auto opts = options.dtype_opt().has_value() ? options : options.dtype(torch::kFloat32);
  return mask.to(opts);
}

torch::Tensor relative_position_index_3d(const Size3& eff, const Size3& full, torch::Device device) {
  for (int a = 0; a < 3; ++a) {
    if (eff[a] < 1 || eff[a] > full[a]) {
      throw Error(fmt::format("relative_position_index_3d: effective window ({}) must lie within [1, full window ({})]",
                              fmt::join(eff, ", "), fmt::join(full, ", ")));
    }
  }
  const int64_t n = eff[0] * eff[1] * eff[2];
  const int64_t span_h = 2 * full[1] - 1, span_w = 2 * full[2] - 1;
  std::vector<int64_t> idx(static_cast<size_t>(n * n));
  auto coords = [&](int64_t i) {
    return Size3{i / (eff[1] * eff[2]), (i / eff[2]) % eff[1], i % eff[2]};
  };
  for (int64_t i = 0; i < n; ++i) {
    const Size3 ci = coords(i);
    for (int64_t j = 0; j < n; ++j) {
      const Size3 cj = coords(j);
      idx[static_cast<size_t>(i * n + j)] = (ci[0] - cj[0] + full[0] - 1) * span_h * span_w +
                                            (ci[1] - cj[1] + full[1] - 1) * span_w + (ci[2] - cj[2] + full[2] - 1);
    }
  }
  return torch::tensor(idx, torch::kLong).view({n, n}).to(device);
}

WindowPlan3d window_plan_3d(int64_t B, const Size3& size, const Size3& window, const Size3& shift,
                            torch::Device device) {
  if (B < 1) throw Error(fmt::format("window_plan_3d: batch must be >= 1, got {}", B));
  WindowPlan3d p;
  p.layout = window_layout_3d(size, window, shift);
  const WindowLayout3d& l = p.layout;
  const int64_t T = size[0], H = size[1], W = size[2];
  const int64_t nt = l.padded[0] / l.window[0], nh = l.padded[1] / l.window[1], nw = l.padded[2] / l.window[2];
  const int64_t map_rows = B * T * H * W, win_rows = B * l.num_windows() * l.volume();
  std::vector<int64_t> to_win(static_cast<size_t>(win_rows)), to_map(static_cast<size_t>(map_rows), win_rows);
  int64_t k = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t a = 0; a < nt; ++a)
      for (int64_t c = 0; c < nh; ++c)
        for (int64_t d = 0; d < nw; ++d)
          for (int64_t t = 0; t < l.window[0]; ++t)
            for (int64_t y = 0; y < l.window[1]; ++y)
              for (int64_t x = 0; x < l.window[2]; ++x, ++k) {
                const int64_t st = (a * l.window[0] + t + l.shift[0]) % l.padded[0];
                const int64_t sy = (c * l.window[1] + y + l.shift[1]) % l.padded[1];
                const int64_t sx = (d * l.window[2] + x + l.shift[2]) % l.padded[2];
                if (st < T && sy < H && sx < W) {
                  const int64_t row = ((b * T + st) * H + sy) * W + sx;
                  to_win[static_cast<size_t>(k)] = row;
                  to_map[static_cast<size_t>(row)] = k;
                } else {
                  to_win[static_cast<size_t>(k)] = map_rows;  // zero padding
                }
              }
  p.to_windows = torch::tensor(to_win, torch::kLong).to(device);
  p.to_map = torch::tensor(to_map, torch::kLong).to(device);
  if (l.masked()) p.mask = shifted_window_mask_3d(l, torch::TensorOptions().device(device));
  return p;
}

int64_t time_output_length(int64_t T, int64_t k, int64_t s, int64_t p) {
  const int64_t floor_len = T + 2 * p >= k ? (T + 2 * p - k) / s : 0;
  const int64_t cover_len = T + p > k ? (T + p - k + s - 1) / s : 0;  // ceil: the last frame is in a window
  return std::max(floor_len, cover_len) + 1;
}

// ---------------------------------------------------------------------------------------------

WindowAttention3dImpl::WindowAttention3dImpl(const WindowAttention3dOptions& o) : options(o) {
  if (o.num_heads < 1 || o.dim % o.num_heads != 0) {
    throw Error(fmt::format("WindowAttention3d: dim {} not divisible by num_heads {}", o.dim, o.num_heads));
  }
  for (int a = 0; a < 3; ++a) {
    if (o.window[a] < 1 || o.shift[a] < 0 || o.shift[a] >= o.window[a]) {
      throw Error(fmt::format("WindowAttention3d: window ({}) must be >= 1 and shift ({}) in [0, window)",
                              fmt::join(o.window, ", "), fmt::join(o.shift, ", ")));
    }
  }
  qkv = register_module("qkv", torch::nn::Linear(torch::nn::LinearOptions(o.dim, 3 * o.dim).bias(o.qkv_bias)));
  proj = register_module("proj", torch::nn::Linear(o.dim, o.dim));
  const int64_t rows = (2 * o.window[0] - 1) * (2 * o.window[1] - 1) * (2 * o.window[2] - 1);
  relative_position_bias_table = register_parameter("relative_position_bias_table", torch::zeros({rows, o.num_heads}));
  trunc_normal_(relative_position_bias_table, 0.02);
}

WindowPlan3d WindowAttention3dImpl::plan(int64_t B, const Size3& size, torch::Device device) {
  std::lock_guard<std::mutex> lock(cache_mutex_);
  auto key = std::make_tuple(B, size[0], size[1], size[2], device.str());
  auto it = plan_cache_.find(key);
  if (it != plan_cache_.end()) return it->second;
  if (plan_cache_.size() >= kMaxCachedPlans) plan_cache_.clear();
  // Built outside inference mode so the cached tensors are also usable under autograd.
  c10::InferenceMode normal_mode(false);
  WindowPlan3d p = window_plan_3d(B, size, options.window, options.shift, device);
  p.index = relative_position_index_3d(p.layout.window, options.window, device).view(-1);
  plan_cache_.emplace(key, p);
  return p;
}

torch::Tensor WindowAttention3dImpl::forward(const torch::Tensor& x) {
  if (x.dim() != 5 || x.size(4) != options.dim) {
    throw Error(fmt::format("WindowAttention3d: expected [B, T, H, W, {}], got [{}]", options.dim,
                            fmt::join(x.sizes(), ", ")));
  }
  const int64_t B = x.size(0), C = x.size(4);
  const Size3 size{x.size(1), x.size(2), x.size(3)};
  const WindowPlan3d p = plan(B, size, x.device());
  const int64_t heads = options.num_heads, hd = C / heads;
  const int64_t nw = p.layout.num_windows(), n = p.layout.volume();
  // Pad + roll + partition as one row gather; the same plan moves the result back.
  torch::Tensor t =
      gather_rows(x.reshape({B * size[0] * size[1] * size[2], C}), p.to_windows, p.to_map).view({B * nw, n, C});

  auto qkv_out = qkv(t).view({B * nw, n, 3, heads, hd}).permute({2, 0, 3, 1, 4});  // [3, B*nW, heads, N, hd]
  auto q = qkv_out[0].reshape({B * nw * heads, n, hd}).mul(1.0 / std::sqrt(static_cast<double>(hd)));
  auto k = qkv_out[1].reshape({B * nw * heads, n, hd});
  auto v = qkv_out[2].reshape({B * nw * heads, n, hd});
  auto attn = core::batched_matmul(q, k.transpose(1, 2)).view({B, nw, heads, n, n});

  // Bias of the effective window's offsets (+ region mask): [1 or nW, heads, N, N].
  auto bias = relative_position_bias_table.index_select(0, p.index).view({n, n, heads}).permute({2, 0, 1}).unsqueeze(0);
  if (p.mask.defined()) bias = bias + p.mask.to(attn.options()).unsqueeze(1);
  attn = torch::softmax(attn + bias.unsqueeze(0), -1).view({B * nw * heads, n, n});
  if (options.attn_drop > 0.0) {
    attn = F::dropout(attn, F::DropoutFuncOptions().p(options.attn_drop).training(is_training()));
  }
  auto out = core::batched_matmul(attn, v).view({B * nw, heads, n, hd}).transpose(1, 2).reshape({B * nw, n, C});
  out = proj(out);
  if (options.proj_drop > 0.0) {
    out = F::dropout(out, F::DropoutFuncOptions().p(options.proj_drop).training(is_training()));
  }
  return gather_rows(out.view({B * nw * n, C}), p.to_map, p.to_windows).view({B, size[0], size[1], size[2], C});
}

// ---------------------------------------------------------------------------------------------

SwinBlock3dImpl::SwinBlock3dImpl(const SwinBlock3dOptions& o) : options(o) {
  register_on(*this, attn, WindowAttention3d(o.attn), o.attn.dim, o.mlp_ratio, o.drop, o.layer_scale_init, o.norm_eps);
}

torch::Tensor SwinBlock3dImpl::forward(const torch::Tensor& x) {
  return residual(x, [this](const torch::Tensor& t) { return attn(t); }, options.drop_path, is_training());
}

// ---------------------------------------------------------------------------------------------

ConvEmbed3dImpl::ConvEmbed3dImpl(int64_t in, int64_t out, const Size3& kernel_, const Size3& stride_,
                                 const Size3& padding_, bool with_norm, double eps)
    : kernel(kernel_), stride(stride_), padding(padding_) {
  for (int a = 0; a < 3; ++a) {
    if (kernel[a] < 1 || stride[a] < 1 || padding[a] < 0) {
      throw Error(fmt::format("ConvEmbed3d: kernel ({}) and stride ({}) must be >= 1, padding ({}) >= 0",
                              fmt::join(kernel, ", "), fmt::join(stride, ", "), fmt::join(padding, ", ")));
    }
  }
  // Time is padded by replication in forward_ncthw, so the convolution pads only H and W.
  proj = register_module("proj", torch::nn::Conv3d(torch::nn::Conv3dOptions(in, out, {kernel[0], kernel[1], kernel[2]})
                                                       .stride({stride[0], stride[1], stride[2]})
                                                       .padding({0, padding[1], padding[2]})
                                                       .bias(true)));
  if (with_norm) norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({out}).eps(eps)));
}

torch::Tensor ConvEmbed3dImpl::forward_ncthw(const torch::Tensor& x) {
  if (x.dim() != 5) throw Error(fmt::format("ConvEmbed3d: expected a 5-D [B, C, T, H, W] tensor, got {}-D", x.dim()));
  const int64_t T = x.size(2);
  if (T < 1 || x.size(3) + 2 * padding[1] < kernel[1] || x.size(4) + 2 * padding[2] < kernel[2]) {
    throw Error(fmt::format("ConvEmbed3d: map {}x{}x{} is smaller than kernel ({}) with padding ({})", T, x.size(3),
                            x.size(4), fmt::join(kernel, ", "), fmt::join(padding, ", ")));
  }
  // Replicate-pad time: p_t frames in front; at the end what the output length needs (header).
  const int64_t k = kernel[0], s = stride[0], p = padding[0];
  const int64_t out_t = time_output_length(T, k, s, p);
  const int64_t before = p, after = std::max<int64_t>(0, (out_t - 1) * s + k - T - before);
  torch::Tensor xt = x;
  if (before > 0 || after > 0) {
    auto idx = torch::arange(-before, T + after, torch::TensorOptions().dtype(torch::kLong).device(x.device()))
                   .clamp_(0, T - 1);
    xt = x.index_select(2, idx);
  }
  auto y = proj(xt).permute({0, 2, 3, 4, 1});  // [B, T', H', W', out]
  if (!norm.is_empty()) return norm(y);
  return y.contiguous();
}

torch::Tensor ConvEmbed3dImpl::forward(const torch::Tensor& x) {
  if (x.dim() != 5) throw Error(fmt::format("ConvEmbed3d: expected a 5-D [B, T, H, W, C] tensor, got {}-D", x.dim()));
  return forward_ncthw(x.permute({0, 4, 1, 2, 3}));
}

}  // namespace florence::vision
