#pragma once
// CoSwin and Swin image towers.
//
// CoSwin (Florence, arXiv 2111.11432 §2.2) is a Swin Transformer (Liu et al., 2021) whose
// patch embedding and patch merging are replaced by CvT-style convolutional embeddings
// (Wu et al., 2021): a strided conv followed by LayerNorm over channels.
//   stem:       Conv2d(in, C, 7, stride 4, padding 2, bias) + LayerNorm(C)
//   downsample: Conv2d(C, 2C, 3, stride 2, padding 1, bias) + LayerNorm(2C), end of stages 1..S-1
// The Swin-compatible variant uses the original 4x4/stride-4 patch embedding and PatchMerging
// (LayerNorm(4C) + Linear(4C -> 2C, no bias), channel order x[0::2,0::2], x[1::2,0::2],
// x[0::2,1::2], x[1::2,1::2] as in microsoft/Swin-Transformer and torchvision) so public
// Swin weights load.
//
// Parameter names follow microsoft/Swin-Transformer (`patch_embed.proj`, `patch_embed.norm`,
// `layers.{i}.blocks.{j}.{norm1,attn.qkv,attn.proj,attn.relative_position_bias_table,norm2,
// mlp.fc1,mlp.fc2}`, `layers.{i}.downsample.{reduction,norm}` (Swin) or
// `layers.{i}.downsample.{proj,norm}` (CoSwin, CvT's ConvEmbed names), `norm`, `head`).
// The relative position index is derived from the window size, never stored in a state dict.
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <nlohmann/json_fwd.hpp>

#include <string>
#include <vector>

namespace florence::vision {

/// A convolutional embedding: Conv2d(kernel, stride, padding) (+bias) then LayerNorm.
/// For the Swin variant the stem is kernel = stride = patch size, padding 0.
struct ConvEmbedConfig {
  int kernel = 7;
  int stride = 4;
  int padding = 2;
};

/// Every dimension of a Swin/CoSwin tower. Defaults are CoSwin-T.
struct SwinConfig {
  std::string variant = "coswin";          ///< "coswin" (conv embeddings) or "swin" (patch embed + PatchMerging)
  int in_chans = 3;
  int embed_dim = 96;                      ///< C of stage 1; stage i has C * 2^i channels
  std::vector<int> depths{2, 2, 6, 2};     ///< blocks per stage
  std::vector<int> num_heads{3, 6, 12, 24};///< heads per stage (Swin: C_i / 32)
  int window_size = 7;                     ///< W: attention windows are W x W tokens (Swin §3.2)
  double mlp_ratio = 4.0;
  bool qkv_bias = true;
  double drop_rate = 0.0;                  ///< dropout after attention proj / MLP
  double attn_drop_rate = 0.0;
  double drop_path_rate = 0.2;             ///< stochastic depth, linear from 0 to this over all blocks
  double layer_scale_init = 0.0;           ///< > 0 enables per-channel layer scale (gamma_1, gamma_2)
  double norm_eps = 1e-5;                  ///< LayerNorm eps everywhere in the tower
  bool patch_norm = true;                  ///< LayerNorm after the stem
  ConvEmbedConfig patch_embed{7, 4, 2};    ///< stem (Swin variant: {4, 4, 0})
  ConvEmbedConfig downsample{3, 2, 1};     ///< between stages (CoSwin only)
  int num_classes = 0;                     ///< > 0 adds a Linear `head` on the pooled feature
  int image_size = 224;                    ///< nominal input size (for FLOP counts; any size is accepted)

  int num_stages() const { return static_cast<int>(depths.size()); }
  int stage_dim(int i) const { return embed_dim << i; }
  int num_features() const { return stage_dim(num_stages() - 1); }

  /// Full description; from_json() accepts exactly these fields (missing ones take the
  /// defaults above, unknown ones throw florence::Error naming the field).
  nlohmann::json to_json() const;
  static SwinConfig from_json(const nlohmann::json& j);
  /// Throws florence::Error if dimensions are inconsistent (heads not dividing dims, ...).
  void validate() const;
};

class SwinTransformerImpl : public torch::nn::Module {
 public:
  /// Builds the tower (validates `cfg`, throws florence::Error if invalid). Init follows the
  /// Swin reference: Linear weights and bias tables truncated normal (std 0.02, cut at 2 std),
  /// Linear biases 0, LayerNorm 1/0, convs LibTorch's default. Shifted windows (shift W/2) on
  /// odd blocks of each stage; stochastic depth linear in the block index from 0 to
  /// drop_path_rate (training only).
  explicit SwinTransformerImpl(const SwinConfig& cfg);

  /// x: [B, in_chans, H, W] float, normalised pixels; any H, W the stem and downsample convs
  /// can reach (Swin variant: H, W >= 4; odd intermediate maps are zero-padded before
  /// merging, and every map is zero-padded to a multiple of the window inside attention, as
  /// in torchvision 0.14). Returns the pooled feature [B, num_features()] (final LayerNorm,
  /// then global average pooling over tokens), or logits [B, num_classes] if num_classes > 0.
  /// Throws florence::Error for a wrong rank/channel count or a map smaller than a conv kernel.
  torch::Tensor forward(const torch::Tensor& x);

  /// Like forward() without the head: pooled [B, num_features()]. If `stages` is non-null
  /// it is cleared and receives each stage's output map before downsampling, contiguous
  /// [B, C_i, H_i, W_i] for i = 0..S-1 (the last one after the final LayerNorm) - the pyramid
  /// a detection adapter consumes.
  torch::Tensor forward_features(const torch::Tensor& x, std::vector<torch::Tensor>* stages = nullptr);

  const SwinConfig& config() const { return cfg_; }

 private:
  SwinConfig cfg_;
  // Typed handles to the registered submodules (`patch_embed`, `layers`, `norm`, `head`);
  // defined in swin.cpp so this header stays light.
  struct Impl;
  std::shared_ptr<Impl> impl_;
};
TORCH_MODULE(SwinTransformer);

}  // namespace florence::vision
