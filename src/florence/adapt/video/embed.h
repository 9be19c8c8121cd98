#pragma once
// `florence video embed`: L2-normalised clip embeddings in a Florence checkpoint's joint space, from
// its image tower inflated to Video CoSwin (video_model.h).
#include <torch/types.h>

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "florence/data/readers.h"
#include "florence/data/video.h"
#include "florence/eval/encode.h"
#include "florence/vision/video_swin.h"

namespace florence::video {

struct VideoEmbedOptions {
  /// Checkpoint, model, device and the eval preprocessing (image size, crop_pct, mean / std; the
  /// checkpoint's own unless overridden), as for image embeddings (eval/encode.h).
  eval::LoadOptions load;
  /// Video fields (configs.h): a registered name or JSON; applied to the checkpoint's tower with
  /// with_image_tower. Empty: video-nano's (tube 2, merging 3/1/1, temporal windows 2, 2, ..., 4).
  std::string video_config;
  data::ClipSampling sampling;  ///< frames per clip and how they are picked
  int num_clips = 1;            ///< temporal clips averaged (multi-view)
  int num_crops = 1;            ///< spatial crops averaged (multi-view)
  data::VideoReadOptions read;
};

struct VideoEmbedResult {
  torch::Tensor embeds;                 ///< [N, D] float32, unit rows (undefined when none was read)
  std::vector<std::string> keys;        ///< the video paths, row order
  std::vector<data::VideoInfo> infos;   ///< row order
  data::SkipCounts skipped;             ///< unreadable videos by reason (data::VideoError::reason)
  std::vector<std::string> skipped_paths;
  vision::VideoSwinConfig config;       ///< the inflated tower's config
  nlohmann::json model_info;            ///< eval::EvalModel::describe() + video fields
  int image_size = 0;                   ///< frame size after preprocessing (S x S)
  double seconds = 0;                   ///< wall time of decoding + encoding
};

/// Loads the checkpoint, inflates its image tower and embeds each video: views = num_clips x
/// num_crops clips of `sampling.frames` frames, each embedded and L2-normalised, averaged, and
/// the mean normalised again. A video that cannot be read is skipped, counted and logged (never
/// thrown). Throws florence::Error for an empty path list, a checkpoint or config that cannot be
/// loaded, or when no video at all could be read.
VideoEmbedResult embed_videos(const std::vector<std::string>& paths, const VideoEmbedOptions& options);

/// Writes "video_embeds" [N, D] to a safetensors file with metadata "florence.video_embed" = JSON
/// {"format": 1, "model", "video_config", "keys", "videos": [{frames, container_frames, fps, width,
/// height, counted}], "skipped", "skipped_paths", "sampling"} and the same JSON in OUT.json. Written
/// atomically. Throws florence::Error on I/O errors or an empty result.
void save_video_embeddings(const VideoEmbedResult& r, const VideoEmbedOptions& options, const std::string& path);

}  // namespace florence::video
