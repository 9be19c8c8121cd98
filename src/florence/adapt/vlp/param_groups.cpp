// AdamW parameter groups of the METER-style model; see param_groups.h.
#include "florence/adapt/vlp/param_groups.h"

#include <map>

#include "florence/core/error.h"

namespace florence::vlp {

namespace {

bool has_suffix(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

/// "towers", "fusion" or "heads" from the top-level module name, "" if none.
std::string part_of(const std::string& name) {
  const std::string top = name.substr(0, name.find('.'));
  if (top == "text_transformer" || top == "vit_model") return "towers";
  if (top.rfind("cross_modal_", 0) == 0 || top == "token_type_embeddings") return "fusion";
  if (top == "itm_score" || top == "mlm_score" || top == "vqa_classifier") return "heads";
  return "";
}

}  // namespace

bool meter_uses_weight_decay(const std::string& name, int64_t ndim) {
  if (ndim < 2) return false;
  for (const char* suffix : {"token_embedding.weight", "positional_embedding", "token_type_embeddings.weight",
                             "relative_position_bias_table", "absolute_pos_embed"}) {
    if (has_suffix(name, suffix)) return false;
  }
  return true;
}

std::vector<ParamGroup> meter_param_groups(const torch::nn::Module& model, double lr_mult_fusion,
                                           double lr_mult_head) {
  if (!(lr_mult_fusion > 0.0) || !(lr_mult_head > 0.0)) {
    throw Error(fmt::format("meter parameter groups: multipliers must be positive, got fusion {} head {}",
                            lr_mult_fusion, lr_mult_head));
  }
  const std::map<std::string, double> scale = {{"towers", 1.0}, {"fusion", lr_mult_fusion}, {"heads", lr_mult_head}};
  std::vector<ParamGroup> groups;
  for (const char* part : {"towers", "fusion", "heads"}) {
    for (bool decay : {true, false}) {
      ParamGroup g;
      g.name = std::string(part) + (decay ? "/decay" : "/no_decay");
      g.lr_scale = scale.at(part);
      g.weight_decay = decay;
      groups.push_back(std::move(g));
    }
  }
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    const torch::Tensor& p = item.value();
    if (!p.requires_grad()) continue;
    const std::string part = part_of(item.key());
    if (part.empty()) throw Error("meter parameter groups: parameter '" + item.key() + "' belongs to no group");
    const size_t base = part == "towers" ? 0 : part == "fusion" ? 2 : 4;
    auto& g = groups[base + (meter_uses_weight_decay(item.key(), p.dim()) ? 0 : 1)];
    g.names.push_back(item.key());
    g.params.push_back(p);
  }
  std::vector<ParamGroup> out;
  for (auto& g : groups) {
    if (!g.params.empty()) out.push_back(std::move(g));
  }
  return out;
}

std::vector<torch::optim::OptimizerParamGroup> adamw_groups(const std::vector<ParamGroup>& groups, double lr,
                                                            double weight_decay) {
  std::vector<torch::optim::OptimizerParamGroup> out;
  for (const auto& g : groups) {
    auto opt = std::make_unique<torch::optim::AdamWOptions>(lr * g.lr_scale);
    opt->weight_decay(g.weight_decay ? weight_decay : 0.0);
    out.emplace_back(g.params, std::move(opt));
  }
  return out;
}

}  // namespace florence::vlp
