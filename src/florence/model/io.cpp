#include "florence/model/io.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>

#include "florence/core/error.h"
#include "florence/core/files.h"
#include "florence/core/strings.h"
#include "florence/vision/swin_import.h"

namespace florence::model {
namespace fs = std::filesystem;

namespace {

using core::write_text_atomic;

}  // namespace

// Files that sit beside a checkpoint but are not its weights: refused by name, before anything reads them.
static void check_weights_file(const std::string& path) {
  const fs::path p(path);
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  if (ext == ".json") {
    // The sidecar of a checkpoint (or a run's model.json) holds the config, not the weights.
    fs::path weights(path);
    weights.replace_extension(".safetensors");
    throw Error("'" + path + "' is a JSON file, not model weights; pass the weights file" +
                (fs::is_regular_file(weights) ? " '" + weights.string() + "'" : std::string(" (.safetensors or .pt)")));
  }
  const std::string name = p.filename().string();
  const std::string optim = ".optim.safetensors";
  if (name.size() > optim.size() && core::ends_with(name, optim))
    throw Error("'" + path + "' is a checkpoint's optimizer state, not model weights; pass '" +
                (p.parent_path() / (name.substr(0, name.size() - optim.size()) + ".safetensors")).string() + "'");
}

std::string sidecar_path(const std::string& weights_path) {
  fs::path p(weights_path);
  p.replace_extension(".json");
  return p.string();
}

void save_checkpoint(const torch::nn::Module& module, const ModelSpec& spec, const std::string& path,
                     torch::Dtype dtype, const nlohmann::json& extra) {
  if (dtype != torch::kFloat && dtype != torch::kHalf && dtype != torch::kBFloat16) {
    throw Error("checkpoint dtype must be float32, float16 or bfloat16");
  }
  core::TensorMap tensors = core::state_dict(module);
  for (auto& [k, v] : tensors) {
    torch::Tensor t = v.detach();
    if (t.is_floating_point()) t = t.to(dtype);
    v = t;
  }
  const nlohmann::json spec_json = spec_to_json(spec);
  core::save_safetensors(path, tensors, {{"format", "pt"}, {"florence.model", spec_json.dump()}});
  nlohmann::json side = extra.is_object() ? extra : nlohmann::json::object();
  side["model"] = spec_json;
  side["weights"] = fs::path(path).filename().string();
  write_text_atomic(sidecar_path(path), side.dump(2) + "\n");
}

core::TensorMap read_weights(const std::string& path, const ModelSpec& spec) {
  if (!fs::is_regular_file(path)) throw Error("checkpoint '" + path + "' does not exist");
  check_weights_file(path);
  if (core::ends_with(path, ".safetensors")) return core::load_safetensors(path).tensors;
  core::TensorMap raw = core::load_torch_state_dict(path);
  const bool torchvision_swin = raw.count("features.0.0.weight") > 0;
  if (torchvision_swin) {
    if (spec.florence) {
      throw Error("'" + path + "' is a torchvision Swin state dict (an image tower only); load it with a "
                  "vision model such as --model swin-t");
    }
    return vision::map_torchvision_swin(raw, spec.vision && spec.vision->num_classes > 0);
  }
  return core::map_unicl_keys(raw);
}

std::optional<ModelSpec> read_checkpoint_spec(const std::string& path) {
  check_weights_file(path);
  const std::string side = sidecar_path(path);
  if (fs::is_regular_file(side)) {
    std::ifstream in(side);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      throw Error("checkpoint sidecar '" + side + "' is not valid JSON: " + e.what());
    }
    if (j.contains("model")) {
      return spec_from_json(j["model"], side);
    }
  }
  if (core::ends_with(path, ".safetensors") && fs::is_regular_file(path)) {
    auto meta = core::load_safetensors(path).metadata;
    if (auto it = meta.find("florence.model"); it != meta.end()) {
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(it->second);
      } catch (const nlohmann::json::exception& e) {
        throw Error("'" + path + "': metadata florence.model is not valid JSON: " + e.what());
      }
      return spec_from_json(j, path);
    }
  }
  return std::nullopt;
}

ModelSpec resolve_spec(const std::string& model_arg, const std::string& checkpoint) {
  if (!model_arg.empty()) return resolve_model(model_arg);
  if (!checkpoint.empty()) {
    std::error_code ec;
    if (fs::is_directory(checkpoint, ec)) throw Error("checkpoint '" + checkpoint + "' is a directory, not a weights file");
    if (!fs::exists(checkpoint, ec)) throw Error("checkpoint '" + checkpoint + "' does not exist");
    if (auto s = read_checkpoint_spec(checkpoint)) return *s;
    throw Error("checkpoint '" + checkpoint + "' does not describe its model (no sidecar JSON); pass --model");
  }
  throw Error("no model given: pass --model NAME|CONFIG.json or --checkpoint FILE");
}

FlorenceModel load_florence(const ModelSpec& spec, const std::string& checkpoint) {
  if (!spec.florence) throw Error("model '" + spec.name + "' is a single tower, not a two-tower model");
  FlorenceModel m{nullptr};
  try {
    m = FlorenceModel(*spec.florence);
  } catch (const std::bad_alloc&) {
    throw Error("model '" + spec.name + "'" + (checkpoint.empty() ? std::string() : " of '" + checkpoint + "'") +
                ": not enough memory to build it (check the sizes in its config)");
  }
  if (!checkpoint.empty()) {
    try {
      core::load_state_dict(*m, read_weights(checkpoint, spec));
    } catch (const Error& e) {
      throw Error("loading '" + checkpoint + "': " + e.what());
    }
  }
  return m;
}

}  // namespace florence::model
