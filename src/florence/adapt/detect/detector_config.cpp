// Detector configs; see detector_config.h.
#include "florence/adapt/detect/detector_config.h"

#include <fmt/format.h>

#include <filesystem>
#include <functional>
#include <map>

#include "florence/core/error.h"
#include "florence/core/files.h"
#include "florence/model/registry.h"
#include "florence/core/json_get.h"

namespace florence::detect {
namespace {

DetectorConfig nano(const std::string& name, const std::string& head) {
  DetectorConfig c;
  c.name = name;
  c.backbone = model::resolve_florence_config("florence-nano").vision;
  c.backbone.image_size = 160;
  c.in_stages = {1, 2};  // strides 8, 16 -> P3, P4
  c.max_level = 6;       // P5, P6 from P4: maps of 20/10/5/3 at 160 px
  c.channels = 64;
  c.head = head;
  c.num_blocks = 4;
  c.anchor_scale = 4.0;  // anchors 32..256 px for objects of ~12-120 px in 128-192 px scenes
  c.image_size = 160;
  return c;
}

DetectorConfig big(const std::string& name, const std::string& backbone) {
  DetectorConfig c;
  c.name = name;
  c.backbone = *model::resolve_model(backbone).vision;
  return c;
}

const std::map<std::string, std::function<DetectorConfig()>>& registry() {
  static const std::map<std::string, std::function<DetectorConfig()>> r = {
      {"dyhead-t", [] { return big("dyhead-t", "coswin-t"); }},
      {"dyhead-h", [] { return big("dyhead-h", "coswin-h"); }},
      {"dyhead-nano", [] { return nano("dyhead-nano", "dyhead"); }},
      {"conv-nano", [] { return nano("conv-nano", "conv"); }},
  };
  return r;
}

template <class T>
T get(const nlohmann::json& v, const std::string& key, const std::string& origin) {
  // Kind and range checked (core/json_get.h): 1e30 for an integer field is an error, not UB.
  return core::json_get<T>(v, fmt::format("{}: field '{}'", origin, key));
}

}  // namespace

int64_t DetectorConfig::first_level() const {
  int64_t s = backbone.patch_embed.stride, l = 0;
  while (s > 1) s >>= 1, ++l;
  return l + (in_stages.empty() ? 0 : in_stages.front());
}

void DetectorConfig::validate() const {
  auto fail = [&](const std::string& m) { throw Error("detector config '" + name + "': " + m); };
  backbone.validate();
  const int stem = backbone.patch_embed.stride;
  if (stem < 1 || (stem & (stem - 1)) != 0) fail(fmt::format("the backbone's stem stride {} is not a power of two", stem));
  if (backbone.variant == "coswin" && backbone.downsample.stride != 2)
    fail("the backbone's downsampling stride must be 2 (each stage one pyramid level)");
  if (in_stages.empty()) fail("in_stages is empty");
  for (size_t i = 0; i < in_stages.size(); ++i) {
    if (in_stages[i] < 0 || in_stages[i] >= backbone.num_stages())
      fail(fmt::format("in_stages[{}] = {} is not a stage of the {}-stage backbone", i, in_stages[i], backbone.num_stages()));
    if (i > 0 && in_stages[i] != in_stages[i - 1] + 1) fail("in_stages must be consecutive, finest first");
  }
  if (max_level < first_level() + int64_t(in_stages.size()) - 1)
    fail(fmt::format("max_level {} is below the last input stage's level {}", max_level,
                     first_level() + int64_t(in_stages.size()) - 1));
  if (head != "dyhead" && head != "conv") fail("head must be \"dyhead\" or \"conv\", got \"" + head + "\"");
  if (num_blocks < 0 || (head == "dyhead" && num_blocks < 1)) fail(fmt::format("num_blocks must be >= 1, got {}", num_blocks));
  if (channels < 1 || channels % 16 != 0) fail(fmt::format("channels {} must be a multiple of 16 (GroupNorm(16))", channels));
  if (head == "conv" && num_blocks > 0 && channels % 32 != 0)
    fail(fmt::format("channels {} must be a multiple of 32 for the conv towers' GroupNorm(32)", channels));
  if (head == "dyhead" && channels / 4 < 1) fail("channels too small for DyReLU's reduction 4");
  if (coarse_offsets != "crop" && coarse_offsets != "reference" && coarse_offsets != "resample")
    fail("coarse_offsets must be \"crop\", \"reference\" or \"resample\", got \"" + coarse_offsets + "\"");
  if (offset_init != "default" && offset_init != "zero")
    fail("offset_init must be \"default\" or \"zero\", got \"" + offset_init + "\"");
  if (num_classes < 1) fail(fmt::format("num_classes must be >= 1, got {}", num_classes));
  if (!class_names.empty() && int64_t(class_names.size()) != classes())
    fail(fmt::format("{} class_names for {} classes", class_names.size(), classes()));
  if (!(anchor_scale > 0)) fail("anchor_scale must be > 0");
  if (topk < 1) fail("topk must be >= 1");
  if (pred_kernel != 1 && pred_kernel != 3) fail("pred_kernel must be 1 or 3");
  if (!(focal_alpha <= 1) || !(focal_gamma >= 0) || !(reg_weight >= 0)) fail("focal_alpha <= 1, focal_gamma >= 0, reg_weight >= 0");
  if (!(score_threshold >= 0 && score_threshold < 1)) fail("score_threshold must be in [0, 1)");
  if (pre_nms_top_n < 1 || max_detections < 1) fail("pre_nms_top_n and max_detections must be >= 1");
  if (!(nms_threshold > 0 && nms_threshold <= 1)) fail("nms_threshold must be in (0, 1]");
}

nlohmann::json detector_config_to_json(const DetectorConfig& c) {
  return {{"type", "detector"},
          {"name", c.name},
          {"backbone", c.backbone.to_json()},
          {"in_stages", c.in_stages},
          {"channels", c.channels},
          {"max_level", c.max_level},
          {"head", c.head},
          {"num_blocks", c.num_blocks},
          {"coarse_offsets", c.coarse_offsets},
          {"offset_init", c.offset_init},
          {"num_classes", c.num_classes},
          {"class_agnostic", c.class_agnostic},
          {"class_names", c.class_names},
          {"anchor_scale", c.anchor_scale},
          {"topk", c.topk},
          {"pred_kernel", c.pred_kernel},
          {"focal_alpha", c.focal_alpha},
          {"focal_gamma", c.focal_gamma},
          {"reg_weight", c.reg_weight},
          {"score_threshold", c.score_threshold},
          {"pre_nms_top_n", c.pre_nms_top_n},
          {"nms_threshold", c.nms_threshold},
          {"max_detections", c.max_detections},
          {"image_size", c.image_size}};
}

DetectorConfig detector_config_from_json(const nlohmann::json& j, const std::string& origin) {
  if (!j.is_object()) throw Error(origin + ": a detector config must be a JSON object");
  DetectorConfig c;
  for (const auto& [k, v] : j.items()) {
    if (k == "type") {
      if (v != "detector") throw Error(fmt::format("{}: 'type' must be \"detector\", got {}", origin, v.dump()));
    } else if (k == "name") c.name = get<std::string>(v, k, origin);
    else if (k == "backbone") {
      try {
        c.backbone = vision::SwinConfig::from_json(v);
      } catch (const Error& e) {
        throw Error(origin + ": backbone: " + e.what());
      }
    } else if (k == "in_stages") c.in_stages = get<std::vector<int>>(v, k, origin);
    else if (k == "channels") c.channels = get<int64_t>(v, k, origin);
    else if (k == "max_level") c.max_level = get<int64_t>(v, k, origin);
    else if (k == "head") c.head = get<std::string>(v, k, origin);
    else if (k == "num_blocks") c.num_blocks = get<int64_t>(v, k, origin);
    else if (k == "coarse_offsets") c.coarse_offsets = get<std::string>(v, k, origin);
    else if (k == "offset_init") c.offset_init = get<std::string>(v, k, origin);
    else if (k == "num_classes") c.num_classes = get<int64_t>(v, k, origin);
    else if (k == "class_agnostic") c.class_agnostic = get<bool>(v, k, origin);
    else if (k == "class_names") c.class_names = get<std::vector<std::string>>(v, k, origin);
    else if (k == "anchor_scale") c.anchor_scale = get<double>(v, k, origin);
    else if (k == "topk") c.topk = get<int64_t>(v, k, origin);
    else if (k == "pred_kernel") c.pred_kernel = get<int64_t>(v, k, origin);
    else if (k == "focal_alpha") c.focal_alpha = get<double>(v, k, origin);
    else if (k == "focal_gamma") c.focal_gamma = get<double>(v, k, origin);
    else if (k == "reg_weight") c.reg_weight = get<double>(v, k, origin);
    else if (k == "score_threshold") c.score_threshold = get<double>(v, k, origin);
    else if (k == "pre_nms_top_n") c.pre_nms_top_n = get<int64_t>(v, k, origin);
    else if (k == "nms_threshold") c.nms_threshold = get<double>(v, k, origin);
    else if (k == "max_detections") c.max_detections = get<int64_t>(v, k, origin);
    else if (k == "image_size") c.image_size = get<int>(v, k, origin);
    else throw Error(fmt::format("{}: unknown detector config field '{}'", origin, k));
  }
  try {
    c.validate();
  } catch (const Error& e) {
    throw Error(origin + ": " + e.what());
  }
  return c;
}

std::vector<std::string> detector_names() {
  std::vector<std::string> n;
  for (const auto& kv : registry()) n.push_back(kv.first);
  return n;
}

DetectorConfig resolve_detector(const std::string& name_or_path) {
  if (auto it = registry().find(name_or_path); it != registry().end()) {
    DetectorConfig c = it->second();
    c.validate();
    return c;
  }
  std::error_code ec;
  if (!std::filesystem::is_regular_file(name_or_path, ec)) {
    std::string known;
    for (const auto& n : detector_names()) known += (known.empty() ? "" : ", ") + n;
    throw Error("unknown detector '" + name_or_path + "': not a registered name (" + known + ") nor a JSON config file");
  }
  return detector_config_from_json(core::read_json_file(name_or_path), name_or_path);
}

}  // namespace florence::detect
