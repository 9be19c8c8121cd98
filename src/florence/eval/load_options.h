#pragma once
// What to load for evaluation (eval/encode.h load_eval_model): the model, its weights and
// vocabulary, the device and the eval preprocessing. Apart from encode.h so that option structs
// holding them (curate's CurateOptions) need neither the model nor the data loader.
#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <optional>
#include <string>

namespace florence::eval {

struct PreprocessOptions {
  int image_size = 0;                     ///< 0 = sidecar "preprocess", else the model config's image_size
  std::optional<double> crop_pct;         ///< unset = sidecar, else 0.875
  std::optional<std::array<float, 3>> mean, std;  ///< unset = sidecar, else ImageNet
  int64_t batch_size = 64;                ///< images / texts per forward pass
  int num_workers = 0;                    ///< loader decode threads (0 = all cores)
  nlohmann::json to_json() const;
};

struct LoadOptions {
  std::string model;       ///< name or JSON path; empty = the checkpoint's sidecar / metadata
  std::string checkpoint;  ///< weights (.safetensors / .pt); empty = random init (tests only)
  std::string vocab;       ///< BPE merges file; empty = from the checkpoint's run (see eval/encode.h)
  std::string device = "cpu";
  /// "fp32" | "bf16" (weights and activations bfloat16) | "amp_bf16" (autocast); core/precision.h.
  /// bf16 / amp_bf16 fall back to fp32 (with a warning) where the CPU lacks native bfloat16.
  std::string precision = "fp32";
  PreprocessOptions preprocess;
};

}  // namespace florence::eval
