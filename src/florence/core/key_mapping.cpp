// Key mapping from the UniCL / CLIP family of checkpoints onto this project's two-tower names.
//
// Namings handled (read from the public reference code):
//  - microsoft/UniCL (model/model.py): `image_encoder.*`, `text_encoder.*` or `lang_encoder.*`
//    (the text Transformer: `token_embedding`, `positional_embedding`, `resblocks.{k}`,
//    `ln_final`), `image_projection`, `text_projection` or `lang_projection`, `logit_scale`.
//    Its older checkpoints (UniCLModel._convert_old_weights) use `visual.*`, `text.*` and
//    `vision_projection`.
//  - openai/CLIP (clip/model.py): image tower under `visual.*` with its projection
//    `visual.proj`; text tower at the top level (`token_embedding`, `positional_embedding`,
//    `transformer.resblocks.{k}`, `ln_final`), `text_projection`, `logit_scale`; TorchScript
//    archives also carry the scalars `input_resolution`, `context_length`, `vocab_size`,
//    which CLIP's own build_model() deletes before loading.
//  - DistributedDataParallel wrappers: leading `module.` segments.
#include "florence/core/checkpoint.h"
#include "florence/core/error.h"

#include <torch/torch.h>

#include <string>
#include <utility>

namespace florence::core {
namespace {

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }

/// Last dot-separated segment of a key.
std::string last_segment(const std::string& key) {
  const auto dot = key.rfind('.');
  return dot == std::string::npos ? key : key.substr(dot + 1);
}

/// Buffers that a module recomputes from its configuration; they are never loaded.
/// relative_position_index: Swin window attention (from the window size);
/// attn_mask: Swin shifted-window mask / causal text mask (from the sizes);
/// relative_coords_table: Swin V2 continuous position bias input (from the window size).
bool is_derived_buffer(const std::string& key) {
  const std::string last = last_segment(key);
  return last == "relative_position_index" || last == "attn_mask" || last == "relative_coords_table";
}

/// Top-level scalars of CLIP's TorchScript archives (model hyper-parameters, not weights).
bool is_clip_hparam(const std::string& key) {
  return key == "input_resolution" || key == "context_length" || key == "vocab_size";
}

/// Our name for `key` (after `module.` stripping); the key itself when no rule applies.
std::string map_key(const std::string& key) {
  // Whole-name rules first: `visual.proj` would otherwise be caught by the `visual.` prefix.
  if (key == "visual.proj" || key == "vision_projection") return "image_projection";
  if (key == "lang_projection") return "text_projection";

  static const std::pair<const char*, const char*> kPrefixes[] = {
      {"image_encoder.", "image_encoder."},
      {"visual.", "image_encoder."},
      {"text_encoder.", "text_encoder."},
      {"lang_encoder.", "text_encoder."},
      {"text.", "text_encoder."},
      // CLIP's text tower lives at the top level; its blocks are `transformer.resblocks.{k}`
      // while our text tower names them `resblocks.{k}` directly.
      {"transformer.", "text_encoder."},
      {"token_embedding.", "text_encoder.token_embedding."},
      {"ln_final.", "text_encoder.ln_final."},
  };
  for (const auto& [from, to] : kPrefixes) {
    const std::string f = from;
    if (starts_with(key, f)) return to + key.substr(f.size());
  }
  if (key == "positional_embedding") return "text_encoder.positional_embedding";
  return key;
}

}  // namespace

TensorMap map_unicl_keys(const TensorMap& in) {
  TensorMap out;
  std::map<std::string, std::string> source;  // our name -> the input key it came from
  for (const auto& [original, tensor] : in) {
    std::string key = original;
    while (starts_with(key, "module.")) key.erase(0, 7);
    if (is_derived_buffer(key) || is_clip_hparam(key)) continue;
    std::string mapped = map_key(key);
    auto [it, inserted] = source.emplace(mapped, original);
    if (!inserted)
      throw Error("map_unicl_keys: keys '" + it->second + "' and '" + original +
                  "' both map to '" + mapped + "'");
    out.emplace(std::move(mapped), tensor);
  }
  return out;
}

}  // namespace florence::core
