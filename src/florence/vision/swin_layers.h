#pragma once
// Building blocks of the Swin / CoSwin image tower (see swin.h for the whole tower).
//
// Layout convention inside the tower: token maps are channel-last, [B, H, W, C], as in
// torchvision's swin_transformer.py, so LayerNorm and Linear act on the last dimension
// without permutes; convolutions permute to [B, C, H, W] and back.
//
// Window attention follows Swin (Liu et al. 2021, §3.2) as implemented by torchvision 0.14
// `shifted_window_attention`:
//   * the map (after norm1) is zero-padded at the bottom/right to a multiple of the window;
//   * per dimension, the shift is dropped when the padded size is <= the window (one window
//     covers that dimension, so a cyclic shift would only reorder tokens inside it);
//   * a shifted map is rolled by -shift, attended with the region mask (-100 between tokens
//     of different regions), and rolled back; padded tokens stay unmasked keys, exactly as in
//     the reference, then are cropped away.
// Derived tensors (relative position index, shift masks) are computed, never registered, and
// cached per (map size, device, dtype) inside the attention module.
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <array>
#include <map>
#include <mutex>
#include <tuple>

namespace florence::vision {

/// Pair-wise relative position index of a window x window attention window (Swin §3.2,
/// "relative position bias"): entry [i, j] for tokens i = (hi, wi), j = (hj, wj) (row-major in
/// the window) is (hi - hj + W - 1) * (2W - 1) + (wi - wj + W - 1), a row of the
/// [(2W-1)^2, heads] bias table. Returns [W*W, W*W] int64 on `device`.
/// Throws florence::Error if window < 1.
torch::Tensor relative_position_index(int64_t window, torch::Device device = torch::kCPU);

/// Effective shift of one map dimension: 0 when the padded size is <= window (one window
/// covers the dimension; torchvision 0.14 rule), else `shift`.
inline int64_t effective_shift(int64_t padded, int64_t window, int64_t shift) {
  return padded <= window ? 0 : shift;
}

/// Attention mask of shifted-window attention on a padded map of pad_h x pad_w tokens
/// (multiples of `window`) rolled by (-shift_h, -shift_w). Each token gets a region label
/// from its (row, column) position: per dimension, [0, pad - window) -> 0,
/// [pad - window, pad - shift) -> 1, [pad - shift, pad) -> 2 (a single region when that
/// dimension's shift is 0). Returns [nW, N, N] (nW = windows in row-major order,
/// N = window^2) with 0 where tokens i and j share a label and -100 elsewhere (the value of
/// the Swin reference; exp(-100) underflows to 0 in the softmax).
/// Throws florence::Error on sizes that are not positive multiples of the window or shifts
/// outside [0, window).
torch::Tensor shifted_window_mask(int64_t pad_h, int64_t pad_w, int64_t window, int64_t shift_h,
                                  int64_t shift_w, const torch::TensorOptions& options = {});

/// Per-sample stochastic depth (Huang et al. 2016): in training zeroes each sample's residual
/// branch with probability p and rescales survivors by 1/(1-p); identity in eval or if p == 0.
/// x: [B, ...]. Same as torchvision's StochasticDepth(p, "row").
torch::Tensor drop_path(const torch::Tensor& x, double p, bool training);

/// Row gather with a gather for its gradient. x: [R, C]; index: int64 [K] with values in [0, R]
/// (R selects a zero row); inverse: int64 [R] with values in [0, K] (K selects a zero row).
/// Returns [K, C] with row k = x[index[k]] (or zeros). Valid when every row of x is gathered at
/// most once and inverse[r] is the output row that holds x's row r (K when none): the gradient
/// is then grad.index_select(0, inverse), so backward needs no scatter-add. Used to move token
/// maps in and out of (shifted, padded) windows in one copy instead of pad + roll + permute.
/// Throws florence::Error when x is not 2-D, an index is not 1-D int64, or inverse does not have
/// one entry per row of x. Index values are not range-checked here (LibTorch's index_select
/// reports an out-of-range value).
torch::Tensor gather_rows(const torch::Tensor& x, const torch::Tensor& index, const torch::Tensor& inverse);

/// Index plan of one window layout for maps [B, H, W, C] (window, shift as in
/// WindowAttention): `to_windows` [B*nW*N] holds, for each row of the windowed tokens
/// [B*nW, N, C] (windows in raster order, tokens in raster order inside a window), the row of
/// the flattened map [B*H*W, C] it comes from after zero padding to (ph, pw) and rolling by
/// (-shift_h, -shift_w), or B*H*W for a padded position; `to_map` [B*H*W] is its inverse. Both are
/// int64 tensors on `device`. ph, pw: the map size padded to a multiple of the window; shift_h,
/// shift_w: the shift actually applied per dimension (effective_shift: 0 where one window covers
/// the padded dimension). Preconditions: 0 <= shift < window (as SwinConfig::validate ensures).
/// Throws florence::Error when B, H, W or window is below 1.
struct WindowPlan {
  torch::Tensor to_windows, to_map;
  int64_t ph = 0, pw = 0, shift_h = 0, shift_w = 0;
};
WindowPlan window_plan(int64_t B, int64_t H, int64_t W, int64_t window, int64_t shift, torch::Device device);

/// Windowed multi-head self-attention with a learned relative position bias.
/// Parameters: `qkv` Linear(C, 3C), `proj` Linear(C, C), `relative_position_bias_table`
/// [(2W-1)^2, heads] (init: truncated normal, std 0.02, as in the Swin reference).
struct WindowAttentionOptions {
  int64_t dim = 96;
  int64_t num_heads = 3;
  int64_t window = 7;
  int64_t shift = 0;  ///< requested cyclic shift (W/2 on odd blocks), both dimensions
  bool qkv_bias = true;
  double attn_drop = 0.0;
  double proj_drop = 0.0;
};

class WindowAttentionImpl : public torch::nn::Module {
 public:
  explicit WindowAttentionImpl(const WindowAttentionOptions& o);
  /// x: [B, H, W, C] (already normalised) -> [B, H, W, C]. Any H, W >= 1.
  torch::Tensor forward(const torch::Tensor& x);
  /// The bias added to every window's attention logits: [heads, N, N].
  torch::Tensor relative_position_bias();

  WindowAttentionOptions options;
  torch::nn::Linear qkv{nullptr}, proj{nullptr};
  torch::Tensor relative_position_bias_table;

 private:
  torch::Tensor cached_index(const torch::Device& device);
  torch::Tensor cached_mask(int64_t pad_h, int64_t pad_w, int64_t sh, int64_t sw,
                            const torch::TensorOptions& opts);
  WindowPlan cached_plan(int64_t B, int64_t H, int64_t W, const torch::Device& device);
  /// Bias (+ shift mask) [nW or 1, heads, N, N] for inference, rebuilt when the table changes.
  torch::Tensor cached_inference_bias(int64_t ph, int64_t pw, int64_t sh, int64_t sw, const torch::TensorOptions& opts);
  std::mutex cache_mutex_;
  std::map<std::string, torch::Tensor> index_cache_;  // key: device
  std::map<std::tuple<int64_t, int64_t, int64_t, std::string>, WindowPlan> plan_cache_;  // key: (B, H, W, device)
  std::map<std::tuple<int64_t, int64_t, int64_t, int64_t, std::string, int>, torch::Tensor> bias_cache_;
  const void* bias_cache_table_ = nullptr;  // table storage and version the bias cache was built from
  int64_t bias_cache_version_ = -1;
  std::map<std::tuple<int64_t, int64_t, int64_t, int64_t, std::string, int>, torch::Tensor>
      mask_cache_;  // key: (pad_h, pad_w, shift_h, shift_w, device, dtype)
};
TORCH_MODULE(WindowAttention);

/// Two-layer MLP with exact (erf) GELU: `fc1` Linear(C, hidden), `fc2` Linear(hidden, C),
/// dropout after the activation and after fc2.
class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl(int64_t dim, int64_t hidden, double drop);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  double drop;
};
TORCH_MODULE(Mlp);

/// The parts of a Swin block around its attention, shared by the 2D block and Video CoSwin's 3D
/// block (video_swin_layers.h): `norm1`, `norm2`, `mlp`, and `gamma_1`/`gamma_2` ([C]) only with
/// layer scale.
struct SwinBlockParts {
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  Mlp mlp{nullptr};
  torch::Tensor gamma_1, gamma_2;  ///< undefined without layer scale

  /// Registers on `block`, in this order: norm1 (LayerNorm(dim, eps)), `attn_module` as "attn"
  /// (stored into `attn`), norm2, mlp (Mlp(dim, int(dim * mlp_ratio), drop)), and gamma_1/gamma_2
  /// filled with layer_scale_init when it is > 0.
  template <class Attention>
  void register_on(torch::nn::Module& block, Attention& attn, Attention attn_module, int64_t dim, double mlp_ratio,
                   double drop, double layer_scale_init, double eps) {
    auto ln = [&] { return torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(eps)); };
    norm1 = block.register_module("norm1", ln());
    attn = block.register_module("attn", std::move(attn_module));
    norm2 = block.register_module("norm2", ln());
    mlp = block.register_module("mlp", Mlp(dim, static_cast<int64_t>(static_cast<double>(dim) * mlp_ratio), drop));
    if (layer_scale_init > 0.0) {
      gamma_1 = block.register_parameter("gamma_1", torch::full({dim}, layer_scale_init));
      gamma_2 = block.register_parameter("gamma_2", torch::full({dim}, layer_scale_init));
    }
  }

  /// Pre-norm residuals: y = x + DropPath(g1 * attn(norm1(x))), then y + DropPath(g2 * mlp(norm2(y))).
  template <class AttentionFn>
  torch::Tensor residual(const torch::Tensor& x, AttentionFn&& attn, double drop_path_p, bool training) {
    auto h = attn(norm1(x));
    if (gamma_1.defined()) h = h * gamma_1;
    auto y = x + drop_path(h, drop_path_p, training);
    h = mlp(norm2(y));
    if (gamma_2.defined()) h = h * gamma_2;
    return y + drop_path(h, drop_path_p, training);
  }
};

/// Swin's Linear init (_init_weights in the Swin reference): every Linear below `module` gets a
/// truncated normal weight (std 0.02, cut at 2 std) and a zero bias.
void init_linears_trunc_normal(torch::nn::Module& module);

/// One Swin block (pre-norm): x + DropPath(g1 * Attn(norm1(x))), then
/// x + DropPath(g2 * Mlp(norm2(x))); g1/g2 (`gamma_1`, `gamma_2`, [C]) only with layer scale.
struct SwinBlockOptions {
  WindowAttentionOptions attn;
  double mlp_ratio = 4.0;
  double drop = 0.0;        ///< MLP dropout
  double drop_path = 0.0;   ///< this block's stochastic-depth probability
  double layer_scale_init = 0.0;  ///< > 0 registers gamma_1/gamma_2 filled with this value
  double norm_eps = 1e-5;
};

class SwinBlockImpl : public torch::nn::Module, public SwinBlockParts {
 public:
  explicit SwinBlockImpl(const SwinBlockOptions& o);
  /// x: [B, H, W, C] -> [B, H, W, C].
  torch::Tensor forward(const torch::Tensor& x);

  SwinBlockOptions options;
  WindowAttention attn{nullptr};
};
TORCH_MODULE(SwinBlock);

/// Swin PatchMerging: 2x2 neighbourhoods concatenated in the order x[0::2,0::2],
/// x[1::2,0::2], x[0::2,1::2], x[1::2,1::2] (row = H index), LayerNorm(4C) `norm`, then
/// Linear(4C -> 2C, no bias) `reduction`. Odd H or W is zero-padded at the bottom/right first
/// (torchvision `_patch_merging_pad`). [B, H, W, C] -> [B, ceil(H/2), ceil(W/2), 2C].
class PatchMergingImpl : public torch::nn::Module {
 public:
  PatchMergingImpl(int64_t dim, double eps);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Linear reduction{nullptr};
};
TORCH_MODULE(PatchMerging);

/// CvT-style convolutional embedding: Conv2d(in, out, kernel, stride, padding, bias) `proj`,
/// then LayerNorm(out) `norm` over channels (optional). Also the Swin patch embedding
/// (kernel = stride = patch, padding 0).
/// forward_nchw: [B, in, H, W] -> [B, H', W', out]; forward: [B, H, W, in] -> [B, H', W', out]
/// with H' = floor((H + 2p - k) / s) + 1. Throws florence::Error if the map is smaller than
/// the kernel's reach (H + 2p < k).
class ConvEmbedImpl : public torch::nn::Module {
 public:
  ConvEmbedImpl(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding,
                bool with_norm, double eps);
  torch::Tensor forward_nchw(const torch::Tensor& x);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Conv2d proj{nullptr};
  torch::nn::LayerNorm norm{nullptr};  ///< empty without norm
  int64_t kernel, padding;
};
TORCH_MODULE(ConvEmbed);

/// Fills `t` in place with a normal(0, std) truncated to [-2 std, 2 std] (inverse-CDF method).
void trunc_normal_(torch::Tensor& t, double std);

}  // namespace florence::vision
