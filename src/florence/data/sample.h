#pragma once
// One image-text(-label) sample as it flows from readers to the loader.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <string>
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

}  // namespace florence::data
