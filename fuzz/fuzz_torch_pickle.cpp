// Fuzz harness: the PyTorch checkpoint reader (core/checkpoint.h load_torch_state_dict): our own
// pickle machine (torch_pickle.cpp) behind LibTorch's zip reader.
// First byte even: the input is the whole file (a real .pt starts with 'P', 0x50). First byte odd:
// the rest is data.pkl, wrapped here into a zip with LibTorch's writer next to three storages
// (data/0: 64 bytes, data/1: 4 bytes, data/2: 0 bytes), so mutations reach the pickle machine
// instead of dying in the zip reader.
#include <caffe2/serialize/inline_container.h>
#include <torch/torch.h>

#include <vector>

#include "florence/core/checkpoint.h"
#include "fuzz.h"

namespace fuzz_torch_pickle {

std::vector<uint8_t> wrap_in_zip(const uint8_t* pkl, size_t size) {
  std::vector<uint8_t> zip;
  {
    caffe2::serialize::PyTorchStreamWriter writer([&zip](const void* p, size_t n) {
      const auto* b = static_cast<const uint8_t*>(p);
      zip.insert(zip.end(), b, b + n);
      return n;
    });
    writer.writeRecord("data.pkl", pkl, size);
    writer.writeRecord("byteorder", "little", 6);
    const std::vector<uint8_t> storage(64, 0x3f);
    writer.writeRecord("data/0", storage.data(), 64);
    writer.writeRecord("data/1", storage.data(), 4);
    writer.writeRecord("data/2", storage.data(), 0);
    writer.writeEndOfFile();
  }
  return zip;
}

}  // namespace fuzz_torch_pickle

FLORENCE_FUZZ_TARGET(torch_pickle) {
  using namespace florence;
  if (size == 0) return 0;
  const std::string& path = fuzz::scratch_path("torch_pickle");
  if (data[0] % 2 == 0) {
    fuzz::write_file(path, data, size);
  } else {
    const auto zip = fuzz_torch_pickle::wrap_in_zip(data + 1, size - 1);
    fuzz::write_file(path, zip.data(), zip.size());
  }
  fuzz::refuse_ok([&] {
    const core::TensorMap tensors = core::load_torch_state_dict(path);
    fuzz::check(!tensors.empty(), "torch_pickle: an empty state dict was accepted");
    for (const auto& [name, t] : tensors) {
      fuzz::check(!name.empty() || tensors.size() == 1, "torch_pickle: an empty key among several");
      if (t.numel() > 0) (void)t.contiguous().sum();  // every element must be readable (ASan checks the views)
    }
  });
  return 0;
}
