#pragma once
// Model checkpoints: safetensors weights + a JSON sidecar with the model config.
//   run/model.safetensors   weights by their state-dict names (any float dtype)
//   run/model.json          {"model": <spec JSON, see registry.h>, ...extra}
// The same spec JSON is also stored in the safetensors `__metadata__` under "florence.model",
// so a lone .safetensors file still describes itself.
#include <torch/nn/module.h>
#include <torch/types.h>

#include <nlohmann/json.hpp>

#include <optional>
#include <string>

#include "florence/core/checkpoint.h"
#include "florence/model/registry.h"

namespace florence::model {

/// "run/model.safetensors" -> "run/model.json".
std::string sidecar_path(const std::string& weights_path);

/// Writes the module's state dict (cast to `dtype`: kFloat, kHalf or kBFloat16) and the sidecar,
/// each atomically. `extra` keys are merged into the sidecar. Throws florence::Error on I/O errors.
void save_checkpoint(const torch::nn::Module& module, const ModelSpec& spec, const std::string& path,
                     torch::Dtype dtype = torch::kFloat, const nlohmann::json& extra = {});

/// Reads a checkpoint's weights as our names: .safetensors as stored; .pt/.pth through
/// load_torch_state_dict, then torchvision-Swin or UniCL/CLIP key mapping (chosen from the keys,
/// and from `spec`: a vision-only spec receives a bare Swin state dict, a two-tower spec a
/// UniCL/CLIP one). Throws florence::Error for unreadable files, and, naming the file to pass
/// instead, for a .json (a checkpoint's sidecar) or a *.optim.safetensors (its optimizer state).
core::TensorMap read_weights(const std::string& path, const ModelSpec& spec);

/// The model spec a checkpoint describes (sidecar first, then safetensors metadata), if any.
/// Throws florence::Error as read_weights() for a path that is a sidecar or optimizer state.
std::optional<ModelSpec> read_checkpoint_spec(const std::string& path);

/// Resolves the spec for a command: `model_arg` (name or JSON path) if non-empty, else the
/// checkpoint's own description. Throws florence::Error if neither is available.
ModelSpec resolve_spec(const std::string& model_arg, const std::string& checkpoint);

/// Builds the two-tower model for `spec` and, if `checkpoint` is non-empty, loads it strictly.
FlorenceModel load_florence(const ModelSpec& spec, const std::string& checkpoint);

}  // namespace florence::model
