// METER fusion configuration, registry and analytic counts; see meter_config.h.
#include "florence/adapt/vlp/meter_config.h"

#include <filesystem>
#include <functional>
#include <map>

#include "florence/core/error.h"
#include "florence/core/files.h"
#include "florence/model/registry.h"
#include "florence/core/json_get.h"

namespace florence::vlp {

text::TextConfig MeterConfig::text_config() const {
  text::TextConfig t = towers.text;
  t.causal = false;
  t.vocab_size += 1;  // [MASK] = the old vocab_size
  return t;
}

vision::SwinConfig MeterConfig::vision_config() const {
  vision::SwinConfig v = towers.vision;
  v.num_classes = 0;
  return v;
}

CoAttentionOptions MeterConfig::fusion_options() const {
  CoAttentionOptions o;
  o.hidden = hidden;
  o.heads = heads;
  o.intermediate = intermediate;
  o.norm_eps = norm_eps;
  o.dropout = dropout;
  return o;
}

nlohmann::json MeterConfig::to_json() const {
  return nlohmann::json{{"name", name},         {"towers", towers.to_json()},
                        {"hidden", hidden},     {"heads", heads},
                        {"layers", layers},     {"intermediate", intermediate},
                        {"norm_eps", norm_eps}, {"dropout", dropout},
                        {"itm_head", itm_head}, {"mlm_head", mlm_head},
                        {"num_answers", num_answers}};
}

MeterConfig MeterConfig::from_json(const nlohmann::json& j) {
  if (!j.is_object()) throw Error("meter config must be a JSON object, got " + std::string(j.type_name()));
  MeterConfig c;
  for (const auto& item : j.items()) {
    const std::string& k = item.key();
    const nlohmann::json& v = item.value();
    try {
      if (k == "name") c.name = v.get<std::string>();
      else if (k == "towers") {
        // A registered two-tower name ("florence-nano") or the full config object.
        c.towers = v.is_string() ? model::resolve_florence_config(v.get<std::string>())
                                 : model::FlorenceConfig::from_json(v);
      } else if (k == "hidden") c.hidden = core::json_get<int>(v, "meter config field 'hidden'");
      else if (k == "heads") c.heads = core::json_get<int>(v, "meter config field 'heads'");
      else if (k == "layers") c.layers = core::json_get<int>(v, "meter config field 'layers'");
      else if (k == "intermediate") c.intermediate = core::json_get<int>(v, "meter config field 'intermediate'");
      else if (k == "norm_eps") c.norm_eps = core::json_get<double>(v, "meter config field 'norm_eps'");
      else if (k == "dropout") c.dropout = core::json_get<double>(v, "meter config field 'dropout'");
      else if (k == "itm_head") c.itm_head = core::json_get<bool>(v, "meter config field 'itm_head'");
      else if (k == "mlm_head") c.mlm_head = core::json_get<bool>(v, "meter config field 'mlm_head'");
      else if (k == "num_answers") c.num_answers = core::json_get<int>(v, "meter config field 'num_answers'");
      else throw Error("unknown meter config field '" + k + "'");
    } catch (const nlohmann::json::exception& e) {
      throw Error("meter config field '" + k + "': " + e.what());
    }
  }
  return c;
}

void MeterConfig::validate() const {
  towers.validate();
  text_config().validate();
  fusion_options().validate();
  if (layers <= 0) throw Error(fmt::format("meter config: layers must be positive, got {}", layers));
  if (num_answers < 0) throw Error(fmt::format("meter config: num_answers must be >= 0, got {}", num_answers));
}

namespace {

MeterConfig with_towers(const std::string& name, const std::string& towers) {
  MeterConfig c;
  c.name = name;
  c.towers = model::resolve_florence_config(towers);
  return c;
}

const std::map<std::string, std::function<MeterConfig()>>& registry() {
  static const std::map<std::string, std::function<MeterConfig()>> r = {
      {"meter-nano",
       [] {
         MeterConfig c = with_towers("meter-nano", "florence-nano");
         c.hidden = 128;
         c.heads = 4;
         c.layers = 2;
         c.intermediate = 512;
         return c;
       }},
      {"meter-t", [] { return with_towers("meter-t", "florence-t"); }},
      {"meter-h", [] { return with_towers("meter-h", "florence-h"); }},
  };
  return r;
}

}  // namespace

std::vector<std::string> meter_config_names() {
  std::vector<std::string> names;
  for (const auto& [n, _] : registry()) names.push_back(n);
  return names;
}

MeterConfig resolve_meter_config(const std::string& name_or_path) {
  if (auto it = registry().find(name_or_path); it != registry().end()) return it->second();
  if (!std::filesystem::is_regular_file(name_or_path)) {
    std::string known;
    for (const auto& n : meter_config_names()) known += (known.empty() ? "" : ", ") + n;
    throw Error("unknown meter config '" + name_or_path + "' (not a file; known names: " + known + ")");
  }
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(core::read_text_file(name_or_path));
  } catch (const nlohmann::json::exception& e) {
    throw Error("meter config " + name_or_path + ": bad JSON: " + e.what());
  }
  MeterConfig c = MeterConfig::from_json(j);
  c.validate();
  return c;
}

int64_t image_tokens(const vision::SwinConfig& c, int image_size) {
  auto conv_out = [](int64_t in, const vision::ConvEmbedConfig& e) {
    return (in + 2 * e.padding - e.kernel) / e.stride + 1;
  };
  int64_t s = conv_out(image_size, c.patch_embed);
  for (int i = 0; i + 1 < c.num_stages(); ++i) {
    s = c.variant == "swin" ? (s + 1) / 2 : conv_out(s, c.downsample);
  }
  return s * s;
}

int64_t MeterCounts::params() const {
  return vision.params + text.params + fusion.params + itm.params + mlm.params + vqa.params;
}

double MeterCounts::forward_macs(bool with_mlm, bool with_itm, bool with_vqa) const {
  return vision.macs + text.macs + fusion.macs + (with_mlm ? mlm.macs : 0.0) + (with_itm ? itm.macs : 0.0) +
         (with_vqa ? vqa.macs : 0.0);
}

MeterCounts count_meter(const MeterConfig& c, int text_len, int image_size) {
  MeterCounts n;
  n.vision = model::count_vision(c.vision_config(), image_size, image_size);
  n.text = model::count_text(c.text_config(), text_len);
  const double H = c.hidden, F = c.intermediate, Lt = text_len;
  const double Li = static_cast<double>(image_tokens(c.vision_config(), image_size));
  const double Wt = c.towers.text.width, Ci = c.towers.vision.num_features();
  // Parameters: input projections, token types, per stream and layer (attention 4 linears +
  // LayerNorm, twice; intermediate; output + LayerNorm), two poolers.
  const int64_t h = c.hidden, f = c.intermediate;
  const int64_t attn = 4 * (h * h + h) + 2 * h;
  const int64_t layer = 2 * attn + (h * f + f) + (f * h + h + 2 * h);
  n.fusion.params = (c.towers.text.width * h + h) + (int64_t(c.towers.vision.num_features()) * h + h) + 2 * h +
                    2 * int64_t(c.layers) * layer + 2 * (h * h + h);
  // MACs: a stream with Lq queries attending to itself and to Lo tokens of the other stream.
  auto stream = [&](double Lq, double Lo) {
    return 4 * Lq * H * H + 2 * Lq * Lq * H     // self-attention: q, k, v, dense; scores, weights x v
           + 2 * Lq * H * H + 2 * Lo * H * H    // cross: q and dense on Lq; k, v on the other stream
           + 2 * Lq * Lo * H                    // cross scores, weights x v
           + 2 * Lq * H * F;                    // FFN
  };
  n.fusion.macs = Lt * Wt * H + Li * Ci * H + c.layers * (stream(Lt, Li) + stream(Li, Lt)) + 2 * H * H;
  if (c.itm_head) {
    n.itm.params = 2 * h * 2 + 2;
    n.itm.macs = 2 * H * 2;
  }
  if (c.mlm_head) {
    const int64_t V = c.mlm_vocab();
    n.mlm.params = (h * h + h) + 2 * h + h * V + V;
    n.mlm.macs = Lt * (H * H + H * static_cast<double>(V));
  }
  if (c.num_answers > 0) {
    const int64_t A = c.num_answers;
    n.vqa.params = (4 * h * h + 2 * h) + 2 * (2 * h) + (2 * h * A + A);
    n.vqa.macs = 4 * H * H + 2 * H * A;
  }
  return n;
}

}  // namespace florence::vlp
