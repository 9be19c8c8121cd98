#pragma once
// Dynamic Head (Dai et al., "Dynamic Head: Unifying Object Detection Heads with Attentions",
// CVPR 2021), as microsoft/DynamicHead dyhead/dyhead.py and dyhead/dyrelu.py build it; module and
// parameter names are theirs, so their state dicts load (`dyhead_tower.{i}.DyConv.{0,1,2}.conv.
// {weight,bias}`, `.bn.{weight,bias}`, `AttnConv.1.{weight,bias}`, `offset.{weight,bias}`,
// `relu.fc.{0,2}.{weight,bias}`).
//
// One DyConv block maps a pyramid [L levels of [B, C, H_l, W_l], finest first] to the same shapes,
// with one set of weights shared by all levels. For level l:
//   spatial-aware: offset = Conv2d(C, 27, 3, pad 1)(x_l): channels 0..17 are the 9 taps' (dy, dx)
//     offsets (interleaved), 18..26 mask logits -> sigmoid. With these offsets and mask,
//     DyConv[1] = modulated deform conv 3x3 (stride 1) + GroupNorm(16) on x_l;
//     DyConv[2] = the same with stride 2 on the finer x_{l-1} (its output must be H_l x W_l);
//     DyConv[0] = the same (stride 1) on the coarser x_{l+1}, then bilinear upsampling to
//     H_l x W_l with align_corners=True (F.upsample_bilinear).
//   scale-aware: each gathered map f is weighted by hard_sigmoid(ReLU(Conv2d(C, 1, 1)(avgpool(f))))
//     (`AttnConv`), hard_sigmoid(x) = ReLU6(x + 3) / 6; the weighted maps are averaged (2 or 3).
//   task-aware: DyReLU (`relu`): h = hard_sigmoid(Linear(C/4 -> 4C)(ReLU(Linear(C -> C/4)(avgpool))))
//     split as (a1, b1, a2, b2); a1 = 2(h - 1/2) + 1, a2 = 2(h - 1/2), b = h - 1/2;
//     out = max(x a1 + b1, x a2 + b2) per channel.
// Offsets for the coarser level (l + 1 is smaller than the offsets predicted at l): DyHead's CUDA
// kernel reads each image's offset buffer as if it had l+1's size (it reinterprets the first
// 18*h*w values of the image's 27-channel conv output, and the first 9*h*w values of its sigmoid
// mask); mmdetection's DyHead takes the top-left h x w window. We default to the top-left window
// (CoarseOffsets::kCrop: the tap at (y, x) of the coarser map uses the offsets predicted at (y, x),
// a spatially coherent rule) and offer the reference's reinterpretation (kReference) for loading
// DyHead-trained weights. A third rule, kResample, keeps them in place: the tap at (y, x) of the
// coarser map uses the offsets predicted at (2y, 2x), where the same image point lies, halved
// (they are counted in the finer map's pixels), and the mask there; docs/detection.md says more.
// Init as the reference: deform convs U(+-1/sqrt(fan_in)), bias 0; AttnConv N(0, 0.01), bias 0;
// `offset` and the DyReLU Linears LibTorch's defaults (= PyTorch's); GroupNorm 1/0. The detector
// can zero `offset` instead (DetectorConfig::offset_init "zero", mmdetection's choice).
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/types.h>

#include <string>
#include <vector>

#include "florence/adapt/detect/deform_conv.h"

namespace florence::detect {

enum class CoarseOffsets { kCrop, kReference, kResample };
/// "crop" | "reference"; throws florence::Error for anything else.
CoarseOffsets coarse_offsets_from_string(const std::string& s);
std::string to_string(CoarseOffsets c);

/// ReLU6(x + 3) / 6.
torch::Tensor hard_sigmoid(const torch::Tensor& x);

/// DyHead's DYReLU with K2 = true, use_bias = true (4 coefficients per channel), reduction 4.
class DyReLUImpl : public torch::nn::Module {
 public:
  DyReLUImpl(int64_t in_channels, int64_t out_channels, int64_t reduction = 4);
  /// x [B, C, H, W] -> [B, C, H, W] (coefficients from x's global average).
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Sequential fc{nullptr};
  int64_t out_channels;
};
TORCH_MODULE(DyReLU);

/// ModulatedDeformConv 3x3 (padding 1) + GroupNorm(16): DyHead's Conv3x3Norm (`conv`, `bn`).
class Conv3x3NormImpl : public torch::nn::Module {
 public:
  Conv3x3NormImpl(int64_t in_channels, int64_t out_channels, int64_t stride, int64_t norm_groups = 16);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& offset, const torch::Tensor& mask);
  ModulatedDeformConv conv{nullptr};
  torch::nn::GroupNorm bn{nullptr};
};
TORCH_MODULE(Conv3x3Norm);

/// One DyHead block (DyHead's DyConv).
class DyConvImpl : public torch::nn::Module {
 public:
  DyConvImpl(int64_t in_channels, int64_t out_channels, CoarseOffsets coarse = CoarseOffsets::kCrop);
  /// levels: L >= 1 maps [B, in, H_l, W_l], finest first, with H_l = ceil(H_{l-1} / 2) (and W) so the
  /// stride-2 conv of the finer level lands on level l's size. Returns L maps [B, out, H_l, W_l].
  /// Throws florence::Error naming the level when sizes or channels do not fit.
  std::vector<torch::Tensor> forward(const std::vector<torch::Tensor>& levels);

  torch::nn::ModuleList DyConv{nullptr};  ///< [0] coarser level, [1] same level, [2] finer level (stride 2)
  torch::nn::Sequential AttnConv{nullptr};
  DyReLU relu{nullptr};
  torch::nn::Conv2d offset{nullptr};
  CoarseOffsets coarse;
};
TORCH_MODULE(DyConv);

/// Offsets and mask of a level with size H x W, brought to a coarser level's h x w by `mode`
/// (see the top of this file). offset_mask: the offset conv's raw output [B, 27, H, W]; mask: its
/// sigmoid mask [B, 9, H, W]. Returns {offset [B, 18, h, w], mask [B, 9, h, w]}.
std::pair<torch::Tensor, torch::Tensor> coarse_level_offsets(const torch::Tensor& offset_mask,
                                                             const torch::Tensor& mask, int64_t h, int64_t w,
                                                             CoarseOffsets mode);

}  // namespace florence::detect
