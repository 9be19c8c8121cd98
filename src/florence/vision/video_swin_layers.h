#pragma once
// Building blocks of Video CoSwin (see video_swin.h for the whole tower and docs/video.md for the
// design): 3D window layout and region mask, 3D relative position index, 3D shifted-window
// attention, the 3D block and the 3D convolutional embedding.
//
// Layout convention: token maps are channel-last, [B, T, H, W, C] (the 2D tower's [B, H, W, C]
// with time in front); convolutions permute to [B, C, T, H, W] and back.
//
// 3D windows (Video Swin, Liu et al. 2022, §3.2), per axis a in (t, h, w):
//   * window shrink (Video Swin get_window_size): when the axis is not larger than the window,
//     the window is the whole axis and that axis is not shifted;
//   * otherwise the axis is zero-padded at its end to a multiple of the window and, in a shifted
//     block, rolled by -shift (shift = window / 2);
//   * the region mask gives every token a label from its position in the rolled, padded map
//     (per shifted axis three bands, [0, P - w), [P - w, P - s), [P - s, P)); two tokens of one
//     window attend when their labels match, else -100 is added to the logit (the Swin value);
//   * padded TIME slices get a label of their own, so no real token attends to them (Video Swin
//     leaves them as unmasked zero tokens). Padded spatial positions stay unmasked zero tokens, as
//     in the 2D tower (torchvision 0.14). Both choices keep a clip of identical frames exactly on
//     the 2D tower's feature (docs/video.md, "Invariance").
#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <array>
#include <map>
#include <mutex>
#include <tuple>

#include "florence/vision/swin_layers.h"

namespace florence::vision {

/// Three sizes in (time, height, width) order.
using Size3 = std::array<int64_t, 3>;

/// How one [T, H, W] token map is cut into windows: per axis the effective window and shift
/// (after the shrink rule) and the padded size (a multiple of the effective window).
struct WindowLayout3d {
  Size3 size{};    ///< (T, H, W) of the map
  Size3 window{};  ///< effective window: min(requested, axis)
  Size3 shift{};   ///< effective shift: 0 where the axis is not larger than the requested window
  Size3 padded{};  ///< axis rounded up to a multiple of the effective window
  int64_t num_windows() const { return (padded[0] / window[0]) * (padded[1] / window[1]) * (padded[2] / window[2]); }
  int64_t volume() const { return window[0] * window[1] * window[2]; }  ///< N, tokens per window
  bool time_padded() const { return padded[0] > size[0]; }
  bool shifted() const { return shift[0] > 0 || shift[1] > 0 || shift[2] > 0; }
  /// True when attention needs the region mask (a shift or padded time slices).
  bool masked() const { return shifted() || time_padded(); }
};

/// The layout of a map of `size` tokens for a requested window and shift (both per axis).
/// Throws florence::Error when a size or window is < 1 or a shift lies outside [0, window).
WindowLayout3d window_layout_3d(const Size3& size, const Size3& window, const Size3& shift);

/// Region label of every token of every window: [nW, N] int64, windows in raster (t, h, w) order
/// and tokens in raster order inside a window, positions taken in the rolled, padded map. Label
/// = band_t * 9 + band_h * 3 + band_w (band in {0, 1, 2}, 0 on an unshifted axis); tokens whose
/// source time index is padding get label 27.
torch::Tensor window_region_labels_3d(const WindowLayout3d& layout);

/// The additive attention mask of a layout: [nW, N, N], 0 where the labels of query i and key j
/// match and -100 elsewhere; `options` sets dtype (default float32) and device.
torch::Tensor shifted_window_mask_3d(const WindowLayout3d& layout, const torch::TensorOptions& options = {});

/// Relative position index of an effective window `eff` inside a bias table built for the full
/// window `full` (eff <= full per axis): entry [i, j] for tokens i = (ti, hi, wi), j = (tj, hj,
/// wj), raster order inside the effective window, is
///   (ti - tj + Wt - 1) * (2Wh - 1) * (2Ww - 1) + (hi - hj + Wh - 1) * (2Ww - 1) + (wi - wj + Ww - 1)
/// with (Wt, Wh, Ww) = full: a row of the [(2Wt-1)(2Wh-1)(2Ww-1), heads] table. (Video Swin takes
/// the first N x N entries of the full window's index for a shrunk window, which pairs tokens
/// with the wrong offsets; here the offsets are always the tokens' own.) Returns [N, N] int64.
/// Throws florence::Error when an axis of eff is < 1 or larger than full.
torch::Tensor relative_position_index_3d(const Size3& eff, const Size3& full, torch::Device device = torch::kCPU);

/// Row plan of one layout for maps [B, T, H, W, C] (as the 2D window_plan): `to_windows`
/// [B*nW*N] holds for each row of the windowed tokens [B*nW, N, C] the row of the flattened map
/// [B*T*H*W, C] it comes from after zero padding and rolling by -shift, or B*T*H*W for a padded
/// position; `to_map` [B*T*H*W] is its inverse (gather_rows in swin_layers.h moves rows both
/// ways). `mask` [nW, N, N] float32 (undefined when !layout.masked()); `index` [N, N] the
/// relative position index of the effective window in the full window's table.
struct WindowPlan3d {
  WindowLayout3d layout;
  torch::Tensor to_windows, to_map, mask, index;
};
/// Throws florence::Error when B < 1 (and as window_layout_3d).
WindowPlan3d window_plan_3d(int64_t B, const Size3& size, const Size3& window, const Size3& shift, torch::Device device);

/// 3D windowed multi-head self-attention with a learned relative position bias.
/// Parameters: `qkv` Linear(C, 3C), `proj` Linear(C, C), `relative_position_bias_table`
/// [(2Wt-1)(2Wh-1)(2Ww-1), heads] (init truncated normal, std 0.02, as Swin).
struct WindowAttention3dOptions {
  int64_t dim = 96;
  int64_t num_heads = 3;
  Size3 window{2, 7, 7};
  Size3 shift{0, 0, 0};  ///< requested cyclic shift per axis (window / 2 on odd blocks)
  bool qkv_bias = true;
  double attn_drop = 0.0;
  double proj_drop = 0.0;
};

class WindowAttention3dImpl : public torch::nn::Module {
 public:
  /// Throws florence::Error when dim is not divisible by num_heads, a window is < 1 or a shift
  /// lies outside [0, window).
  explicit WindowAttention3dImpl(const WindowAttention3dOptions& o);
  /// x: [B, T, H, W, C] (already normalised) -> [B, T, H, W, C]. Any T, H, W >= 1.
  /// Throws florence::Error on another rank or channel count.
  torch::Tensor forward(const torch::Tensor& x);
  /// The plan (layout, gathers, mask, index) this module uses for a [B, T, H, W, C] input.
  WindowPlan3d plan(int64_t B, const Size3& size, torch::Device device);

  WindowAttention3dOptions options;
  torch::nn::Linear qkv{nullptr}, proj{nullptr};
  torch::Tensor relative_position_bias_table;

 private:
  std::mutex cache_mutex_;
  std::map<std::tuple<int64_t, int64_t, int64_t, int64_t, std::string>, WindowPlan3d> plan_cache_;
};
TORCH_MODULE(WindowAttention3d);

/// One Video Swin block (pre-norm), the 2D SwinBlock with 3D window attention:
/// x + DropPath(g1 * Attn(norm1(x))), then x + DropPath(g2 * Mlp(norm2(x))).
/// Submodules `norm1`, `attn`, `norm2`, `mlp.fc1`, `mlp.fc2`; `gamma_1`/`gamma_2` with layer scale.
struct SwinBlock3dOptions {
  WindowAttention3dOptions attn;
  double mlp_ratio = 4.0;
  double drop = 0.0;
  double drop_path = 0.0;
  double layer_scale_init = 0.0;
  double norm_eps = 1e-5;
};

class SwinBlock3dImpl : public torch::nn::Module, public SwinBlockParts {
 public:
  explicit SwinBlock3dImpl(const SwinBlock3dOptions& o);
  /// x: [B, T, H, W, C] -> [B, T, H, W, C].
  torch::Tensor forward(const torch::Tensor& x);

  SwinBlock3dOptions options;
  WindowAttention3d attn{nullptr};
};
TORCH_MODULE(SwinBlock3d);

/// 3D convolutional embedding (CoSwin's ConvEmbed with a time axis): Conv3d(in, out, kernel,
/// stride, padding, bias) `proj`, then LayerNorm(out) `norm` over channels (optional).
/// Time is padded by REPLICATING the first / last frame (never zeros, which would make the end
/// tokens of a still clip differ from the middle ones): p_t frames at the start and at the end as
/// many as the output length needs, time_output_length() (the usual length, extended when the
/// last frame would fall outside every window). Height and width are zero-padded as in 2D:
/// H' = floor((H + 2p - k) / s) + 1.
/// forward_ncthw: [B, in, T, H, W] -> [B, T', H', W', out]; forward: [B, T, H, W, in] -> same.
/// Throws florence::Error for a wrong rank or a spatial map smaller than the kernel's reach.
/// Output length along time of ConvEmbed3d for T frames, kernel k, stride s, padding p:
/// max(floor((T + 2p - k) / s), ceil((T + p - k) / s), 0) + 1 (a term whose numerator is negative
/// counts 0). The first term
/// is the usual convolution length; the second makes a window reach the last real frame (e.g.
/// tube 2 on 5 frames: 3 tokens, the last one over frame 4 and its copy).
int64_t time_output_length(int64_t T, int64_t k, int64_t s, int64_t p);

class ConvEmbed3dImpl : public torch::nn::Module {
 public:
  ConvEmbed3dImpl(int64_t in, int64_t out, const Size3& kernel, const Size3& stride, const Size3& padding,
                  bool with_norm, double eps);
  torch::Tensor forward_ncthw(const torch::Tensor& x);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Conv3d proj{nullptr};
  torch::nn::LayerNorm norm{nullptr};  ///< empty without norm
  Size3 kernel, stride, padding;
};
TORCH_MODULE(ConvEmbed3d);

}  // namespace florence::vision
