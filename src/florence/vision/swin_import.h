#pragma once
// Importers of public Swin checkpoints into this project's Swin names (see swin.h).
#include "florence/core/checkpoint.h"

namespace florence::vision {

/// Renames a torchvision `swin_t` / `swin_s` / `swin_b` state dict
/// (torchvision/models/swin_transformer.py, v1 models) onto SwinTransformer (variant "swin"):
///   features.0.0.*                  -> patch_embed.proj.*   (4x4 stride-4 conv)
///   features.0.2.*                  -> patch_embed.norm.*
///   features.{2k+1}.{j}.norm1|norm2|attn.qkv|attn.proj|attn.relative_position_bias_table
///                                   -> layers.{k}.blocks.{j}.<same>
///   features.{2k+1}.{j}.mlp.0.*     -> layers.{k}.blocks.{j}.mlp.fc1.*
///   features.{2k+1}.{j}.mlp.3.*     -> layers.{k}.blocks.{j}.mlp.fc2.*
///   features.{2k+2}.reduction|norm  -> layers.{k}.downsample.reduction|norm
///   norm.*                          -> norm.*
///   head.*                          -> head.* if keep_head, else dropped
/// `...attn.relative_position_index` (a derived buffer) is dropped. Tensors are shared, not
/// copied. Throws florence::Error naming the first key it cannot place (e.g. Swin V2's
/// `logit_scale` / `cpb_mlp`).
core::TensorMap map_torchvision_swin(const core::TensorMap& tv, bool keep_head = false);

}  // namespace florence::vision
