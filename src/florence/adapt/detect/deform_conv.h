#pragma once
// Modulated deformable convolution v2 (Zhu et al., "Deformable ConvNets v2", CVPR 2019), the
// operation torchvision.ops.deform_conv2d computes, with forward and backward for input, offset,
// mask, weight and bias.
//
// For output position (oy, ox), kernel tap (i, j) (k = i * kw + j) and offset group g:
//   y = oy * stride_h - pad_h + i * dilation_h + offset[b, g*2*K + 2k,     oy, ox]
//   x = ox * stride_w - pad_w + j * dilation_w + offset[b, g*2*K + 2k + 1, oy, ox]
//   col[c, k] = mask[b, g*K + k, oy, ox] * bilinear(input[b, c], y, x)     (c in group g)
//   out[b, o, oy, ox] = bias[o] + sum_{c, k} weight[o, c, i, j] * col[c, k]  (per weight group)
// bilinear() reads the four integer neighbours and treats those outside the map as 0 (a tap
// entirely outside, y <= -1 or y >= H or x <= -1 or x >= W, gives 0), as torchvision's kernel
// does; the offset gradient is the derivative of that piecewise-bilinear function.
//
// Shapes (float32 or float64, all on one device):
//   input  [B, C, H, W]
//   offset [B, 2 * G * kh * kw, Ho, Wo]   interleaved (dy, dx) per tap, G = offset groups
//   mask   [B, G * kh * kw, Ho, Wo]       modulation (DCNv2, usually a sigmoid); undefined = 1 (DCNv1)
//   weight [O, C / Gw, kh, kw]            Gw = C / weight.size(1) weight groups (as torchvision)
//   bias   [O] or undefined
//   out    [B, O, Ho, Wo], Ho = (H + 2 pad_h - dilation_h (kh - 1) - 1) / stride_h + 1 (floor)
// G is read from offset.size(1) / (2 kh kw); C must be divisible by G and by Gw, O by Gw.
//
// Two implementations, same maths:
//   * CPU tensors: our kernel. Each (image, offset group, tap, position) gets its four corner
//     indices and bilinear weights once, shared by the group's channels; columns are gathered in
//     parallel over channels (at::parallel_for), multiplied with BLAS (at::mm), images processed
//     in chunks so the column buffer stays under ~64 MiB. Backward recomputes the columns; the
//     input gradient is scattered per channel plane (no two threads write one plane), offset/mask
//     gradients are reduced over the group's channels in parallel over taps x positions.
//   * Other devices (and deform_conv2d_composite on any device): the same sampling written with
//     ATen ops (floor, gather, einsum), differentiated by autograd - slower, device-agnostic.
// Double backward is not implemented (the CPU kernel's backward is not itself differentiable).
// Errors: florence::Error naming the tensor and both shapes for any inconsistent shape, a stride
// or dilation < 1, a padding < 0, mixed dtypes/devices, or an empty output.
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <array>

namespace florence::detect {

struct DeformConvGeometry {
  std::array<int64_t, 2> stride{1, 1};
  std::array<int64_t, 2> padding{0, 0};
  std::array<int64_t, 2> dilation{1, 1};
};

/// Modulated deformable convolution (see the top of this file); autograd-aware. Argument order as
/// torchvision.ops.deform_conv2d(input, offset, weight, bias, stride, padding, dilation, mask).
torch::Tensor deform_conv2d(const torch::Tensor& input, const torch::Tensor& offset, const torch::Tensor& weight,
                            const torch::Tensor& bias, const torch::Tensor& mask, const DeformConvGeometry& geo = {});

/// The same operation from ATen ops only (any device; gradients by autograd). Used off-CPU and as
/// an independent check of the kernel in the unit tests.
torch::Tensor deform_conv2d_composite(const torch::Tensor& input, const torch::Tensor& offset,
                                      const torch::Tensor& weight, const torch::Tensor& bias,
                                      const torch::Tensor& mask, const DeformConvGeometry& geo = {});

/// A modulated deformable conv layer whose offsets and mask come from outside (DyHead's
/// `ModulatedDeformConv`: parameters `weight` [out, in / groups, k, k] and `bias` [out]).
struct ModulatedDeformConvOptions {
  ModulatedDeformConvOptions(int64_t in, int64_t out, int64_t kernel) : in_channels_(in), out_channels_(out), kernel_size_(kernel) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, out_channels);
  TORCH_ARG(int64_t, kernel_size);
  TORCH_ARG(int64_t, stride) = 1;
  TORCH_ARG(int64_t, padding) = 0;
  TORCH_ARG(int64_t, dilation) = 1;
  TORCH_ARG(int64_t, groups) = 1;  ///< weight groups
  TORCH_ARG(bool, bias) = true;
};

class ModulatedDeformConvImpl : public torch::nn::Module {
 public:
  /// Init as DyHead's ModulatedDeformConv.reset_parameters: weight U(-1/sqrt(n), 1/sqrt(n)) with
  /// n = in/groups * k * k, bias 0. Throws florence::Error for channels not divisible by groups.
  explicit ModulatedDeformConvImpl(const ModulatedDeformConvOptions& o);
  /// x [B, in, H, W], offset [B, 2 G k k, Ho, Wo], mask [B, G k k, Ho, Wo] -> [B, out, Ho, Wo].
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& offset, const torch::Tensor& mask);

  ModulatedDeformConvOptions options;
  torch::Tensor weight, bias;
};
TORCH_MODULE(ModulatedDeformConv);

}  // namespace florence::detect
