#pragma once
// Configuration, named variants and analytic counts of the METER-style fusion model (meter.h).
//
// Named configs (one table in meter_config.cpp; a JSON file is accepted wherever a name is):
//   meter-nano  florence-nano towers (64 px CoSwin: 4x4 = 16 image tokens of 192 channels;
//               4-layer 128-wide text), fusion H = 128, 4 heads, 2 co-attention layers, FFN 512:
//               sized for pretraining on 2 CPU cores.
//   meter-t     florence-t towers (CoSwin-T + CLIP-B text), METER's fusion: H = 768, 12 heads,
//               M_co = 6 layers, FFN 3072 (Dou et al. 2022 §4 / METER config.py).
//   meter-h     florence-h towers (CoSwin-H + our 256M text) with METER's fusion, the Florence
//               paper's VQA setting (METER with CoSwin as the image encoder).
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "florence/adapt/vlp/co_attention.h"
#include "florence/model/florence.h"
#include "florence/model/info.h"

namespace florence::vlp {

struct MeterConfig {
  std::string name = "custom";
  /// The two-tower model the encoders come from, exactly as its checkpoint describes it; the
  /// fusion model derives its towers from it (text_config(), vision_config()).
  model::FlorenceConfig towers;
  int hidden = 768;          ///< H, fusion width (METER hidden_size)
  int heads = 12;            ///< fusion attention heads (METER num_heads)
  int layers = 6;            ///< M_co co-attention layers per stream (METER num_top_layer)
  int intermediate = 3072;   ///< FFN width (METER hidden_size * mlp_ratio 4)
  double norm_eps = 1e-12;   ///< fusion and MLM-head LayerNorm eps (BertConfig.layer_norm_eps)
  double dropout = 0.1;      ///< fusion dropout (METER drop_rate)
  bool itm_head = true;      ///< build `itm_score`
  bool mlm_head = true;      ///< build `mlm_score`
  int num_answers = 0;       ///< > 0 builds `vqa_classifier` with this many answers

  /// The text tower as the fusion model uses it: towers.text without the causal mask
  /// (bidirectional, with a padding mask) and one more vocabulary row, the [MASK] token.
  text::TextConfig text_config() const;
  /// The image tower: towers.vision without a classification head.
  vision::SwinConfig vision_config() const;
  /// [MASK]'s id: towers.text.vocab_size (the appended embedding row; see meter.h).
  int64_t mask_token() const { return towers.text.vocab_size; }
  /// Size of the MLM output: the original vocabulary (targets are never [MASK]).
  int64_t mlm_vocab() const { return towers.text.vocab_size; }
  CoAttentionOptions fusion_options() const;

  nlohmann::json to_json() const;
  /// Keys: name, towers{...} (a two-tower config, model/florence.h), hidden, heads, layers,
  /// intermediate, norm_eps, dropout, itm_head, mlm_head, num_answers. Missing keys take the
  /// defaults above; unknown keys throw florence::Error naming the key.
  static MeterConfig from_json(const nlohmann::json& j);
  /// Throws florence::Error naming the field for invalid towers, fusion sizes (see
  /// CoAttentionOptions::validate) or num_answers < 0.
  void validate() const;
};

/// Registered names, sorted.
std::vector<std::string> meter_config_names();

/// A registered name or the path of a JSON file (MeterConfig::from_json). Throws
/// florence::Error for an unknown name (listing the known ones), an unreadable file or bad JSON.
MeterConfig resolve_meter_config(const std::string& name_or_path);

/// Number of image tokens the towers give for a square `image_size` input (last stage h * w).
int64_t image_tokens(const vision::SwinConfig& c, int image_size);

/// Analytic parameter and multiply-accumulate counts of one forward pass for ONE image-text
/// pair with `text_len` tokens at `image_size` px. Fusion MACs: per layer and stream the
/// query/key/value/output projections of self- and cross-attention (cross keys/values are
/// projected from the other stream's tokens), both attention products, and the FFN; plus the
/// two input projections and the poolers. The MLM head is counted on all text positions (as
/// METER computes it). Norms, softmax and GELU are excluded, as in model/info.h.
struct MeterCounts {
  model::Counts vision, text, fusion, itm, mlm, vqa;
  int64_t params() const;  ///< all parameters of MeterModel(cfg)
  double forward_macs(bool with_mlm, bool with_itm, bool with_vqa) const;
};
MeterCounts count_meter(const MeterConfig& c, int text_len, int image_size);

}  // namespace florence::vlp
