#pragma once
// Checkpoint I/O: safetensors (read/write, validated), PyTorch .pt/.pth import, strict
// state-dict loading with errors that name the key.
//
// safetensors format (huggingface/safetensors): 8-byte little-endian u64 N, N bytes of JSON
// header {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}},
// then the data buffer; offsets are relative to the start of the data buffer.
#include <torch/types.h>

#include <nlohmann/json_fwd.hpp>

#include <map>
#include <string>

namespace torch::nn {
class Module;
}

namespace florence::core {

/// Tensors by name, ordered by name.
using TensorMap = std::map<std::string, torch::Tensor>;

struct SafetensorsFile {
  TensorMap tensors;                            ///< CPU tensors, dtype as stored
  std::map<std::string, std::string> metadata;  ///< the "__metadata__" object
};

/// Reads and fully validates a safetensors file. Throws florence::Error naming the problem
/// for: a file shorter than 8 bytes, a header length beyond the file, a header that is not a
/// JSON object, an unknown dtype, offsets outside the data buffer / reversed / overlapping,
/// shape x dtype size != byte count, non-string metadata, duplicate names.
SafetensorsFile load_safetensors(const std::string& path);

/// Writes tensors (float32/float16/bfloat16/float64/int64/int32/int16/int8/uint8/bool, any
/// device; made contiguous and copied to CPU) atomically: a temporary file in the same folder
/// renamed over `path`. Throws florence::Error on I/O failure or unsupported dtype.
void save_safetensors(const std::string& path, const TensorMap& tensors,
                      const std::map<std::string, std::string>& metadata = {});

/// Reads a PyTorch state dict saved by torch.save (zip format, PyTorch >= 1.6; pickle protocol
/// 2..5) without Python: the zip is read with LibTorch's PyTorchStreamReader, data.pkl with a
/// strict pickle reader of our own (torch_pickle.cpp says why LibTorch 1.13's unpickler cannot
/// be used). Accepts what real checkpoints contain: `torch.save(model.state_dict())` (an
/// OrderedDict with `_metadata`), plain dicts, training-script wrappers holding optimizer
/// state, epoch numbers and arbitrary Python objects (argparse.Namespace, numpy scalars), and
/// Parameters. Unwraps {"state_dict"|"model"|"module"|"model_state": dict} wrappers (up to 4
/// levels) and flattens nested dicts with '.'. Non-tensor leaves are dropped; tensors that are
/// not reachable through string-keyed dicts (inside lists, under int keys, inside Python
/// objects) are dropped with a logged count.
/// Returns CPU tensors (whatever device they were saved from) with the saved dtype, sizes,
/// strides and storage offset; views of one storage share memory.
/// Throws florence::Error naming the file and problem if the file is missing, a legacy
/// (non-zip) torch.save file, a damaged zip, has no data.pkl, holds a malformed or unsupported
/// pickle (the byte offset is named), a storage record that is missing or of the wrong size, a
/// tensor view reaching outside its storage, a quantized/sparse/subclass tensor inside the state
/// dict, two entries that flatten to one key, or no tensors at all.
TensorMap load_torch_state_dict(const std::string& path);

/// Parameters and buffers of `module` by their dotted names (the state dict).
TensorMap state_dict(const torch::nn::Module& module);

/// Copies `tensors` into the module's parameters/buffers (converting dtype). Strict: any
/// missing key, unexpected key or shape mismatch throws florence::Error listing the names
/// (all of them, sorted, with both shapes for mismatches).
void load_state_dict(torch::nn::Module& module, const TensorMap& tensors);

/// Maps the UniCL/CLIP family's naming onto this project's two-tower names:
/// `image_encoder.`, `visual.` -> `image_encoder.`; `text_encoder.`, `lang_encoder.`, `text.`
/// (old UniCL) -> `text_encoder.`; CLIP's top-level text tower `transformer.resblocks.{k}`,
/// `token_embedding`, `positional_embedding`, `ln_final` -> `text_encoder.resblocks.{k}`, ...;
/// `lang_projection` -> `text_projection`; `visual.proj`, `vision_projection` ->
/// `image_projection`; strips `module.` (DDP) prefixes; drops derived buffers
/// (`relative_position_index`, `attn_mask`, `relative_coords_table`) and CLIP's TorchScript
/// scalars (`input_resolution`, `context_length`, `vocab_size`). Other keys pass through
/// unchanged (strict loading names them). Throws florence::Error if two keys map to one name.
TensorMap map_unicl_keys(const TensorMap& in);

}  // namespace florence::core
