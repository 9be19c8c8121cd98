#pragma once
// Video CoSwin: the CoSwin image tower (swin.h) adapted to video as Florence §2.5 describes,
// with the 3D windows of Video Swin (Liu et al. 2022). Three parts change, every other weight is
// the image tower's:
//   tokenizer:   Conv3d(in, C, (tube, k, k), stride (tube, s, s), padding (0, p, p)) + LayerNorm(C):
//                each tube x P x P block of pixels -> one token (2D stem k, s, p kept);
//   downsample:  Conv3d(C, 2C, (kt, 3, 3), stride (st, 2, 2), padding (pt, 1, 1)) + LayerNorm(2C),
//                time padded by replicating the end frames (video_swin_layers.h ConvEmbed3d);
//   attention:   3D shifted windows (Wt, Wh, Ww) per stage ("dynamic window size": small early,
//                large late), relative position bias [(2Wt-1)(2Wh-1)(2Ww-1), heads].
// Inflation from a 2D checkpoint (inflate_from_2d): conv kernels repeated along time and divided
// by the temporal kernel size; bias tables duplicated along time (bicubic-resized first when the
// spatial window differs from the 2D one). With the spatial windows of the 2D tower, a clip of
// identical frames gives the 2D tower's pooled feature of that frame (docs/video.md states the
// argument and the one exception: a spatial map smaller than its window).
//
// Parameter names are the 2D tower's (`patch_embed.proj`, `patch_embed.norm`,
// `layers.{i}.blocks.{j}.{norm1,attn.qkv,attn.proj,attn.relative_position_bias_table,norm2,
// mlp.fc1,mlp.fc2}`, `layers.{i}.downsample.{proj,norm}`, `norm`, `head`), so the 2D -> 3D map is
// one-to-one.
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <nlohmann/json_fwd.hpp>

#include <array>
#include <string>
#include <vector>

#include "florence/core/checkpoint.h"
#include "florence/vision/swin.h"

namespace florence::vision {

/// Kernel, stride and padding along time of a 3D conv (its spatial ones are the 2D tower's).
struct TimeConvConfig {
  int kernel = 3;
  int stride = 1;
  int padding = 1;  ///< frames replicated at each end (never zeros)
};

/// Every dimension of a Video CoSwin tower: the 2D tower it inflates plus the video fields.
/// Defaults: the temporal choices of docs/video.md (tube 2 as Video Swin's 2x4x4 patches;
/// merging kernel 3, stride 1: overlapping in time, time not downsampled, like Video Swin's
/// spatial-only merging).
struct VideoSwinConfig {
  SwinConfig image;                          ///< the CoSwin tower (variant "coswin"; num_classes must be 0)
  int tube = 2;                              ///< frames per token: tokenizer temporal kernel = stride, padding 0
  TimeConvConfig merge{3, 1, 1};             ///< temporal kernel / stride / padding of the patch merging
  /// Per-stage window (Wt, Wh, Ww). Empty: (2, W, W) on every stage but the last, (8, W, W) on
  /// the last, W = image.window_size. A window not smaller than its axis shrinks to it.
  std::vector<std::array<int, 3>> windows;
  int num_frames = 8;                        ///< nominal T (FLOP counts; any T >= 1 is accepted)
  int num_classes = 0;                       ///< > 0 adds a Linear `head` [C_last -> classes]

  /// The window of stage i (the explicit one, or the default rule above).
  std::array<int, 3> window(int stage) const;
  /// Keys: image{...}, tube, merge{kernel, stride, padding}, windows [[t, h, w], ...],
  /// num_frames, num_classes. Unknown keys throw florence::Error naming the key.
  nlohmann::json to_json() const;
  static VideoSwinConfig from_json(const nlohmann::json& j);
  /// Throws florence::Error naming the field when inconsistent (not a CoSwin tower, a window
  /// list of the wrong length, a window or kernel < 1, ...).
  void validate() const;
};

class VideoSwinTransformerImpl : public torch::nn::Module {
 public:
  /// Builds the tower (validates `cfg`). Init as the 2D tower (Linear and bias tables truncated
  /// normal std 0.02, biases 0, LayerNorm 1/0); shifted windows (shift W/2 per axis) on odd blocks.
  explicit VideoSwinTransformerImpl(const VideoSwinConfig& cfg);

  /// x: [B, in_chans, T, H, W] float, each frame normalised as the 2D tower's images.
  /// Returns the pooled feature [B, num_features] (final LayerNorm, then the mean over all
  /// T' x H' x W' tokens), or logits [B, num_classes] with a head.
  /// Throws florence::Error for a wrong rank / channel count or a map smaller than a kernel.
  torch::Tensor forward(const torch::Tensor& x);
  /// Like forward() without the head. If `stages` is non-null it receives each stage's output map
  /// [B, C_i, T_i, H_i, W_i] (the last one after the final LayerNorm).
  torch::Tensor forward_features(const torch::Tensor& x, std::vector<torch::Tensor>* stages = nullptr);

  const VideoSwinConfig& config() const { return cfg_; }

 private:
  VideoSwinConfig cfg_;
  struct Impl;
  std::shared_ptr<Impl> impl_;
};
TORCH_MODULE(VideoSwinTransformer);

/// Inflates a 2D CoSwin state dict (bare tower names, as SwinTransformer's state dict) into the
/// state dict of VideoSwinTransformer(cfg):
///   patch_embed.proj.weight [C, in, k, k]        -> [C, in, tube, k, k], repeated / tube
///   layers.{i}.downsample.proj.weight [2C, C, 3, 3] -> [2C, C, kt, 3, 3], repeated / kt
///   ...relative_position_bias_table [(2W-1)^2, h] -> [(2Wt-1)(2Wh-1)(2Ww-1), h]: the 2D table
///       (bicubically resized to (2Wh-1) x (2Ww-1) when (Wh, Ww) != (W, W), as Video Swin's
///       inflate_weights) copied for each of the 2Wt-1 temporal offsets;
///   everything else (norms, qkv, proj, mlp, conv biases) unchanged.
/// `head.*` is copied only when cfg.num_classes equals its class count; otherwise it is left out
/// (load_inflated keeps the fresh head). Derived buffers (relative_position_index, attn_mask)
/// are dropped. Throws florence::Error naming the key when patch_embed.proj.weight is missing or
/// a key to inflate has a shape that does not fit cfg.image (other missing or unexpected keys are
/// named by load_inflated's strict load).
core::TensorMap inflate_from_2d(const core::TensorMap& image_state, const VideoSwinConfig& cfg);

/// inflate_from_2d + strict load into `model` (a head absent from the inflated dict keeps its
/// initialisation). Throws florence::Error as inflate_from_2d / core::load_state_dict.
void load_inflated(VideoSwinTransformer& model, const core::TensorMap& image_state);

}  // namespace florence::vision
