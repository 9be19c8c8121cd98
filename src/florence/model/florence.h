#pragma once
// The Florence two-tower model (Florence, arXiv 2111.11432 §2.2): a CoSwin image encoder and
// a CLIP-style text encoder, each followed by a linear projection (no bias) into a shared
// D-dimensional space, with a learnable temperature. Names follow UniCL's UniCLModel
// (`image_encoder`, `image_projection` [C_img, D], `logit_scale`) with the text side named
// `text_encoder` / `text_projection` [W, D] (UniCL's `lang_encoder` / `lang_projection` are
// mapped on import, see core::map_unicl_keys).
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <nlohmann/json_fwd.hpp>

#include <string>

#include "florence/text/text_transformer.h"
#include "florence/vision/swin.h"

namespace florence::model {

struct FlorenceConfig {
  std::string name = "custom";
  vision::SwinConfig vision;
  text::TextConfig text;
  int embed_dim = 512;                        ///< D, the joint embedding size
  /// Initial temperature as log(1/0.07) (CLIP §2.5, UniCL); logit_scale = exp(param) is
  /// clamped at logit_scale_max (100, CLIP/UniCL) whenever it is used.
  double logit_scale_init = 2.6592600369644165;
  double logit_scale_max = 100.0;

  nlohmann::json to_json() const;
  /// Keys: name, embed_dim, logit_scale_init, logit_scale_max, vision{...}, text{...}.
  /// Unknown keys throw florence::Error naming the key.
  static FlorenceConfig from_json(const nlohmann::json& j);
  void validate() const;
};

class FlorenceModelImpl : public torch::nn::Module {
 public:
  explicit FlorenceModelImpl(const FlorenceConfig& cfg);

  /// images: [N, 3, H, W] normalised pixels (cast to the weights' dtype). Returns [N, D]
  /// L2-normalised embeddings, float32 when the weights are bfloat16 / half (else their dtype).
  torch::Tensor encode_image(const torch::Tensor& images);
  /// ids: [M, L] int64 token ids (each row with an EOT). Returns [M, D] L2-normalised embeddings
  /// (dtype as encode_image).
  torch::Tensor encode_text(const torch::Tensor& ids);
  /// images as for encode_image. Returns [N, C_img] float32: the image tower's pooled features
  /// before the projection (linear probe and few-shot `--features pooled`), in the precision set.
  torch::Tensor image_features(const torch::Tensor& images);
  /// Runs encode_image / encode_text under bfloat16 autocast (core/precision.h; --precision
  /// amp_bf16 at inference). Training sets autocast around its whole step instead.
  void set_autocast_bf16(bool on) { autocast_bf16_ = on; }
  bool autocast_bf16() const { return autocast_bf16_; }
  /// exp(logit_scale) clamped at logit_scale_max: the scalar tau multiplying cosine similarities.
  torch::Tensor temperature() const;
  /// Similarity logits tau * u v^T: [N, M] for N images and M texts.
  torch::Tensor forward(const torch::Tensor& images, const torch::Tensor& ids);

  const FlorenceConfig& config() const { return cfg_; }

  vision::SwinTransformer image_encoder{nullptr};
  text::TextTransformer text_encoder{nullptr};
  torch::Tensor image_projection;  ///< [C_img, D], no bias
  torch::Tensor text_projection;   ///< [W, D], no bias
  torch::Tensor logit_scale;       ///< scalar, log-parameterised temperature

 private:
  FlorenceConfig cfg_;
  bool autocast_bf16_ = false;
};
TORCH_MODULE(FlorenceModel);

}  // namespace florence::model
