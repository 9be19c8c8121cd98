// Fuzz harness: the safetensors reader (core/checkpoint.h load_safetensors). A file it accepts must
// hold no more tensor bytes than the file, and must survive a save/load round trip bit for bit.
#include <torch/torch.h>

#include <cstring>

#include "florence/core/checkpoint.h"
#include "fuzz.h"

FLORENCE_FUZZ_TARGET(safetensors) {
  using namespace florence;
  const std::string& path = fuzz::scratch_path("safetensors");
  fuzz::write_file(path, data, size);
  fuzz::refuse_ok([&] {
    const core::SafetensorsFile f = core::load_safetensors(path);
    size_t bytes = 0;
    for (const auto& [name, t] : f.tensors) bytes += t.numel() * t.element_size();
    fuzz::check(bytes <= size, "safetensors: tensors hold more bytes than the file");
    const std::string& again = fuzz::scratch_path("safetensors-again");
    core::save_safetensors(again, f.tensors, f.metadata);
    const core::SafetensorsFile g = core::load_safetensors(again);
    fuzz::check(g.metadata == f.metadata, "safetensors: metadata changed in a round trip");
    fuzz::check(g.tensors.size() == f.tensors.size(), "safetensors: tensor count changed in a round trip");
    for (const auto& [name, t] : f.tensors) {
      const auto it = g.tensors.find(name);
      fuzz::check(it != g.tensors.end(), "safetensors: a tensor vanished in a round trip");
      const torch::Tensor& u = it->second;
      fuzz::check(u.dtype() == t.dtype() && u.sizes() == t.sizes(), "safetensors: dtype/shape changed");
      fuzz::check(t.numel() == 0 || std::memcmp(u.data_ptr(), t.data_ptr(), t.numel() * t.element_size()) == 0,
                  "safetensors: bytes changed in a round trip");
    }
  });
  return 0;
}
