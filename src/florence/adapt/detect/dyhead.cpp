// Dynamic Head block; see dyhead.h.
#include "florence/adapt/detect/dyhead.h"

#include <fmt/format.h>

#include "florence/core/error.h"

namespace florence::detect {

namespace F = torch::nn::functional;

CoarseOffsets coarse_offsets_from_string(const std::string& s) {
  if (s == "crop") return CoarseOffsets::kCrop;
  if (s == "reference") return CoarseOffsets::kReference;
  if (s == "resample") return CoarseOffsets::kResample;
  throw Error("coarse_offsets must be \"crop\" or \"reference\", got \"" + s + "\"");
}

std::string to_string(CoarseOffsets c) {
  return c == CoarseOffsets::kCrop ? "crop" : c == CoarseOffsets::kReference ? "reference" : "resample";
}

torch::Tensor hard_sigmoid(const torch::Tensor& x) { return F::relu6(x + 3.0) / 6.0; }

DyReLUImpl::DyReLUImpl(int64_t in_channels, int64_t out, int64_t reduction) : out_channels(out) {
  if (reduction < 1 || in_channels / reduction < 1)
    throw Error(fmt::format("DyReLU: {} channels / reduction {} leaves no hidden units", in_channels, reduction));
  // Index 1 is the ReLU, so the Linears are fc.0 and fc.2 as in DyHead; index 3 its h_sigmoid
  // (applied in forward: a parameterless functional here).
  fc = register_module("fc", torch::nn::Sequential(torch::nn::Linear(in_channels, in_channels / reduction),
                                                   torch::nn::ReLU(),
                                                   torch::nn::Linear(in_channels / reduction, 4 * out)));
}

torch::Tensor DyReLUImpl::forward(const torch::Tensor& x) {
  const int64_t B = x.size(0);
  auto h = hard_sigmoid(fc->forward(x.mean({2, 3}))).view({B, 4 * out_channels, 1, 1});
  auto parts = h.split(out_channels, 1);  // a1, b1, a2, b2
  const auto a1 = (parts[0] - 0.5) * 2.0 + 1.0, b1 = parts[1] - 0.5;
  const auto a2 = (parts[2] - 0.5) * 2.0, b2 = parts[3] - 0.5;
  return torch::max(x * a1 + b1, x * a2 + b2);
}

Conv3x3NormImpl::Conv3x3NormImpl(int64_t in_channels, int64_t out_channels, int64_t stride, int64_t norm_groups) {
  if (out_channels % norm_groups != 0)
    throw Error(fmt::format("DyHead: {} channels are not divisible by the {} GroupNorm groups", out_channels,
                            norm_groups));
  conv = register_module(
      "conv", ModulatedDeformConv(ModulatedDeformConvOptions(in_channels, out_channels, 3).stride(stride).padding(1)));
  bn = register_module("bn", torch::nn::GroupNorm(torch::nn::GroupNormOptions(norm_groups, out_channels)));
}

torch::Tensor Conv3x3NormImpl::forward(const torch::Tensor& x, const torch::Tensor& offset, const torch::Tensor& mask) {
  return bn->forward(conv->forward(x, offset, mask));
}

DyConvImpl::DyConvImpl(int64_t in_channels, int64_t out_channels, CoarseOffsets c) : coarse(c) {
  DyConv = register_module("DyConv", torch::nn::ModuleList(Conv3x3Norm(in_channels, out_channels, 1),
                                                           Conv3x3Norm(in_channels, out_channels, 1),
                                                           Conv3x3Norm(in_channels, out_channels, 2)));
  // AdaptiveAvgPool2d(1) at index 0 (parameterless), the 1x1 conv at index 1, ReLU at index 2.
  AttnConv = register_module(
      "AttnConv", torch::nn::Sequential(torch::nn::AdaptiveAvgPool2d(1),
                                        torch::nn::Conv2d(torch::nn::Conv2dOptions(out_channels, 1, 1)),
                                        torch::nn::ReLU()));
  relu = register_module("relu", DyReLU(out_channels, out_channels));  // acts on the block's output maps
  offset = register_module("offset", torch::nn::Conv2d(torch::nn::Conv2dOptions(in_channels, 27, 3).padding(1)));
  torch::NoGradGuard ng;
  auto* attn = AttnConv[1]->as<torch::nn::Conv2d>();
  torch::nn::init::normal_(attn->weight, 0, 0.01);
  torch::nn::init::zeros_(attn->bias);
}

std::pair<torch::Tensor, torch::Tensor> coarse_level_offsets(const torch::Tensor& offset_mask,
                                                             const torch::Tensor& mask, int64_t h, int64_t w,
                                                             CoarseOffsets mode) {
  const int64_t B = offset_mask.size(0), H = offset_mask.size(2), W = offset_mask.size(3);
  if (h > H || w > W)
    throw Error(fmt::format("DyHead: the coarser level ({}x{}) is larger than the level whose offsets it uses ({}x{})",
                            h, w, H, W));
  if (mode == CoarseOffsets::kResample) {
    // Every second row and column: (2y, 2x) of the finer map is the point (y, x) of the coarser
    // one (a stride-2 conv with padding 1 gives ceil(H/2) x ceil(W/2)); offsets halve with the
    // pixel size.
    if (h != (H + 1) / 2 || w != (W + 1) / 2)
      throw Error(fmt::format("DyHead: the coarser level ({}x{}) is not the stride-2 map of the level whose offsets "
                              "it uses ({}x{})", h, w, H, W));
    const auto om = offset_mask.narrow(1, 0, 18).slice(2, 0, H, 2).slice(3, 0, W, 2);
    return {om * 0.5, mask.slice(2, 0, H, 2).slice(3, 0, W, 2)};
  }
  if (mode == CoarseOffsets::kCrop) {
    return {offset_mask.narrow(1, 0, 18).narrow(2, 0, h).narrow(3, 0, w),
            mask.narrow(2, 0, h).narrow(3, 0, w)};
  }
  // The reference kernel's reading: each image's contiguous 27 x H x W block (and 9 x H x W mask
  // block) taken from its start as if it were 18 x h x w (9 x h x w).
  const auto om = offset_mask.contiguous().view({B, 27 * H * W}).narrow(1, 0, 18 * h * w).view({B, 18, h, w});
  const auto m = mask.contiguous().view({B, 9 * H * W}).narrow(1, 0, 9 * h * w).view({B, 9, h, w});
  return {om, m};
}

std::vector<torch::Tensor> DyConvImpl::forward(const std::vector<torch::Tensor>& x) {
  const size_t L = x.size();
  if (L == 0) throw Error("DyHead: no pyramid levels");
  auto level_conv = [&](size_t i) { return DyConv[i]->as<Conv3x3NormImpl>(); };
  std::vector<torch::Tensor> next(L);
  for (size_t l = 0; l < L; ++l) {
    const auto& feature = x[l];
    if (feature.dim() != 4)
      throw Error(fmt::format("DyHead: level {} must be [B, C, H, W], got {} dims", l, feature.dim()));
    const int64_t H = feature.size(2), W = feature.size(3);
    const auto offset_mask = offset->forward(feature);
    const auto off = offset_mask.narrow(1, 0, 18);
    const auto mask = offset_mask.narrow(1, 18, 9).sigmoid();
    std::vector<torch::Tensor> feats{level_conv(1)->forward(feature, off, mask)};
    if (l > 0) {
      const auto& finer = x[l - 1];
      if ((finer.size(2) + 1) / 2 != H || (finer.size(3) + 1) / 2 != W)
        throw Error(fmt::format("DyHead: level {} is {}x{} but the stride-2 conv of level {} ({}x{}) gives {}x{}", l, H,
                                W, l - 1, finer.size(2), finer.size(3), (finer.size(2) + 1) / 2,
                                (finer.size(3) + 1) / 2));
      feats.push_back(level_conv(2)->forward(finer, off, mask));
    }
    if (l + 1 < L) {
      const auto& coarser = x[l + 1];
      auto [coff, cmask] = coarse_level_offsets(offset_mask, mask, coarser.size(2), coarser.size(3), coarse);
      auto up = level_conv(0)->forward(coarser, coff, cmask);
      feats.push_back(F::interpolate(
          up, F::InterpolateFuncOptions().size(std::vector<int64_t>{H, W}).mode(torch::kBilinear).align_corners(true)));
    }
    torch::Tensor sum;
    for (const auto& f : feats) {
      auto weighted = f * hard_sigmoid(AttnConv->forward(f));
      sum = sum.defined() ? sum + weighted : weighted;
    }
    next[l] = relu->forward(sum / double(feats.size()));
  }
  return next;
}

}  // namespace florence::detect
