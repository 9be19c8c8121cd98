// Video CoSwin: config, module and 2D -> 3D inflation; see video_swin.h.
#include "florence/vision/video_swin.h"

#include "florence/core/error.h"
#include "florence/core/strings.h"
#include "florence/vision/json_field.h"
#include "florence/vision/video_swin_layers.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <regex>

namespace florence::vision {

// ------------------------------------------------------------------------------------ config

std::array<int, 3> VideoSwinConfig::window(int stage) const {
  if (!windows.empty()) return windows.at(static_cast<size_t>(stage));
  const int w = image.window_size;
  return {stage + 1 < image.num_stages() ? 2 : 8, w, w};
}

nlohmann::json VideoSwinConfig::to_json() const {
  nlohmann::json w = nlohmann::json::array();
  for (const auto& x : windows) w.push_back({x[0], x[1], x[2]});
  return {{"image", image.to_json()},
          {"tube", tube},
          {"merge", {{"kernel", merge.kernel}, {"stride", merge.stride}, {"padding", merge.padding}}},
          {"windows", w},
          {"num_frames", num_frames},
          {"num_classes", num_classes}};
}

VideoSwinConfig VideoSwinConfig::from_json(const nlohmann::json& j) {
  if (!j.is_object()) throw Error(fmt::format("VideoSwinConfig: expected a JSON object, got {}", j.type_name()));
  VideoSwinConfig c;
  for (const auto& [key, v] : j.items()) {
    if (key == "image") {
      try {
        c.image = SwinConfig::from_json(v);
      } catch (const Error& e) {
        throw Error(fmt::format("VideoSwinConfig: field 'image': {}", e.what()));
      }
    } else if (key == "tube") {
      c.tube = detail::json_field<int>(v, "VideoSwinConfig", key);
    } else if (key == "merge") {
      if (!v.is_object()) throw Error("VideoSwinConfig: field 'merge' must be an object");
      for (const auto& [mk, mv] : v.items()) {
        const std::string field = "merge." + mk;
        if (mk == "kernel") c.merge.kernel = detail::json_field<int>(mv, "VideoSwinConfig", field);
        else if (mk == "stride") c.merge.stride = detail::json_field<int>(mv, "VideoSwinConfig", field);
        else if (mk == "padding") c.merge.padding = detail::json_field<int>(mv, "VideoSwinConfig", field);
        else throw Error(fmt::format("VideoSwinConfig: unknown field '{}'", field));
      }
    } else if (key == "windows") {
      c.windows = detail::json_field<std::vector<std::array<int, 3>>>(v, "VideoSwinConfig", key);
    } else if (key == "num_frames") {
      c.num_frames = detail::json_field<int>(v, "VideoSwinConfig", key);
    } else if (key == "num_classes") {
      c.num_classes = detail::json_field<int>(v, "VideoSwinConfig", key);
    } else {
      throw Error(fmt::format("VideoSwinConfig: unknown field '{}'", key));
    }
  }
  return c;
}

void VideoSwinConfig::validate() const {
  auto fail = [](const std::string& msg) { throw Error("VideoSwinConfig: " + msg); };
  try {
    image.validate();
  } catch (const Error& e) {
    fail(fmt::format("field 'image': {}", e.what()));
  }
  if (image.variant != "coswin") {
    fail(fmt::format("image.variant must be \"coswin\" (Video CoSwin inflates conv embeddings), got \"{}\"",
                     image.variant));
  }
  if (image.num_classes != 0) fail("image.num_classes must be 0 (the video head is num_classes)");
  if (tube < 1) fail(fmt::format("tube must be >= 1, got {}", tube));
  if (merge.kernel < 1 || merge.stride < 1 || merge.padding < 0) {
    fail(fmt::format("merge needs kernel >= 1, stride >= 1, padding >= 0 (got {}, {}, {})", merge.kernel,
                     merge.stride, merge.padding));
  }
  if (!windows.empty() && static_cast<int>(windows.size()) != image.num_stages()) {
    fail(fmt::format("windows has {} entries for {} stages", windows.size(), image.num_stages()));
  }
  for (int i = 0; i < image.num_stages(); ++i) {
    const auto w = window(i);
    if (w[0] < 1 || w[1] < 1 || w[2] < 1) fail(fmt::format("windows[{}] = ({}) must be >= 1 on every axis", i, fmt::join(w, ", ")));
  }
  if (num_frames < 1) fail(fmt::format("num_frames must be >= 1, got {}", num_frames));
  if (num_classes < 0) fail(fmt::format("num_classes must be >= 0, got {}", num_classes));
}

// ------------------------------------------------------------------------------------ module

namespace {

/// One stage: `blocks.{j}` then (all stages but the last) `downsample`.
class VideoStageImpl : public torch::nn::Module {
 public:
  torch::nn::ModuleList blocks_list{nullptr};
  std::vector<SwinBlock3d> blocks;
  ConvEmbed3d downsample{nullptr};
};

}  // namespace

struct VideoSwinTransformerImpl::Impl {
  ConvEmbed3d patch_embed{nullptr};
  torch::nn::ModuleList layers{nullptr};
  std::vector<std::shared_ptr<VideoStageImpl>> stages;
  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Linear head{nullptr};
};

VideoSwinTransformerImpl::VideoSwinTransformerImpl(const VideoSwinConfig& cfg)
    : cfg_(cfg), impl_(std::make_shared<Impl>()) {
  cfg_.validate();
  const SwinConfig& im = cfg_.image;
  const double eps = im.norm_eps;
  const auto& pe = im.patch_embed;
  impl_->patch_embed = register_module(
      "patch_embed", ConvEmbed3d(im.in_chans, im.embed_dim, Size3{cfg_.tube, pe.kernel, pe.kernel},
                                 Size3{cfg_.tube, pe.stride, pe.stride}, Size3{0, pe.padding, pe.padding},
                                 im.patch_norm, eps));
  impl_->layers = register_module("layers", torch::nn::ModuleList());

  int total = 0;
  for (int d : im.depths) total += d;
  int block_id = 0;
  for (int i = 0; i < im.num_stages(); ++i) {
    auto stage = std::make_shared<VideoStageImpl>();
    stage->blocks_list = stage->register_module("blocks", torch::nn::ModuleList());
    const int64_t dim = im.stage_dim(i);
    const auto w = cfg_.window(i);
    for (int j = 0; j < im.depths[i]; ++j, ++block_id) {
      SwinBlock3dOptions o;
      o.attn.dim = dim;
      o.attn.num_heads = im.num_heads[i];
      o.attn.window = {w[0], w[1], w[2]};
      // Swin / Video Swin: shift floor(W/2) per axis on odd blocks.
      if (j % 2 == 1) o.attn.shift = {w[0] / 2, w[1] / 2, w[2] / 2};
      o.attn.qkv_bias = im.qkv_bias;
      o.attn.attn_drop = im.attn_drop_rate;
      o.attn.proj_drop = im.drop_rate;
      o.mlp_ratio = im.mlp_ratio;
      o.drop = im.drop_rate;
      o.drop_path = total > 1 ? im.drop_path_rate * block_id / (total - 1) : 0.0;
      o.layer_scale_init = im.layer_scale_init;
      o.norm_eps = eps;
      SwinBlock3d block(o);
      stage->blocks_list->push_back(block);
      stage->blocks.push_back(block);
    }
    if (i + 1 < im.num_stages()) {
      const auto& ds = im.downsample;
      stage->downsample = stage->register_module(
          "downsample", ConvEmbed3d(dim, 2 * dim, Size3{cfg_.merge.kernel, ds.kernel, ds.kernel},
                                    Size3{cfg_.merge.stride, ds.stride, ds.stride},
                                    Size3{cfg_.merge.padding, ds.padding, ds.padding}, true, eps));
    }
    impl_->layers->push_back(stage);
    impl_->stages.push_back(stage);
  }
  const int64_t nf = im.num_features();
  impl_->norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({nf}).eps(eps)));
  if (cfg_.num_classes > 0) impl_->head = register_module("head", torch::nn::Linear(nf, cfg_.num_classes));

  init_linears_trunc_normal(*this);  // as the 2D tower (swin_layers.h)
}

torch::Tensor VideoSwinTransformerImpl::forward_features(const torch::Tensor& x, std::vector<torch::Tensor>* stages) {
  if (x.dim() != 5 || x.size(1) != cfg_.image.in_chans) {
    throw Error(fmt::format("VideoSwinTransformer: expected input [B, {}, T, H, W], got {}", cfg_.image.in_chans,
                            fmt::join(x.sizes(), "x")));
  }
  if (stages) stages->clear();
  auto t = impl_->patch_embed->forward_ncthw(x);  // [B, T', H', W', C]
  if (cfg_.image.drop_rate > 0.0) {
    t = torch::nn::functional::dropout(
        t, torch::nn::functional::DropoutFuncOptions().p(cfg_.image.drop_rate).training(is_training()));
  }
  const int S = cfg_.image.num_stages();
  for (int i = 0; i < S; ++i) {
    auto& stage = impl_->stages[static_cast<size_t>(i)];
    for (auto& b : stage->blocks) t = b(t);
    if (i + 1 == S) t = impl_->norm(t);
    if (stages) stages->push_back(t.permute({0, 4, 1, 2, 3}).contiguous());
    if (i + 1 < S) t = stage->downsample(t);
  }
  return t.mean({1, 2, 3});  // average over all T' x H' x W' tokens -> [B, C_last]
}

torch::Tensor VideoSwinTransformerImpl::forward(const torch::Tensor& x) {
  auto f = forward_features(x);
  if (!impl_->head.is_empty()) return impl_->head(f);
  return f;
}

// ------------------------------------------------------------------------------------ inflation

namespace {

// [O, I, k, k] -> [O, I, kt, k, k], each temporal tap = the 2D kernel / kt, so a still clip gives
// the 2D response (Florence §2.5; I3D's inflation).
torch::Tensor inflate_kernel(const torch::Tensor& w, int64_t kt, const std::string& key) {
  if (w.dim() != 4) throw Error(fmt::format("inflate_from_2d: '{}' must be a 4-D conv kernel, got [{}]", key, fmt::join(w.sizes(), ", ")));
  return (w.unsqueeze(2).repeat({1, 1, kt, 1, 1}) / static_cast<double>(kt)).contiguous();
}

torch::Tensor inflate_table(const torch::Tensor& t, int w2d, const std::array<int, 3>& win, const std::string& key) {
  const int64_t s2d = 2 * w2d - 1;
  if (t.dim() != 2 || t.size(0) != s2d * s2d) {
    throw Error(fmt::format("inflate_from_2d: '{}' has shape [{}], expected [{}, heads] for the 2D window {}", key,
                            fmt::join(t.sizes(), ", "), s2d * s2d, w2d));
  }
  const int64_t heads = t.size(1), sh = 2 * win[1] - 1, sw = 2 * win[2] - 1;
  torch::Tensor table = t;
  if (sh != s2d || sw != s2d) {
    // Video Swin inflate_weights: bicubic resize of the (2W-1) x (2W-1) offset grid per head.
    namespace F = torch::nn::functional;
    auto grid = t.to(torch::kFloat32).permute({1, 0}).reshape({1, heads, s2d, s2d});
    grid = F::interpolate(grid, F::InterpolateFuncOptions()
                                    .size(std::vector<int64_t>{sh, sw})
                                    .mode(torch::kBicubic)
                                    .align_corners(false));
    table = grid.reshape({heads, sh * sw}).permute({1, 0}).to(t.dtype());
  }
  // The temporal offset is the most significant part of the 3D index: one copy per offset.
  return table.repeat({2 * win[0] - 1, 1}).contiguous();
}


}  // namespace

core::TensorMap inflate_from_2d(const core::TensorMap& image_state, const VideoSwinConfig& cfg) {
  cfg.validate();
  torch::NoGradGuard no_grad;  // the inflated tensors are new leaves, not views into the 2D graph
  if (!image_state.count("patch_embed.proj.weight")) {
    throw Error("inflate_from_2d: the 2D state dict has no 'patch_embed.proj.weight' (not a bare CoSwin tower? "
                "a two-tower checkpoint's image tower is under 'image_encoder.')");
  }
  static const std::regex downsample_re(R"(^layers\.(\d+)\.downsample\.proj\.weight$)");
  static const std::regex table_re(R"(^layers\.(\d+)\.blocks\.\d+\.attn\.relative_position_bias_table$)");
  core::TensorMap out;
  int dropped_head = 0;
  for (const auto& [key, value] : image_state) {
    std::smatch m;
    if (core::ends_with(key, "relative_position_index") || core::ends_with(key, "attn_mask")) continue;  // derived
    if (key == "patch_embed.proj.weight") {
      out[key] = inflate_kernel(value, cfg.tube, key);
    } else if (std::regex_match(key, m, downsample_re)) {
      out[key] = inflate_kernel(value, cfg.merge.kernel, key);
    } else if (std::regex_match(key, m, table_re)) {
      const int stage = std::stoi(m[1].str());
      if (stage >= cfg.image.num_stages()) {
        throw Error(fmt::format("inflate_from_2d: '{}' names stage {} of a {}-stage tower", key, stage,
                                cfg.image.num_stages()));
      }
      out[key] = inflate_table(value, cfg.image.window_size, cfg.window(stage), key);
    } else if (key == "head.weight" || key == "head.bias") {
      if (cfg.num_classes > 0 && value.size(0) == cfg.num_classes) out[key] = value;
      else ++dropped_head;
    } else {
      out[key] = value;
    }
  }
  if (dropped_head) {
    spdlog::info("inflate_from_2d: the 2D head does not match num_classes = {}; the video head starts fresh",
                 cfg.num_classes);
  }
  return out;
}

void load_inflated(VideoSwinTransformer& model, const core::TensorMap& image_state) {
  core::TensorMap inflated = inflate_from_2d(image_state, model->config());
  if (model->config().num_classes > 0 && !inflated.count("head.weight")) {
    // Keep the fresh head: add the model's own tensors so the strict load sees every key.
    for (const auto& p : model->named_parameters()) {
      if (p.key().rfind("head.", 0) == 0) inflated[p.key()] = p.value().detach().clone();
    }
  }
  core::load_state_dict(*model, inflated);
}

}  // namespace florence::vision
