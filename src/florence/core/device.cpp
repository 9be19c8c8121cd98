// --device parsing and availability check (device.h).
#include "florence/core/device.h"

#include <fmt/format.h>
#include <torch/cuda.h>

#include "florence/core/error.h"

namespace florence {

torch::Device parse_device(const std::string& name, const std::string& label) {
  torch::Device d(torch::kCPU);
  try {
    d = torch::Device(name);
  } catch (const c10::Error& e) {
    throw Error(fmt::format("{} '{}': {}", label, name, e.what_without_backtrace()));
  }
  if (d.is_cpu() && d.has_index() && d.index() != 0)
    throw Error(fmt::format("{} '{}': the CPU has no index other than 0 (use \"cpu\")", label, name));
  if (d.is_cuda()) {
    if (!torch::cuda::is_available()) throw Error(fmt::format("{} '{}': this LibTorch build sees no CUDA GPU", label, name));
    if (d.has_index() && d.index() >= int(torch::cuda::device_count()))
      throw Error(fmt::format("{} '{}': only {} CUDA device(s)", label, name, torch::cuda::device_count()));
  }
  if (!d.is_cpu() && !d.is_cuda())
    throw Error(fmt::format("{} '{}': only cpu and cuda devices are supported", label, name));
  return d;
}

}  // namespace florence
