// METER's co-attention layer; see co_attention.h. Read from zdou0830/METER
// meter/modules/bert_model.py (BertSelfAttention, BertSelfOutput, BertAttention, BertIntermediate,
// BertOutput, BertCrossLayer) and HuggingFace modeling_bert; written anew for LibTorch.
#include "florence/adapt/vlp/co_attention.h"

#include <cmath>
#include <limits>

#include "florence/core/batched_matmul.h"
#include "florence/core/error.h"

namespace florence::vlp {

void CoAttentionOptions::validate() const {
  for (auto [name, v] : {std::pair<const char*, int64_t>{"hidden", hidden}, {"heads", heads},
                         {"intermediate", intermediate}}) {
    if (v <= 0) throw Error(fmt::format("co-attention: {} must be positive, got {}", name, v));
  }
  if (hidden % heads != 0) {
    throw Error(fmt::format("co-attention: hidden {} is not divisible by heads {}", hidden, heads));
  }
  if (!(norm_eps >= 0.0) || !std::isfinite(norm_eps)) {
    throw Error(fmt::format("co-attention: norm_eps must be finite and >= 0, got {}", norm_eps));
  }
  if (!(dropout >= 0.0 && dropout < 1.0)) {
    throw Error(fmt::format("co-attention: dropout must be in [0, 1), got {}", dropout));
  }
}

namespace {

torch::nn::LayerNorm layer_norm(int64_t width, double eps) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({width}).eps(eps));
}

void check_mask(const torch::Tensor& mask, const torch::Tensor& tokens, const char* what) {
  if (!mask.defined()) return;
  if (mask.scalar_type() != torch::kBool || mask.dim() != 2 || mask.size(0) != tokens.size(0) ||
      mask.size(1) != tokens.size(1)) {
    throw Error(fmt::format("co-attention: {} mask must be bool [{}, {}], got {} {}", what, tokens.size(0),
                            tokens.size(1), c10::toString(mask.scalar_type()), c10::str(mask.sizes())));
  }
  if (mask.size(0) > 0 && !mask.any(1).all().item<bool>()) {
    throw Error(fmt::format("co-attention: {} mask has a row without any true position", what));
  }
}

}  // namespace

BertSelfAttentionImpl::BertSelfAttentionImpl(const CoAttentionOptions& o) : hidden_(o.hidden), heads_(o.heads) {
  o.validate();
  query = register_module("query", torch::nn::Linear(o.hidden, o.hidden));
  key = register_module("key", torch::nn::Linear(o.hidden, o.hidden));
  value = register_module("value", torch::nn::Linear(o.hidden, o.hidden));
  dropout = register_module("dropout", torch::nn::Dropout(o.dropout));
}

torch::Tensor BertSelfAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& context,
                                             const torch::Tensor& key_mask) {
  const int64_t B = x.size(0), Lq = x.size(1), Lk = context.size(1), D = hidden_ / heads_;
  // [B, L, H] -> [B*heads, L, D]
  auto split = [&](const torch::Tensor& t, int64_t L) {
    return t.view({B, L, heads_, D}).transpose(1, 2).reshape({B * heads_, L, D});
  };
  auto q = split(query(x), Lq), k = split(key(context), Lk), v = split(value(context), Lk);
  // Scores scaled after the product, as BERT does (attention_scores / sqrt(head size)).
  auto scores = core::batched_matmul(q, k.transpose(1, 2)).div(std::sqrt(static_cast<double>(D)));
  if (key_mask.defined()) {
    // -inf at padded keys: exactly zero weight (BERT adds -10000, which underflows to the same 0
    // in float32 softmax); every row keeps at least one real key (checked by the caller).
    auto pad = key_mask.logical_not().view({B, 1, 1, Lk}).expand({B, heads_, 1, Lk}).reshape({B * heads_, 1, Lk});
    scores = scores.masked_fill(pad, -std::numeric_limits<float>::infinity());
  }
  auto probs = dropout(torch::softmax(scores, -1));
  auto out = core::batched_matmul(probs, v);  // [B*heads, Lq, D]
  return out.view({B, heads_, Lq, D}).transpose(1, 2).reshape({B, Lq, hidden_});
}

BertResidualOutputImpl::BertResidualOutputImpl(int64_t in, int64_t hidden, double eps, double p) {
  dense = register_module("dense", torch::nn::Linear(in, hidden));
  LayerNorm = register_module("LayerNorm", layer_norm(hidden, eps));
  dropout = register_module("dropout", torch::nn::Dropout(p));
}

torch::Tensor BertResidualOutputImpl::forward(const torch::Tensor& h, const torch::Tensor& residual) {
  return LayerNorm(dropout(dense(h)) + residual);
}

BertAttentionImpl::BertAttentionImpl(const CoAttentionOptions& o) {
  self_attn = register_module("self", BertSelfAttention(o));
  output = register_module("output", BertResidualOutput(o.hidden, o.hidden, o.norm_eps, o.dropout));
}

torch::Tensor BertAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& context,
                                         const torch::Tensor& key_mask) {
  return output(self_attn(x, context, key_mask), x);
}

BertIntermediateImpl::BertIntermediateImpl(int64_t hidden, int64_t intermediate) {
  dense = register_module("dense", torch::nn::Linear(hidden, intermediate));
}

torch::Tensor BertIntermediateImpl::forward(const torch::Tensor& x) {
  return torch::gelu(dense(x));  // exact (erf) GELU
}

CoAttentionLayerImpl::CoAttentionLayerImpl(const CoAttentionOptions& o) : opt_(o) {
  o.validate();
  attention = register_module("attention", BertAttention(o));
  crossattention = register_module("crossattention", BertAttention(o));
  intermediate = register_module("intermediate", BertIntermediate(o.hidden, o.intermediate));
  output = register_module("output", BertResidualOutput(o.intermediate, o.hidden, o.norm_eps, o.dropout));
  init_meter_weights(*this);
}

torch::Tensor CoAttentionLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& y,
                                            const torch::Tensor& x_mask, const torch::Tensor& y_mask) {
  if (x.dim() != 3 || y.dim() != 3 || x.size(0) != y.size(0) || x.size(2) != opt_.hidden ||
      y.size(2) != opt_.hidden) {
    throw Error(fmt::format("co-attention: streams must be [B, L, {}] with one B, got {} and {}", opt_.hidden,
                            c10::str(x.sizes()), c10::str(y.sizes())));
  }
  check_mask(x_mask, x, "own");
  check_mask(y_mask, y, "other stream's");
  auto h = attention(x, x, x_mask);
  h = crossattention(h, y, y_mask);
  return output(intermediate(h), h);
}

void init_meter_weights(torch::nn::Module& m) {
  torch::NoGradGuard no_grad;
  auto init = [](torch::nn::Module& mod) {
    if (auto* lin = mod.as<torch::nn::Linear>()) {
      lin->weight.normal_(0.0, 0.02);
      if (lin->bias.defined()) lin->bias.zero_();
    } else if (auto* emb = mod.as<torch::nn::Embedding>()) {
      emb->weight.normal_(0.0, 0.02);
    } else if (auto* ln = mod.as<torch::nn::LayerNorm>()) {
      ln->weight.fill_(1.0);
      ln->bias.zero_();
    }
  };
  // modules(include_self = true) needs `m` held by a shared_ptr, which a constructor's *this is not.
  init(m);
  for (auto& mod : m.modules(/*include_self=*/false)) init(*mod);
}

}  // namespace florence::vlp
