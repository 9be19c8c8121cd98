// Perceptual (pHash, dHash) and exact (XXH3-128 of pixels) image hashes; see phash.h.
#include "florence/curate/phash.h"

#include <xxhash.h>

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <array>
#include <cmath>

#include "florence/core/error.h"

namespace florence::curate {

HashKind parse_hash_kind(const std::string& name) {
  if (name == "phash") return HashKind::kPHash;
  if (name == "dhash") return HashKind::kDHash;
  throw Error("unknown perceptual hash '" + name + "' (phash | dhash)");
}

std::string hash_kind_name(HashKind kind) { return kind == HashKind::kPHash ? "phash" : "dhash"; }

cv::Mat grey_resized(const cv::Mat& rgb, int width, int height) {
  if (rgb.empty()) throw Error("perceptual hash: empty image");
  cv::Mat grey;
  if (rgb.type() == CV_8UC3) {
    cv::cvtColor(rgb, grey, cv::COLOR_RGB2GRAY);
  } else if (rgb.type() == CV_8UC1) {
    grey = rgb;
  } else {
    throw Error("perceptual hash: expected an 8-bit RGB or grey image, got OpenCV type " + std::to_string(rgb.type()));
  }
  cv::Mat f;
  grey.convertTo(f, CV_32F);
  if (f.cols == width && f.rows == height) return f;
  const bool shrink = f.cols >= width && f.rows >= height;
  cv::Mat out;
  cv::resize(f, out, cv::Size(width, height), 0, 0, shrink ? cv::INTER_AREA : cv::INTER_LINEAR);
  return out;
}

uint64_t phash_from_grey32(const cv::Mat& grey32) {
  if (grey32.rows != 32 || grey32.cols != 32 || grey32.channels() != 1)
    throw Error("phash_from_grey32: expected a 32 x 32 single-channel image");
  cv::Mat d, coef;
  grey32.convertTo(d, CV_64F);
  cv::dct(d, coef);  // orthonormal DCT-II in both dimensions
  std::array<double, 64> low{};
  double amax = 0;
  for (int v = 0; v < 8; ++v)
    for (int u = 0; u < 8; ++u) {
      low[size_t(8 * v + u)] = coef.at<double>(v, u);
      amax = std::max(amax, std::abs(coef.at<double>(v, u)));
    }
  std::array<double, 64> sorted = low;
  std::sort(sorted.begin(), sorted.end());
  const double median = 0.5 * (sorted[31] + sorted[32]);
  const double eps = 1e-9 * amax;
  uint64_t h = 0;
  for (int c = 0; c < 64; ++c)
    if (low[size_t(c)] > median + eps) h |= uint64_t(1) << (63 - c);
  return h;
}

uint64_t phash(const cv::Mat& rgb) { return phash_from_grey32(grey_resized(rgb, 32, 32)); }

uint64_t dhash(const cv::Mat& rgb) {
  const cv::Mat g = grey_resized(rgb, 9, 8);
  uint64_t h = 0;
  for (int y = 0; y < 8; ++y)
    for (int x = 0; x < 8; ++x)
      if (g.at<float>(y, x + 1) > g.at<float>(y, x)) h |= uint64_t(1) << (63 - (8 * y + x));
  return h;
}

uint64_t perceptual_hash(const cv::Mat& rgb, HashKind kind) {
  return kind == HashKind::kPHash ? phash(rgb) : dhash(rgb);
}

PixelHash pixel_hash(const cv::Mat& image) {
  if (image.empty()) throw Error("pixel_hash: empty image");
  XXH3_state_t* st = XXH3_createState();
  if (!st) throw Error("pixel_hash: XXH3_createState failed");
  XXH3_128bits_reset(st);
  const uint32_t dims[3] = {uint32_t(image.cols), uint32_t(image.rows), uint32_t(image.channels())};
  uint8_t header[12];
  for (int i = 0; i < 3; ++i)
    for (int b = 0; b < 4; ++b) header[4 * i + b] = uint8_t(dims[i] >> (8 * b));
  XXH3_128bits_update(st, header, sizeof(header));
  const size_t row_bytes = size_t(image.cols) * image.elemSize();
  for (int y = 0; y < image.rows; ++y) XXH3_128bits_update(st, image.ptr<uint8_t>(y), row_bytes);
  const XXH128_hash_t h = XXH3_128bits_digest(st);
  XXH3_freeState(st);
  return {h.high64, h.low64};
}

std::string hash_hex(uint64_t h) {
  static const char* kDigits = "0123456789abcdef";
  std::string s(16, '0');
  for (int i = 15; i >= 0; --i, h >>= 4) s[size_t(i)] = kDigits[h & 15];
  return s;
}

}  // namespace florence::curate
