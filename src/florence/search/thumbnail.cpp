// Thumbnails for the image index (see thumbnail.h).
#include "florence/search/thumbnail.h"

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "florence/core/error.h"
#include "florence/data/transforms.h"

namespace florence::search {

std::string image_mime(const uint8_t* d, size_t n) {
  if (n >= 8 && std::memcmp(d, "\x89PNG\r\n\x1a\n", 8) == 0) return "image/png";
  if (n >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF) return "image/jpeg";
  if (n >= 6 && (std::memcmp(d, "GIF87a", 6) == 0 || std::memcmp(d, "GIF89a", 6) == 0)) return "image/gif";
  if (n >= 12 && std::memcmp(d, "RIFF", 4) == 0 && std::memcmp(d + 8, "WEBP", 4) == 0) return "image/webp";
  return "";
}

Thumbnail make_thumbnail(const std::vector<uint8_t>& image, int max_side, int64_t max_pixels, int64_t keep_bytes) {
  Thumbnail t;
  if (image.empty()) return t;
  if (auto wh = data::probe_image_size(image.data(), image.size())) {
    t.width = int(wh->first);
    t.height = int(wh->second);
  }
  if (max_side <= 0) return t;
  const std::string mime = image_mime(image.data(), image.size());
  if (!mime.empty() && t.width > 0 && std::max(t.width, t.height) <= max_side && int64_t(image.size()) <= keep_bytes) {
    t.bytes.assign(image.begin(), image.end());
    t.mime = mime;
    return t;
  }
  cv::Mat rgb;
  try {
    data::DecodeOptions opt;
    opt.max_pixels = max_pixels;
    rgb = data::decode_rgb(image, opt);
  } catch (const Error&) {
    return t;  // undecodable or too large: the loader counts and logs it
  }
  t.width = rgb.cols;
  t.height = rgb.rows;
  const double scale = std::min(1.0, double(max_side) / double(std::max(rgb.cols, rgb.rows)));
  cv::Mat small = rgb;
  if (scale < 1.0) {
    const int w = std::max(1, int(std::lround(rgb.cols * scale))), h = std::max(1, int(std::lround(rgb.rows * scale)));
    cv::resize(rgb, small, cv::Size(w, h), 0, 0, cv::INTER_AREA);
  }
  cv::Mat bgr;
  cv::cvtColor(small, bgr, cv::COLOR_RGB2BGR);
  const bool png = mime == "image/png" || mime == "image/gif";
  std::vector<uint8_t> out;
  const std::vector<int> params = png ? std::vector<int>{cv::IMWRITE_PNG_COMPRESSION, 6}
                                      : std::vector<int>{cv::IMWRITE_JPEG_QUALITY, 90};
  if (!cv::imencode(png ? ".png" : ".jpg", bgr, out, params)) return t;
  t.bytes.assign(out.begin(), out.end());
  t.mime = png ? "image/png" : "image/jpeg";
  return t;
}

}  // namespace florence::search
