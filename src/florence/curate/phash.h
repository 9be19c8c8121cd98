#pragma once
// Perceptual and exact image hashes used by the curation pipeline (curate/pipeline.h).
//
// Perceptual hashes are 64-bit integers compared by Hamming distance (popcount of the XOR).
// Bit numbering: bit 63 (the most significant) is cell 0 of the 8 x 8 grid, bit 62 cell 1, ...,
// bit 0 cell 63, cells in row-major order (row v, column u -> cell 8 v + u). So printing a hash in
// hex reads the grid row by row, two hex digits per row.
//
// Both hashes start from the same grey image: luma of the RGB image by ITU-R BT.601
// (Y = 0.299 R + 0.587 G + 0.114 B, cv::cvtColor RGB2GRAY, 8-bit) converted to float32, then
// resized with INTER_AREA (a box filter, i.e. antialiased, when shrinking) or INTER_LINEAR (when
// either side has to grow). The definitions follow the imagehash Python package (phash / dhash,
// https://github.com/JohannesBuchner/imagehash) except for the resampler (imagehash uses PIL's
// Lanczos) and the DCT normalisation (orthonormal here, unnormalised scipy DCT-II there).
#include <opencv2/core.hpp>

#include <cstdint>
#include <string>

namespace florence::curate {

enum class HashKind { kPHash, kDHash };

/// "phash" / "dhash". Throws florence::Error on other names.
HashKind parse_hash_kind(const std::string& name);
std::string hash_kind_name(HashKind kind);

/// Hamming distance of two 64-bit hashes (0..64).
inline int hamming(uint64_t a, uint64_t b) { return __builtin_popcountll(a ^ b); }

/// Grey float32 image of `width` x `height` from an 8-bit RGB (or 1-channel grey) image, by the
/// rule at the top of this file. Throws florence::Error on an empty image or a type other than
/// CV_8UC3 / CV_8UC1.
cv::Mat grey_resized(const cv::Mat& rgb, int width, int height);

/// pHash of a 32 x 32 grey float image (CV_32F or CV_64F): the orthonormal 2-D DCT-II (cv::dct,
/// computed in double), its 8 x 8 lowest frequencies D(v, u) for v, u < 8 (DC included, as in
/// imagehash), their median m (mean of the 32nd and 33rd smallest), and bit(cell 8 v + u) =
/// D(v, u) > m + eps, eps = 1e-9 * max |D(v, u)|. eps only makes numerically-zero coefficients
/// (exactly zero in exact arithmetic, e.g. every AC term of a flat image) compare as equal to a
/// zero median, so synthetic images hash the same on every platform; it is far below any real
/// image's coefficient differences. Throws florence::Error when the input is not 32 x 32 x 1.
uint64_t phash_from_grey32(const cv::Mat& grey32);

/// pHash (DCT hash, Zauner 2010 "Implementation and benchmarking of perceptual image hash
/// functions", as in imagehash.phash with hash_size 8, highfreq_factor 4) of an 8-bit RGB image:
/// phash_from_grey32(grey_resized(rgb, 32, 32)). Throws as grey_resized.
uint64_t phash(const cv::Mat& rgb);

/// dHash (difference hash, imagehash.dhash with hash_size 8) of an 8-bit RGB image:
/// g = grey_resized(rgb, 9, 8); bit(cell 8 y + x) = g(y, x + 1) > g(y, x) for x, y < 8.
/// Throws as grey_resized.
uint64_t dhash(const cv::Mat& rgb);

/// phash or dhash by kind.
uint64_t perceptual_hash(const cv::Mat& rgb, HashKind kind);

/// 128-bit content hash of decoded pixels (XXH3-128 over width, height, channel count as three
/// little-endian uint32 words, then the rows' bytes). Two files that decode to the same pixels
/// (PNG and BMP of one picture, a grey PNG and its RGB expansion after decode_rgb) hash equal.
struct PixelHash {
  uint64_t high = 0, low = 0;
  bool operator==(const PixelHash& o) const { return high == o.high && low == o.low; }
  bool operator!=(const PixelHash& o) const { return !(*this == o); }
  bool operator<(const PixelHash& o) const { return high != o.high ? high < o.high : low < o.low; }
};
/// Throws florence::Error on an empty image.
PixelHash pixel_hash(const cv::Mat& image);

/// "0123456789abcdef" (16 lower-case hex digits).
std::string hash_hex(uint64_t h);

}  // namespace florence::curate
