// Image decoding and preprocessing: hand-computed values and OpenCV as the reference for resizing.
#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <set>

#include "florence/data/corpus.h"
#include "florence/data/readers.h"
#include "florence/data/transforms.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_transforms {

using namespace florence::data;

namespace {

// 6 wide x 4 high, 8-bit RGB gradient: R = 10x + 50y, G = 200 - R, B = 7 (x = column, y = row).
cv::Mat gradient6x4() {
  cv::Mat m(4, 6, CV_8UC3);
  for (int y = 0; y < 4; ++y) {
    for (int x = 0; x < 6; ++x) {
      const int r = 10 * x + 50 * y;
      m.at<cv::Vec3b>(y, x) = cv::Vec3b(uint8_t(r), uint8_t(200 - r), 7);
    }
  }
  return m;
}

std::vector<uint8_t> encode(const cv::Mat& m, const std::string& ext, std::vector<int> params = {}) {
  std::vector<uint8_t> buf;
  EXPECT_TRUE(cv::imencode(ext, m, buf, params)) << ext;
  return buf;
}

int red_at(const cv::Mat& m, int y, int x) { return m.at<cv::Vec3b>(y, x)[0]; }

}  // namespace

TEST(CenterCrop, GradientCropMatchesHandComputedPixels) {
  const cv::Mat img = gradient6x4();
  // 4x2 crop: top = round((4-2)/2) = 1, left = round((6-4)/2) = 1.
  cv::Mat c = center_crop(img, 4, 2);
  ASSERT_EQ(c.cols, 4);
  ASSERT_EQ(c.rows, 2);
  const int expect_r[2][4] = {{60, 70, 80, 90}, {110, 120, 130, 140}};
  for (int y = 0; y < 2; ++y) {
    for (int x = 0; x < 4; ++x) {
      EXPECT_EQ(red_at(c, y, x), expect_r[y][x]);
      EXPECT_EQ(c.at<cv::Vec3b>(y, x)[1], 200 - expect_r[y][x]);
      EXPECT_EQ(c.at<cv::Vec3b>(y, x)[2], 7);
    }
  }
  // 3x3 crop: top = round(0.5) = 0 and left = round(1.5) = 2 (Python rounds half to even).
  c = center_crop(img, 3, 3);
  EXPECT_EQ(red_at(c, 0, 0), 20);
  EXPECT_EQ(red_at(c, 2, 2), 40 + 100);
}

TEST(CenterCrop, PadsWithZerosWhenCropIsLarger) {
  const cv::Mat img = gradient6x4();
  // 8 wide x 6 high: pad left 1, right 1, top 1, bottom 1 (torchvision padding), then crop all.
  cv::Mat c = center_crop(img, 8, 6);
  ASSERT_EQ(c.cols, 8);
  ASSERT_EQ(c.rows, 6);
  EXPECT_EQ(c.at<cv::Vec3b>(0, 0), cv::Vec3b(0, 0, 0));
  EXPECT_EQ(red_at(c, 1, 1), 0);    // original (0,0)
  EXPECT_EQ(c.at<cv::Vec3b>(1, 1)[1], 200);
  EXPECT_EQ(red_at(c, 4, 6), 200);  // original (y=3, x=5): 50 + 150
  EXPECT_EQ(c.at<cv::Vec3b>(5, 7), cv::Vec3b(0, 0, 0));
}

TEST(Resize, ShorterSideSizeTruncatesLikeTorchvision) {
  EXPECT_EQ(shorter_side_size(6, 4, 2), std::make_pair(3, 2));
  EXPECT_EQ(shorter_side_size(5, 3, 2), std::make_pair(3, 2));    // int(3.33)
  EXPECT_EQ(shorter_side_size(3, 5, 2), std::make_pair(2, 3));
  EXPECT_EQ(shorter_side_size(500, 375, 256), std::make_pair(341, 256));  // int(341.33)
  EXPECT_EQ(shorter_side_size(4, 4, 7), std::make_pair(7, 7));
}

TEST(Resize, BicubicEqualsOpenCvInterCubic) {
  const cv::Mat img = gradient6x4();
  for (auto [w, h] : {std::pair{3, 2}, std::pair{9, 7}, std::pair{4, 4}}) {
    cv::Mat ours = resize_bicubic(img, w, h);
    cv::Mat ref;
    cv::resize(img, ref, cv::Size(w, h), 0, 0, cv::INTER_CUBIC);
    ASSERT_EQ(ours.size(), ref.size());
    EXPECT_EQ(cv::norm(ours, ref, cv::NORM_INF), 0.0) << w << "x" << h;
  }
  EXPECT_THROW(resize_bicubic(img, 0, 3), florence::Error);
}

TEST(Resize, AntialiasAveragesAFineCheckerboard) {
  // 1-pixel black/white checkerboard reduced 8x: a box prefilter gives ~127 everywhere, whereas
  // plain bicubic sampling keeps picking near-pure black or white pixels.
  cv::Mat board(64, 64, CV_8UC3);
  for (int y = 0; y < 64; ++y)
    for (int x = 0; x < 64; ++x) board.at<cv::Vec3b>(y, x) = cv::Vec3b::all((x + y) % 2 ? 255 : 0);
  cv::Mat aa = resize_bicubic(board, 8, 8, true);
  double lo, hi;
  cv::minMaxLoc(aa.reshape(1), &lo, &hi);
  EXPECT_GE(lo, 117.0);
  EXPECT_LE(hi, 138.0);
}

TEST(Normalize, PerChannelValuesHandComputed) {
  cv::Mat px(1, 2, CV_8UC3);
  px.at<cv::Vec3b>(0, 0) = cv::Vec3b(255, 0, 128);  // R, G, B
  px.at<cv::Vec3b>(0, 1) = cv::Vec3b(0, 255, 0);
  torch::Tensor t = to_normalized_tensor(px, kImageNetMean, kImageNetStd);
  ASSERT_EQ(t.sizes(), (std::vector<int64_t>{3, 1, 2}));
  ASSERT_EQ(t.scalar_type(), torch::kFloat32);
  auto a = t.accessor<float, 3>();
  // (x/255 - mean) / std, computed by hand:
  EXPECT_NEAR(a[0][0][0], (1.0 - 0.485) / 0.229, 1e-6);          // 2.2489083
  EXPECT_NEAR(a[1][0][0], (0.0 - 0.456) / 0.224, 1e-6);          // -2.0357143
  EXPECT_NEAR(a[2][0][0], (128.0 / 255.0 - 0.406) / 0.225, 1e-6);  // 0.4264924
  EXPECT_NEAR(a[0][0][1], -0.485 / 0.229, 1e-6);
  EXPECT_NEAR(a[1][0][1], (1.0 - 0.456) / 0.224, 1e-6);
  EXPECT_NEAR(a[2][0][1], -0.406 / 0.225, 1e-6);
  torch::Tensor c = to_normalized_tensor(px, kClipMean, kClipStd);
  auto b = c.accessor<float, 3>();
  EXPECT_NEAR(b[0][0][0], 1.930336254158794, 1e-6);
  EXPECT_NEAR(b[1][0][0], -1.7520971281645974, 1e-6);
  EXPECT_NEAR(b[2][0][0], 0.33994864299551714, 1e-6);
}

TEST(EvalPipeline, CropAndNormalizeChainExact) {
  // image_size 4, crop_pct 1: shorter side 4 == height, so no resize; center crop 4x4 at left 1.
  TransformOptions o;
  o.image_size = 4;
  o.crop_pct = 1.0;
  ImageTransform tf(o);
  std::mt19937_64 rng(0);
  torch::Tensor t = tf.apply(gradient6x4(), rng);
  ASSERT_EQ(t.sizes(), (std::vector<int64_t>{3, 4, 4}));
  auto a = t.accessor<float, 3>();
  for (int y = 0; y < 4; ++y) {
    for (int x = 0; x < 4; ++x) {
      const double r = 10 * (x + 1) + 50 * y;
      EXPECT_NEAR(a[0][y][x], (r / 255.0 - 0.485) / 0.229, 1e-6);
      EXPECT_NEAR(a[1][y][x], ((200 - r) / 255.0 - 0.456) / 0.224, 1e-6);
      EXPECT_NEAR(a[2][y][x], (7 / 255.0 - 0.406) / 0.225, 1e-6);
    }
  }
}

TEST(EvalPipeline, ResizeThenCropMatchesOpenCvReference) {
  // image_size 2, crop_pct 1: shorter side -> 2, i.e. 6x4 -> 3x2 bicubic, then crop 2x2 at
  // left = round(0.5) = 0, top = 0.
  TransformOptions o;
  o.image_size = 2;
  o.crop_pct = 1.0;
  ImageTransform tf(o);
  std::mt19937_64 rng(0);
  cv::Mat geo = tf.geometry(gradient6x4(), rng);
  cv::Mat ref;
  cv::resize(gradient6x4(), ref, cv::Size(3, 2), 0, 0, cv::INTER_CUBIC);
  ASSERT_EQ(geo.size(), cv::Size(2, 2));
  EXPECT_EQ(cv::norm(geo, ref(cv::Rect(0, 0, 2, 2)), cv::NORM_INF), 0.0);
  // crop_pct 0.875 with image_size 7: shorter side floor(8) = 8 -> 12x8, crop 7x7 at
  // left round(2.5) = 2, top round(0.5) = 0.
  o.image_size = 7;
  o.crop_pct = 0.875;
  ImageTransform tf2(o);
  geo = tf2.geometry(gradient6x4(), rng);
  cv::resize(gradient6x4(), ref, cv::Size(12, 8), 0, 0, cv::INTER_CUBIC);
  EXPECT_EQ(cv::norm(geo, ref(cv::Rect(2, 0, 7, 7)), cv::NORM_INF), 0.0);
}

TEST(Decode, AlphaCompositedOnWhite) {
  cv::Mat bgra(1, 3, CV_8UC4);
  bgra.at<cv::Vec4b>(0, 0) = cv::Vec4b(0, 0, 255, 128);  // half-transparent red
  bgra.at<cv::Vec4b>(0, 1) = cv::Vec4b(0, 0, 0, 0);      // fully transparent black
  bgra.at<cv::Vec4b>(0, 2) = cv::Vec4b(255, 0, 0, 255);  // opaque blue
  cv::Mat rgb = decode_rgb(encode(bgra, ".png"));
  ASSERT_EQ(rgb.type(), CV_8UC3);
  // red: 255*128/255 + 255*(1 - 128/255) = 255; green/blue: 0 + 127 = 127.
  EXPECT_EQ(rgb.at<cv::Vec3b>(0, 0), cv::Vec3b(255, 127, 127));
  EXPECT_EQ(rgb.at<cv::Vec3b>(0, 1), cv::Vec3b(255, 255, 255));
  EXPECT_EQ(rgb.at<cv::Vec3b>(0, 2), cv::Vec3b(0, 0, 255));
}

TEST(Decode, GreyToRgbAndBgrOrder) {
  cv::Mat grey(2, 2, CV_8UC1, cv::Scalar(77));
  cv::Mat rgb = decode_rgb(encode(grey, ".png"));
  ASSERT_EQ(rgb.type(), CV_8UC3);
  EXPECT_EQ(rgb.at<cv::Vec3b>(1, 1), cv::Vec3b(77, 77, 77));
  cv::Mat bgr(1, 1, CV_8UC3, cv::Scalar(10, 20, 30));  // OpenCV order: B=10, G=20, R=30
  rgb = decode_rgb(encode(bgr, ".png"));
  EXPECT_EQ(rgb.at<cv::Vec3b>(0, 0), cv::Vec3b(30, 20, 10));
}

TEST(Decode, SixteenBitToEightBit) {
  cv::Mat g16(1, 3, CV_16UC1);
  g16.at<uint16_t>(0, 0) = 65535;  // -> 255
  g16.at<uint16_t>(0, 1) = 32896;  // 32896 / 257 = 128
  g16.at<uint16_t>(0, 2) = 1000;   // 3.89 -> 4
  cv::Mat rgb = decode_rgb(encode(g16, ".png"));
  EXPECT_EQ(rgb.at<cv::Vec3b>(0, 0), cv::Vec3b(255, 255, 255));
  EXPECT_EQ(rgb.at<cv::Vec3b>(0, 1), cv::Vec3b(128, 128, 128));
  EXPECT_EQ(rgb.at<cv::Vec3b>(0, 2), cv::Vec3b(4, 4, 4));
  // 16-bit BGRA, alpha half (32768/65535): red channel 65535 -> 255, others 65535*(1-a) -> 127.
  cv::Mat c16(1, 1, CV_16UC4, cv::Scalar(0, 0, 65535, 32768));
  rgb = decode_rgb(encode(c16, ".png"));
  EXPECT_EQ(rgb.at<cv::Vec3b>(0, 0), cv::Vec3b(255, 127, 127));
}

TEST(Decode, ProbeReadsHeaderSizes) {
  cv::Mat img(5, 7, CV_8UC3, cv::Scalar(1, 2, 3));  // 7 wide, 5 high
  for (const char* ext : {".png", ".jpg", ".bmp"}) {
    auto bytes = encode(img, ext);
    auto dims = probe_image_size(bytes.data(), bytes.size());
    ASSERT_TRUE(dims.has_value()) << ext;
    EXPECT_EQ(*dims, std::make_pair(int64_t(7), int64_t(5))) << ext;
  }
  if (cv::haveImageWriter(".webp")) {
    for (int quality : {80, 101}) {  // lossy (VP8) and lossless (VP8L)
      auto bytes = encode(img, ".webp", {cv::IMWRITE_WEBP_QUALITY, quality});
      auto dims = probe_image_size(bytes.data(), bytes.size());
      ASSERT_TRUE(dims.has_value()) << quality;
      EXPECT_EQ(*dims, std::make_pair(int64_t(7), int64_t(5))) << quality;
    }
  }
  const uint8_t junk[16] = {1, 2, 3};
  EXPECT_FALSE(probe_image_size(junk, sizeof junk).has_value());
}

TEST(Decode, DecompressionBombGuard) {
  cv::Mat img(10, 10, CV_8UC3, cv::Scalar::all(9));
  DecodeOptions small;
  small.max_pixels = 50;
  // Header path (PNG): refused before decoding.
  EXPECT_THROW(decode_rgb(encode(img, ".png"), small), ImageTooLarge);
  EXPECT_NO_THROW(decode_rgb(encode(img, ".png"), DecodeOptions{100}));
  // A forged PNG header claiming 100000 x 100000 pixels, with no pixel data: the header check
  // trips with the default (PIL) limit, without ever allocating 30 GB.
  std::vector<uint8_t> forged = encode(img, ".png");
  const uint8_t big[8] = {0, 1, 0x86, 0xa0, 0, 1, 0x86, 0xa0};  // 100000 BE32, twice
  std::copy(big, big + 8, forged.begin() + 16);
  forged.resize(33);
  EXPECT_THROW(decode_rgb(forged), ImageTooLarge);
  // 0xFF030000 x 0x89306E3F: the product overflows int64 (fuzz/regressions/image); it must still be refused.
  const uint8_t huge[8] = {0xff, 0x03, 0x00, 0x00, 0x89, 0x30, 0x6e, 0x3f};
  std::copy(huge, huge + 8, forged.begin() + 16);
  EXPECT_THROW(decode_rgb(forged), ImageTooLarge);
  EXPECT_THROW(florence::data::composite_on_white_png(forged, 32), ImageTooLarge);
  // After-decode path: a format without a header probe (TIFF, when available).
  if (cv::haveImageWriter(".tiff")) {
    auto tiff = encode(img, ".tiff");
    EXPECT_FALSE(probe_image_size(tiff.data(), tiff.size()).has_value());
    EXPECT_THROW(decode_rgb(tiff, small), ImageTooLarge);
  }
}

TEST(Decode, UndecodableBytesThrowError) {
  const std::vector<uint8_t> junk = {'n', 'o', 't', ' ', 'a', 'n', ' ', 'i', 'm', 'g'};
  EXPECT_THROW(decode_rgb(junk), florence::Error);
  EXPECT_THROW(decode_rgb(std::vector<uint8_t>{}), florence::Error);
  cv::Mat img(16, 16, CV_8UC3, cv::Scalar::all(100));
  auto png = encode(img, ".png");
  png.resize(png.size() / 2);  // truncated
  try {
    decode_rgb(png);
    FAIL() << "truncated PNG decoded";
  } catch (const ImageTooLarge&) {
    FAIL() << "wrong error type";
  } catch (const florence::Error&) {
  }
}

TEST(ReadFileBytes, AFolderOrAMissingFileIsAClearError) {
  // (before: a folder read as "basic_filebuf::underflow error reading the file: Is a directory")
  try {
    florence::data::read_file_bytes("/tmp");
    FAIL() << "a folder was read";
  } catch (const florence::Error& e) {
    EXPECT_EQ(std::string(e.what()), "'/tmp' is a folder, not a file");
  }
  EXPECT_THROW(florence::data::read_file_bytes("/nonexistent/x.png"), florence::Error);
}

TEST(RandomResizedCrop, BoxesRespectScaleAndRatioAndSeed) {
  std::set<std::tuple<int, int, int, int>> distinct;
  for (uint64_t seed = 0; seed < 50; ++seed) {
    std::mt19937_64 a(seed), b(seed);
    CropBox x = random_resized_crop_box(50, 40, a);
    CropBox y = random_resized_crop_box(50, 40, b);
    EXPECT_TRUE(x == y);
    EXPECT_GE(x.top, 0);
    EXPECT_GE(x.left, 0);
    EXPECT_LE(x.top + x.height, 40);
    EXPECT_LE(x.left + x.width, 50);
    // Rounding of w and h moves area and ratio slightly outside the sampled ranges.
    const double area = double(x.width) * x.height / 2000.0;
    EXPECT_GE(area, 0.08 * 0.7);
    EXPECT_LE(area, 1.0);
    distinct.insert({x.top, x.left, x.height, x.width});
  }
  EXPECT_GT(distinct.size(), 40u);
}

TEST(RandomResizedCrop, FallbackIsCentralCropWithClampedRatio) {
  // 100 x 1: every attempt gives h >= 2 > 1, so the fallback crops 1 x round(4/3) = 1 at the
  // centre: left = (100 - 1) / 2 = 49.
  std::mt19937_64 rng(3);
  CropBox box = random_resized_crop_box(100, 1, rng);
  EXPECT_EQ(box.top, 0);
  EXPECT_EQ(box.left, 49);
  EXPECT_EQ(box.height, 1);
  EXPECT_EQ(box.width, 1);
}

TEST(TrainPipeline, OutputSizeAndSeedDeterminism) {
  TransformOptions o;
  o.image_size = 32;
  o.train = true;
  ImageTransform tf(o);
  cv::Mat img(40, 50, CV_8UC3);
  cv::randu(img, 0, 256);
  std::mt19937_64 a(11), b(11), c(12);
  torch::Tensor ta = tf.apply(img, a), tb = tf.apply(img, b), tc = tf.apply(img, c);
  EXPECT_EQ(ta.sizes(), (std::vector<int64_t>{3, 32, 32}));
  EXPECT_TRUE(torch::equal(ta, tb));
  EXPECT_FALSE(torch::equal(ta, tc));
  // The result equals crop box + bicubic resize (+ flip) done by hand with the same draws.
  std::mt19937_64 d(11);
  CropBox box = random_resized_crop_box(50, 40, d);
  cv::Mat ref;
  cv::resize(img(cv::Rect(box.left, box.top, box.width, box.height)), ref, cv::Size(32, 32), 0, 0,
             cv::INTER_CUBIC);
  if (uniform01(d) < 0.5) cv::flip(ref, ref, 1);
  EXPECT_TRUE(torch::equal(ta, to_normalized_tensor(ref, kImageNetMean, kImageNetStd)));
}

TEST(Transform, RejectsBadOptions) {
  TransformOptions o;
  o.crop_pct = 0.0;
  EXPECT_THROW(ImageTransform{o}, florence::Error);
  o = TransformOptions{};
  o.image_size = 0;
  EXPECT_THROW(ImageTransform{o}, florence::Error);
  o = TransformOptions{};
  o.std = {0.2f, 0.0f, 0.2f};
  EXPECT_THROW(ImageTransform{o}, florence::Error);
}

}  // namespace test_transforms
