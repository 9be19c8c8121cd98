#pragma once
// METER's co-attention layer (Dou et al., "An Empirical Study of Training End-to-End
// Vision-and-Language Transformers", CVPR 2022, §3.2 "co-attention"; zdou0830/METER
// meter/modules/bert_model.py `BertCrossLayer`): one stream's tokens go through
//   self-attention  -> cross-attention (queries: this stream; keys/values: the OTHER stream)
//   -> feed-forward,
// each sub-block post-LN, BERT style: h = LayerNorm(x + Dropout(Dense(sublayer(x)))).
// Both streams use one layer each per depth and read each other's *input* to that depth, so the
// two are updated in parallel (METERTransformerSS.infer).
//
// Names are BERT's (HuggingFace modeling_bert), as METER's state dicts have them:
//   attention.self.{query,key,value}, attention.output.{dense,LayerNorm}
//   crossattention.self.{query,key,value}, crossattention.output.{dense,LayerNorm}
//   intermediate.dense, output.{dense,LayerNorm}
#include <torch/nn/module.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cstdint>

namespace florence::vlp {

/// Sizes of one co-attention layer. Defaults: METER's fusion (hidden 768, 12 heads, FFN
/// 4 x 768 = 3072; BertConfig's LayerNorm eps 1e-12; METER config `drop_rate` 0.1).
struct CoAttentionOptions {
  int64_t hidden = 768;        ///< H: token width of both streams inside the fusion
  int64_t heads = 12;          ///< attention heads; must divide hidden
  int64_t intermediate = 3072; ///< FFN hidden size
  double norm_eps = 1e-12;     ///< LayerNorm eps (BertConfig.layer_norm_eps)
  double dropout = 0.1;        ///< on attention probabilities and after each Dense (training only)

  /// Throws florence::Error naming the field if a size is not positive, heads does not divide
  /// hidden, norm_eps < 0 or dropout is outside [0, 1).
  void validate() const;
};

/// BERT's multi-head attention core (`BertSelfAttention`): query from `x`, key/value from
/// `context` (x itself for self-attention), scaled dot product, softmax, no output projection.
class BertSelfAttentionImpl : public torch::nn::Module {
 public:
  explicit BertSelfAttentionImpl(const CoAttentionOptions& o);
  /// x: [B, Lq, H]; context: [B, Lk, H]; key_mask: [B, Lk] bool (true = attend) or undefined
  /// (attend everywhere; each row must have a true entry). Returns [B, Lq, H].
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context, const torch::Tensor& key_mask);

  torch::nn::Linear query{nullptr}, key{nullptr}, value{nullptr};
  torch::nn::Dropout dropout{nullptr};

 private:
  int64_t hidden_, heads_;
};
TORCH_MODULE(BertSelfAttention);

/// Dense + Dropout + residual + LayerNorm (`BertSelfOutput`, and with in/out widths that differ,
/// `BertOutput`): LayerNorm(residual + Dropout(dense(h))).
class BertResidualOutputImpl : public torch::nn::Module {
 public:
  BertResidualOutputImpl(int64_t in, int64_t hidden, double eps, double dropout);
  torch::Tensor forward(const torch::Tensor& h, const torch::Tensor& residual);
  torch::nn::Linear dense{nullptr};
  torch::nn::LayerNorm LayerNorm{nullptr};  // BERT's (TensorFlow's) capitalised name
  torch::nn::Dropout dropout{nullptr};
};
TORCH_MODULE(BertResidualOutput);

/// `BertAttention`: `self` (attention core) then `output` (dense, residual, LayerNorm).
class BertAttentionImpl : public torch::nn::Module {
 public:
  explicit BertAttentionImpl(const CoAttentionOptions& o);
  /// As BertSelfAttention::forward; the residual is x. Returns [B, Lq, H].
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context, const torch::Tensor& key_mask);
  BertSelfAttention self_attn{nullptr};  ///< registered as "self"
  BertResidualOutput output{nullptr};
};
TORCH_MODULE(BertAttention);

/// `BertIntermediate`: dense (H -> FFN) then exact erf GELU (BertConfig hidden_act "gelu").
class BertIntermediateImpl : public torch::nn::Module {
 public:
  BertIntermediateImpl(int64_t hidden, int64_t intermediate);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Linear dense{nullptr};
};
TORCH_MODULE(BertIntermediate);

/// `BertCrossLayer`: attention (self) -> crossattention (to the other stream) -> FFN
/// (intermediate, then output: dense, residual, LayerNorm).
class CoAttentionLayerImpl : public torch::nn::Module {
 public:
  explicit CoAttentionLayerImpl(const CoAttentionOptions& o);

  /// x: [B, Lx, H] this stream; y: [B, Ly, H] the other stream (its input to this depth);
  /// x_mask: [B, Lx] bool (true = real token) or undefined; y_mask: [B, Ly] likewise.
  /// Padded positions of x are still computed (never read by a real token). Returns [B, Lx, H].
  /// Throws florence::Error if ranks, batch sizes or widths disagree.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& y, const torch::Tensor& x_mask,
                        const torch::Tensor& y_mask);

  BertAttention attention{nullptr}, crossattention{nullptr};
  BertIntermediate intermediate{nullptr};
  BertResidualOutput output{nullptr};

 private:
  CoAttentionOptions opt_;
};
TORCH_MODULE(CoAttentionLayer);

/// METER's initialisation (meter/modules/objectives.py `init_weights`) applied to every
/// submodule of `m`: Linear and Embedding weights N(0, 0.02), Linear biases 0, LayerNorm (1, 0).
void init_meter_weights(torch::nn::Module& m);

}  // namespace florence::vlp
