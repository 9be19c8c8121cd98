#pragma once
// The video side of Florence: a Video CoSwin tower inflated from a two-tower checkpoint's image
// tower, with that checkpoint's image projection mapping the pooled clip feature into the joint
// image-text space; and the multi-view testing helper (temporal clips x spatial crops averaged,
// Video Swin / mmaction's test protocol) that evaluation tasks call.
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <functional>

#include "florence/data/video.h"
#include "florence/model/florence.h"
#include "florence/vision/video_swin.h"

namespace florence::video {

/// Video CoSwin + projection. Names mirror FlorenceModel's image side (`image_encoder.*` with the
/// 2D tower's names inside, `image_projection` [C_last, D]) so the inflated state dict is the 2D
/// one with its inflated tensors.
class VideoEncoderImpl : public torch::nn::Module {
 public:
  /// cfg.num_classes must be 0 (a classifier is VideoSwinTransformer with a head).
  /// Throws florence::Error on an invalid config or embed_dim < 1.
  VideoEncoderImpl(const vision::VideoSwinConfig& cfg, int64_t embed_dim);
  /// clips: [B, 3, T, H, W] float32 normalised frames -> [B, D] L2-normalised clip embeddings.
  torch::Tensor forward(const torch::Tensor& clips);
  /// The pooled tower feature [B, C_last] (before the projection).
  torch::Tensor features(const torch::Tensor& clips);

  vision::VideoSwinTransformer image_encoder{nullptr};
  torch::Tensor image_projection;  ///< [C_last, D], no bias
};
TORCH_MODULE(VideoEncoder);

/// Inflates `florence`'s image tower into Video CoSwin (the video fields of `cfg`, the tower of
/// the checkpoint: with_image_tower) and copies its image projection. Eval mode, on the
/// checkpoint's device. Throws florence::Error as vision::load_inflated.
VideoEncoder inflate_encoder(model::FlorenceModel& florence, const vision::VideoSwinConfig& cfg);

/// [..., T, 3, H, W] (data/video.h clips and views) -> [..., 3, T, H, W] (the model's layout).
torch::Tensor to_model_layout(const torch::Tensor& frames);

/// Multi-view averaging: `fn` maps a batch of views [b, 3, T, S, S] to outputs [b, K] (logits,
/// probabilities, embeddings); returns the mean over all V views, [K]. Views go through `fn` in
/// batches of `batch` (0 = all at once). Throws florence::Error when views is not [V, 3, T, S, S]
/// with V >= 1 or fn's output is not [b, K].
torch::Tensor average_views(const std::function<torch::Tensor(const torch::Tensor&)>& fn, const torch::Tensor& views,
                            int64_t batch = 0);

/// data::read_views (num_clips x num_crops views of one video) -> to_model_layout ->
/// average_views. Throws data::VideoError for an unreadable video.
torch::Tensor multi_view(const std::function<torch::Tensor(const torch::Tensor&)>& fn, const std::string& path,
                         const data::ViewOptions& views, int64_t batch = 0, const data::VideoReadOptions& read = {});

}  // namespace florence::video
