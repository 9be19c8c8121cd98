// Precision names, run-time detection of native bfloat16, and the autocast guard (precision.h).
#include "florence/core/precision.h"

#include <ATen/autocast_mode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <spdlog/spdlog.h>
#include <torch/library.h>
#include <torch/torch.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <mutex>

#include "florence/core/error.h"

namespace florence {

Precision parse_precision(const std::string& name) {
  if (name == "fp32") return Precision::kFp32;
  if (name == "bf16") return Precision::kBf16;
  if (name == "amp_bf16") return Precision::kAmpBf16;
  throw Error("unknown --precision '" + name + "' (fp32 | bf16 | amp_bf16)");
}

std::string precision_name(Precision p) {
  switch (p) {
    case Precision::kBf16: return "bf16";
    case Precision::kAmpBf16: return "amp_bf16";
    case Precision::kFp32: break;
  }
  return "fp32";
}

torch::ScalarType storage_dtype(Precision p) { return p == Precision::kBf16 ? torch::kBFloat16 : torch::kFloat; }

namespace {

// The CPU's flags from /proc/cpuinfo (the first "flags" line; all cores report the same set).
std::string cpu_flags() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("flags", 0) == 0) return " " + line.substr(line.find(':') + 1) + " ";
  return {};
}

// FLORENCE_BF16_ANYWAY=1: bfloat16 even where it is emulated; =0: float32 even where it is native
// (what a machine without bfloat16 does, for tests of the fallback).
std::string bf16_override() {
  const char* v = std::getenv("FLORENCE_BF16_ANYWAY");
  return v ? std::string(v) : std::string();
}

// Float32 LayerNorm / GroupNorm under CPU autocast: a bfloat16 input (a linear layer's output) and
// its float32 affine parameters are normalised in float32. Without these kernels LibTorch 1.13
// passes the mixed dtypes through and its CPU LayerNorm throws "expected scalar type BFloat16 but
// found Float" (as torch.autocast("cpu") does from Python on the same build).
at::Tensor to_fp32(const at::Tensor& t) {
  return t.defined() && t.is_floating_point() && t.scalar_type() != at::kFloat && t.scalar_type() != at::kDouble
             ? t.to(at::kFloat)
             : t;
}
c10::optional<at::Tensor> to_fp32(const c10::optional<at::Tensor>& t) {
  return t.has_value() ? c10::optional<at::Tensor>(to_fp32(*t)) : t;
}

at::Tensor layer_norm_fp32(const at::Tensor& input, at::IntArrayRef shape, const c10::optional<at::Tensor>& weight,
                           const c10::optional<at::Tensor>& bias, double eps, bool cudnn) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::DispatchKey::AutocastCPU);
  return at::layer_norm(to_fp32(input), shape, to_fp32(weight), to_fp32(bias), eps, cudnn);
}

at::Tensor group_norm_fp32(const at::Tensor& input, int64_t groups, const c10::optional<at::Tensor>& weight,
                           const c10::optional<at::Tensor>& bias, double eps, bool cudnn) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::DispatchKey::AutocastCPU);
  return at::group_norm(to_fp32(input), groups, to_fp32(weight), to_fp32(bias), eps, cudnn);
}

void register_cpu_norms() {
  static std::once_flag once;
  std::call_once(once, [] {
    // Kept for the life of the process: the dispatcher holds the registration while it lives.
    static auto* lib = new torch::Library(torch::Library::IMPL, "aten", c10::DispatchKey::AutocastCPU, __FILE__, __LINE__);
    lib->impl("layer_norm", TORCH_FN(layer_norm_fp32));
    lib->impl("group_norm", TORCH_FN(group_norm_fp32));
  });
}

}  // namespace

bool native_bf16(const torch::Device& device, std::string* why) {
  if (device.is_cuda()) {
    if (why) *why = "CUDA device";
    return true;
  }
  static const std::string flags = cpu_flags();
  for (const char* f : {"avx512_bf16", "amx_bf16"})
    if (flags.find(std::string(" ") + f + " ") != std::string::npos) {
      if (why) *why = std::string("CPU has ") + f;
      return true;
    }
  if (why) *why = flags.empty() ? "no /proc/cpuinfo flags line" : "CPU lacks avx512_bf16 and amx_bf16";
  return false;
}

Precision resolve_precision(Precision requested, const torch::Device& device, const std::string& what) {
  if (requested == Precision::kFp32) return requested;
  std::string why;
  const std::string force = bf16_override();
  if (force == "1" || (force != "0" && native_bf16(device, &why))) return requested;
  if (force == "0") why = "FLORENCE_BF16_ANYWAY=0";
  static std::atomic<bool> warned{false};
  if (!warned.exchange(true))
    spdlog::warn("{}: --precision {} asked for, but bfloat16 would be emulated and slower than float32 here ({}); "
                 "using fp32 (FLORENCE_BF16_ANYWAY=1 keeps bfloat16)",
                 what, precision_name(requested), why);
  return Precision::kFp32;
}

bool adapter_autocast(const std::string& precision, const torch::Device& device, const std::string& what) {
  const Precision p = parse_precision(precision);
  if (p == Precision::kBf16)
    throw Error(what + ": --precision bf16 (bfloat16 weights) is not offered for the adapters; use amp_bf16 "
                       "(bfloat16 autocast, float32 weights) or fp32");
  return resolve_precision(p, device, what) == Precision::kAmpBf16;
}

AutocastGuard::AutocastGuard(bool enabled, const torch::Device& device) : enabled_(enabled), cuda_(device.is_cuda()) {
  if (!enabled_) return;
  if (cuda_) {
    prev_enabled_ = at::autocast::is_enabled();
    prev_dtype_ = at::autocast::get_autocast_gpu_dtype();
    at::autocast::set_enabled(true);
    at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
  } else {
    register_cpu_norms();
    prev_enabled_ = at::autocast::is_cpu_enabled();
    prev_dtype_ = at::autocast::get_autocast_cpu_dtype();
    at::autocast::set_cpu_enabled(true);
    at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
  }
  at::autocast::increment_nesting();
}

AutocastGuard::~AutocastGuard() {
  if (!enabled_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  if (cuda_) {
    at::autocast::set_enabled(prev_enabled_);
    at::autocast::set_autocast_gpu_dtype(prev_dtype_);
  } else {
    at::autocast::set_cpu_enabled(prev_enabled_);
    at::autocast::set_autocast_cpu_dtype(prev_dtype_);
  }
}

}  // namespace florence
