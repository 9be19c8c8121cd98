#pragma once
// Image decoding and the train / eval preprocessing pipelines (OpenCV).
//
// Every image leaves decode_rgb() as an 8-bit, 3-channel cv::Mat in **RGB** order (OpenCV
// decodes to BGR; the swap is done here, explicitly, once). The pipelines then produce a
// [3, H, W] float32 tensor, channel order R, G, B, normalised per channel:
//     out[c] = (pixel[c] / 255 - mean[c]) / std[c].
//
// Pipelines (torchvision / timm conventions; sources named at each function):
//   train: RandomResizedCrop(size, scale, ratio, bicubic) -> optional horizontal flip (p = 0.5)
//          -> ToTensor + Normalize
//   eval:  resize shorter side to floor(size / crop_pct) (bicubic) -> CenterCrop(size)
//          -> ToTensor + Normalize
//
// Randomness comes only from the std::mt19937_64 passed in, drawn through the helpers below
// (not through std::*_distribution, whose output differs between standard libraries), so the
// same generator state gives the same crop on every platform.
#include <opencv2/core.hpp>
#include <torch/types.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <random>
#include <utility>
#include <vector>

#include "florence/core/error.h"

namespace florence::data {

/// ImageNet channel statistics (RGB), torchvision / timm IMAGENET_DEFAULT_MEAN / _STD.
inline constexpr std::array<float, 3> kImageNetMean{0.485f, 0.456f, 0.406f};
inline constexpr std::array<float, 3> kImageNetStd{0.229f, 0.224f, 0.225f};
/// CLIP's channel statistics (RGB), openai/CLIP clip/clip.py _transform().
inline constexpr std::array<float, 3> kClipMean{0.48145466f, 0.4578275f, 0.40821073f};
inline constexpr std::array<float, 3> kClipStd{0.26862954f, 0.26130258f, 0.27577711f};

/// PIL's default Image.MAX_IMAGE_PIXELS (PIL/Image.py: 1024 * 1024 * 1024 // 4 // 3), the
/// decompression-bomb threshold this module uses by default.
inline constexpr int64_t kDefaultMaxPixels = int64_t(1024) * 1024 * 1024 / 4 / 3;  // 89,478,485

/// Thrown by decode_rgb when an image is larger than DecodeOptions::max_pixels (a decompression
/// bomb guard). Derives from florence::Error, so callers that only skip bad images still work;
/// the loader counts it under its own reason ("image_too_large").
class ImageTooLarge : public Error {
 public:
  using Error::Error;
};

struct DecodeOptions {
  /// Largest accepted width * height; <= 0 disables the guard.
  int64_t max_pixels = kDefaultMaxPixels;
};

/// Width and height read from the file header without decoding pixels, for PNG (IHDR), JPEG
/// (first SOFn marker), WebP (VP8 / VP8L / VP8X chunk), GIF (logical screen) and BMP
/// (BITMAPINFOHEADER). std::nullopt when the format is not one of these or the header is
/// truncated; then only the after-decode check applies (see decode_rgb).
std::optional<std::pair<int64_t, int64_t>> probe_image_size(const uint8_t* data, size_t size);

/// Decodes PNG / JPEG / WebP / BMP / TIFF / PNM bytes (cv::imdecode, IMREAD_UNCHANGED, so no
/// EXIF rotation is applied - like PIL.Image.open + convert("RGB")) into an 8-bit RGB image
/// (CV_8UC3, R,G,B channel order). Conversions:
///   - grey (1 channel) -> R = G = B = grey;
///   - alpha (grey+alpha or BGRA) -> composited on white: c' = round(c*a/M + 255*(1 - a/M)),
///     M = 255 (or 65535 for 16-bit), on the 8-bit or 16-bit values before any depth change;
///   - 16-bit -> 8-bit by v' = round(v / 257) (65535 -> 255); 32-bit float in [0,1] -> round(255 v).
/// Decompression-bomb guard: when probe_image_size() knows the format the pixel count is checked
/// before any pixel is decoded; otherwise it is checked right after decoding (OpenCV itself
/// refuses images above OPENCV_IO_MAX_IMAGE_PIXELS, 2^30 by default, during decode).
/// Throws ImageTooLarge above options.max_pixels, florence::Error when the bytes are empty or
/// cannot be decoded, or the pixel type is unsupported.
cv::Mat decode_rgb(const uint8_t* data, size_t size, const DecodeOptions& options = {});
inline cv::Mat decode_rgb(const std::vector<uint8_t>& bytes, const DecodeOptions& options = {}) {
  return decode_rgb(bytes.data(), bytes.size(), options);
}

/// Converts an already decoded OpenCV image (BGR / BGRA / grey / grey+alpha; 8U, 16U or 32F) into
/// 8-bit RGB with the rules of decode_rgb. Throws florence::Error on an unsupported type.
cv::Mat to_rgb8(const cv::Mat& decoded);

// ---------------------------------------------------------------------------------------------
// Geometry. All functions take and return 8-bit RGB images (any channel count works for the
// pure geometry ones).
// ---------------------------------------------------------------------------------------------

/// Bicubic resize to exactly width x height (cv::resize, INTER_CUBIC: Keys kernel a = -0.75,
/// pixel-centre aligned). With `antialias`, a reduction below half the size in a dimension is
/// first done with INTER_AREA down to twice the target (box prefilter), then bicubic; plain
/// INTER_CUBIC aliases badly on large reductions (PIL and torchvision antialias=True widen the
/// kernel instead; this is the cheap OpenCV equivalent). Throws florence::Error on a size < 1.
cv::Mat resize_bicubic(const cv::Mat& image, int width, int height, bool antialias = true);

/// Output size (width, height) of resizing the shorter side to `shorter` keeping the aspect ratio;
/// the longer side is truncated as in torchvision's _compute_resized_output_size:
/// long' = int(shorter * long / short).
std::pair<int, int> shorter_side_size(int width, int height, int shorter);

/// torchvision.transforms.functional.center_crop: top = round((H - h) / 2), left = round((W - w)/2)
/// with Python's round-half-to-even; an image smaller than the crop is first zero-padded
/// (left/top get the floor half of the padding), as torchvision does.
cv::Mat center_crop(const cv::Mat& image, int width, int height);

/// One crop rectangle in pixels.
struct CropBox {
  int top = 0, left = 0, height = 0, width = 0;
  bool operator==(const CropBox& o) const {
    return top == o.top && left == o.left && height == o.height && width == o.width;
  }
};

/// torchvision RandomResizedCrop.get_params: up to `attempts` (10) tries of
///   area' = area * U(scale_min, scale_max), aspect = exp(U(log ratio_min, log ratio_max)),
///   w = round(sqrt(area' * aspect)), h = round(sqrt(area' / aspect)),
/// accepted when 0 < w <= W and 0 < h <= H, with top ~ U{0..H-h}, left ~ U{0..W-w};
/// otherwise the centre crop with the aspect ratio clamped into [ratio_min, ratio_max].
CropBox random_resized_crop_box(int width, int height, std::mt19937_64& rng,
                                double scale_min = 0.08, double scale_max = 1.0,
                                double ratio_min = 3.0 / 4.0, double ratio_max = 4.0 / 3.0,
                                int attempts = 10);

/// Uniform double in [0, 1) from the top 53 bits of one draw (platform independent).
double uniform01(std::mt19937_64& rng);
/// Uniform integer in [0, n) by rejection sampling (unbiased, platform independent); n >= 1.
uint64_t uniform_int(std::mt19937_64& rng, uint64_t n);

// ---------------------------------------------------------------------------------------------
// Tensor conversion and the full pipelines.
// ---------------------------------------------------------------------------------------------

/// ToTensor + Normalize of an 8-bit RGB image into `out`, a contiguous [3, H, W] float32 buffer
/// (3 * rows * cols floats): out[c][y][x] = (rgb(y, x)[c] / 255 - mean[c]) / std[c].
void to_normalized_chw(const cv::Mat& rgb, const std::array<float, 3>& mean,
                       const std::array<float, 3>& std, float* out);
/// Same, returned as a new [3, H, W] float32 CPU tensor.
torch::Tensor to_normalized_tensor(const cv::Mat& rgb, const std::array<float, 3>& mean,
                                   const std::array<float, 3>& std);

struct TransformOptions {
  int image_size = 224;   ///< output is image_size x image_size
  bool train = false;     ///< true: RandomResizedCrop + flip; false: resize + center crop
  /// Eval: the shorter side is resized to floor(image_size / crop_pct) before the center crop
  /// (timm transforms_imagenet_eval; 0.875 = 224/256 is timm's default, 1.0 is CLIP's
  /// Resize(size) + CenterCrop(size)). Must be in (0, 1].
  double crop_pct = 0.875;
  double scale_min = 0.08, scale_max = 1.0;             ///< RandomResizedCrop area range (torchvision)
  double ratio_min = 3.0 / 4.0, ratio_max = 4.0 / 3.0;  ///< RandomResizedCrop aspect range (torchvision)
  bool hflip = true;      ///< train: horizontal flip with probability 0.5
  bool antialias = true;  ///< see resize_bicubic
  std::array<float, 3> mean = kImageNetMean;
  std::array<float, 3> std = kImageNetStd;
  DecodeOptions decode;
};

/// The whole per-image pipeline. Immutable and thread-safe; the randomness is the caller's rng.
class ImageTransform {
 public:
  /// Throws florence::Error on image_size < 1, crop_pct outside (0, 1], bad scale/ratio ranges
  /// or a std value <= 0.
  explicit ImageTransform(TransformOptions options = {});

  /// Geometry only: 8-bit RGB in, 8-bit RGB image_size x image_size out. `rng` is used only in
  /// train mode (crop box first, then one draw for the flip when hflip is on).
  cv::Mat geometry(const cv::Mat& rgb, std::mt19937_64& rng) const;
  /// geometry + normalisation written into `out` ([3, S, S] float32, contiguous).
  void apply_into(const cv::Mat& rgb, std::mt19937_64& rng, float* out) const;
  /// geometry + normalisation: [3, S, S] float32 CPU tensor, S = image_size.
  torch::Tensor apply(const cv::Mat& rgb, std::mt19937_64& rng) const;
  /// decode_rgb + apply. Throws as decode_rgb does.
  torch::Tensor operator()(const std::vector<uint8_t>& bytes, std::mt19937_64& rng) const;

  const TransformOptions& options() const { return opt_; }

 private:
  TransformOptions opt_;
};

}  // namespace florence::data
