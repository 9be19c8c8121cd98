// Strict state-dict loading. (safetensors I/O lives in safetensors.cpp, PyTorch .pt/.pth import
// in torch_pickle.cpp, key mapping in key_mapping.cpp.)
#include "florence/core/checkpoint.h"

#include <sstream>

#include "florence/core/error.h"

namespace florence::core {
namespace {

std::string shape_str(at::IntArrayRef s) {
  std::ostringstream o;
  o << '[';
  for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i];
  o << ']';
  return o.str();
}

}  // namespace

TensorMap state_dict(const torch::nn::Module& module) {
  TensorMap out;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) out[p.key()] = p.value();
  for (const auto& b : module.named_buffers(/*recurse=*/true)) out[b.key()] = b.value();
  return out;
}

void load_state_dict(torch::nn::Module& module, const TensorMap& tensors) {
  TensorMap own = state_dict(module);
  std::vector<std::string> missing, unexpected, mismatched;
  for (const auto& [k, v] : own) {
    auto it = tensors.find(k);
    if (it == tensors.end()) {
      missing.push_back(k);
    } else if (it->second.sizes() != v.sizes()) {
      mismatched.push_back(k + " (checkpoint " + shape_str(it->second.sizes()) + ", model " +
                           shape_str(v.sizes()) + ")");
    }
  }
  for (const auto& [k, v] : tensors) {
    if (!own.count(k)) unexpected.push_back(k);
  }
  if (!missing.empty() || !unexpected.empty() || !mismatched.empty()) {
    std::ostringstream msg;
    msg << "state dict does not match the model:";
    auto list = [&](const char* what, const std::vector<std::string>& keys) {
      if (keys.empty()) return;
      msg << "\n  " << what << " (" << keys.size() << "):";
      const size_t show = std::min<size_t>(keys.size(), 20);
      for (size_t i = 0; i < show; ++i) msg << "\n    " << keys[i];
      if (keys.size() > show) msg << "\n    ... and " << keys.size() - show << " more";
    };
    list("missing keys", missing);
    list("unexpected keys", unexpected);
    list("shape mismatches", mismatched);
    throw Error(msg.str());
  }
  torch::NoGradGuard no_grad;
  for (auto& [k, v] : own) {
    const torch::Tensor& src = tensors.at(k);
    v.copy_(src.to(v.device(), v.scalar_type()));
  }
}

}  // namespace florence::core
