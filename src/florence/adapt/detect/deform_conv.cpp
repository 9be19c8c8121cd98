// Modulated deformable convolution v2: CPU kernel + autograd Function, and an ATen-ops form for
// other devices; see deform_conv.h.
#include "florence/adapt/detect/deform_conv.h"

#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <torch/autograd.h>

#include <cmath>
#include <vector>

#include "florence/core/error.h"

namespace florence::detect {
namespace {

std::string shape_str(const torch::Tensor& t) {
  if (!t.defined()) return "undefined";
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

// Every size the kernels need, checked once.
struct Dims {
  int64_t B, C, H, W, O, kh, kw, K, G, Gw, Ho, Wo, P;
  int64_t sh, sw, ph, pw, dh, dw;
};

Dims check(const torch::Tensor& input, const torch::Tensor& offset, const torch::Tensor& weight,
           const torch::Tensor& bias, const torch::Tensor& mask, const DeformConvGeometry& geo) {
  const std::string what = "deform_conv2d: ";
  if (!input.defined() || input.dim() != 4) throw Error(what + "input must be [B, C, H, W], got " + shape_str(input));
  if (!weight.defined() || weight.dim() != 4)
    throw Error(what + "weight must be [O, C/groups, kh, kw], got " + shape_str(weight));
  if (!offset.defined() || offset.dim() != 4)
    throw Error(what + "offset must be [B, 2*G*kh*kw, Ho, Wo], got " + shape_str(offset));
  if (!input.is_floating_point()) throw Error(what + "input must be float32 or float64");
  for (const auto* t : {&offset, &weight, &bias, &mask}) {
    if (!t->defined()) continue;
    if (t->scalar_type() != input.scalar_type() || t->device() != input.device())
      throw Error(what + "input, offset, mask, weight and bias must share one dtype and device");
  }
  for (int a = 0; a < 2; ++a) {
    if (geo.stride[a] < 1 || geo.dilation[a] < 1 || geo.padding[a] < 0)
      throw Error(fmt::format("{}stride and dilation must be >= 1 and padding >= 0 (stride {}, padding {}, dilation {})",
                              what, geo.stride[a], geo.padding[a], geo.dilation[a]));
  }
  Dims d{};
  d.B = input.size(0), d.C = input.size(1), d.H = input.size(2), d.W = input.size(3);
  d.O = weight.size(0), d.kh = weight.size(2), d.kw = weight.size(3), d.K = d.kh * d.kw;
  d.sh = geo.stride[0], d.sw = geo.stride[1], d.ph = geo.padding[0], d.pw = geo.padding[1];
  d.dh = geo.dilation[0], d.dw = geo.dilation[1];
  if (weight.size(1) < 1 || d.C % weight.size(1) != 0)
    throw Error(fmt::format("{}weight {} does not divide the input's {} channels", what, shape_str(weight), d.C));
  d.Gw = d.C / weight.size(1);
  if (d.O % d.Gw != 0)
    throw Error(fmt::format("{}{} output channels are not divisible by the {} weight groups", what, d.O, d.Gw));
  d.Ho = (d.H + 2 * d.ph - d.dh * (d.kh - 1) - 1) / d.sh + 1;
  d.Wo = (d.W + 2 * d.pw - d.dw * (d.kw - 1) - 1) / d.sw + 1;
  if (d.Ho < 1 || d.Wo < 1 || d.kh < 1 || d.kw < 1)
    throw Error(fmt::format("{}input {} is too small for kernel {}x{} (padding {}, dilation {}): empty output", what,
                            shape_str(input), d.kh, d.kw, d.ph, d.dh));
  d.P = d.Ho * d.Wo;
  if (offset.size(0) != d.B || offset.size(2) != d.Ho || offset.size(3) != d.Wo || offset.size(1) % (2 * d.K) != 0 ||
      offset.size(1) == 0)
    throw Error(fmt::format("{}offset {} does not fit input {} and weight {}: expected [{}, 2*G*{}, {}, {}]", what,
                            shape_str(offset), shape_str(input), shape_str(weight), d.B, d.K, d.Ho, d.Wo));
  d.G = offset.size(1) / (2 * d.K);
  if (d.C % d.G != 0)
    throw Error(fmt::format("{}{} input channels are not divisible by the {} offset groups", what, d.C, d.G));
  if (mask.defined() && (mask.dim() != 4 || mask.size(0) != d.B || mask.size(1) != d.G * d.K ||
                         mask.size(2) != d.Ho || mask.size(3) != d.Wo))
    throw Error(fmt::format("{}mask {} does not fit offset {}: expected [{}, {}, {}, {}]", what, shape_str(mask),
                            shape_str(offset), d.B, d.G * d.K, d.Ho, d.Wo));
  if (bias.defined() && (bias.dim() != 1 || bias.size(0) != d.O))
    throw Error(fmt::format("{}bias {} does not fit weight {}", what, shape_str(bias), shape_str(weight)));
  return d;
}

// ---------------------------------------------------------------------------------------------
// CPU kernel
// ---------------------------------------------------------------------------------------------

// Where one tap of one output position reads: its four integer neighbours (00, 01, 10, 11 =
// (y0,x0), (y0,x0+1), (y0+1,x0), (y0+1,x0+1)), their bilinear weights (0 outside the map), the
// fractional parts and the mask value.
template <typename T>
struct Sample {
  int32_t off[4];
  T bw[4];
  T ly, lx, m;
  uint8_t valid;
};

// Samples of images [b0, b0 + nb), laid out [b - b0][g][k][p].
template <typename T>
void compute_samples(const Dims& d, const T* offset, const T* mask, int64_t b0, int64_t nb,
                     std::vector<Sample<T>>& out) {
  out.resize(size_t(nb * d.G * d.K * d.P));
  at::parallel_for(0, nb * d.G * d.K, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t n = lo; n < hi; ++n) {
      const int64_t k = n % d.K, g = (n / d.K) % d.G, bl = n / (d.K * d.G), b = b0 + bl;
      const int64_t i = k / d.kw, j = k % d.kw;
      const T* oy_ptr = offset + ((b * d.G + g) * 2 * d.K + 2 * k) * d.P;
      const T* ox_ptr = oy_ptr + d.P;
      const T* m_ptr = mask ? mask + ((b * d.G + g) * d.K + k) * d.P : nullptr;
      Sample<T>* s = out.data() + n * d.P;
      for (int64_t oy = 0; oy < d.Ho; ++oy) {
        for (int64_t ox = 0; ox < d.Wo; ++ox) {
          const int64_t p = oy * d.Wo + ox;
          Sample<T>& e = s[p];
          e.m = m_ptr ? m_ptr[p] : T(1);
          const T y = T(oy * d.sh - d.ph + i * d.dh) + oy_ptr[p];
          const T x = T(ox * d.sw - d.pw + j * d.dw) + ox_ptr[p];
          e.valid = 0;
          if (!(y >= T(-1) && y < T(d.H) && x >= T(-1) && x < T(d.W))) {  // also NaN
            for (int c = 0; c < 4; ++c) e.off[c] = 0, e.bw[c] = 0;
            e.ly = e.lx = 0;
            continue;
          }
          const T fy = std::floor(y), fx = std::floor(x);
          const int64_t y0 = int64_t(fy), x0 = int64_t(fx);
          e.ly = y - fy;
          e.lx = x - fx;
          const T hy = 1 - e.ly, hx = 1 - e.lx;
          const T w[4] = {hy * hx, hy * e.lx, e.ly * hx, e.ly * e.lx};
          for (int c = 0; c < 4; ++c) {
            const int64_t yy = y0 + (c >> 1), xx = x0 + (c & 1);
            const bool in = yy >= 0 && yy < d.H && xx >= 0 && xx < d.W;
            e.off[c] = in ? int32_t(yy * d.W + xx) : 0;
            e.bw[c] = in ? w[c] : T(0);
            if (in) e.valid |= uint8_t(1u << c);
          }
        }
      }
    }
  });
}

// columns [C*K, nb*P]: row c*K + k, column (b - b0)*P + p.
template <typename T>
void im2col(const Dims& d, const T* input, const std::vector<Sample<T>>& samples, int64_t b0, int64_t nb, T* col) {
  const int64_t cg = d.C / d.G, ld = nb * d.P;
  at::parallel_for(0, nb * d.C, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t n = lo; n < hi; ++n) {
      const int64_t c = n % d.C, bl = n / d.C, g = c / cg;
      const T* plane = input + ((b0 + bl) * d.C + c) * d.H * d.W;
      const Sample<T>* s = samples.data() + (bl * d.G + g) * d.K * d.P;
      for (int64_t k = 0; k < d.K; ++k) {
        T* row = col + (c * d.K + k) * ld + bl * d.P;
        const Sample<T>* sk = s + k * d.P;
        for (int64_t p = 0; p < d.P; ++p) {
          const Sample<T>& e = sk[p];
          row[p] = e.m * (e.bw[0] * plane[e.off[0]] + e.bw[1] * plane[e.off[1]] + e.bw[2] * plane[e.off[2]] +
                          e.bw[3] * plane[e.off[3]]);
        }
      }
    }
  });
}

// Images per chunk so that the column buffer stays under ~64 MiB.
int64_t chunk_images(const Dims& d, size_t elem) {
  const double per_image = double(d.C * d.K * d.P) * double(elem);
  return std::max<int64_t>(1, std::min<int64_t>(d.B, int64_t((64.0 * 1024 * 1024) / per_image)));
}

// [nb, O, P] block of `t` ([B, O, Ho, Wo]) as [Gw, O/Gw, nb*P].
torch::Tensor to_group_rows(const torch::Tensor& t, const Dims& d, int64_t b0, int64_t nb) {
  return t.narrow(0, b0, nb).reshape({nb, d.O, d.P}).permute({1, 0, 2}).reshape({d.Gw, d.O / d.Gw, nb * d.P});
}

torch::Tensor forward_cpu(const torch::Tensor& input, const torch::Tensor& offset, const torch::Tensor& weight,
                          const torch::Tensor& bias, const torch::Tensor& mask, const Dims& d) {
  auto out = torch::empty({d.B, d.O, d.Ho, d.Wo}, input.options());
  const auto wg = weight.reshape({d.Gw, d.O / d.Gw, -1});
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "deform_conv2d_forward", [&] {
    const int64_t chunk = chunk_images(d, sizeof(scalar_t));
    std::vector<Sample<scalar_t>> samples;
    for (int64_t b0 = 0; b0 < d.B; b0 += chunk) {
      const int64_t nb = std::min(chunk, d.B - b0);
      auto col = torch::empty({d.Gw, d.C / d.Gw * d.K, nb * d.P}, input.options());
      compute_samples<scalar_t>(d, offset.data_ptr<scalar_t>(), mask.defined() ? mask.data_ptr<scalar_t>() : nullptr,
                                b0, nb, samples);
      im2col<scalar_t>(d, input.data_ptr<scalar_t>(), samples, b0, nb, col.data_ptr<scalar_t>());
      auto y = torch::bmm(wg, col).reshape({d.O, nb, d.P}).permute({1, 0, 2});  // [nb, O, P]
      out.narrow(0, b0, nb).copy_(y.reshape({nb, d.O, d.Ho, d.Wo}));
    }
  });
  if (bias.defined()) out.add_(bias.view({1, d.O, 1, 1}));
  return out;
}

struct Grads {
  torch::Tensor input, offset, mask, weight, bias;
};

Grads backward_cpu(const torch::Tensor& grad_out_in, const torch::Tensor& input, const torch::Tensor& offset,
                   const torch::Tensor& weight, const torch::Tensor& bias, const torch::Tensor& mask, const Dims& d,
                   bool need_input, bool need_offset, bool need_mask, bool need_weight, bool need_bias) {
  Grads g;
  const auto grad_out = grad_out_in.contiguous();
  if (need_bias && bias.defined()) g.bias = grad_out.sum({0, 2, 3});
  const bool need_col_grad = need_input || need_offset || need_mask;
  if (!need_col_grad && !need_weight) return g;
  if (need_input) g.input = torch::zeros_like(input);
  if (need_offset) g.offset = torch::zeros_like(offset);
  if (need_mask && mask.defined()) g.mask = torch::zeros_like(mask);
  if (need_weight) g.weight = torch::zeros({d.Gw, d.O / d.Gw, d.C / d.Gw * d.K}, weight.options());
  const auto wg = weight.reshape({d.Gw, d.O / d.Gw, -1});
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "deform_conv2d_backward", [&] {
    using T = scalar_t;
    const int64_t chunk = chunk_images(d, sizeof(T));
    const int64_t cg = d.C / d.G;
    std::vector<Sample<T>> samples;
    const T* in = input.data_ptr<T>();
    for (int64_t b0 = 0; b0 < d.B; b0 += chunk) {
      const int64_t nb = std::min(chunk, d.B - b0), ld = nb * d.P;
      compute_samples<T>(d, offset.data_ptr<T>(), mask.defined() ? mask.data_ptr<T>() : nullptr, b0, nb, samples);
      const auto go = to_group_rows(grad_out, d, b0, nb);  // [Gw, O/Gw, nb*P]
      if (need_weight) {
        auto col = torch::empty({d.Gw, d.C / d.Gw * d.K, ld}, input.options());
        im2col<T>(d, in, samples, b0, nb, col.data_ptr<T>());
        g.weight.add_(torch::bmm(go, col.transpose(1, 2)));
      }
      if (!need_col_grad) continue;
      const auto gcol_t = torch::bmm(wg.transpose(1, 2), go).contiguous();  // [Gw, C/Gw*K, nb*P] = [C*K, nb*P]
      const T* gcol = gcol_t.data_ptr<T>();
      if (need_input) {
        T* gin = g.input.data_ptr<T>();
        at::parallel_for(0, nb * d.C, 1, [&](int64_t lo, int64_t hi) {
          for (int64_t n = lo; n < hi; ++n) {
            const int64_t c = n % d.C, bl = n / d.C, grp = c / cg;
            T* plane = gin + ((b0 + bl) * d.C + c) * d.H * d.W;
            const Sample<T>* s = samples.data() + (bl * d.G + grp) * d.K * d.P;
            for (int64_t k = 0; k < d.K; ++k) {
              const T* row = gcol + (c * d.K + k) * ld + bl * d.P;
              const Sample<T>* sk = s + k * d.P;
              for (int64_t p = 0; p < d.P; ++p) {
                const Sample<T>& e = sk[p];
                if (!e.valid) continue;
                const T v = e.m * row[p];
                for (int q = 0; q < 4; ++q)
                  if (e.valid & (1u << q)) plane[e.off[q]] += e.bw[q] * v;
              }
            }
          }
        });
      }
      if (need_offset || (need_mask && mask.defined())) {
        T* goff = need_offset ? g.offset.data_ptr<T>() : nullptr;
        T* gmask = (need_mask && mask.defined()) ? g.mask.data_ptr<T>() : nullptr;
        for (int64_t bl = 0; bl < nb; ++bl) {
          for (int64_t grp = 0; grp < d.G; ++grp) {
            const Sample<T>* s = samples.data() + (bl * d.G + grp) * d.K * d.P;
            const int64_t b = b0 + bl;
            // Taps x positions of this (image, group), split across threads; each thread sums
            // over the group's channels for its own range.
            at::parallel_for(0, d.K * d.P, 256, [&](int64_t lo, int64_t hi) {
              std::vector<T> ay(size_t(hi - lo), T(0)), ax(size_t(hi - lo), T(0)), am(size_t(hi - lo), T(0));
              for (int64_t c = grp * cg; c < (grp + 1) * cg; ++c) {
                const T* plane = in + (b * d.C + c) * d.H * d.W;
                for (int64_t n = lo; n < hi; ++n) {
                  const Sample<T>& e = s[n];
                  if (!e.valid) continue;
                  const int64_t k = n / d.P, p = n % d.P;
                  const T gc = gcol[(c * d.K + k) * ld + bl * d.P + p];
                  const T v00 = (e.valid & 1u) ? plane[e.off[0]] : T(0);
                  const T v01 = (e.valid & 2u) ? plane[e.off[1]] : T(0);
                  const T v10 = (e.valid & 4u) ? plane[e.off[2]] : T(0);
                  const T v11 = (e.valid & 8u) ? plane[e.off[3]] : T(0);
                  const size_t r = size_t(n - lo);
                  ay[r] += gc * (e.lx * (v11 - v01) + (1 - e.lx) * (v10 - v00));
                  ax[r] += gc * (e.ly * (v11 - v10) + (1 - e.ly) * (v01 - v00));
                  am[r] += gc * (e.bw[0] * v00 + e.bw[1] * v01 + e.bw[2] * v10 + e.bw[3] * v11);
                }
              }
              for (int64_t n = lo; n < hi; ++n) {
                const int64_t k = n / d.P, p = n % d.P;
                const size_t r = size_t(n - lo);
                if (goff) {
                  T* base = goff + ((b * d.G + grp) * 2 * d.K + 2 * k) * d.P + p;
                  base[0] = s[n].m * ay[r];
                  base[d.P] = s[n].m * ax[r];
                }
                if (gmask) gmask[((b * d.G + grp) * d.K + k) * d.P + p] = am[r];
              }
            });
          }
        }
      }
    }
  });
  if (need_weight) g.weight = g.weight.view(weight.sizes());
  return g;
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Missing mask / bias travel as empty tensors (numel 0) through the Function.
torch::Tensor or_empty(const torch::Tensor& t, const torch::Tensor& like) {
  return t.defined() ? t : torch::empty({0}, like.options());
}
torch::Tensor defined_or_none(const torch::Tensor& t) { return t.numel() == 0 ? torch::Tensor() : t; }

class DeformConvFunction : public torch::autograd::Function<DeformConvFunction> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& input, const torch::Tensor& offset,
                               const torch::Tensor& mask, const torch::Tensor& weight, const torch::Tensor& bias,
                               int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw) {
    const DeformConvGeometry geo{{sh, sw}, {ph, pw}, {dh, dw}};
    const auto x = input.contiguous(), off = offset.contiguous(), w = weight.contiguous();
    const auto m = defined_or_none(mask).defined() ? mask.contiguous() : torch::Tensor();
    const auto b = defined_or_none(bias);
    const Dims d = check(x, off, w, b, m, geo);
    ctx->save_for_backward({x, off, or_empty(m, x), w, or_empty(b, x)});
    ctx->saved_data["geo"] = std::vector<int64_t>{sh, sw, ph, pw, dh, dw};
    return forward_cpu(x, off, w, b, m, d);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const auto v = ctx->saved_data["geo"].toIntVector();
    const DeformConvGeometry geo{{v[0], v[1]}, {v[2], v[3]}, {v[4], v[5]}};
    const auto mask = defined_or_none(saved[2]), bias = defined_or_none(saved[4]);
    const Dims d = check(saved[0], saved[1], saved[3], bias, mask, geo);
    Grads g = backward_cpu(grad_outputs[0], saved[0], saved[1], saved[3], bias, mask, d, ctx->needs_input_grad(0),
                           ctx->needs_input_grad(1), ctx->needs_input_grad(2), ctx->needs_input_grad(3),
                           ctx->needs_input_grad(4));
    return {g.input, g.offset, g.mask, g.weight, g.bias, {}, {}, {}, {}, {}, {}};
  }
};

}  // namespace

torch::Tensor deform_conv2d(const torch::Tensor& input, const torch::Tensor& offset, const torch::Tensor& weight,
                            const torch::Tensor& bias, const torch::Tensor& mask, const DeformConvGeometry& geo) {
  check(input, offset, weight, bias, mask, geo);
  if (!input.device().is_cpu()) return deform_conv2d_composite(input, offset, weight, bias, mask, geo);
  return DeformConvFunction::apply(input, offset, or_empty(mask, input), weight, or_empty(bias, input), geo.stride[0],
                                   geo.stride[1], geo.padding[0], geo.padding[1], geo.dilation[0], geo.dilation[1]);
}

torch::Tensor deform_conv2d_composite(const torch::Tensor& input, const torch::Tensor& offset,
                                      const torch::Tensor& weight, const torch::Tensor& bias,
                                      const torch::Tensor& mask, const DeformConvGeometry& geo) {
  const Dims d = check(input, offset, weight, bias, mask, geo);
  const auto opts = input.options();
  const int64_t cg = d.C / d.G;
  // Tap origins: y = oy*sh - ph + i*dh, x = ox*sw - pw + j*dw, as [1, 1, K, Ho, 1] / [1, 1, K, 1, Wo].
  auto ki = torch::arange(d.kh, opts).mul(double(d.dh)).view({d.kh, 1}).expand({d.kh, d.kw}).reshape({d.K});
  auto kj = torch::arange(d.kw, opts).mul(double(d.dw)).view({1, d.kw}).expand({d.kh, d.kw}).reshape({d.K});
  auto by = torch::arange(d.Ho, opts).mul(double(d.sh)).sub(double(d.ph)).view({1, 1, 1, d.Ho, 1}) +
            ki.view({1, 1, d.K, 1, 1});
  auto bx = torch::arange(d.Wo, opts).mul(double(d.sw)).sub(double(d.pw)).view({1, 1, 1, 1, d.Wo}) +
            kj.view({1, 1, d.K, 1, 1});
  const auto off = offset.reshape({d.B, d.G, d.K, 2, d.Ho, d.Wo});
  const auto y = by + off.select(3, 0), x = bx + off.select(3, 1);  // [B, G, K, Ho, Wo]
  const auto inside = (y >= -1) & (y < double(d.H)) & (x >= -1) & (x < double(d.W));
  const auto y0 = y.detach().floor(), x0 = x.detach().floor();
  const auto ly = y - y0, lx = x - x0;
  const auto values = input.reshape({d.B, d.G, cg, d.H * d.W});
  torch::Tensor acc;
  for (int c = 0; c < 4; ++c) {
    const auto yy = y0 + double(c >> 1), xx = x0 + double(c & 1);
    const auto valid = inside & (yy >= 0) & (yy <= double(d.H - 1)) & (xx >= 0) & (xx <= double(d.W - 1));
    const auto wy = (c >> 1) ? ly : 1 - ly, wx = (c & 1) ? lx : 1 - lx;
    const auto w = (wy * wx * valid.to(opts.dtype())).reshape({d.B, d.G, 1, d.K * d.P});
    const auto idx = (yy.clamp(0, double(d.H - 1)) * double(d.W) + xx.clamp(0, double(d.W - 1)))
                         .to(torch::kLong)
                         .reshape({d.B, d.G, 1, d.K * d.P})
                         .expand({d.B, d.G, cg, d.K * d.P});
    const auto term = values.gather(3, idx) * w;
    acc = acc.defined() ? acc + term : term;
  }
  if (mask.defined()) acc = acc * mask.reshape({d.B, d.G, 1, d.K * d.P});
  // [B, G, cg, K*P] -> [B, Gw, C/Gw * K, P]
  const auto col = acc.reshape({d.B, d.C, d.K, d.P}).reshape({d.B, d.Gw, d.C / d.Gw * d.K, d.P});
  auto out = torch::einsum("gok,bgkp->bgop", {weight.reshape({d.Gw, d.O / d.Gw, -1}), col})
                 .reshape({d.B, d.O, d.Ho, d.Wo});
  if (bias.defined()) out = out + bias.view({1, d.O, 1, 1});
  return out;
}

ModulatedDeformConvImpl::ModulatedDeformConvImpl(const ModulatedDeformConvOptions& o) : options(o) {
  if (o.groups() < 1 || o.in_channels() % o.groups() != 0 || o.out_channels() % o.groups() != 0)
    throw Error(fmt::format("ModulatedDeformConv: in {} and out {} channels must be divisible by groups {}",
                            o.in_channels(), o.out_channels(), o.groups()));
  const int64_t n = o.in_channels() / o.groups() * o.kernel_size() * o.kernel_size();
  const double stdv = 1.0 / std::sqrt(double(n));
  weight = register_parameter(
      "weight", torch::empty({o.out_channels(), o.in_channels() / o.groups(), o.kernel_size(), o.kernel_size()})
                    .uniform_(-stdv, stdv));
  if (o.bias()) bias = register_parameter("bias", torch::zeros({o.out_channels()}));
}

torch::Tensor ModulatedDeformConvImpl::forward(const torch::Tensor& x, const torch::Tensor& offset,
                                               const torch::Tensor& mask) {
  const auto& o = options;
  // Under bfloat16 autocast (--precision amp_bf16) the input and the offsets come from bfloat16
  // convolutions; the sampling kernel runs in the weights' float32 (as autocast's fp32 ops do).
  auto to_weight_dtype = [this](const torch::Tensor& t) {
    return t.defined() && t.scalar_type() != weight.scalar_type() && t.is_floating_point() &&
                   (t.scalar_type() == torch::kBFloat16 || t.scalar_type() == torch::kHalf)
               ? t.to(weight.scalar_type())
               : t;
  };
  return deform_conv2d(to_weight_dtype(x), to_weight_dtype(offset), weight, bias, to_weight_dtype(mask),
                       {{o.stride(), o.stride()}, {o.padding(), o.padding()}, {o.dilation(), o.dilation()}});
}

}  // namespace florence::detect
