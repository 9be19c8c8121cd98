#pragma once
// Real images for the curation tests: Google emoji PNGs (npm emoji-datasource-google, unpacked by
// scripts/setup) and OpenClipArt SVGs (Debian openclipart-svg) rendered with rsvg-convert
// (Debian librsvg2-bin), both composited on white like the corpus builders do.
#include <cstdlib>
#include <filesystem>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <string>
#include <vector>

#include "florence/data/corpus.h"
#include "florence/data/readers.h"
#include "florence/data/transforms.h"

namespace curate_test {

inline std::string emoji_path(const std::string& code) {
  return florence::data::default_emoji_dir() + "/img/google/64/" + code + ".png";
}

/// Encoded PNG bytes (RGB on white) of an emoji, or empty when the package is missing.
inline std::vector<uint8_t> emoji_png(const std::string& code) {
  const std::string p = emoji_path(code);
  if (!std::filesystem::exists(p)) return {};
  return florence::data::composite_on_white_png(florence::data::read_file_bytes(p), 0);
}

/// RGB image of an emoji (64 x 64); empty when missing.
inline cv::Mat emoji_rgb(const std::string& code) {
  const auto png = emoji_png(code);
  return png.empty() ? cv::Mat() : florence::data::decode_rgb(png);
}

/// An OpenClipArt SVG (path relative to /usr/share/openclipart/svg) rendered to fit size x size on
/// white; empty when rendering fails.
inline cv::Mat clipart_rgb(const std::string& rel, int size, const std::string& tmp_dir) {
  const std::string svg = "/usr/share/openclipart/svg/" + rel;
  std::filesystem::create_directories(tmp_dir);
  const std::string out = tmp_dir + "/render.png";
  const std::string cmd = "rsvg-convert -a -w " + std::to_string(size) + " -h " + std::to_string(size) + " -o '" + out +
                          "' '" + svg + "' 2>/dev/null";
  if (std::system(cmd.c_str()) != 0) return {};
  const auto png = florence::data::composite_on_white_png(florence::data::read_file_bytes(out), size);
  return png.empty() ? cv::Mat() : florence::data::decode_rgb(png);
}

/// Encodes an RGB image (PNG, or JPEG at `jpeg_quality` > 0).
inline std::vector<uint8_t> encode(const cv::Mat& rgb, int jpeg_quality = 0) {
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  std::vector<uint8_t> out;
  if (jpeg_quality > 0)
    cv::imencode(".jpg", bgr, out, {cv::IMWRITE_JPEG_QUALITY, jpeg_quality});
  else
    cv::imencode(".png", bgr, out);
  return out;
}

/// The twelve emoji the tests use (all distinct pictures).
inline const std::vector<std::string>& emoji_codes() {
  static const std::vector<std::string> c = {"1f600", "1f34e", "1f697", "1f436", "1f3e0", "1f680",
                                             "2600-fe0f", "1f333", "1f431", "1f355", "1f4da", "1f3b8"};
  return c;
}

}  // namespace curate_test
