// Video encoder (inflated tower + projection) and multi-view averaging; see video_model.h.
#include "florence/adapt/video/video_model.h"

#include "florence/adapt/video/configs.h"
#include "florence/core/checkpoint.h"
#include "florence/core/error.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace florence::video {

VideoEncoderImpl::VideoEncoderImpl(const vision::VideoSwinConfig& cfg, int64_t embed_dim) {
  if (cfg.num_classes != 0) throw Error("VideoEncoder: the video config has a classification head (num_classes > 0)");
  if (embed_dim < 1) throw Error(fmt::format("VideoEncoder: embed_dim must be >= 1, got {}", embed_dim));
  image_encoder = register_module("image_encoder", vision::VideoSwinTransformer(cfg));
  image_projection = register_parameter(
      "image_projection", torch::randn({cfg.image.num_features(), embed_dim}) * std::pow(cfg.image.num_features(), -0.5));
}

torch::Tensor VideoEncoderImpl::features(const torch::Tensor& clips) { return image_encoder(clips); }

torch::Tensor VideoEncoderImpl::forward(const torch::Tensor& clips) {
  auto z = torch::matmul(features(clips), image_projection);
  return torch::nn::functional::normalize(z, torch::nn::functional::NormalizeFuncOptions().dim(-1));
}

VideoEncoder inflate_encoder(model::FlorenceModel& florence, const vision::VideoSwinConfig& cfg) {
  const vision::VideoSwinConfig vc = with_image_tower(cfg, florence->config().vision);
  VideoEncoder enc(vc, florence->config().embed_dim);
  const auto device = florence->image_projection.device();
  vision::load_inflated(enc->image_encoder, core::state_dict(*florence->image_encoder));
  {
    torch::NoGradGuard ng;
    enc->image_projection.copy_(florence->image_projection.detach().cpu());
  }
  enc->to(device);
  enc->eval();
  return enc;
}

torch::Tensor to_model_layout(const torch::Tensor& frames) {
  if (frames.dim() < 4) {
    throw Error(fmt::format("to_model_layout: expected [..., T, 3, H, W], got [{}]", fmt::join(frames.sizes(), ", ")));
  }
  const int64_t d = frames.dim();
  std::vector<int64_t> order;
  for (int64_t i = 0; i < d - 4; ++i) order.push_back(i);
  order.insert(order.end(), {d - 3, d - 4, d - 2, d - 1});
  return frames.permute(order).contiguous();
}

torch::Tensor average_views(const std::function<torch::Tensor(const torch::Tensor&)>& fn, const torch::Tensor& views,
                            int64_t batch) {
  if (views.dim() != 5 || views.size(0) < 1) {
    throw Error(fmt::format("average_views: expected views [V, 3, T, S, S] with V >= 1, got [{}]",
                            fmt::join(views.sizes(), ", ")));
  }
  const int64_t V = views.size(0), b = batch > 0 ? batch : V;
  torch::Tensor sum;
  for (int64_t s = 0; s < V; s += b) {
    const int64_t e = std::min(V, s + b);
    torch::Tensor out = fn(views.slice(0, s, e));
    if (out.dim() != 2 || out.size(0) != e - s) {
      throw Error(fmt::format("average_views: fn returned [{}] for {} views, expected [{}, K]",
                              fmt::join(out.sizes(), ", "), e - s, e - s));
    }
    torch::Tensor part = out.to(torch::kFloat64).sum(0);
    sum = sum.defined() ? sum + part : part;
  }
  return (sum / static_cast<double>(V)).to(torch::kFloat32);
}

torch::Tensor multi_view(const std::function<torch::Tensor(const torch::Tensor&)>& fn, const std::string& path,
                         const data::ViewOptions& views, int64_t batch, const data::VideoReadOptions& read) {
  data::Views v = data::read_views(path, views, read);
  return average_views(fn, to_model_layout(v.views), batch);
}

}  // namespace florence::video
