#pragma once
// Analytic parameter and compute counts of the towers, from their configs alone (so that
// `florence info --model florence-h` needs no 3.6 GB of weights). unit tests check the
// parameter formulas against the instantiated modules.
#include <cstdint>

#include "florence/model/florence.h"

namespace florence::model {

struct Counts {
  int64_t params = 0;  ///< number of scalars in the state dict (parameters, no derived buffers)
  double macs = 0;     ///< multiply-accumulates of one forward pass for ONE input (image or text)
  double gflops() const { return 2.0 * macs / 1e9; }  ///< 1 MAC = 2 FLOPs
};

/// Image tower at an H x W input. Counts matmuls/convs of patch embed, qkv, q.k^T, attn.v
/// (over padded windows), proj, MLP, downsampling and head; norms/softmax/GELU are excluded
/// (as fvcore/Swin's reported FLOPs do; Swin-T 224 px = 4.5 GMACs).
Counts count_vision(const vision::SwinConfig& c, int height, int width);

/// Text tower for a sequence of `length` tokens (default: the full context).
Counts count_text(const text::TextConfig& c, int length = -1);

/// Projections + logit scale of the two-tower model (params only; their MACs are added to the
/// image and text totals by the caller as C_img*D and W*D).
int64_t count_heads(const FlorenceConfig& c);

}  // namespace florence::model
