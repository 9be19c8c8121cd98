#pragma once
// The fine-grained vision-language adapter: METER-style co-attention fusion (Dou et al.,
// CVPR 2022; zdou0830/METER meter/modules/meter_module.py `METERTransformerSS`) on Florence's
// towers, with the ITM, MLM and VQA heads.
//
//   text:  ids [B, Lt] -> text tower (bidirectional) [B, Lt, W] -> cross_modal_text_transform
//          (Linear W -> H) + token_type_embeddings[0]
//   image: [B, 3, S, S] -> CoSwin, last stage after the final LayerNorm [B, C, h, w] -> tokens
//          [B, h*w, C] -> cross_modal_image_transform (Linear C -> H) + token_type_embeddings[1]
//   M_co layers: x' = text_layer_i(x, y), y' = image_layer_i(y, x) (both read the inputs of
//          depth i: parallel update), co_attention.h
//   cls_feats [B, 2H] = [cross_modal_text_pooler(x) (first token, SOT), cross_modal_image_pooler(
//          mean of image tokens)] -> itm_score [B, 2], vqa_classifier [B, A]; mlm_score on x.
//
// Text encoder: our text tower with the causal mask removed and padding masked out, initialised
// from a pretrained Florence checkpoint (load_towers). Why: that UniCL-trained tower is the
// Florence model's own language encoder, and METER always starts from a pretrained text encoder
// and treats which one as a design axis that matters (its abstract: "text encoders (e.g.,
// RoBERTa, DeBERTa)"); fusion needs every token to see the whole sentence, as BERT/RoBERTa do
// in METER, hence bidirectional. The tower was trained causal; fine-tuning adapts it (METER fine-tunes its text
// encoder too, at the base learning rate: param_groups.h).
//
// [MASK]: the CLIP/BPE vocabulary has no mask token, so the text tower gets one extra embedding
// row, id = V (the checkpoint's vocab_size), initialised to the mean of the V pretrained rows
// (load_towers; a fresh model draws it with the others). MLM predicts over the original V ids.
//
// Text padding: positions after a row's first EOT are padding (CLIP pads with id 0, a real
// token, so ids cannot tell); they are masked in the text tower and as keys in the fusion.
// Image tokens are never masked (METER passes an all-ones image mask).
//
// Parameter names are METER's: `text_transformer.*` (ours: token_embedding, resblocks, ...),
// `vit_model.*` (CoSwin), `cross_modal_text_transform`, `cross_modal_image_transform`,
// `token_type_embeddings`, `cross_modal_text_layers.{i}`, `cross_modal_image_layers.{i}`,
// `cross_modal_text_pooler.dense`, `cross_modal_image_pooler.dense`, `itm_score.fc`,
// `mlm_score.{transform.dense,transform.LayerNorm,decoder,bias}`, `vqa_classifier.{0,1,3}`.
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <string>
#include <vector>

#include "florence/adapt/vlp/co_attention.h"
#include "florence/adapt/vlp/heads.h"
#include "florence/adapt/vlp/meter_config.h"
#include "florence/core/checkpoint.h"
#include "florence/text/text_transformer.h"
#include "florence/vision/swin.h"

namespace florence::vlp {

/// What the fusion returns for a batch.
struct MeterOutput {
  torch::Tensor text_feats;   ///< [B, Lt, H] text stream after the last co-attention layer
  torch::Tensor image_feats;  ///< [B, Li, H] image stream after the last co-attention layer
  torch::Tensor cls_feats;    ///< [B, 2H] pooled text (first token) ++ pooled image (token mean)
  torch::Tensor text_mask;    ///< [B, Lt] bool, true = real token (up to and including the first EOT)
};

/// [B, L] bool: true at positions <= the row's first `eot` id. Throws florence::Error if ids is
/// not a 2-D int64 tensor or a row has no EOT (the message lists up to 10 rows).
torch::Tensor text_padding_mask(const torch::Tensor& ids, int64_t eot);

class MeterModelImpl : public torch::nn::Module {
 public:
  /// Builds all parts with fresh weights: towers as their own constructors initialise them,
  /// fusion and heads with METER's init (N(0, 0.02) weights, zero biases, LayerNorm (1, 0)).
  /// Throws florence::Error for an invalid config.
  explicit MeterModelImpl(const MeterConfig& cfg);

  /// ids: [B, Lt] int64 in [0, V] (V = [MASK]), each row with an EOT. Returns the text tower's
  /// tokens [B, Lt, W] (bidirectional, padding masked) and sets *mask to text_padding_mask(ids).
  torch::Tensor encode_text(const torch::Tensor& ids, torch::Tensor* mask);
  /// images: [B, 3, S, S] float32, normalised as the towers were trained. Returns [B, h*w, C].
  torch::Tensor encode_image(const torch::Tensor& images);

  /// The fusion on tower outputs: text_tokens [B, Lt, W], text_mask [B, Lt] bool, image_tokens
  /// [B, Li, C] (zeros give the question-only baseline). Throws florence::Error on shape errors.
  MeterOutput fuse(const torch::Tensor& text_tokens, const torch::Tensor& text_mask,
                   const torch::Tensor& image_tokens);
  /// encode_text + encode_image + fuse. Batch sizes must agree.
  MeterOutput forward(const torch::Tensor& images, const torch::Tensor& ids);

  /// Heads. Each throws florence::Error when the config did not build it.
  torch::Tensor itm_logits(const MeterOutput& out);  ///< [B, 2], class 1 = match
  torch::Tensor mlm_logits(const MeterOutput& out);  ///< [B, Lt, V]
  /// MLM logits only at the N positions where labels [B, Lt] != -100: [N, V], row-major order;
  /// *targets receives those N labels. Same loss as on all positions (METER computes all), with
  /// the head's vocabulary projection run on ~15% of the tokens.
  torch::Tensor mlm_logits_at(const MeterOutput& out, const torch::Tensor& labels, torch::Tensor* targets);
  torch::Tensor vqa_logits(const MeterOutput& out);  ///< [B, num_answers]

  const MeterConfig& config() const { return cfg_; }

  text::TextTransformer text_transformer{nullptr};
  vision::SwinTransformer vit_model{nullptr};
  torch::nn::Linear cross_modal_text_transform{nullptr}, cross_modal_image_transform{nullptr};
  torch::nn::Embedding token_type_embeddings{nullptr};
  std::vector<CoAttentionLayer> text_layers, image_layers;  ///< cross_modal_{text,image}_layers.{i}
  Pooler cross_modal_text_pooler{nullptr}, cross_modal_image_pooler{nullptr};
  ItmHead itm_score{nullptr};
  MlmHead mlm_score{nullptr};
  torch::nn::Sequential vqa_classifier{nullptr};

 private:
  MeterConfig cfg_;
};
TORCH_MODULE(MeterModel);

/// Initialises the towers from a Florence two-tower state dict (our names: `image_encoder.*`,
/// `text_encoder.*`; model/io.h read_weights gives them for any supported checkpoint):
/// `image_encoder.X` -> `vit_model.X`, `text_encoder.X` -> `text_transformer.X`, the V x W
/// token embedding into the first V rows and [MASK]'s row set to their mean. The contrastive
/// heads (`image_projection`, `text_projection`, `logit_scale`) are not used. Strict otherwise:
/// throws florence::Error listing missing, unexpected or mis-shaped keys.
void load_towers(MeterModelImpl& model, const core::TensorMap& florence_weights);

/// load_towers from a checkpoint file (.safetensors with sidecar, or .pt), read as
/// model::read_weights does for the config's towers. Throws florence::Error naming the file.
void load_towers_from_checkpoint(MeterModelImpl& model, const std::string& path);

}  // namespace florence::vlp
