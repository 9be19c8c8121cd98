// Video decoding and clip sampling; see video.h for the contracts.
#include "florence/data/video.h"

#include <fmt/format.h>
#include <opencv2/imgproc.hpp>
#include <opencv2/videoio.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <map>

namespace florence::data {

namespace {

// The decoded stream may end this far before the container's stated end and still count as
// complete (timestamps are per frame; the last frame's own duration is added).
constexpr double kSpanSlackFrames = 2.0;
constexpr double kSpanSlackFraction = 0.02;

// Opens `cap` on `path` (closing what it held).
void open_capture(cv::VideoCapture& cap, const std::string& path) {
  cap.release();
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    throw VideoError("missing_file", fmt::format("video '{}': no such file", path));
  }
  try {
    cap.open(path, cv::CAP_FFMPEG);
  } catch (const cv::Exception& e) {
    throw VideoError("not_a_video", fmt::format("video '{}': the FFmpeg backend cannot open it ({})", path, e.what()));
  }
  if (!cap.isOpened()) {
    throw VideoError("not_a_video",
                     fmt::format("video '{}': the FFmpeg backend cannot open it (not a video, or an unsupported "
                                 "container / codec)",
                                 path));
  }
}

VideoInfo header_info(cv::VideoCapture& cap, const std::string& path, const VideoReadOptions& o) {
  VideoInfo info;
  const double count = cap.get(cv::CAP_PROP_FRAME_COUNT);
  const double fps = cap.get(cv::CAP_PROP_FPS);
  info.container_frames = std::isfinite(count) && count > 0 ? static_cast<int64_t>(std::llround(count)) : 0;
  info.fps = std::isfinite(fps) && fps > 0 ? fps : 0.0;
  info.width = static_cast<int>(cap.get(cv::CAP_PROP_FRAME_WIDTH));
  info.height = static_cast<int>(cap.get(cv::CAP_PROP_FRAME_HEIGHT));
  info.frames = info.container_frames;
  if (o.max_pixels > 0 && int64_t(info.width) * info.height > o.max_pixels) {
    throw VideoError("video_too_large", fmt::format("video '{}': frames of {}x{} exceed the limit of {} pixels", path,
                                                    info.width, info.height, o.max_pixels));
  }
  return info;
}

// One sequential pass: grab frames 0..last, retrieving those in `wanted` (sorted, unique).
// Returns the number of frames grabbed and the largest timestamp seen (ms, -1 if none).
struct PassResult {
  int64_t grabbed = 0;
  double max_msec = -1;
  std::map<int64_t, cv::Mat> frames;
};

PassResult decode_pass(cv::VideoCapture& cap, const std::vector<int64_t>& wanted, int64_t last, const std::string& path) {
  PassResult r;
  size_t next = 0;
  while (r.grabbed <= last) {
    bool ok = false;
    try {
      ok = cap.grab();
    } catch (const cv::Exception& e) {
      throw VideoError("not_a_video", fmt::format("video '{}': decoding failed at frame {} ({})", path, r.grabbed, e.what()));
    }
    if (!ok) break;
    const double msec = cap.get(cv::CAP_PROP_POS_MSEC);
    if (std::isfinite(msec)) r.max_msec = std::max(r.max_msec, msec);
    if (next < wanted.size() && wanted[next] == r.grabbed) {
      cv::Mat bgr;
      if (!cap.retrieve(bgr) || bgr.empty()) {
        throw VideoError("not_a_video", fmt::format("video '{}': frame {} does not decode", path, r.grabbed));
      }
      r.frames[r.grabbed] = to_rgb8(bgr);
      ++next;
    }
    ++r.grabbed;
  }
  return r;
}

// After a pass that ended at `decoded` frames, short of the container's count: truncated file or
// a container counting frames that do not decode? (video.h)
void check_not_truncated(const VideoInfo& info, int64_t decoded, double max_msec, const std::string& path) {
  if (decoded == 0) throw VideoError("no_frames", fmt::format("video '{}': no frame decodes", path));
  const double claimed_ms = info.fps > 0 ? 1000.0 * double(info.container_frames) / info.fps : 0.0;
  const double frame_ms = info.fps > 0 ? 1000.0 / info.fps : 0.0;
  const double span_ms = max_msec >= 0 ? max_msec + frame_ms : 0.0;
  const double slack = kSpanSlackFrames * frame_ms + kSpanSlackFraction * claimed_ms;
  if (info.fps <= 0 || max_msec < 0 || span_ms + slack < claimed_ms) {
    throw VideoError("truncated_video",
                     fmt::format("video '{}': truncated: the container says {} frames ({:.2f} s) but decoding stops "
                                 "after {} frames ({:.2f} s)",
                                 path, info.container_frames, claimed_ms / 1000.0, decoded, span_ms / 1000.0));
  }
  spdlog::info("video '{}': the container says {} frames, {} decode over the same {:.2f} s (frames that do not "
               "decode, e.g. AVI drop chunks); sampling from the decoded count",
               path, info.container_frames, decoded, span_ms / 1000.0);
}

int64_t count_by_decoding(const std::string& path, VideoInfo& info) {
  cv::VideoCapture cap;
  open_capture(cap, path);
  PassResult r = decode_pass(cap, {}, std::numeric_limits<int64_t>::max() - 1, path);
  if (r.grabbed == 0) throw VideoError("no_frames", fmt::format("video '{}': no frame decodes", path));
  if (info.container_frames > 0 && r.grabbed < info.container_frames) {
    check_not_truncated(info, r.grabbed, r.max_msec, path);
  }
  info.frames = r.grabbed;
  info.counted = true;
  return r.grabbed;
}

std::vector<int64_t> checked_choice(const std::function<std::vector<int64_t>(int64_t)>& choose, int64_t total,
                                    const std::string& path) {
  std::vector<int64_t> idx = choose(total);
  if (idx.empty()) throw Error(fmt::format("video '{}': no frame index to decode", path));
  for (int64_t i : idx) {
    if (i < 0 || i >= total) {
      throw Error(fmt::format("video '{}': frame index {} outside [0, {})", path, i, total));
    }
  }
  return idx;
}

}  // namespace

VideoInfo probe_video(const std::string& path, const VideoReadOptions& options) {
  cv::VideoCapture cap;
  open_capture(cap, path);
  VideoInfo info = header_info(cap, path, options);
  cap.release();
  if (options.count_frames || info.container_frames <= 0) count_by_decoding(path, info);
  return info;
}

SampleMode parse_sample_mode(const std::string& name) {
  if (name == "uniform") return SampleMode::kUniform;
  if (name == "stride") return SampleMode::kStride;
  throw Error(fmt::format("unknown frame sampling mode '{}' (uniform | stride)", name));
}

std::vector<int64_t> sample_indices(int64_t total, const ClipSampling& s, int clip, int num_clips) {
  if (total < 1) throw Error(fmt::format("sample_indices: a video needs >= 1 frame, got {}", total));
  if (s.frames < 1) throw Error(fmt::format("sample_indices: frames must be >= 1, got {}", s.frames));
  if (num_clips < 1 || clip < 0 || clip >= num_clips) {
    throw Error(fmt::format("sample_indices: clip {} outside [0, {})", clip, num_clips));
  }
  std::vector<int64_t> idx(static_cast<size_t>(s.frames));
  const int64_t T = s.frames;
  if (s.mode == SampleMode::kUniform) {
    const double offset = (clip + 0.5) / num_clips;
    for (int64_t i = 0; i < T; ++i) {
      const auto v = static_cast<int64_t>(std::floor((double(i) + offset) * double(total) / double(T)));
      idx[static_cast<size_t>(i)] = std::clamp<int64_t>(v, 0, total - 1);
    }
    return idx;
  }
  if (s.stride < 1) throw Error(fmt::format("sample_indices: stride must be >= 1, got {}", s.stride));
  const int64_t span = (T - 1) * s.stride + 1;
  int64_t start = 0;
  if (total > span) {
    start = num_clips == 1 ? (total - span) / 2
                           : static_cast<int64_t>(std::llround(double(clip) * double(total - span) / (num_clips - 1)));
  }
  for (int64_t i = 0; i < T; ++i) idx[static_cast<size_t>(i)] = std::min(start + i * s.stride, total - 1);
  return idx;
}

DecodedVideo decode_frames(const std::string& path, const std::function<std::vector<int64_t>(int64_t)>& choose,
                           const VideoReadOptions& options) {
  DecodedVideo out;
  cv::VideoCapture cap;
  open_capture(cap, path);
  out.info = header_info(cap, path, options);
  if (options.count_frames || out.info.container_frames <= 0) {
    cap.release();
    count_by_decoding(path, out.info);
    open_capture(cap, path);
  }
  for (int attempt = 0; attempt < 2; ++attempt) {
    out.indices = checked_choice(choose, out.info.frames, path);
    std::vector<int64_t> wanted = out.indices;
    std::sort(wanted.begin(), wanted.end());
    wanted.erase(std::unique(wanted.begin(), wanted.end()), wanted.end());
    PassResult r = decode_pass(cap, wanted, wanted.back(), path);
    if (r.grabbed > wanted.back()) {
      out.frames.clear();
      for (int64_t i : out.indices) out.frames.push_back(r.frames.at(i));
      return out;
    }
    // The stream ended before the last frame needed: truncated, or a container over-count.
    if (out.info.counted) {
      throw VideoError("truncated_video", fmt::format("video '{}': decoding stops after {} frames, {} counted before",
                                                      path, r.grabbed, out.info.frames));
    }
    check_not_truncated(out.info, r.grabbed, r.max_msec, path);
    out.info.frames = r.grabbed;
    out.info.counted = true;
    open_capture(cap, path);
  }
  throw VideoError("truncated_video", fmt::format("video '{}': the frame count keeps changing between passes", path));
}

Clip read_clip(const std::string& path, const ClipSampling& sampling, const ImageTransform& transform,
               std::mt19937_64& rng, const VideoReadOptions& options) {
  DecodedVideo d = decode_frames(path, [&](int64_t total) { return sample_indices(total, sampling); }, options);
  const int64_t S = transform.options().image_size;
  Clip c;
  c.info = d.info;
  c.indices = d.indices;
  c.frames = torch::empty({static_cast<int64_t>(d.frames.size()), 3, S, S}, torch::kFloat32);
  const std::mt19937_64 start = rng;
  for (size_t i = 0; i < d.frames.size(); ++i) {
    std::mt19937_64 r = start;  // one geometry for the whole clip
    transform.apply_into(d.frames[i], r, c.frames[static_cast<int64_t>(i)].data_ptr<float>());
    if (i + 1 == d.frames.size()) rng = r;
  }
  return c;
}

Clip read_clip(const std::string& path, const ClipSampling& sampling, const ImageTransform& transform,
               const VideoReadOptions& options) {
  std::mt19937_64 rng(0);
  return read_clip(path, sampling, transform, rng, options);
}

std::vector<cv::Mat> spatial_crops(const cv::Mat& rgb, int num_crops, const TransformOptions& t) {
  if (num_crops < 1) throw Error(fmt::format("spatial_crops: num_crops must be >= 1, got {}", num_crops));
  if (rgb.empty()) throw Error("spatial_crops: empty frame");
  const int S = t.image_size;
  const int shorter = int(std::floor(double(S) / t.crop_pct + 1e-9));  // as ImageTransform's eval geometry
  const auto [w, h] = shorter_side_size(rgb.cols, rgb.rows, shorter);
  const cv::Mat resized = resize_bicubic(rgb, w, h, t.antialias);
  if (num_crops == 1) return {center_crop(resized, S, S)};
  std::vector<cv::Mat> crops;
  const bool wide = resized.cols >= resized.rows;
  const int along = wide ? resized.cols : resized.rows, across = wide ? resized.rows : resized.cols;
  const int fixed = int(std::nearbyint((across - S) / 2.0));
  for (int k = 0; k < num_crops; ++k) {
    const int pos = int(std::lround(double(k) * double(along - S) / double(num_crops - 1)));
    const cv::Rect box = wide ? cv::Rect(pos, fixed, S, S) : cv::Rect(fixed, pos, S, S);
    crops.push_back(resized(box));
  }
  return crops;
}

Views read_views(const std::string& path, const ViewOptions& o, const VideoReadOptions& read) {
  if (o.num_clips < 1 || o.num_crops < 1) {
    throw Error(fmt::format("read_views: num_clips ({}) and num_crops ({}) must be >= 1", o.num_clips, o.num_crops));
  }
  ImageTransform check(o.transform);  // validates image_size, crop_pct, std
  (void)check;
  const int64_t T = o.sampling.frames;
  DecodedVideo d = decode_frames(
      path,
      [&](int64_t total) {
        std::vector<int64_t> all;
        for (int c = 0; c < o.num_clips; ++c) {
          auto idx = sample_indices(total, o.sampling, c, o.num_clips);
          all.insert(all.end(), idx.begin(), idx.end());
        }
        return all;
      },
      read);
  const int64_t S = o.transform.image_size;
  Views v;
  v.info = d.info;
  v.views = torch::empty({int64_t(o.num_clips) * o.num_crops, T, 3, S, S}, torch::kFloat32);
  // Frames repeat across clips: crop each decoded frame once.
  std::map<int64_t, std::vector<cv::Mat>> crops_of;
  for (size_t i = 0; i < d.indices.size(); ++i) {
    if (!crops_of.count(d.indices[i])) crops_of[d.indices[i]] = spatial_crops(d.frames[i], o.num_crops, o.transform);
  }
  for (int c = 0; c < o.num_clips; ++c) {
    for (int64_t t = 0; t < T; ++t) {
      const auto& crops = crops_of.at(d.indices[static_cast<size_t>(c * T + t)]);
      for (int k = 0; k < o.num_crops; ++k) {
        to_normalized_chw(crops[static_cast<size_t>(k)], o.transform.mean, o.transform.std,
                          v.views[int64_t(c) * o.num_crops + k][t].data_ptr<float>());
      }
    }
  }
  return v;
}

}  // namespace florence::data
