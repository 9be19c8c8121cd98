// Image decoding and preprocessing; see transforms.h for the conventions.
#include "florence/data/transforms.h"

#include <fmt/format.h>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>

namespace florence::data {

namespace {

uint32_t be16(const uint8_t* p) { return (uint32_t(p[0]) << 8) | p[1]; }
uint32_t be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3];
}
uint32_t le16(const uint8_t* p) { return uint32_t(p[0]) | (uint32_t(p[1]) << 8); }
uint32_t le24(const uint8_t* p) { return le16(p) | (uint32_t(p[2]) << 16); }
uint32_t le32(const uint8_t* p) { return le24(p) | (uint32_t(p[3]) << 24); }

using Dims = std::optional<std::pair<int64_t, int64_t>>;

// PNG: 8-byte signature, then the IHDR chunk (length, "IHDR", width BE32, height BE32).
Dims probe_png(const uint8_t* d, size_t n) {
  static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (n < 24 || std::memcmp(d, sig, 8) != 0 || std::memcmp(d + 12, "IHDR", 4) != 0) return {};
  return std::make_pair(int64_t(be32(d + 16)), int64_t(be32(d + 20)));
}

// JPEG (ITU T.81 B.1.1): walk marker segments until the first SOFn frame header
// (precision u8, height BE16, width BE16).
Dims probe_jpeg(const uint8_t* d, size_t n) {
  if (n < 4 || d[0] != 0xFF || d[1] != 0xD8) return {};
  size_t i = 2;
  while (i + 1 < n) {
    if (d[i] != 0xFF) return {};
    uint8_t m = d[i + 1];
    if (m == 0xFF) {  // fill byte
      ++i;
      continue;
    }
    i += 2;
    if (m == 0xD8 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) continue;  // no length field
    if (m == 0xD9 || m == 0xDA) return {};  // EOI / SOS before any frame header
    if (i + 2 > n) return {};
    const uint32_t len = be16(d + i);
    const bool sof = m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
    if (sof) {
      if (i + 7 > n) return {};
      return std::make_pair(int64_t(be16(d + i + 5)), int64_t(be16(d + i + 3)));
    }
    if (len < 2) return {};
    i += len;
  }
  return {};
}

// WebP (RIFF container): the first chunk is VP8 (lossy), VP8L (lossless) or VP8X (extended).
Dims probe_webp(const uint8_t* d, size_t n) {
  if (n < 30 || std::memcmp(d, "RIFF", 4) != 0 || std::memcmp(d + 8, "WEBP", 4) != 0) return {};
  const uint8_t* c = d + 20;  // chunk payload
  if (std::memcmp(d + 12, "VP8 ", 4) == 0) {
    // 3-byte frame tag, start code 9d 01 2a, then 14-bit width and height (2 scale bits each).
    if (c[3] != 0x9d || c[4] != 0x01 || c[5] != 0x2a) return {};
    return std::make_pair(int64_t(le16(c + 6) & 0x3fff), int64_t(le16(c + 8) & 0x3fff));
  }
  if (std::memcmp(d + 12, "VP8L", 4) == 0) {
    // signature 0x2f, then width-1 (14 bits) and height-1 (14 bits), little endian bit order.
    if (c[0] != 0x2f) return {};
    const uint32_t bits = le32(c + 1);
    return std::make_pair(int64_t(bits & 0x3fff) + 1, int64_t((bits >> 14) & 0x3fff) + 1);
  }
  if (std::memcmp(d + 12, "VP8X", 4) == 0) {
    // 4 bytes of flags, then canvas width-1 and height-1 as 24-bit little-endian values.
    return std::make_pair(int64_t(le24(c + 4)) + 1, int64_t(le24(c + 7)) + 1);
  }
  return {};
}

Dims probe_gif(const uint8_t* d, size_t n) {
  if (n < 10 || (std::memcmp(d, "GIF87a", 6) != 0 && std::memcmp(d, "GIF89a", 6) != 0)) return {};
  return std::make_pair(int64_t(le16(d + 6)), int64_t(le16(d + 8)));
}

// BMP: 14-byte file header, then the DIB header; OS/2 core headers (size 12) use 16-bit sizes.
Dims probe_bmp(const uint8_t* d, size_t n) {
  if (n < 26 || d[0] != 'B' || d[1] != 'M') return {};
  const uint32_t dib = le32(d + 14);
  if (dib == 12) return std::make_pair(int64_t(le16(d + 18)), int64_t(le16(d + 20)));
  const int64_t w = int32_t(le32(d + 18)), h = int32_t(le32(d + 22));
  return std::make_pair(std::llabs(w), std::llabs(h));  // negative height = top-down rows
}

void check_pixels(int64_t w, int64_t h, int64_t max_pixels, const char* when) {
  // In double: header sizes reach 2^32 per side, whose product overflows int64 (found by fuzzing).
  const double pixels = double(w) * double(h);
  if (max_pixels > 0 && pixels > double(max_pixels)) {
    throw ImageTooLarge("image of " + std::to_string(w) + "x" + std::to_string(h) + " = " +
                        fmt::format("{:.0f}", pixels) + " pixels exceeds max_pixels " +
                        std::to_string(max_pixels) + " (decompression-bomb guard, " + when + ")");
  }
}

// Per-pixel conversion of images with alpha, 16-bit or float samples into 8-bit RGB.
// T = sample type, M = its full-scale value.
template <typename T>
void convert_generic(const cv::Mat& src, cv::Mat& dst, float M) {
  const int cn = src.channels();
  const bool alpha = cn == 2 || cn == 4;
  const int colours = alpha ? cn - 1 : cn;  // 1 (grey) or 3 (BGR)
  const float to8 = 255.0f / M;
  for (int y = 0; y < src.rows; ++y) {
    const T* s = src.ptr<T>(y);
    uint8_t* o = dst.ptr<uint8_t>(y);
    for (int x = 0; x < src.cols; ++x, s += cn, o += 3) {
      float v[3];
      if (colours == 1) {
        v[0] = v[1] = v[2] = float(s[0]);
      } else {  // BGR -> RGB
        v[0] = float(s[2]);
        v[1] = float(s[1]);
        v[2] = float(s[0]);
      }
      if (alpha) {
        const float a = std::min(std::max(float(s[cn - 1]), 0.0f), M);
        for (float& c : v) c = (c * a + M * (M - a)) / M;  // over an opaque white background
      }
      for (int k = 0; k < 3; ++k) {
        const float q = std::nearbyint(v[k] * to8);
        o[k] = uint8_t(std::min(std::max(q, 0.0f), 255.0f));
      }
    }
  }
}

}  // namespace

std::optional<std::pair<int64_t, int64_t>> probe_image_size(const uint8_t* data, size_t size) {
  if (data == nullptr) return {};
  for (auto* probe : {probe_png, probe_jpeg, probe_webp, probe_gif, probe_bmp}) {
    if (auto dims = probe(data, size)) return dims;
  }
  return {};
}

cv::Mat to_rgb8(const cv::Mat& decoded) {
  const int cn = decoded.channels();
  if (decoded.empty()) throw Error("to_rgb8: empty image");
  if (cn < 1 || cn > 4) throw Error("to_rgb8: unsupported channel count " + std::to_string(cn));
  const int depth = decoded.depth();
  if (depth == CV_8U && (cn == 1 || cn == 3)) {
    cv::Mat out;
    cv::cvtColor(decoded, out, cn == 1 ? cv::COLOR_GRAY2RGB : cv::COLOR_BGR2RGB);
    return out;
  }
  cv::Mat out(decoded.rows, decoded.cols, CV_8UC3);
  switch (depth) {
    case CV_8U: convert_generic<uint8_t>(decoded, out, 255.0f); break;
    case CV_16U: convert_generic<uint16_t>(decoded, out, 65535.0f); break;
    case CV_32F: convert_generic<float>(decoded, out, 1.0f); break;
    default:
      throw Error("to_rgb8: unsupported pixel depth (OpenCV depth code " + std::to_string(depth) +
                  ")");
  }
  return out;
}

cv::Mat decode_rgb(const uint8_t* data, size_t size, const DecodeOptions& options) {
  if (data == nullptr || size == 0) throw Error("decode_rgb: empty image bytes");
  if (auto dims = probe_image_size(data, size)) {
    check_pixels(dims->first, dims->second, options.max_pixels, "from the file header");
  }
  cv::Mat decoded;
  try {
    const cv::Mat buf(1, int(size), CV_8U, const_cast<uint8_t*>(data));
    decoded = cv::imdecode(buf, cv::IMREAD_UNCHANGED);
  } catch (const cv::Exception& e) {
    throw Error(std::string("decode_rgb: OpenCV could not decode the image: ") + e.what());
  }
  if (decoded.empty()) {
    throw Error("decode_rgb: undecodable image (" + std::to_string(size) +
                " bytes; not a PNG/JPEG/WebP/BMP/TIFF/PNM OpenCV can read, or truncated)");
  }
  check_pixels(decoded.cols, decoded.rows, options.max_pixels, "after decoding");
  return to_rgb8(decoded);
}

cv::Mat resize_bicubic(const cv::Mat& image, int width, int height, bool antialias) {
  if (width < 1 || height < 1) {
    throw Error("resize_bicubic: target size must be >= 1, got " + std::to_string(width) + "x" +
                std::to_string(height));
  }
  if (image.empty()) throw Error("resize_bicubic: empty image");
  if (image.cols == width && image.rows == height) return image;
  cv::Mat src = image;
  if (antialias && (image.cols > 2 * width || image.rows > 2 * height)) {
    cv::Mat reduced;
    cv::resize(image, reduced, cv::Size(std::min(image.cols, 2 * width), std::min(image.rows, 2 * height)),
               0, 0, cv::INTER_AREA);
    src = reduced;
  }
  cv::Mat out;
  cv::resize(src, out, cv::Size(width, height), 0, 0, cv::INTER_CUBIC);
  return out;
}

std::pair<int, int> shorter_side_size(int width, int height, int shorter) {
  if (width < 1 || height < 1 || shorter < 1) {
    throw Error("shorter_side_size: sizes must be >= 1");
  }
  const bool w_short = width <= height;
  const int s = w_short ? width : height, l = w_short ? height : width;
  const int new_long = int(double(shorter) * double(l) / double(s));
  return w_short ? std::make_pair(shorter, new_long) : std::make_pair(new_long, shorter);
}

cv::Mat center_crop(const cv::Mat& image, int width, int height) {
  if (width < 1 || height < 1) throw Error("center_crop: crop size must be >= 1");
  if (image.empty()) throw Error("center_crop: empty image");
  cv::Mat src = image;
  if (width > image.cols || height > image.rows) {
    const int pw = std::max(0, width - image.cols), ph = std::max(0, height - image.rows);
    cv::copyMakeBorder(image, src, ph / 2, (ph + 1) / 2, pw / 2, (pw + 1) / 2, cv::BORDER_CONSTANT,
                       cv::Scalar::all(0));
  }
  // Python's round() is round-half-to-even; std::nearbyint uses the default FE_TONEAREST mode.
  const int top = int(std::nearbyint((src.rows - height) / 2.0));
  const int left = int(std::nearbyint((src.cols - width) / 2.0));
  return src(cv::Rect(left, top, width, height));
}

double uniform01(std::mt19937_64& rng) { return double(rng() >> 11) * 0x1.0p-53; }

uint64_t uniform_int(std::mt19937_64& rng, uint64_t n) {
  if (n <= 1) return 0;
  // Reject the top partial block so every residue is equally likely.
  const uint64_t limit = std::numeric_limits<uint64_t>::max() - std::numeric_limits<uint64_t>::max() % n;
  uint64_t v;
  do {
    v = rng();
  } while (v >= limit);
  return v % n;
}

CropBox random_resized_crop_box(int width, int height, std::mt19937_64& rng, double scale_min,
                                double scale_max, double ratio_min, double ratio_max,
                                int attempts) {
  const double area = double(width) * double(height);
  const double log_lo = std::log(ratio_min), log_hi = std::log(ratio_max);
  for (int i = 0; i < attempts; ++i) {
    const double target = area * (scale_min + (scale_max - scale_min) * uniform01(rng));
    const double aspect = std::exp(log_lo + (log_hi - log_lo) * uniform01(rng));
    const int w = int(std::nearbyint(std::sqrt(target * aspect)));
    const int h = int(std::nearbyint(std::sqrt(target / aspect)));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      CropBox box;
      box.top = int(uniform_int(rng, uint64_t(height - h + 1)));
      box.left = int(uniform_int(rng, uint64_t(width - w + 1)));
      box.height = h;
      box.width = w;
      return box;
    }
  }
  // Fallback: the central crop with the aspect ratio clamped into the allowed range.
  CropBox box;
  const double in_ratio = double(width) / double(height);
  if (in_ratio < ratio_min) {
    box.width = width;
    box.height = int(std::nearbyint(width / ratio_min));
  } else if (in_ratio > ratio_max) {
    box.height = height;
    box.width = int(std::nearbyint(height * ratio_max));
  } else {
    box.width = width;
    box.height = height;
  }
  box.top = (height - box.height) / 2;
  box.left = (width - box.width) / 2;
  return box;
}

void to_normalized_chw(const cv::Mat& rgb, const std::array<float, 3>& mean,
                       const std::array<float, 3>& std, float* out) {
  if (rgb.type() != CV_8UC3) throw Error("to_normalized_chw: expected an 8-bit 3-channel image");
  // Lookup table computed with the same float32 operations as torchvision's
  // ToTensor (x / 255) followed by Normalize ((x - mean) / std), so the values match it exactly.
  float lut[3][256];
  for (int c = 0; c < 3; ++c) {
    for (int v = 0; v < 256; ++v) lut[c][v] = (float(v) / 255.0f - mean[c]) / std[c];
  }
  const size_t plane = size_t(rgb.rows) * size_t(rgb.cols);
  float* r = out;
  float* g = out + plane;
  float* b = out + 2 * plane;
  for (int y = 0; y < rgb.rows; ++y) {
    const uint8_t* p = rgb.ptr<uint8_t>(y);
    for (int x = 0; x < rgb.cols; ++x, p += 3) {
      *r++ = lut[0][p[0]];
      *g++ = lut[1][p[1]];
      *b++ = lut[2][p[2]];
    }
  }
}

torch::Tensor to_normalized_tensor(const cv::Mat& rgb, const std::array<float, 3>& mean,
                                   const std::array<float, 3>& std) {
  auto t = torch::empty({3, rgb.rows, rgb.cols}, torch::kFloat32);
  to_normalized_chw(rgb, mean, std, t.data_ptr<float>());
  return t;
}

ImageTransform::ImageTransform(TransformOptions options) : opt_(std::move(options)) {
  if (opt_.image_size < 1) throw Error("ImageTransform: image_size must be >= 1");
  if (!(opt_.crop_pct > 0.0 && opt_.crop_pct <= 1.0)) {
    throw Error("ImageTransform: crop_pct must be in (0, 1], got " + std::to_string(opt_.crop_pct));
  }
  if (!(opt_.scale_min > 0.0 && opt_.scale_min <= opt_.scale_max && opt_.scale_max <= 1.0)) {
    throw Error("ImageTransform: need 0 < scale_min <= scale_max <= 1");
  }
  if (!(opt_.ratio_min > 0.0 && opt_.ratio_min <= opt_.ratio_max)) {
    throw Error("ImageTransform: need 0 < ratio_min <= ratio_max");
  }
  for (float s : opt_.std) {
    if (!(s > 0.0f) || !std::isfinite(s)) throw Error("ImageTransform: std values must be finite and > 0");
  }
  for (float m : opt_.mean) {
    if (!std::isfinite(m)) throw Error("ImageTransform: mean values must be finite");
  }
}

cv::Mat ImageTransform::geometry(const cv::Mat& rgb, std::mt19937_64& rng) const {
  if (rgb.empty()) throw Error("ImageTransform: empty image");
  const int S = opt_.image_size;
  if (opt_.train) {
    const CropBox box = random_resized_crop_box(rgb.cols, rgb.rows, rng, opt_.scale_min,
                                                opt_.scale_max, opt_.ratio_min, opt_.ratio_max);
    cv::Mat out = resize_bicubic(rgb(cv::Rect(box.left, box.top, box.width, box.height)), S, S,
                                 opt_.antialias);
    if (opt_.hflip && uniform01(rng) < 0.5) {
      cv::Mat flipped;
      cv::flip(out, flipped, 1);
      out = flipped;
    }
    return out;
  }
  // timm: scale_size = floor(img_size / crop_pct); the epsilon keeps e.g. 224 / 0.875 at 256.
  const int shorter = int(std::floor(double(S) / opt_.crop_pct + 1e-9));
  // A very thin image (100000 x 1) would be resized to millions of pixels per row before the
  // crop: refuse it like a decompression bomb (the resized size is what costs time and memory).
  const double resized = double(shorter) * double(std::max(rgb.cols, rgb.rows)) / double(std::min(rgb.cols, rgb.rows)) * shorter;
  if (resized > double(opt_.decode.max_pixels))
    throw ImageTooLarge(fmt::format("image of {}x{} pixels would be resized to {:.0f} pixels (shorter side {}), over the {} pixel limit",
                                    rgb.cols, rgb.rows, resized, shorter, opt_.decode.max_pixels));
  const auto [w, h] = shorter_side_size(rgb.cols, rgb.rows, shorter);
  return center_crop(resize_bicubic(rgb, w, h, opt_.antialias), S, S);
}

void ImageTransform::apply_into(const cv::Mat& rgb, std::mt19937_64& rng, float* out) const {
  to_normalized_chw(geometry(rgb, rng), opt_.mean, opt_.std, out);
}

torch::Tensor ImageTransform::apply(const cv::Mat& rgb, std::mt19937_64& rng) const {
  return to_normalized_tensor(geometry(rgb, rng), opt_.mean, opt_.std);
}

torch::Tensor ImageTransform::operator()(const std::vector<uint8_t>& bytes,
                                         std::mt19937_64& rng) const {
  return apply(decode_rgb(bytes, opt_.decode), rng);
}

}  // namespace florence::data
