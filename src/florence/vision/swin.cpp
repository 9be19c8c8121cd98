// Swin / CoSwin image tower: config (JSON, validation) and the SwinTransformer module.
#include "florence/vision/swin.h"

#include "florence/core/error.h"
#include "florence/vision/json_field.h"
#include "florence/vision/swin_layers.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <set>

namespace florence::vision {

// ------------------------------------------------------------------------------------ config

namespace {

nlohmann::json conv_to_json(const ConvEmbedConfig& c) {
  return {{"kernel", c.kernel}, {"stride", c.stride}, {"padding", c.padding}};
}

ConvEmbedConfig conv_from_json(const nlohmann::json& j, const std::string& name) {
  if (!j.is_object()) throw Error(fmt::format("SwinConfig: field '{}' must be an object", name));
  ConvEmbedConfig c;
  for (const auto& [key, value] : j.items()) {
    const std::string field = name + "." + key;
    if (key == "kernel") c.kernel = detail::json_field<int>(value, "SwinConfig", field);
    else if (key == "stride") c.stride = detail::json_field<int>(value, "SwinConfig", field);
    else if (key == "padding") c.padding = detail::json_field<int>(value, "SwinConfig", field);
    else throw Error(fmt::format("SwinConfig: unknown field '{}'", field));
  }
  return c;
}

void check_conv(const ConvEmbedConfig& c, const std::string& name) {
  if (c.kernel < 1 || c.stride < 1 || c.padding < 0) {
    throw Error(fmt::format("SwinConfig: {} needs kernel >= 1, stride >= 1, padding >= 0 (got {}, {}, {})", name,
                            c.kernel, c.stride, c.padding));
  }
}

}  // namespace

nlohmann::json SwinConfig::to_json() const {
  return {{"variant", variant},
          {"in_chans", in_chans},
          {"embed_dim", embed_dim},
          {"depths", depths},
          {"num_heads", num_heads},
          {"window_size", window_size},
          {"mlp_ratio", mlp_ratio},
          {"qkv_bias", qkv_bias},
          {"drop_rate", drop_rate},
          {"attn_drop_rate", attn_drop_rate},
          {"drop_path_rate", drop_path_rate},
          {"layer_scale_init", layer_scale_init},
          {"norm_eps", norm_eps},
          {"patch_norm", patch_norm},
          {"patch_embed", conv_to_json(patch_embed)},
          {"downsample", conv_to_json(downsample)},
          {"num_classes", num_classes},
          {"image_size", image_size}};
}

SwinConfig SwinConfig::from_json(const nlohmann::json& j) {
  if (!j.is_object()) throw Error(fmt::format("SwinConfig: expected a JSON object, got {}", j.type_name()));
  SwinConfig c;
  for (const auto& [key, v] : j.items()) {
    if (key == "variant") c.variant = detail::json_field<std::string>(v, "SwinConfig", key);
    else if (key == "in_chans") c.in_chans = detail::json_field<int>(v, "SwinConfig", key);
    else if (key == "embed_dim") c.embed_dim = detail::json_field<int>(v, "SwinConfig", key);
    else if (key == "depths") c.depths = detail::json_field<std::vector<int>>(v, "SwinConfig", key);
    else if (key == "num_heads") c.num_heads = detail::json_field<std::vector<int>>(v, "SwinConfig", key);
    else if (key == "window_size") c.window_size = detail::json_field<int>(v, "SwinConfig", key);
    else if (key == "mlp_ratio") c.mlp_ratio = detail::json_field<double>(v, "SwinConfig", key);
    else if (key == "qkv_bias") c.qkv_bias = detail::json_field<bool>(v, "SwinConfig", key);
    else if (key == "drop_rate") c.drop_rate = detail::json_field<double>(v, "SwinConfig", key);
    else if (key == "attn_drop_rate") c.attn_drop_rate = detail::json_field<double>(v, "SwinConfig", key);
    else if (key == "drop_path_rate") c.drop_path_rate = detail::json_field<double>(v, "SwinConfig", key);
    else if (key == "layer_scale_init") c.layer_scale_init = detail::json_field<double>(v, "SwinConfig", key);
    else if (key == "norm_eps") c.norm_eps = detail::json_field<double>(v, "SwinConfig", key);
    else if (key == "patch_norm") c.patch_norm = detail::json_field<bool>(v, "SwinConfig", key);
    else if (key == "patch_embed") c.patch_embed = conv_from_json(v, key);
    else if (key == "downsample") c.downsample = conv_from_json(v, key);
    else if (key == "num_classes") c.num_classes = detail::json_field<int>(v, "SwinConfig", key);
    else if (key == "image_size") c.image_size = detail::json_field<int>(v, "SwinConfig", key);
    else throw Error(fmt::format("SwinConfig: unknown field '{}'", key));
  }
  return c;
}

void SwinConfig::validate() const {
  auto fail = [](const std::string& msg) { throw Error("SwinConfig: " + msg); };
  if (variant != "coswin" && variant != "swin") fail(fmt::format("variant must be \"coswin\" or \"swin\", got \"{}\"", variant));
  if (in_chans < 1) fail(fmt::format("in_chans must be >= 1, got {}", in_chans));
  if (embed_dim < 1) fail(fmt::format("embed_dim must be >= 1, got {}", embed_dim));
  if (depths.empty()) fail("depths is empty");
  if (depths.size() > 8) fail(fmt::format("at most 8 stages are supported, got {}", depths.size()));
  if (depths.size() != num_heads.size()) {
    fail(fmt::format("depths ({} stages) and num_heads ({} stages) differ in length", depths.size(), num_heads.size()));
  }
  // Bounds far above any real tower (Florence-H: 2-2-18-2 blocks, width 352-2816), so that a forged
  // config fails here instead of exhausting memory block by block.
  if (embed_dim > 16384) fail(fmt::format("embed_dim must be <= 16384, got {}", embed_dim));
  for (int i = 0; i < num_stages(); ++i) {
    if (depths[i] < 1) fail(fmt::format("depths[{}] must be >= 1, got {}", i, depths[i]));
    if (depths[i] > 256) fail(fmt::format("depths[{}] must be <= 256, got {}", i, depths[i]));
    if (num_heads[i] > 1024) fail(fmt::format("num_heads[{}] must be <= 1024, got {}", i, num_heads[i]));
    if (num_heads[i] < 1) fail(fmt::format("num_heads[{}] must be >= 1, got {}", i, num_heads[i]));
    if (stage_dim(i) % num_heads[i] != 0) {
      fail(fmt::format("num_heads[{}] = {} does not divide the stage width {}", i, num_heads[i], stage_dim(i)));
    }
  }
  if (window_size < 1 || window_size > 256) fail(fmt::format("window_size must be in [1, 256], got {}", window_size));
  if (!(mlp_ratio > 0.0) || static_cast<int64_t>(embed_dim * mlp_ratio) < 1) {
    fail(fmt::format("mlp_ratio must give a hidden width >= 1, got {}", mlp_ratio));
  }
  auto check_rate = [&](double r, const char* name) {
    if (!(r >= 0.0 && r < 1.0)) fail(fmt::format("{} must be in [0, 1), got {}", name, r));
  };
  check_rate(drop_rate, "drop_rate");
  check_rate(attn_drop_rate, "attn_drop_rate");
  check_rate(drop_path_rate, "drop_path_rate");
  if (!(layer_scale_init >= 0.0)) fail(fmt::format("layer_scale_init must be >= 0, got {}", layer_scale_init));
  if (!(norm_eps > 0.0)) fail(fmt::format("norm_eps must be > 0, got {}", norm_eps));
  check_conv(patch_embed, "patch_embed");
  check_conv(downsample, "downsample");
  if (num_classes < 0) fail(fmt::format("num_classes must be >= 0, got {}", num_classes));
  if (image_size < 1) fail(fmt::format("image_size must be >= 1, got {}", image_size));
}

// ------------------------------------------------------------------------------------ module

namespace {

/// One stage: `blocks.{j}` then (all stages but the last) `downsample`.
class SwinStageImpl : public torch::nn::Module {
 public:
  torch::nn::ModuleList blocks_list{nullptr};
  std::vector<SwinBlock> blocks;
  PatchMerging merge{nullptr};  // variant "swin"
  ConvEmbed conv{nullptr};      // variant "coswin"

  torch::Tensor run_blocks(torch::Tensor x) {
    for (auto& b : blocks) x = b(x);
    return x;
  }
  torch::Tensor run_downsample(const torch::Tensor& x) {
    if (!merge.is_empty()) return merge(x);
    if (!conv.is_empty()) return conv(x);
    return x;
  }
};

}  // namespace

struct SwinTransformerImpl::Impl {
  ConvEmbed patch_embed{nullptr};
  torch::nn::ModuleList layers{nullptr};
  std::vector<std::shared_ptr<SwinStageImpl>> stages;
  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Linear head{nullptr};
};

SwinTransformerImpl::SwinTransformerImpl(const SwinConfig& cfg) : cfg_(cfg), impl_(std::make_shared<Impl>()) {
  cfg_.validate();
  const bool coswin = cfg_.variant == "coswin";
  const double eps = cfg_.norm_eps;
  impl_->patch_embed = register_module(
      "patch_embed", ConvEmbed(cfg_.in_chans, cfg_.embed_dim, cfg_.patch_embed.kernel, cfg_.patch_embed.stride,
                               cfg_.patch_embed.padding, cfg_.patch_norm, eps));
  impl_->layers = register_module("layers", torch::nn::ModuleList());

  // Stochastic depth grows linearly from 0 (first block) to drop_path_rate (last block),
  // as torch.linspace(0, rate, sum(depths)) in the Swin reference.
  int total = 0;
  for (int d : cfg_.depths) total += d;
  int block_id = 0;
  for (int i = 0; i < cfg_.num_stages(); ++i) {
    auto stage = std::make_shared<SwinStageImpl>();
    stage->blocks_list = stage->register_module("blocks", torch::nn::ModuleList());
    const int64_t dim = cfg_.stage_dim(i);
    for (int j = 0; j < cfg_.depths[i]; ++j, ++block_id) {
      SwinBlockOptions o;
      o.attn.dim = dim;
      o.attn.num_heads = cfg_.num_heads[i];
      o.attn.window = cfg_.window_size;
      o.attn.shift = (j % 2 == 1) ? cfg_.window_size / 2 : 0;  // Swin §3.2: shift floor(W/2) on odd blocks
      o.attn.qkv_bias = cfg_.qkv_bias;
      o.attn.attn_drop = cfg_.attn_drop_rate;
      o.attn.proj_drop = cfg_.drop_rate;
      o.mlp_ratio = cfg_.mlp_ratio;
      o.drop = cfg_.drop_rate;
      o.drop_path = total > 1 ? cfg_.drop_path_rate * block_id / (total - 1) : 0.0;
      o.layer_scale_init = cfg_.layer_scale_init;
      o.norm_eps = eps;
      SwinBlock block(o);
      stage->blocks_list->push_back(block);
      stage->blocks.push_back(block);
    }
    if (i + 1 < cfg_.num_stages()) {
      if (coswin) {
        stage->conv = stage->register_module(
            "downsample", ConvEmbed(dim, 2 * dim, cfg_.downsample.kernel, cfg_.downsample.stride,
                                    cfg_.downsample.padding, true, eps));
      } else {
        stage->merge = stage->register_module("downsample", PatchMerging(dim, eps));
      }
    }
    impl_->layers->push_back(stage);
    impl_->stages.push_back(stage);
  }
  const int64_t nf = cfg_.num_features();
  impl_->norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({nf}).eps(eps)));
  if (cfg_.num_classes > 0) impl_->head = register_module("head", torch::nn::Linear(nf, cfg_.num_classes));

  // Swin reference init (_init_weights): Linear weights truncated normal std 0.02, biases 0;
  // LayerNorm 1/0 (LibTorch default); convs keep LibTorch's default (kaiming-uniform).
  init_linears_trunc_normal(*this);
}

torch::Tensor SwinTransformerImpl::forward_features(const torch::Tensor& x, std::vector<torch::Tensor>* stages) {
  if (x.dim() != 4 || x.size(1) != cfg_.in_chans) {
    throw Error(fmt::format("SwinTransformer: expected input [B, {}, H, W], got {}", cfg_.in_chans,
                            fmt::join(x.sizes(), "x")));
  }
  if (stages) stages->clear();
  auto t = impl_->patch_embed->forward_nchw(x);  // [B, H, W, C]
  if (cfg_.drop_rate > 0.0) {
    t = torch::nn::functional::dropout(t, torch::nn::functional::DropoutFuncOptions().p(cfg_.drop_rate).training(is_training()));
  }
  const int S = cfg_.num_stages();
  for (int i = 0; i < S; ++i) {
    auto& stage = impl_->stages[static_cast<size_t>(i)];
    t = stage->run_blocks(t);
    if (i + 1 == S) t = impl_->norm(t);
    if (stages) stages->push_back(t.permute({0, 3, 1, 2}).contiguous());
    if (i + 1 < S) t = stage->run_downsample(t);
  }
  return t.mean({1, 2});  // global average pooling over the H x W tokens -> [B, C_last]
}

torch::Tensor SwinTransformerImpl::forward(const torch::Tensor& x) {
  auto f = forward_features(x);
  if (!impl_->head.is_empty()) return impl_->head(f);
  return f;
}

}  // namespace florence::vision
