#pragma once
// Thumbnails stored in an image index (served by `florence serve` at /images/ID), so that the
// server never reads anything outside the index folder and keeps working when the originals move.
#include <cstdint>
#include <string>
#include <vector>

namespace florence::search {

struct Thumbnail {
  std::string bytes;        ///< encoded image; empty when none could be made
  std::string mime;         ///< "image/png", "image/jpeg", "image/gif", "image/webp"
  int width = 0, height = 0;  ///< the ORIGINAL image's size (0 = unknown)
};

/// MIME type of encoded image bytes by their signature (PNG, JPEG, GIF, WebP); "" for other
/// formats (BMP, TIFF, PNM are not shown by every browser).
std::string image_mime(const uint8_t* data, size_t size);

/// A thumbnail whose longer side is at most `max_side` pixels:
///   - a PNG / JPEG / GIF / WebP already within max_side and at most `keep_bytes` is kept as it is;
///   - otherwise the image is decoded (data/transforms.h decode_rgb, alpha composited on white,
///     refused above max_pixels), reduced with area averaging (cv::INTER_AREA) to fit max_side,
///     and encoded as PNG when the source was PNG or GIF (drawings, sharp edges) else as JPEG
///     quality 90.
/// Never throws on bad image data: returns an empty `bytes` (width/height from the header when
/// readable). max_side <= 0: no thumbnail, only the size.
Thumbnail make_thumbnail(const std::vector<uint8_t>& image, int max_side, int64_t max_pixels,
                         int64_t keep_bytes = 256 * 1024);

}  // namespace florence::search
