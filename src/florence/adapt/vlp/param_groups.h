#pragma once
// AdamW parameter groups of the METER-style model (METER meter/modules/meter_utils.py
// set_schedule): the pretrained towers train at the base learning rate, the fusion
// (`cross_modal_*`, `token_type_embeddings`) at lr x lr_mult_fusion and the heads (`itm_score`,
// `mlm_score`, `vqa_classifier`) at lr x lr_mult_head. METER's values: 5 / 5 for ITM+MLM
// pretraining, 5 / 50 for VQA fine-tuning (config.py task_mlm_itm_*, task_finetune_vqa_*).
// Weight decay: none on biases and norms (every tensor with fewer than 2 dimensions) and none on
// embeddings (`token_embedding`, `positional_embedding`, `token_type_embeddings`) and Swin's
// `relative_position_bias_table` / `absolute_pos_embed`; all other weights decay.
#include <torch/nn/module.h>
#include <torch/optim/adamw.h>
#include <torch/types.h>

#include <string>
#include <vector>

namespace florence::vlp {

struct ParamGroup {
  std::string name;                 ///< "towers", "fusion" or "heads", + "/decay" or "/no_decay"
  double lr_scale = 1.0;            ///< multiply the schedule's learning rate by this
  bool weight_decay = true;         ///< false: weight decay 0 for this group
  std::vector<std::string> names;   ///< parameter names, in named_parameters() order
  std::vector<torch::Tensor> params;
};

/// True when the parameter `name` with `ndim` dimensions gets weight decay (rule above).
bool meter_uses_weight_decay(const std::string& name, int64_t ndim);

/// The six groups (empty ones left out) of `model`'s trainable parameters (requires_grad), by
/// top-level name: `text_transformer`, `vit_model` -> towers; `cross_modal_*`,
/// `token_type_embeddings` -> fusion; `itm_score`, `mlm_score`, `vqa_classifier` -> heads.
/// Throws florence::Error for a parameter outside these (naming it) or a non-positive multiplier.
std::vector<ParamGroup> meter_param_groups(const torch::nn::Module& model, double lr_mult_fusion = 5.0,
                                           double lr_mult_head = 5.0);

/// LibTorch AdamW groups for `groups` at base learning rate `lr` (each group lr * lr_scale) and
/// `weight_decay` (0 where the group has none), betas/eps as AdamWOptions' defaults otherwise.
std::vector<torch::optim::OptimizerParamGroup> adamw_groups(const std::vector<ParamGroup>& groups, double lr,
                                                            double weight_decay);

}  // namespace florence::vlp
