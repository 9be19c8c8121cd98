#pragma once
// METER's heads (zdou0830/METER meter/modules/heads.py and meter_module.py), names as there:
//   cross_modal_{text,image}_pooler.dense   Pooler: tanh(dense(h[:, 0]))
//   itm_score.fc                             ITMHead: Linear(2H -> 2) on the pooled pair
//   mlm_score.transform.{dense,LayerNorm}, mlm_score.decoder (no bias), mlm_score.bias
//                                            MLMHead: BERT's prediction head, NOT tied to the
//                                            word embeddings (METER builds it with weight=None)
//   vqa_classifier.{0,1,3}                   Linear(2H -> 2H), LayerNorm(2H), GELU, Linear(2H -> A)
#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cstdint>

namespace florence::vlp {

/// BERT pooler: tanh(dense(h[:, 0])). METER pools the text stream at its first token (the
/// tokenizer's start token; for us SOT) and, with a Swin image encoder, the image stream at the
/// MEAN of its tokens (AdaptiveAvgPool1d over tokens, then this pooler on that one vector).
class PoolerImpl : public torch::nn::Module {
 public:
  explicit PoolerImpl(int64_t hidden);
  /// h: [B, L, H] -> [B, H] from h[:, 0].
  torch::Tensor forward(const torch::Tensor& h);
  torch::nn::Linear dense{nullptr};
};
TORCH_MODULE(Pooler);

/// ITMHead: fc Linear(in -> 2); logit 1 = "image and text match" (METER's itm_labels: 1 = pair).
class ItmHeadImpl : public torch::nn::Module {
 public:
  explicit ItmHeadImpl(int64_t in);
  /// x: [B, in] -> [B, 2].
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Linear fc{nullptr};
};
TORCH_MODULE(ItmHead);

/// BERT's MLM prediction head (BertPredictionHeadTransform + decoder + bias):
/// decoder(LayerNorm(gelu(dense(h)))) + bias. LayerNorm eps 1e-12 (BertConfig). Untied.
class MlmHeadImpl : public torch::nn::Module {
 public:
  MlmHeadImpl(int64_t hidden, int64_t vocab, double norm_eps);
  /// h: [..., H] -> [..., vocab] logits.
  torch::Tensor forward(const torch::Tensor& h);
  torch::nn::Linear transform_dense{nullptr};      ///< "transform.dense"
  torch::nn::LayerNorm transform_norm{nullptr};    ///< "transform.LayerNorm"
  torch::nn::Linear decoder{nullptr};              ///< [vocab, H], no bias
  torch::Tensor bias;                              ///< [vocab], zeros at init
};
TORCH_MODULE(MlmHead);

/// METER's vqa_classifier: Sequential(Linear(2H, 2H), LayerNorm(2H, eps 1e-5: nn.LayerNorm's
/// default), GELU, Linear(2H, answers)). Input [B, 2H], output [B, answers] logits.
torch::nn::Sequential make_vqa_classifier(int64_t in, int64_t answers);

}  // namespace florence::vlp
