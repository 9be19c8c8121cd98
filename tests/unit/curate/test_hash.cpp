// pHash / dHash on hand-checkable synthetic images, against an independent naive DCT on real
// images, and their stability under resizing, JPEG re-encoding and small crops; the pixel hash.
#include <gtest/gtest.h>

#include <cmath>
#include <opencv2/imgproc.hpp>

#include "florence/core/error.h"
#include "florence/curate/phash.h"
#include "unit/curate/real_images.h"
#include "support/paths.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_hash {

using namespace florence::curate;

namespace {

/// RGB image whose three channels equal `grey` (so the BT.601 luma is exactly `grey`).
cv::Mat rgb_of(const cv::Mat& grey8) {
  cv::Mat rgb;
  cv::cvtColor(grey8, rgb, cv::COLOR_GRAY2RGB);
  return rgb;
}

/// size x size ramp: value 40 + step * (x or y), increasing to the right (horizontal) or down.
cv::Mat ramp(int size, bool horizontal, bool increasing, int step = 4) {
  cv::Mat g(size, size, CV_8UC1);
  for (int y = 0; y < size; ++y)
    for (int x = 0; x < size; ++x) {
      int t = horizontal ? x : y;
      if (!increasing) t = size - 1 - t;
      g.at<uint8_t>(y, x) = uint8_t(40 + step * t);
    }
  return rgb_of(g);
}

/// Independent pHash: the DCT-II written out as sums (orthonormal scaling), median, bits.
uint64_t naive_phash(const cv::Mat& grey32f) {
  const int n = 32;
  double d[8][8];
  for (int v = 0; v < 8; ++v)
    for (int u = 0; u < 8; ++u) {
      double s = 0;
      for (int y = 0; y < n; ++y)
        for (int x = 0; x < n; ++x)
          s += double(grey32f.at<float>(y, x)) * std::cos(M_PI * (2 * y + 1) * v / (2.0 * n)) *
               std::cos(M_PI * (2 * x + 1) * u / (2.0 * n));
      const double cv_ = v == 0 ? std::sqrt(1.0 / n) : std::sqrt(2.0 / n);
      const double cu = u == 0 ? std::sqrt(1.0 / n) : std::sqrt(2.0 / n);
      d[v][u] = cv_ * cu * s;
    }
  std::vector<double> all;
  for (auto& row : d)
    for (double x : row) all.push_back(x);
  std::vector<double> sorted = all;
  std::sort(sorted.begin(), sorted.end());
  const double median = (sorted[31] + sorted[32]) / 2;
  uint64_t h = 0;
  for (int c = 0; c < 64; ++c)
    if (all[size_t(c)] > median) h |= uint64_t(1) << (63 - c);
  return h;
}

}  // namespace

TEST(PHash, FlatImageHasOnlyTheDcBit) {
  // Every AC coefficient of a flat image is 0, the DC term is positive: the median of the 64
  // low frequencies is 0 and only cell 0 (bit 63) is above it.
  const cv::Mat flat(48, 64, CV_8UC3, cv::Scalar(128, 128, 128));
  EXPECT_EQ(phash(flat), 0x8000000000000000ull);
  EXPECT_EQ(dhash(flat), 0u);  // no pixel is brighter than its left neighbour
}

TEST(PHash, RampsByHand) {
  // A horizontal ramp is constant down the columns, so only row v = 0 of the DCT is non-zero.
  // Of it, the even u > 0 terms vanish (the centred ramp is odd about the middle, those cosines
  // even) and the odd ones are negative for an increasing ramp (cosine falls while x rises):
  // 4 negative, 59 zero, 1 positive (DC) -> median 0 -> hash = DC bit only.
  EXPECT_EQ(phash(ramp(32, true, true)), 0x8000000000000000ull);
  // Flipped, the odd terms u = 1, 3, 5, 7 turn positive: cells 0, 1, 3, 5, 7 -> bits 63, 62, 60,
  // 58, 56 = 0xD5 in the top byte.
  EXPECT_EQ(phash(ramp(32, true, false)), 0xD500000000000000ull);
  EXPECT_EQ(hamming(phash(ramp(32, true, true)), phash(ramp(32, true, false))), 4);
  // The vertical ramp is the transpose: column u = 0, cells 0, 8, 24, 40, 56 when decreasing.
  EXPECT_EQ(phash(ramp(32, false, true)), 0x8000000000000000ull);
  EXPECT_EQ(phash(ramp(32, false, false)), 0x8080008000800080ull);
  // A 64 px ramp box-filtered to 32 px is still a linear ramp: same hashes.
  EXPECT_EQ(phash(ramp(64, true, false, 2)), 0xD500000000000000ull);
}

TEST(DHash, RampsByHand) {
  // Increasing to the right: every pixel of the 9 x 8 grid is brighter than its left neighbour.
  EXPECT_EQ(dhash(ramp(32, true, true)), ~uint64_t(0));
  EXPECT_EQ(dhash(ramp(32, true, false)), 0u);  // the flipped ramp: none is
  EXPECT_EQ(hamming(dhash(ramp(32, true, true)), dhash(ramp(32, true, false))), 64);
  EXPECT_EQ(dhash(ramp(32, false, true)), 0u);  // vertical: left and right neighbours are equal
  EXPECT_EQ(dhash(ramp(200, true, true, 1)), ~uint64_t(0));
}

TEST(PHash, MatchesNaiveDctOnRealImages) {
  int checked = 0;
  for (const auto& code : curate_test::emoji_codes()) {
    const cv::Mat rgb = curate_test::emoji_rgb(code);
    ASSERT_FALSE(rgb.empty()) << "emoji " << code << " missing: run scripts/setup";
    const cv::Mat g = grey_resized(rgb, 32, 32);
    EXPECT_EQ(phash_from_grey32(g), naive_phash(g)) << code;
    EXPECT_EQ(phash(rgb), naive_phash(g)) << code;
    ++checked;
  }
  EXPECT_EQ(checked, 12);
}

TEST(PHash, IdenticalZeroDistinctFar) {
  std::vector<uint64_t> p, d;
  for (const auto& code : curate_test::emoji_codes()) {
    const cv::Mat rgb = curate_test::emoji_rgb(code);
    ASSERT_FALSE(rgb.empty());
    EXPECT_EQ(hamming(phash(rgb), phash(rgb.clone())), 0);
    p.push_back(phash(rgb));
    d.push_back(dhash(rgb));
  }
  int min_p = 64, min_d = 64;
  for (size_t i = 0; i < p.size(); ++i)
    for (size_t j = i + 1; j < p.size(); ++j) {
      min_p = std::min(min_p, hamming(p[i], p[j]));
      min_d = std::min(min_d, hamming(d[i], d[j]));
    }
  // Twelve different emoji: no two within the default threshold (10) of each other.
  EXPECT_GT(min_p, 10);
  EXPECT_GT(min_d, 10);
}

TEST(PHash, StableUnderResizeJpegAndCrop) {
  // Real clip art rendered at 256 px, then edited the way the near-duplicate benchmark plants
  // copies. Measured when written (3 renders): resize / JPEG / brightness move pHash by 0-2 bits
  // and dHash by 0-1; the ~6% crop moves pHash by 2-12 and dHash by 0-7 (neither hash is built for
  // crops). Different images lie > 10 bits apart (PHash.IdenticalZeroDistinctFar).
  const std::string tmp = std::string(FLORENCE_TEST_TMP) + "/curate_hash";
  const std::vector<std::string> svgs = {"animals/bat_orlando_karam_.svg", "animals/amphibian/2_dead_frogs_lumen_desig_01.svg",
                                         "animals/bison_leif_lodahl_01.svg"};
  int worst_p = 0, worst_d = 0, crop_p = 0, crop_d = 0;
  for (const auto& rel : svgs) {
    const cv::Mat img = curate_test::clipart_rgb(rel, 256, tmp);
    ASSERT_FALSE(img.empty()) << rel << ": rsvg-convert (librsvg2-bin) and openclipart-svg are needed";
    cv::Mat small, large, brighter;
    cv::resize(img, small, cv::Size(96, 96), 0, 0, cv::INTER_AREA);
    cv::resize(img, large, cv::Size(400, 400), 0, 0, cv::INTER_CUBIC);
    img.convertTo(brighter, -1, 1.0, 25);  // +25 grey levels (saturating)
    const cv::Mat jpeg = florence::data::decode_rgb(curate_test::encode(img, 20));  // JPEG quality 20
    for (const cv::Mat& v : {small, large, brighter, jpeg}) {
      worst_p = std::max(worst_p, hamming(phash(img), phash(v)));
      worst_d = std::max(worst_d, hamming(dhash(img), dhash(v)));
    }
    const cv::Mat crop = img(cv::Rect(8, 8, 240, 240)).clone();  // 6% off two sides
    crop_p = std::max(crop_p, hamming(phash(img), phash(crop)));
    crop_d = std::max(crop_d, hamming(dhash(img), dhash(crop)));
  }
  EXPECT_LE(worst_p, 4) << "pHash moved too much under resize / JPEG / brightness";
  EXPECT_LE(worst_d, 4) << "dHash moved too much under resize / JPEG / brightness";
  EXPECT_LE(crop_p, 16);
  EXPECT_LE(crop_d, 12);
}

TEST(PixelHash, SamePixelsDifferentEncodings) {
  const cv::Mat rgb = curate_test::emoji_rgb("1f34e");
  ASSERT_FALSE(rgb.empty());
  // PNG at two compression levels and BMP decode to the same pixels.
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  std::vector<uint8_t> png9, bmp;
  cv::imencode(".png", bgr, png9, {cv::IMWRITE_PNG_COMPRESSION, 9});
  cv::imencode(".bmp", bgr, bmp);
  const auto png0 = curate_test::encode(rgb);
  EXPECT_NE(png0, png9);
  EXPECT_EQ(pixel_hash(florence::data::decode_rgb(png0)), pixel_hash(florence::data::decode_rgb(png9)));
  EXPECT_EQ(pixel_hash(rgb), pixel_hash(florence::data::decode_rgb(bmp)));
  // One changed pixel, or the same bytes with another shape, hash differently.
  cv::Mat one = rgb.clone();
  one.at<cv::Vec3b>(10, 10)[0] ^= 1;
  EXPECT_NE(pixel_hash(rgb), pixel_hash(one));
  EXPECT_NE(pixel_hash(rgb), pixel_hash(rgb.reshape(3, 32)));
  // A view (non-contiguous rows) hashes like its copy.
  EXPECT_EQ(pixel_hash(rgb(cv::Rect(3, 5, 20, 30))), pixel_hash(rgb(cv::Rect(3, 5, 20, 30)).clone()));
}

TEST(PHash, BadInputThrows) {
  EXPECT_THROW(phash(cv::Mat()), florence::Error);
  EXPECT_THROW(phash(cv::Mat(8, 8, CV_32FC3)), florence::Error);
  EXPECT_THROW(phash_from_grey32(cv::Mat(16, 16, CV_32F)), florence::Error);
  EXPECT_THROW(parse_hash_kind("ahash"), florence::Error);
  EXPECT_EQ(parse_hash_kind("dhash"), HashKind::kDHash);
  EXPECT_EQ(hash_hex(0xD500000000000001ull), "d500000000000001");
}

}  // namespace test_hash
