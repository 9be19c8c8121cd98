#pragma once
// Feature pyramid (Lin et al., FPN, CVPR 2017) over the CoSwin stage maps, as detectron2's FPN with
// LastLevelP6P7 builds it for DynamicHead's ATSS (extra/swint.py build_retinanet_swint_fpn_dyhead_
// backbone): names `fpn_lateral{l}` (1x1 conv), `fpn_output{l}` (3x3 conv), `top_block.p{l}`.
//
// Inputs: the backbone stages chosen for the pyramid, finest first; stage i of a CoSwin has stride
// 4 * 2^i, so its level is l = log2(stride) (CoSwin-T stages 1, 2, 3 -> C3, C4, C5). Top-down path:
// P_top = output(lateral(C_top)); P_l = output(lateral(C_l) + nearest-upsample(inner_{l+1} to C_l's
// size)) (detectron2 upsamples by 2; to the lateral's size is the same when sizes halve exactly and
// also serves odd sizes, where CoSwin's stride-2 convs round up).
// Extra levels above the last stage level up to max_level (P6, P7 for CoSwin-T) come from P5 as
// DyHead/ATSS (LastLevelP6P7 with in_feature "p5", not C5): P6 = Conv3x3/2(P5),
// P7 = Conv3x3/2(ReLU(P6)), each further level from ReLU of the one below.
// Init: detectron2 c2_xavier_fill (kaiming_uniform with a = 1, bias 0) for every conv.
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/types.h>

#include <vector>

namespace florence::detect {

struct FPNOptions {
  std::vector<int64_t> in_channels;  ///< channels of the input stages, finest first
  int64_t first_level = 3;           ///< level of the first input (log2 of its stride)
  int64_t max_level = 7;             ///< highest output level (extra levels from P_{last})
  int64_t out_channels = 256;        ///< detectron2 MODEL.FPN.OUT_CHANNELS
};

class FPNImpl : public torch::nn::Module {
 public:
  /// Throws florence::Error when no stage is given or max_level is below the last stage's level.
  explicit FPNImpl(const FPNOptions& o);
  /// stages: one map [B, in_channels[i], H_i, W_i] per input, finest first. Returns the levels
  /// first_level..max_level, each [B, out_channels, h, w]. Throws florence::Error for a wrong count
  /// or channel number (naming the stage).
  std::vector<torch::Tensor> forward(const std::vector<torch::Tensor>& stages);
  int64_t num_levels() const { return options.max_level - options.first_level + 1; }

  FPNOptions options;
  std::vector<torch::nn::Conv2d> lateral, output, extra;
};
TORCH_MODULE(FPN);

}  // namespace florence::detect
