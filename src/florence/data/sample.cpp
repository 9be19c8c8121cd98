// split_of: FNV-1a (64-bit) over the key's bytes, bucket = hash mod 100.
#include "florence/data/sample.h"

#include <algorithm>
#include <array>

#include <fmt/format.h>

#include "florence/core/error.h"
#include "florence/text/tokenizer.h"

namespace florence::data {

namespace {
// FNV-1a 64-bit parameters (Fowler/Noll/Vo, http://www.isthe.com/chongo/tech/comp/fnv/).
constexpr uint64_t kFnvOffsetBasis = 14695981039346656037ull;
constexpr uint64_t kFnvPrime = 1099511628211ull;
}  // namespace

std::string split_of(const std::string& key, int train_pct, int val_pct) {
  if (train_pct < 0 || val_pct < 0 || train_pct + val_pct > 100) {
    throw Error("split_of: percentages must be >= 0 and sum to <= 100, got train " +
                std::to_string(train_pct) + " val " + std::to_string(val_pct));
  }
  uint64_t h = kFnvOffsetBasis;
  for (unsigned char c : key) {
    h ^= c;
    h *= kFnvPrime;
  }
  const int bucket = int(h % 100);
  if (bucket < train_pct) return "train";
  if (bucket < train_pct + val_pct) return "val";
  return "test";
}

std::string unsafe_key_reason(std::string_view key) {
  if (key.empty()) return "empty";
  if (key.size() > 1024) return "longer than 1024 bytes";
  if (text::find_invalid_utf8(key) >= 0) return "not valid UTF-8";
  for (unsigned char c : key) {
    if (c < 0x20 || c == 0x7f) return "holds a control character";
    if (c == '\\') return "holds a backslash";
  }
  if (key.front() == '/') return "absolute (starts with '/')";
  size_t begin = 0;
  while (true) {
    const size_t end = key.find('/', begin);
    const std::string_view part = key.substr(begin, end == std::string_view::npos ? std::string_view::npos : end - begin);
    if (part.empty()) return "has an empty path part";
    if (part == "." || part == "..") return "has a '" + std::string(part) + "' path part";
    if (end == std::string_view::npos) {
      if (part.find('.') != std::string_view::npos) return "has a '.' in its last part";
      break;
    }
    begin = end + 1;
  }
  return "";
}

std::string printable_key(std::string_view key) {
  const bool utf8 = text::find_invalid_utf8(key) < 0;
  size_t n = std::min<size_t>(key.size(), 200);
  while (utf8 && n > 0 && n < key.size() && (static_cast<unsigned char>(key[n]) & 0xC0) == 0x80) --n;  // whole code points
  std::string out;
  for (unsigned char c : key.substr(0, n)) {
    if (c >= 0x20 && c != 0x7f && c != '\\' && (c < 0x80 || utf8))
      out += char(c);
    else
      out += fmt::format("\\x{:02x}", c);
  }
  if (n < key.size()) out += "...";
  return out;
}

bool is_image_extension(std::string_view e) {
  static constexpr std::array<std::string_view, 10> kExts{"png", "jpg", "jpeg", "webp", "bmp",
                                                          "ppm", "pgm", "pbm", "tif", "tiff"};
  return std::find(kExts.begin(), kExts.end(), e) != kExts.end();
}

bool is_unsupported_image_extension(std::string_view e) {
  static constexpr std::array<std::string_view, 7> kExts{"gif", "svg", "heic", "heif", "avif", "jxl", "ico"};
  return std::find(kExts.begin(), kExts.end(), e) != kExts.end();
}

}  // namespace florence::data
