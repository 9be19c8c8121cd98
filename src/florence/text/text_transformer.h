#pragma once
// CLIP-style text tower (Radford et al., 2021; UniCL's `lang_encoder`): token + learned
// positional embedding, pre-LN residual blocks with fused-input-projection multi-head
// self-attention and a QuickGELU MLP, causal mask, final LayerNorm, feature pooled at the
// first end-of-text token.
//
// Parameter names follow UniCL / CLIP so state dicts load directly: `token_embedding.weight`,
// `positional_embedding` [context, width], `resblocks.{k}.ln_1`, `resblocks.{k}.attn.in_proj_weight`
// [3W, W], `attn.in_proj_bias`, `attn.out_proj.{weight,bias}`, `resblocks.{k}.ln_2`,
// `resblocks.{k}.mlp.c_fc`, `resblocks.{k}.mlp.c_proj`, `ln_final`.
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <string>

namespace florence::text {

struct TextConfig {
  int vocab_size = 49408;      ///< CLIP BPE vocabulary (CLIP's simple_tokenizer)
  int context_length = 77;     ///< CLIP context length
  int width = 512;             ///< W: token feature size (CLIP ViT-B text tower: 512)
  int heads = 8;               ///< attention heads; must divide width (head dim = W / heads)
  int layers = 12;             ///< residual blocks `resblocks.{0..layers-1}`
  double mlp_ratio = 4.0;      ///< MLP hidden size = round(mlp_ratio * W) (CLIP: 4)
  double norm_eps = 1e-5;      ///< LayerNorm eps everywhere; UniCL checkpoints use 1e-12
  int64_t sot_token = 49406;   ///< <|startoftext|>
  int64_t eot_token = 49407;   ///< <|endoftext|>: the pooled position
  bool causal = true;          ///< autoregressive (upper-triangular) attention mask, as CLIP

  nlohmann::json to_json() const;
  /// Missing fields take defaults; unknown fields throw florence::Error naming the field.
  static TextConfig from_json(const nlohmann::json& j);
  /// Throws florence::Error naming the field if a size is not positive, width % heads != 0,
  /// mlp_ratio * width does not round to a positive integer, norm_eps < 0, or
  /// sot_token / eot_token are outside [0, vocab_size) or equal.
  void validate() const;

  /// MLP hidden size: round(mlp_ratio * width).
  int64_t mlp_width() const;
  /// Exact number of trainable scalars of TextTransformer(*this) (CLIP's text tower without
  /// the projection), with V = vocab, C = context, M = mlp_width():
  ///   V*W + C*W + layers * (2W [ln_1] + 3W*W + 3W [in_proj] + W*W + W [out_proj]
  ///                         + 2W [ln_2] + W*M + M [c_fc] + M*W + W [c_proj]) + 2W [ln_final]
  /// (M = 4W gives 12W^2 + 13W per layer).
  int64_t num_parameters() const;
};

class TextTransformerImpl : public torch::nn::Module {
 public:
  explicit TextTransformerImpl(const TextConfig& cfg);

  /// ids: [B, L] int64 token ids in [0, vocab_size), 1 <= L <= context_length, each row
  /// containing eot_token (padding after it is arbitrary: with the causal mask it cannot
  /// influence the pooled position).
  /// Returns [B, width] in the parameters' dtype: ln_final output at each row's FIRST
  /// eot_token position (found by search, not CLIP's argmax over ids, so ids above
  /// eot_token and repeated EOTs are handled).
  /// Throws florence::Error if ids is not a 2-D int64 tensor, L is 0 or > context_length,
  /// an id is out of range, or a row has no eot_token (the message lists the rows).
  torch::Tensor forward(const torch::Tensor& ids);

  /// All positions after ln_final: [B, L, width] (for fusion adapters). Same input checks
  /// as forward() except that rows need no eot_token.
  /// key_mask (optional): [B, L] bool, true = a real token; attention never reads a false
  /// position (needed with causal = false, where padding would otherwise leak into every
  /// token). Each row needs a true position (with causal: at position 0). Throws
  /// florence::Error otherwise or when it is not bool shaped like ids.
  torch::Tensor forward_tokens(const torch::Tensor& ids, const torch::Tensor& key_mask = {});

  const TextConfig& config() const { return cfg_; }

 private:
  TextConfig cfg_;
  // Registered submodules/parameters and the causal-mask cache (see text_transformer.cpp).
  struct Impl;
  std::shared_ptr<Impl> impl_;
};
TORCH_MODULE(TextTransformer);

}  // namespace florence::text
