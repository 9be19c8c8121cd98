#include "florence/model/registry.h"

#include <cctype>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>

#include "florence/core/error.h"

namespace florence::model {
namespace {

vision::SwinConfig swin_dims(const std::string& variant, int embed, std::vector<int> depths,
                             std::vector<int> heads, double drop_path) {
  vision::SwinConfig c;
  c.variant = variant;
  c.embed_dim = embed;
  c.depths = std::move(depths);
  c.num_heads = std::move(heads);
  c.window_size = 7;
  c.drop_path_rate = drop_path;
  if (variant == "swin") {
    c.patch_embed = {4, 4, 0};  // Swin: 4x4 non-overlapping patches
  } else {
    c.patch_embed = {7, 4, 2};  // CvT stage-1 ConvEmbed (Florence §2.2)
    c.downsample = {3, 2, 1};   // CvT stage-2/3 ConvEmbed
  }
  return c;
}

// Stochastic-depth rates are microsoft/Swin-Transformer's (configs/swin/*.yaml).
const std::map<std::string, std::function<vision::SwinConfig()>>& vision_registry() {
  static const std::map<std::string, std::function<vision::SwinConfig()>> r = {
      {"swin-t", [] { return swin_dims("swin", 96, {2, 2, 6, 2}, {3, 6, 12, 24}, 0.2); }},
      {"swin-s", [] { return swin_dims("swin", 96, {2, 2, 18, 2}, {3, 6, 12, 24}, 0.3); }},
      {"swin-b", [] { return swin_dims("swin", 128, {2, 2, 18, 2}, {4, 8, 16, 32}, 0.5); }},
      {"swin-l", [] { return swin_dims("swin", 192, {2, 2, 18, 2}, {6, 12, 24, 48}, 0.5); }},
      {"coswin-t", [] { return swin_dims("coswin", 96, {2, 2, 6, 2}, {3, 6, 12, 24}, 0.2); }},
      {"coswin-s", [] { return swin_dims("coswin", 96, {2, 2, 18, 2}, {3, 6, 12, 24}, 0.3); }},
      {"coswin-b", [] { return swin_dims("coswin", 128, {2, 2, 18, 2}, {4, 8, 16, 32}, 0.5); }},
      {"coswin-l", [] { return swin_dims("coswin", 192, {2, 2, 18, 2}, {6, 12, 24, 48}, 0.5); }},
      {"coswin-h", [] { return swin_dims("coswin", 352, {2, 2, 16, 2}, {11, 22, 44, 88}, 0.5); }},
  };
  return r;
}

text::TextConfig text_dims(int width, int heads, int layers) {
  text::TextConfig t;
  t.width = width;
  t.heads = heads;
  t.layers = layers;
  return t;
}

const std::map<std::string, std::function<text::TextConfig()>>& text_registry() {
  static const std::map<std::string, std::function<text::TextConfig()>> r = {
      {"clip-text-b", [] { return text_dims(512, 8, 12); }},
      {"florence-text-h", [] { return text_dims(1176, 21, 12); }},
  };
  return r;
}

FlorenceConfig nano() {
  FlorenceConfig c;
  c.name = "florence-nano";
  // A 3-stage CoSwin small enough for CPU pretraining at 64 px: 16x16, 8x8 and 4x4 token maps,
  // window 4, so stages 1-2 use shifted windows and stage 3 is one window (no padding anywhere).
  c.vision = swin_dims("coswin", 48, {1, 2, 2}, {2, 4, 8}, 0.0);
  c.vision.window_size = 4;
  c.vision.image_size = 64;
  c.text = text_dims(128, 2, 4);
  c.text.context_length = 32;
  c.embed_dim = 128;
  return c;
}

const std::map<std::string, std::function<FlorenceConfig()>>& florence_registry() {
  static const std::map<std::string, std::function<FlorenceConfig()>> r = {
      {"florence-nano", nano},
      {"florence-t",
       [] {
         FlorenceConfig c;
         c.name = "florence-t";
         c.vision = vision_registry().at("coswin-t")();
         c.text = text_registry().at("clip-text-b")();
         c.embed_dim = 512;
         return c;
       }},
      {"florence-h",
       [] {
         FlorenceConfig c;
         c.name = "florence-h";
         c.vision = vision_registry().at("coswin-h")();
         c.text = text_registry().at("florence-text-h")();
         c.embed_dim = 1024;
         return c;
       }},
  };
  return r;
}


}  // namespace

ModelSpec spec_from_json(const nlohmann::json& j, const std::string& origin) {
  if (!j.is_object()) throw Error(origin + ": a model config must be a JSON object");
  ModelSpec s;
  nlohmann::json body = j;
  std::string type;
  if (body.contains("type")) {
    if (!body["type"].is_string()) throw Error(origin + ": 'type' must be a string");
    type = body["type"].get<std::string>();
    body.erase("type");
  } else if (body.contains("vision") || body.contains("text")) {
    type = "florence";
  } else if (body.contains("variant") || body.contains("depths")) {
    type = "vision";
  } else if (body.contains("width") || body.contains("vocab_size")) {
    type = "text";
  } else {
    throw Error(origin + ": cannot tell whether this is a florence, vision or text config "
                         "(add \"type\": \"florence\"|\"vision\"|\"text\")");
  }
  try {
    if (type == "florence") {
      s.florence = FlorenceConfig::from_json(body);
      s.vision = s.florence->vision;
      s.text = s.florence->text;
      s.name = s.florence->name;
    } else if (type == "vision") {
      s.vision = vision::SwinConfig::from_json(body);
      s.vision->validate();
      s.name = origin;
    } else if (type == "text") {
      s.text = text::TextConfig::from_json(body);
      s.text->validate();
      s.name = origin;
    } else {
      throw Error("unknown config type '" + type + "' (florence|vision|text)");
    }
  } catch (const Error& e) {
    throw Error(origin + ": " + e.what());
  }
  return s;
}

std::vector<std::string> model_names() {
  std::vector<std::string> names;
  for (const auto& kv : florence_registry()) names.push_back(kv.first);
  for (const auto& kv : vision_registry()) names.push_back(kv.first);
  for (const auto& kv : text_registry()) names.push_back(kv.first);
  std::sort(names.begin(), names.end());
  return names;
}

ModelSpec resolve_model(const std::string& name_or_path) {
  if (auto it = florence_registry().find(name_or_path); it != florence_registry().end()) {
    ModelSpec s;
    s.name = name_or_path;
    s.florence = it->second();
    s.vision = s.florence->vision;
    s.text = s.florence->text;
    return s;
  }
  if (auto it = vision_registry().find(name_or_path); it != vision_registry().end()) {
    ModelSpec s;
    s.name = name_or_path;
    s.vision = it->second();
    return s;
  }
  if (auto it = text_registry().find(name_or_path); it != text_registry().end()) {
    ModelSpec s;
    s.name = name_or_path;
    s.text = it->second();
    return s;
  }
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_regular_file(name_or_path, ec)) {
    std::string known;
    for (const auto& n : model_names()) known += (known.empty() ? "" : ", ") + n;
    throw Error("unknown model '" + name_or_path + "': not a registered name (" + known +
                ") nor a JSON config file");
  }
  // A weights file given where a config is expected: say what to pass instead (its bytes are
  // not JSON, and nlohmann's parse error would quote binary characters).
  const std::string ext = fs::path(name_or_path).extension().string();
  if (ext == ".safetensors" || ext == ".pt" || ext == ".pth" || ext == ".bin") {
    throw Error("model config '" + name_or_path + "' is a weights file, not a config: pass its sidecar (" +
                fs::path(name_or_path).replace_extension(".json").string() +
                ") as --model, or the weights as --checkpoint");
  }
  std::ifstream in(name_or_path);
  char first = 0;
  while (in.get(first) && std::isspace(static_cast<unsigned char>(first))) {
  }
  if (first != '{') throw Error("model config '" + name_or_path + "' is not a JSON config (it does not start with '{')");
  in.unget();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Error("model config '" + name_or_path + "' is not valid JSON: " + e.what());
  }
  // A checkpoint's sidecar (NAME.json beside NAME.safetensors, model/io.h) holds the config under
  // "model", next to training state: accept it wherever a config is (the trained vocabulary size
  // is in it).
  if (j.is_object() && j.contains("model") && j["model"].is_object() && !j.contains("type") &&
      !j.contains("vision") && !j.contains("text")) {
    return spec_from_json(j["model"], name_or_path);
  }
  return spec_from_json(j, name_or_path);
}

FlorenceConfig resolve_florence_config(const std::string& name_or_path) {
  ModelSpec s = resolve_model(name_or_path);
  if (!s.florence) {
    throw Error("model '" + name_or_path + "' is a single tower; this command needs a two-tower "
                "(florence) config");
  }
  return *s.florence;
}

nlohmann::json spec_to_json(const ModelSpec& spec) {
  if (spec.florence) {
    nlohmann::json j = spec.florence->to_json();
    j["type"] = "florence";
    return j;
  }
  if (spec.vision) {
    nlohmann::json j = spec.vision->to_json();
    j["type"] = "vision";
    return j;
  }
  nlohmann::json j = spec.text->to_json();
  j["type"] = "text";
  return j;
}

}  // namespace florence::model
