#pragma once
// Named model configurations and `--model NAME|CONFIG.json` resolution.
//
// Vision towers: swin-t/s/b/l (Swin, Liu et al. 2021, Table 1 / microsoft/Swin-Transformer
// configs), coswin-t/s/b/l (same dims with CvT-style conv embeddings), coswin-h (our choice,
// the Florence paper does not publish CoSwin-H's dims: Swin-H-like C = 352, depths 2-2-16-2,
// heads 11-22-44-88 (head dim 32), window 7 -> 633.3M parameters, -0.6% from the paper's 637M).
// Text towers: clip-text-b (512 wide, 8 heads, 12 layers, CLIP ViT-B/32's), florence-text-h
// (our choice: 1176 wide, 21 heads (head dim 56), 12 layers -> 257.5M, +0.6% from 256M).
// Two-tower: florence-nano (tiny, for CPU demos at 64 px), florence-t (CoSwin-T + clip-text-b,
// D = 512), florence-h (coswin-h + florence-text-h, D = 1024: ~895M vs the paper's 893M).
#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <vector>

#include "florence/model/florence.h"

namespace florence::model {

/// What a `--model` argument resolved to: a two-tower config, or a single tower.
struct ModelSpec {
  std::string name;
  std::optional<FlorenceConfig> florence;
  std::optional<vision::SwinConfig> vision;  ///< set for a vision-only spec (and mirrors florence->vision)
  std::optional<text::TextConfig> text;      ///< set for a text-only spec (and mirrors florence->text)
};

/// Registered names, sorted.
std::vector<std::string> model_names();

/// Resolves a registered name, or the path of a JSON file holding either a two-tower config
/// (keys `vision`, `text`, ...), a vision config (`"type": "vision"` or a `variant` key) or a
/// text config (`"type": "text"`). Throws florence::Error naming the problem (unknown name
/// with the list of known ones, unreadable file, bad JSON, invalid field).
ModelSpec resolve_model(const std::string& name_or_path);

/// Like resolve_model() but requires a two-tower config.
FlorenceConfig resolve_florence_config(const std::string& name_or_path);

/// Parses a spec from JSON (the format of config files and checkpoint sidecars). `origin` names
/// where it came from in error messages.
ModelSpec spec_from_json(const nlohmann::json& j, const std::string& origin);

/// The JSON of a spec in the format resolve_model() reads back.
nlohmann::json spec_to_json(const ModelSpec& spec);

}  // namespace florence::model
