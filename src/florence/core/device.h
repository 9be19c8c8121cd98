#pragma once
// One check of a `--device` value for every command and the C++ API.
#include <torch/types.h>

#include <string>

namespace florence {

/// Parses "cpu", "cuda", "cuda:N" into a device this process can use. Throws florence::Error
/// "LABEL 'NAME': ..." for a string LibTorch does not parse, a CPU index other than 0, a CUDA
/// device when this LibTorch build sees no GPU or the index is past the last GPU, and any other
/// device type. `label` names the setting in the message ("--device", "device").
torch::Device parse_device(const std::string& name, const std::string& label = "--device");

}  // namespace florence
