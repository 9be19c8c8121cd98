#pragma once
// Video decoding (OpenCV videoio, FFmpeg backend) and clip sampling for the video adapter.
//
// Frames leave the decoder as 8-bit RGB (to_rgb8 in transforms.h swaps OpenCV's BGR) and go through
// the image pipeline of transforms.h: a clip is [T, 3, S, S] float32, every frame with the SAME
// geometry (one crop box and flip for the whole clip in train mode) and the same mean/std.
//
// Frame count: the container's (CAP_PROP_FRAME_COUNT), unless it is absent (<= 0), or decoding
// ends before a frame the sampling needs. In the latter case the stream's decoded time span is
// compared with the container's duration (count / fps):
//   * it reaches the container's end (within 2 frames + 2%): the container counts frames that do
//     not decode (AVI "drop" chunks of size 0: Debian opencv-doc's tree.avi says 444 frames, 68
//     decode): the decoded count replaces it, the indices are recomputed, logged once;
//   * it stops short: the file is truncated -> VideoError "truncated_video".
// A container that under-counts is not noticed unless VideoReadOptions::count_frames is set.
#include <opencv2/core.hpp>
#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "florence/core/error.h"
#include "florence/data/transforms.h"

namespace florence::data {

/// A video that cannot be read. reason() is the skip-count key: "missing_file", "not_a_video"
/// (no decoder opens it: garbage, an image, an unsupported codec), "no_frames", "truncated_video",
/// "video_too_large" (a frame above the pixel guard).
class VideoError : public Error {
 public:
  VideoError(std::string reason, const std::string& what) : Error(what), reason_(std::move(reason)) {}
  const std::string& reason() const { return reason_; }

 private:
  std::string reason_;
};

struct VideoInfo {
  int64_t frames = 0;            ///< frames used for sampling (decoded count when corrected)
  int64_t container_frames = 0;  ///< the container's count (0 when absent)
  double fps = 0;                ///< the container's rate (0 when unknown)
  int width = 0, height = 0;     ///< frame size in pixels
  bool counted = false;          ///< `frames` comes from decoding the stream, not the container
};

struct VideoReadOptions {
  /// Decode the whole stream to count its frames before sampling (exact even when the container
  /// under-counts; costs one extra decoding pass).
  bool count_frames = false;
  /// Largest accepted width * height of a frame (checked from the header, before decoding);
  /// <= 0 disables the guard. Default: the image guard of transforms.h.
  int64_t max_pixels = kDefaultMaxPixels;
};

/// Opens `path` and reads the header: size, fps, the container's count (and with count_frames
/// the decoded count). Throws VideoError (reasons above).
VideoInfo probe_video(const std::string& path, const VideoReadOptions& options = {});

enum class SampleMode {
  kUniform,  ///< T frames spread over the whole video (segment centres, TSN-style)
  kStride,   ///< T consecutive frames `stride` apart (mmaction SampleFrames clip_len / frame_interval)
};

/// "uniform" / "stride" <-> SampleMode. Throws florence::Error on another name.
SampleMode parse_sample_mode(const std::string& name);

struct ClipSampling {
  int frames = 8;   ///< T
  SampleMode mode = SampleMode::kUniform;
  int stride = 2;   ///< frame step in kStride mode
};

/// Frame indices of temporal clip `clip` of `num_clips` for a video of `total` frames:
///   uniform: segment i of T has length total / T; the index is floor((i + (clip + 0.5) / num_clips)
///            * total / T) (clip 0 of 1 = each segment's centre);
///   stride:  start + i * stride with span (T - 1) * stride + 1; start = (total - span) / 2 for one
///            clip, round(clip * (total - span) / (num_clips - 1)) for several (evenly spread,
///            first and last clip touching the ends); a video shorter than the span starts at 0
///            and repeats its last frame.
/// Indices are in [0, total). Throws florence::Error when total < 1, frames < 1, stride < 1 or
/// clip is outside [0, num_clips).
std::vector<int64_t> sample_indices(int64_t total, const ClipSampling& s, int clip = 0, int num_clips = 1);

/// Decoded frames of one video.
struct DecodedVideo {
  VideoInfo info;
  std::vector<int64_t> indices;  ///< the frame indices decoded, as `choose` returned them
  std::vector<cv::Mat> frames;   ///< 8-bit RGB, one per index (duplicates share pixels)
};

/// Decodes the frames `choose(total)` names (any order, repeats allowed) in one sequential pass
/// (grab() up to the last one; no seeking, which is unreliable on many codecs), with the count
/// fallback above (choose is called again with the corrected count). Throws VideoError, or
/// florence::Error when `choose` returns an index outside [0, total).
DecodedVideo decode_frames(const std::string& path, const std::function<std::vector<int64_t>(int64_t)>& choose,
                           const VideoReadOptions& options = {});

/// One preprocessed clip: frames [T, 3, S, S] float32 (transforms.h pipeline, one geometry for the
/// whole clip: the rng state is copied for every frame, so the crop and flip are drawn once).
struct Clip {
  torch::Tensor frames;  ///< [T, 3, S, S]
  VideoInfo info;
  std::vector<int64_t> indices;
};

/// decode_frames(sample_indices(total, sampling)) + `transform` (eval: resize + centre crop; train:
/// one random resized crop + flip per clip from `rng`). Throws VideoError / florence::Error.
Clip read_clip(const std::string& path, const ClipSampling& sampling, const ImageTransform& transform,
               std::mt19937_64& rng, const VideoReadOptions& options = {});
/// Eval-mode convenience: read_clip with `transform` in eval mode and a fixed rng.
Clip read_clip(const std::string& path, const ClipSampling& sampling, const ImageTransform& transform,
               const VideoReadOptions& options = {});

/// Multi-view testing (Video Swin / mmaction: temporal clips x spatial crops).
struct ViewOptions {
  ClipSampling sampling;
  int num_clips = 1;     ///< temporal clips (sample_indices clip 0..num_clips-1)
  int num_crops = 1;     ///< spatial crops: 1 = centre crop; K > 1 = K crops evenly spread along
                         ///< the longer side (first and last at the ends; 3 = mmaction ThreeCrop),
                         ///< centred along the shorter side
  TransformOptions transform;  ///< image_size, crop_pct (shorter side -> floor(S / crop_pct)), mean, std
};

/// All views of one video: [num_clips * num_crops, T, 3, S, S] float32, view v = clip * num_crops
/// + crop. The frames of every clip are decoded in one pass. Throws VideoError / florence::Error
/// (num_clips or num_crops < 1, a crop larger than the resized frame cannot happen: the shorter
/// side is resized to >= S).
struct Views {
  torch::Tensor views;
  VideoInfo info;
};
Views read_views(const std::string& path, const ViewOptions& options, const VideoReadOptions& read = {});

/// The spatial crops of one RGB frame as read_views cuts them: resize the shorter side to
/// floor(S / crop_pct) (bicubic, transforms.h), then `num_crops` S x S boxes (see ViewOptions).
std::vector<cv::Mat> spatial_crops(const cv::Mat& rgb, int num_crops, const TransformOptions& t);

}  // namespace florence::data
