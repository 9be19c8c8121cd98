#pragma once
// Flags shared by the evaluation commands (eval, embed, classify): model, checkpoint, vocabulary,
// device and the eval preprocessing. Header-only helper for apps/florence/cmd_{eval,embed,classify}.cpp.
#include <CLI/CLI.hpp>

#include "command.h"

#include <memory>
#include <string>

#include "florence/core/error.h"
#include "florence/eval/encode.h"

namespace florence::cli {

struct EvalFlags {
  eval::LoadOptions load;
  std::string mean, std, norm;
  double crop_pct = 0;  // 0 = unset

  /// The LoadOptions with the preprocessing flags applied. Throws florence::Error on bad values.
  eval::LoadOptions resolve() const {
    eval::LoadOptions o = load;
    if (!norm.empty()) {
      if (!mean.empty() || !std.empty()) throw Error("give either --norm or --mean/--std, not both");
      auto [m, s] = eval::named_normalization(norm);
      o.preprocess.mean = m;
      o.preprocess.std = s;
    }
    if (!mean.empty()) o.preprocess.mean = eval::parse_triple(mean, "--mean");
    if (!std.empty()) o.preprocess.std = eval::parse_triple(std, "--std");
    if (crop_pct > 0) o.preprocess.crop_pct = crop_pct;
    return o;
  }
};

/// Adds --model --checkpoint --vocab --device --precision --image-size --crop-pct --mean --std --norm
/// --batch-size --workers to `cmd`. `checkpoint_required`: --checkpoint must be given.
inline void add_eval_flags(CLI::App* cmd, const std::shared_ptr<EvalFlags>& f, bool checkpoint_required = true) {
  cmd->add_option("--model", f->load.model, "Registered name or JSON config (default: from the checkpoint's sidecar)");
  auto* ck = cmd->add_option("--checkpoint", f->load.checkpoint, "Model weights (.safetensors with sidecar JSON, or .pt)");
  if (checkpoint_required) ck->required();
  cmd->add_option("--vocab", f->load.vocab, "BPE merges file (default: the one of the checkpoint's pretraining run)");
  cmd->add_option("--device", f->load.device, "Torch device (cpu, cuda, cuda:1, ...)")->capture_default_str();
  cmd->add_option("--precision", f->load.precision,
                  "fp32 | bf16 (bfloat16 weights and activations) | amp_bf16 (bfloat16 autocast); bfloat16 falls back "
                  "to fp32 where the CPU lacks it")
      ->capture_default_str()
      ->check(CLI::IsMember({"fp32", "bf16", "amp_bf16"}));
  cmd->add_option("--image-size", f->load.preprocess.image_size, "Input size in pixels (default: the model's)")
      ->check(florence::cli::positive());
  cmd->add_option("--crop-pct", f->crop_pct,
                  "Resize shorter side to size/crop_pct, then center crop (default: the run's, else 0.875)")
      ->check(CLI::Range(0.01, 1.0));
  cmd->add_option("--mean", f->mean, "Per-channel RGB mean, \"r,g,b\" (default: ImageNet or the run's)");
  cmd->add_option("--std", f->std, "Per-channel RGB std, \"r,g,b\"");
  cmd->add_option("--norm", f->norm, "Named mean/std: clip | imagenet")->check(CLI::IsMember({"clip", "imagenet"}));
  cmd->add_option("--batch-size", f->load.preprocess.batch_size, "Images / texts per forward pass")
      ->capture_default_str()
      ->check(florence::cli::positive());
  cmd->add_option("--workers", f->load.preprocess.num_workers, "Image decode threads (0 = all cores)")
      ->check(florence::cli::non_negative());
}

}  // namespace florence::cli
