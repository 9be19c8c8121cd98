#pragma once
// One image-text(-label) sample as it flows from readers to the loader.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace florence::data {

struct Sample {
  std::string key;                  ///< unique within a corpus (WebDataset __key__)
  std::vector<uint8_t> image;       ///< encoded image bytes (PNG/JPEG/WebP), or empty if `pixels` is set
  std::string image_ext;            ///< "png", "jpg", ... as in the shard member name
  std::string text;                 ///< caption (UTF-8), may be empty for label-only data
  int64_t label = -1;               ///< class id, -1 if none
  nlohmann::json meta = nlohmann::json::object();  ///< the KEY.json member (category, split, ...)
  std::string origin;               ///< where it came from (shard path / manifest line) for logs
};

/// Stable split of a key: FNV-1a 64-bit hash of the key bytes mod 100 -> "train" (< train_pct),
/// "val" (< train_pct + val_pct) or "test". Stable across runs, machines and shard layouts.
std::string split_of(const std::string& key, int train_pct = 90, int val_pct = 5);

/// Why `key` is not a safe sample key, or "" when it is. Safe keys are what every writer (shards,
/// curate outputs, indexes) accepts: 1..1024 bytes of valid UTF-8 without control characters
/// (< 0x20, 0x7f) or '\\'; '/'-separated parts that are non-empty and not "." or ".."; no leading
/// '/'; no '.' in the last part (WebDataset's key rule, data/webdataset.h). Tar members such as
/// "../../x.png", "/etc/x.png" or "a\nb.png" give unsafe keys; readers skip and count them.
std::string unsafe_key_reason(std::string_view key);
inline bool is_safe_sample_key(std::string_view key) { return unsafe_key_reason(key).empty(); }

/// `key` for logs and reports: bytes outside printable ASCII and invalid UTF-8 written as \\xNN,
/// cut to 200 bytes (an unsafe key may hold anything).
std::string printable_key(std::string_view key);

/// Image file extensions the loaders decode (lower case, without the dot): png jpg jpeg webp bmp
/// ppm pgm pbm tif tiff (OpenCV 4.6 imgcodecs as built by Debian 12).
bool is_image_extension(std::string_view lower_ext);

/// Image extensions that are recognised but not decoded (gif, svg, heic, heif, avif, jxl, ico):
/// listed and counted as `unsupported_format` skips rather than passed over in silence.
bool is_unsupported_image_extension(std::string_view lower_ext);

}  // namespace florence::data
