#pragma once
// Numeric precision of a command that runs a model: `--precision fp32|bf16|amp_bf16` (open_clip's
// names, open_clip/src/training/precision.py).
//   fp32      weights and activations float32 (the default; parity tests use it).
//   bf16      inference only: weights and activations bfloat16; embeddings come back float32.
//   amp_bf16  autocast: matmuls, linear layers and convolutions in bfloat16; master weights, AdamW
//             state, LayerNorm / GroupNorm, softmax after a float32 bias, residual sums and the loss
//             in float32 (LibTorch 1.13's CPU autocast runs LayerNorm on a bfloat16 input with
//             float32 weights and fails; AutocastGuard registers float32 LayerNorm / GroupNorm).
// Whether bfloat16 pays is decided at run time: on a CPU without avx512_bf16 or amx_bf16 (read from
// /proc/cpuinfo) it is emulated and slower than float32, so resolve_precision() says so once and
// falls back to fp32, unless FLORENCE_BF16_ANYWAY=1 (tests of the numerics on any CPU); =0 forces
// that fallback where bfloat16 is native (tests of the fallback).
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/types.h>

#include <string>

namespace florence {

enum class Precision { kFp32, kBf16, kAmpBf16 };

/// "fp32" | "bf16" | "amp_bf16" -> Precision. Throws florence::Error naming the accepted values.
Precision parse_precision(const std::string& name);

/// The flag's spelling of `p`.
std::string precision_name(Precision p);

/// Whether `device` multiplies bfloat16 natively: a CUDA device always (Ampere and later run it
/// natively, older cards emulate it in LibTorch), a CPU when /proc/cpuinfo lists avx512_bf16 or
/// amx_bf16. `why` (optional) receives a short reason for the log.
bool native_bf16(const torch::Device& device, std::string* why = nullptr);

/// `requested`, or kFp32 with one warning per process when bfloat16 would be emulated on `device`
/// (see native_bf16; FLORENCE_BF16_ANYWAY=1 keeps bfloat16, =0 always falls back). `what` names the
/// command in the warning.
Precision resolve_precision(Precision requested, const torch::Device& device, const std::string& what);

/// The dtype weights and activations are held in: kBFloat16 for kBf16, else kFloat.
torch::ScalarType storage_dtype(Precision p);

/// Scoped autocast to bfloat16 on `device`'s type (CPU or CUDA), or nothing when `enabled` is false.
/// Nests; the outermost guard clears autocast's cache of cast weights on exit. On the CPU it also
/// makes LayerNorm and GroupNorm run in float32 (registered once per process).
/// --precision of the adapters' inference (detect eval / predict, vqa eval / ask, video eval): "fp32",
/// or "amp_bf16" (bfloat16 autocast around the network, resolved as resolve_precision: fp32 where
/// bfloat16 would be emulated). Returns whether autocast is on. Throws florence::Error for "bf16"
/// (bfloat16 weights: the adapters' heads and decoders are kept float32) and unknown names.
bool adapter_autocast(const std::string& precision, const torch::Device& device, const std::string& what);

class AutocastGuard {
 public:
  AutocastGuard(bool enabled, const torch::Device& device);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool enabled_ = false;
  bool cuda_ = false;
  bool prev_enabled_ = false;
  torch::ScalarType prev_dtype_ = torch::kBFloat16;
};

/// Float32 region inside an autocast one (losses): ops dispatched while it lives skip autocast.
class NoAutocastGuard {
 public:
  NoAutocastGuard()
      : exclude_(c10::DispatchKeySet({c10::DispatchKey::AutocastCPU, c10::DispatchKey::AutocastCUDA})) {}

 private:
  c10::impl::ExcludeDispatchKeyGuard exclude_;
};

}  // namespace florence
