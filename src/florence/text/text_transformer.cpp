// CLIP-style text tower. Architecture and initialisation follow openai/CLIP clip/model.py
// (`ResidualAttentionBlock`, `Transformer`, `CLIP.encode_text`, `CLIP.initialize_parameters`)
// and UniCL's `lang_encoder` (microsoft/UniCL model/text_encoder/transformer.py), which is the
// same network with LayerNorm eps 1e-12 and pooling at the first EOT token.
#include "florence/core/batched_matmul.h"
#include "florence/text/text_transformer.h"

#include <cmath>
#include <limits>
#include <mutex>
#include <sstream>
#include <tuple>

#include "florence/core/error.h"
#include "florence/core/fused.h"
#include "florence/core/json_get.h"

namespace florence::text {

// ---------------------------------------------------------------------------
// TextConfig
// ---------------------------------------------------------------------------

nlohmann::json TextConfig::to_json() const {
  return nlohmann::json{{"vocab_size", vocab_size}, {"context_length", context_length},
                        {"width", width},           {"heads", heads},
                        {"layers", layers},         {"mlp_ratio", mlp_ratio},
                        {"norm_eps", norm_eps},     {"sot_token", sot_token},
                        {"eot_token", eot_token},   {"causal", causal}};
}

namespace {

template <typename T>
void read_field(const nlohmann::json& j, const std::string& key, T& dst) {
  if (!j.contains(key)) throw Error("text config field '" + key + "' is missing");
  dst = core::json_get<T>(j.at(key), "text config field '" + key + "'");  // range-checked numbers
}

}  // namespace

TextConfig TextConfig::from_json(const nlohmann::json& j) {
  if (!j.is_object()) throw Error("text config must be a JSON object, got " + std::string(j.type_name()));
  TextConfig c;
  for (const auto& item : j.items()) {
    const std::string& k = item.key();
    if (k == "vocab_size") read_field(j, k, c.vocab_size);
    else if (k == "context_length") read_field(j, k, c.context_length);
    else if (k == "width") read_field(j, k, c.width);
    else if (k == "heads") read_field(j, k, c.heads);
    else if (k == "layers") read_field(j, k, c.layers);
    else if (k == "mlp_ratio") read_field(j, k, c.mlp_ratio);
    else if (k == "norm_eps") read_field(j, k, c.norm_eps);
    else if (k == "sot_token") read_field(j, k, c.sot_token);
    else if (k == "eot_token") read_field(j, k, c.eot_token);
    else if (k == "causal") read_field(j, k, c.causal);
    else throw Error("unknown text config field '" + k + "'");
  }
  return c;
}

void TextConfig::validate() const {
  auto positive = [](const char* name, int64_t v) {
    if (v <= 0) throw Error(fmt::format("text config: {} must be positive, got {}", name, v));
  };
  positive("vocab_size", vocab_size);
  positive("context_length", context_length);
  positive("width", width);
  positive("heads", heads);
  positive("layers", layers);
  // Bounds far above any real tower (CLIP ViT-L's text: width 768, 12 layers, 49,408 tokens), so a
  // forged config fails here instead of exhausting memory.
  auto at_most = [](const char* name, int64_t v, int64_t hi) {
    if (v > hi) throw Error(fmt::format("text config: {} must be <= {}, got {}", name, hi, v));
  };
  at_most("vocab_size", vocab_size, int64_t(1) << 22);
  at_most("context_length", context_length, 65536);
  at_most("width", width, 16384);
  at_most("heads", heads, 1024);
  at_most("layers", layers, 256);
  if (width % heads != 0) {
    throw Error(fmt::format("text config: width {} is not divisible by heads {}", width, heads));
  }
  if (!(mlp_ratio > 0.0) || !std::isfinite(mlp_ratio) || mlp_width() <= 0) {
    throw Error(fmt::format("text config: mlp_ratio {} gives no positive MLP width for width {}",
                            mlp_ratio, width));
  }
  if (!(norm_eps >= 0.0) || !std::isfinite(norm_eps)) {
    throw Error(fmt::format("text config: norm_eps must be finite and >= 0, got {}", norm_eps));
  }
  for (auto [name, tok] : {std::pair<const char*, int64_t>{"sot_token", sot_token},
                           std::pair<const char*, int64_t>{"eot_token", eot_token}}) {
    if (tok < 0 || tok >= vocab_size) {
      throw Error(fmt::format("text config: {} {} is outside the vocabulary [0, {})", name, tok,
                              vocab_size));
    }
  }
  if (sot_token == eot_token) {
    throw Error(fmt::format("text config: sot_token and eot_token are both {}", eot_token));
  }
}

int64_t TextConfig::mlp_width() const {
  return static_cast<int64_t>(std::llround(mlp_ratio * static_cast<double>(width)));
}

int64_t TextConfig::num_parameters() const {
  const int64_t W = width, M = mlp_width();
  const int64_t per_layer = 2 * W                 // ln_1
                            + 3 * W * W + 3 * W   // attn.in_proj_{weight,bias}
                            + W * W + W           // attn.out_proj
                            + 2 * W               // ln_2
                            + W * M + M           // mlp.c_fc
                            + M * W + W;          // mlp.c_proj
  return int64_t{vocab_size} * W + int64_t{context_length} * W + int64_t{layers} * per_layer +
         2 * W;  // ln_final
}

// ---------------------------------------------------------------------------
// Submodules (names as in CLIP's ResidualAttentionBlock so state dicts load directly)
// ---------------------------------------------------------------------------

namespace detail {

/// Multi-head self-attention with CLIP/nn.MultiheadAttention's fused input projection:
/// `in_proj_weight` [3W, W] (rows: q, k, v), `in_proj_bias` [3W], `out_proj` Linear(W, W).
class SelfAttentionImpl : public torch::nn::Module {
 public:
  SelfAttentionImpl(int64_t width, int64_t heads) : width_(width), heads_(heads) {
    in_proj_weight = register_parameter("in_proj_weight", torch::empty({3 * width, width}));
    in_proj_bias = register_parameter("in_proj_bias", torch::zeros({3 * width}));
    out_proj = register_module("out_proj", torch::nn::Linear(width, width));
  }

  /// x: [B, L, W]; mask: additive [L, L] (0 / -inf) or undefined. Returns [B, L, W].
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask) {
    const int64_t B = x.size(0), L = x.size(1), D = width_ / heads_;
    // [B, L, 3W] -> [3, B, H, L, D]
    auto qkv = core::linear(x, in_proj_weight, in_proj_bias)
                   .view({B, L, 3, heads_, D})
                   .permute({2, 0, 3, 1, 4});
    // Scale q by 1/sqrt(D) after the bias, as nn.MultiheadAttention does.
    auto q = qkv[0].reshape({B * heads_, L, D}).mul_(1.0 / std::sqrt(static_cast<double>(D)));
    auto k = qkv[1].reshape({B * heads_, L, D});
    auto scores = core::batched_matmul(q, k.transpose(1, 2));  // [B*H, L, L]
    if (mask.defined()) scores.add_(mask);
    auto v = qkv[2].reshape({B * heads_, L, D});
    auto out = core::batched_matmul(torch::softmax(scores, -1), v).view({B, heads_, L, D});
    return core::linear(out.transpose(1, 2).reshape({B, L, width_}), out_proj->weight, out_proj->bias);
  }

  torch::Tensor in_proj_weight, in_proj_bias;
  torch::nn::Linear out_proj{nullptr};

 private:
  int64_t width_, heads_;
};
TORCH_MODULE(SelfAttention);

/// CLIP's MLP: c_fc (W -> M), QuickGELU, c_proj (M -> W).
class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl(int64_t width, int64_t hidden) {
    c_fc = register_module("c_fc", torch::nn::Linear(width, hidden));
    c_proj = register_module("c_proj", torch::nn::Linear(hidden, width));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto h = core::linear(x, c_fc->weight, c_fc->bias);
    // QuickGELU x * sigmoid(1.702 x): CLIP clip/model.py `QuickGELU` (a sigmoid approximation
    // of GELU, Hendrycks & Gimpel 2016 §2), which CLIP and UniCL were trained with; one fused pass
    // in float32 and bfloat16 (core/fused.h), in place when no gradient is needed.
    if (torch::GradMode::is_enabled() && h.requires_grad())
      h = core::quick_gelu(h);
    else
      core::quick_gelu_(h);
    return core::linear(h, c_proj->weight, c_proj->bias);
  }
  torch::nn::Linear c_fc{nullptr}, c_proj{nullptr};
};
TORCH_MODULE(Mlp);

/// Pre-LN residual block: x + attn(ln_1(x)), then + mlp(ln_2(x)).
class ResidualAttentionBlockImpl : public torch::nn::Module {
 public:
  ResidualAttentionBlockImpl(const TextConfig& c) {
    auto ln = [&] {
      return torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.width}).eps(c.norm_eps));
    };
    ln_1 = register_module("ln_1", ln());
    attn = register_module("attn", SelfAttention(c.width, c.heads));
    ln_2 = register_module("ln_2", ln());
    mlp = register_module("mlp", Mlp(c.width, c.mlp_width()));
  }
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& mask) {
    x = x + attn(ln_1(x), mask);
    return x + mlp(ln_2(x));
  }
  torch::nn::LayerNorm ln_1{nullptr}, ln_2{nullptr};
  SelfAttention attn{nullptr};
  Mlp mlp{nullptr};
};
TORCH_MODULE(ResidualAttentionBlock);

}  // namespace detail

struct TextTransformerImpl::Impl {
  torch::nn::Embedding token_embedding{nullptr};
  torch::Tensor positional_embedding;  // [context, W]
  std::vector<detail::ResidualAttentionBlock> blocks;
  torch::nn::LayerNorm ln_final{nullptr};

  // Causal mask cache: one [context, context] additive mask per (device, dtype); a length-L
  // input uses its top-left [L, L] view. Guarded for concurrent forward() calls.
  std::mutex mask_mutex;
  std::map<std::tuple<std::string, int>, torch::Tensor> masks;

  torch::Tensor causal_mask(int64_t L, int64_t context, const torch::TensorOptions& opt) {
    const auto key = std::make_tuple(opt.device().str(), static_cast<int>(opt.dtype().toScalarType()));
    std::lock_guard<std::mutex> lock(mask_mutex);
    auto it = masks.find(key);
    if (it == masks.end()) {
      // -inf strictly above the diagonal: position i attends to j <= i (CLIP build_attention_mask).
      auto m = torch::full({context, context}, -std::numeric_limits<float>::infinity(), opt).triu(1);
      it = masks.emplace(key, m).first;
    }
    return it->second.slice(0, 0, L).slice(1, 0, L);
  }

  /// The network on already-checked ids [B, L] (and key_mask [B, L] bool or undefined):
  /// returns ln_final output [B, L, W].
  torch::Tensor encode(const torch::Tensor& ids, const TextConfig& c, const torch::Tensor& key_mask = {}) {
    const int64_t B = ids.size(0), L = ids.size(1);
    auto x = token_embedding(ids) + positional_embedding.slice(0, 0, L);  // [B, L, W]
    torch::Tensor mask;
    if (c.causal) mask = causal_mask(L, c.context_length, x.options());
    if (key_mask.defined()) {
      // Additive [B*heads, 1, L] (-inf at padded keys), broadcast over queries (and the causal mask).
      auto pad = torch::zeros({B, 1, 1, L}, x.options())
                     .masked_fill(key_mask.logical_not().view({B, 1, 1, L}),
                                  -std::numeric_limits<float>::infinity())
                     .expand({B, c.heads, 1, L})
                     .reshape({B * c.heads, 1, L});
      mask = mask.defined() ? pad + mask : pad;
    }
    for (auto& b : blocks) x = b->forward(x, mask);
    return ln_final(x);
  }
};

TextTransformerImpl::TextTransformerImpl(const TextConfig& cfg) : cfg_(cfg), impl_(std::make_shared<Impl>()) {
  cfg_.validate();
  const int64_t W = cfg_.width;
  impl_->token_embedding =
      register_module("token_embedding", torch::nn::Embedding(cfg_.vocab_size, W));
  impl_->positional_embedding =
      register_parameter("positional_embedding", torch::empty({cfg_.context_length, W}));
  auto resblocks = register_module("resblocks", torch::nn::ModuleList());
  for (int k = 0; k < cfg_.layers; ++k) {
    impl_->blocks.emplace_back(cfg_);
    resblocks->push_back(impl_->blocks.back());
  }
  impl_->ln_final = register_module(
      "ln_final", torch::nn::LayerNorm(torch::nn::LayerNormOptions({W}).eps(cfg_.norm_eps)));

  // Initialisation of openai/CLIP clip/model.py `CLIP.initialize_parameters`:
  // token embedding N(0, 0.02), positional N(0, 0.01); in_proj N(0, W^-1/2);
  // out_proj and c_proj N(0, W^-1/2 (2 layers)^-1/2); c_fc N(0, (2W)^-1/2).
  // Attention biases start at zero (nn.MultiheadAttention._reset_parameters); the MLP biases
  // keep nn.Linear's default uniform init and LayerNorms start at (1, 0), as in CLIP.
  torch::NoGradGuard no_grad;
  const double attn_std = std::pow(static_cast<double>(W), -0.5);
  const double proj_std = attn_std * std::pow(2.0 * cfg_.layers, -0.5);
  const double fc_std = std::pow(2.0 * static_cast<double>(W), -0.5);
  torch::nn::init::normal_(impl_->token_embedding->weight, 0.0, 0.02);
  torch::nn::init::normal_(impl_->positional_embedding, 0.0, 0.01);
  for (auto& b : impl_->blocks) {
    torch::nn::init::normal_(b->attn->in_proj_weight, 0.0, attn_std);
    torch::nn::init::zeros_(b->attn->in_proj_bias);
    torch::nn::init::normal_(b->attn->out_proj->weight, 0.0, proj_std);
    torch::nn::init::zeros_(b->attn->out_proj->bias);
    torch::nn::init::normal_(b->mlp->c_fc->weight, 0.0, fc_std);
    torch::nn::init::normal_(b->mlp->c_proj->weight, 0.0, proj_std);
  }
}

namespace {

// Shape/dtype/range checks shared by forward() and forward_tokens().
void check_ids(const torch::Tensor& ids, const TextConfig& c) {
  if (!ids.defined()) throw Error("text transformer: ids tensor is undefined");
  if (ids.dim() != 2) {
    throw Error(fmt::format("text transformer: ids must be [B, L], got a {}-D tensor", ids.dim()));
  }
  if (ids.scalar_type() != torch::kLong) {
    throw Error(fmt::format("text transformer: ids must be int64, got {}",
                            c10::toString(ids.scalar_type())));
  }
  const int64_t L = ids.size(1);
  if (L == 0) throw Error("text transformer: ids has length 0 (need at least the EOT token)");
  if (L > c.context_length) {
    throw Error(fmt::format("text transformer: sequence length {} exceeds context_length {}", L,
                            c.context_length));
  }
  if (ids.numel() == 0) return;
  const int64_t lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
  if (lo < 0 || hi >= c.vocab_size) {
    throw Error(fmt::format("text transformer: token id {} is outside the vocabulary [0, {})",
                            lo < 0 ? lo : hi, c.vocab_size));
  }
}

}  // namespace

torch::Tensor TextTransformerImpl::forward_tokens(const torch::Tensor& ids, const torch::Tensor& key_mask) {
  check_ids(ids, cfg_);
  if (key_mask.defined()) {
    if (key_mask.scalar_type() != torch::kBool || key_mask.sizes() != ids.sizes()) {
      throw Error(fmt::format("text transformer: key_mask must be bool {} like ids, got {} {}",
                              c10::str(ids.sizes()), c10::toString(key_mask.scalar_type()),
                              c10::str(key_mask.sizes())));
    }
    // Every query must see a real key: some true position per row, and with the causal mask
    // position 0 itself (it sees nothing else).
    const auto seen = cfg_.causal ? key_mask.select(1, 0) : key_mask.any(1);
    if (ids.size(0) > 0 && !seen.all().item<bool>()) {
      throw Error(cfg_.causal ? "text transformer: key_mask is false at position 0 of a row (causal mask)"
                              : "text transformer: key_mask has a row without any true position");
    }
  }
  return impl_->encode(ids, cfg_, key_mask.defined() ? key_mask.to(ids.device()) : key_mask);
}

torch::Tensor TextTransformerImpl::forward(const torch::Tensor& ids) {
  check_ids(ids, cfg_);
  const int64_t B = ids.size(0), L = ids.size(1);
  // First EOT per row: the smallest position whose id equals eot_token (L where none).
  auto pos = torch::arange(L, ids.options()).unsqueeze(0).expand({B, L});
  auto first = torch::where(ids == cfg_.eot_token, pos, torch::full_like(pos, L)).amin(1);  // [B]
  if (B > 0) {
    auto missing = torch::nonzero(first == L).flatten().cpu();
    if (missing.numel() > 0) {
      std::ostringstream rows;
      const int64_t n = missing.numel();
      for (int64_t i = 0; i < std::min<int64_t>(n, 10); ++i) {
        rows << (i ? ", " : "") << missing[i].item<int64_t>();
      }
      if (n > 10) rows << ", ...";
      throw Error(fmt::format("text transformer: {} row(s) contain no EOT token ({}): rows {}", n,
                              cfg_.eot_token, rows.str()));
    }
  }
  auto tokens = impl_->encode(ids, cfg_);  // [B, L, W]
  return tokens.index({torch::arange(B, ids.options()), first});
}

}  // namespace florence::text
