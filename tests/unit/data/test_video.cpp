// Video decoding and clip sampling on the real clips of Debian opencv-doc
// (/usr/share/doc/opencv-doc/examples/data: vtest.avi, Megamind.avi, Megamind_bugy.avi, tree.avi,
// plain AVI files, not compressed), a truncated copy, garbage and missing files; hand-computed
// frame indices; one crop per clip; multi-view crops.
#include "florence/core/error.h"
#include "florence/data/transforms.h"
#include "florence/data/video.h"

#include <gtest/gtest.h>
#include <opencv2/videoio.hpp>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "support/paths.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_video {

namespace fs = std::filesystem;
using namespace florence;
using namespace florence::data;

namespace {

const std::string kClips = "/usr/share/doc/opencv-doc/examples/data/";

std::string clip(const std::string& name) {
  const std::string p = kClips + name;
  if (!fs::exists(p)) ADD_FAILURE() << p << " is missing: install Debian opencv-doc (scripts/setup)";
  return p;
}

fs::path tmp_dir() {
  fs::path d = fs::path(FLORENCE_TEST_TMP) / "video";
  fs::create_directories(d);
  return d;
}

// The first `bytes` bytes of `src` as a new file.
std::string truncated_copy(const std::string& src, size_t bytes, const std::string& name) {
  std::ifstream in(src, std::ios::binary);
  std::string data(bytes, '\0');
  in.read(data.data(), static_cast<std::streamsize>(bytes));
  const fs::path out = tmp_dir() / name;
  std::ofstream(out, std::ios::binary).write(data.data(), in.gcount());
  return out.string();
}

std::string reason_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const VideoError& e) {
    return e.reason() + ": " + e.what();
  } catch (const Error& e) {
    return std::string("<florence::Error, not VideoError> ") + e.what();
  }
  return "<no error>";
}

TransformOptions eval_opts(int size) {
  TransformOptions t;
  t.image_size = size;
  t.crop_pct = 1.0;
  return t;
}

}  // namespace

TEST(VideoSampling, IndicesByHand) {
  ClipSampling u;
  u.frames = 4;
  EXPECT_EQ(sample_indices(10, u), (std::vector<int64_t>{1, 3, 6, 8}));     // floor((i + .5) * 2.5)
  EXPECT_EQ(sample_indices(10, u, 0, 2), (std::vector<int64_t>{0, 3, 5, 8}));  // offset .25
  EXPECT_EQ(sample_indices(10, u, 1, 2), (std::vector<int64_t>{1, 4, 6, 9}));  // offset .75
  EXPECT_EQ(sample_indices(2, u), (std::vector<int64_t>{0, 0, 1, 1}));        // fewer frames than T
  ClipSampling s;
  s.frames = 4;
  s.mode = SampleMode::kStride;
  s.stride = 3;  // span 10
  EXPECT_EQ(sample_indices(20, s), (std::vector<int64_t>{5, 8, 11, 14}));  // centred
  EXPECT_EQ(sample_indices(20, s, 0, 3), (std::vector<int64_t>{0, 3, 6, 9}));
  EXPECT_EQ(sample_indices(20, s, 1, 3), (std::vector<int64_t>{5, 8, 11, 14}));
  EXPECT_EQ(sample_indices(20, s, 2, 3), (std::vector<int64_t>{10, 13, 16, 19}));
  EXPECT_EQ(sample_indices(5, s), (std::vector<int64_t>{0, 3, 4, 4}));  // short: the last frame repeats
  EXPECT_THROW(sample_indices(0, u), Error);
  EXPECT_THROW(sample_indices(10, u, 2, 2), Error);
  EXPECT_EQ(parse_sample_mode("stride"), SampleMode::kStride);
  EXPECT_THROW(parse_sample_mode("random"), Error);
}

TEST(VideoDecode, RealClipsFromTheirContainers) {
  const VideoInfo v = probe_video(clip("vtest.avi"));
  EXPECT_EQ(v.frames, 795);
  EXPECT_EQ(v.container_frames, 795);
  EXPECT_NEAR(v.fps, 10.0, 1e-6);
  EXPECT_EQ(v.width, 768);
  EXPECT_EQ(v.height, 576);
  EXPECT_FALSE(v.counted);
  const VideoInfo m = probe_video(clip("Megamind.avi"));
  EXPECT_EQ(m.frames, 270);
  EXPECT_NEAR(m.fps, 23.976, 1e-3);
  EXPECT_EQ(m.width, 720);
  EXPECT_EQ(m.height, 528);
  VideoReadOptions count;
  count.count_frames = true;
  const VideoInfo mc = probe_video(clip("Megamind_bugy.avi"), count);
  EXPECT_EQ(mc.frames, 270);
  EXPECT_TRUE(mc.counted);
}

TEST(VideoDecode, ContainerThatCountsFramesThatDoNotDecode) {
  // tree.avi's header says 444 frames at 15 fps; 376 of its chunks are empty (AVI drop frames),
  // 68 decode, spread over the same 29.6 s. The clip is sampled from the 68.
  ClipSampling s;
  s.frames = 8;
  Clip c = read_clip(clip("tree.avi"), s, ImageTransform(eval_opts(32)));
  EXPECT_EQ(c.info.container_frames, 444);
  EXPECT_EQ(c.info.frames, 68);
  EXPECT_TRUE(c.info.counted);
  EXPECT_EQ(c.indices, (std::vector<int64_t>{4, 12, 21, 29, 38, 46, 55, 63}));  // floor((i + .5) * 8.5)
  EXPECT_EQ(c.frames.sizes(), (std::vector<int64_t>{8, 3, 32, 32}));
}

TEST(VideoDecode, ClipFramesAreTheDecodedFramesPreprocessed) {
  // Independent check of the index mapping and the preprocessing: decode Megamind.avi frame by
  // frame here and run the image pipeline on the frames read_clip should have picked.
  ClipSampling s;
  s.frames = 6;
  s.mode = SampleMode::kStride;
  s.stride = 7;
  const ImageTransform tf(eval_opts(48));
  Clip c = read_clip(clip("Megamind.avi"), s, tf);
  const std::vector<int64_t> want_idx = sample_indices(270, s);
  ASSERT_EQ(c.indices, want_idx);
  cv::VideoCapture cap(clip("Megamind.avi"), cv::CAP_FFMPEG);
  ASSERT_TRUE(cap.isOpened());
  cv::Mat bgr;
  std::mt19937_64 rng(0);
  size_t k = 0;
  for (int64_t i = 0; i <= want_idx.back(); ++i) {
    ASSERT_TRUE(cap.read(bgr));
    while (k < want_idx.size() && want_idx[k] == i) {
      torch::Tensor expect = tf.apply(to_rgb8(bgr), rng);
      EXPECT_TRUE(torch::equal(c.frames[static_cast<int64_t>(k)], expect)) << "frame " << i;
      ++k;
    }
  }
  EXPECT_EQ(k, want_idx.size());
  // The clip moves: its first and last frames differ.
  EXPECT_GT((c.frames[0] - c.frames[5]).abs().mean().item<double>(), 0.05);
}

TEST(VideoDecode, TrainModeDrawsOneCropForTheWholeClip) {
  // vtest.avi is a fixed camera: consecutive frames cropped at the same box nearly agree, while
  // two independent random crops of one frame do not.
  TransformOptions t = eval_opts(64);
  t.train = true;
  const ImageTransform tf(t);
  ClipSampling s;
  s.frames = 4;
  s.mode = SampleMode::kStride;
  s.stride = 1;
  std::mt19937_64 rng(123);
  Clip c = read_clip(clip("vtest.avi"), s, tf, rng);
  const double same_box = (c.frames[0] - c.frames[1]).abs().mean().item<double>();
  std::mt19937_64 r1(1), r2(2);
  DecodedVideo d = decode_frames(clip("vtest.avi"), [](int64_t) { return std::vector<int64_t>{397}; });
  const double other_box = (tf.apply(d.frames[0], r1) - tf.apply(d.frames[0], r2)).abs().mean().item<double>();
  EXPECT_LT(same_box, 0.1);
  EXPECT_GT(other_box, 3 * same_box);
}

TEST(VideoDecode, TruncatedGarbageAndMissingFilesAreClearErrors) {
  ClipSampling s;
  s.frames = 8;
  const ImageTransform tf(eval_opts(32));
  // Megamind.avi cut at 400 kB: the header still says 270 frames (11.3 s), 85 decode (3.5 s).
  const std::string cut = truncated_copy(clip("Megamind.avi"), 400000, "megamind_cut.avi");
  const std::string r1 = reason_of([&] { read_clip(cut, s, tf); });
  EXPECT_EQ(r1.rfind("truncated_video", 0), 0u) << r1;
  EXPECT_NE(r1.find("270 frames"), std::string::npos) << r1;
  EXPECT_NE(r1.find(cut), std::string::npos) << r1;
  VideoReadOptions count;
  count.count_frames = true;
  EXPECT_EQ(reason_of([&] { probe_video(cut, count); }).rfind("truncated_video", 0), 0u);
  // tree.avi cut short: fewer frames than the header AND a shorter time span -> truncated, not
  // mistaken for the drop-frame case above.
  const std::string tree_cut = truncated_copy(clip("tree.avi"), 1100000, "tree_cut.avi");
  const std::string r2 = reason_of([&] { read_clip(tree_cut, s, tf); });
  EXPECT_EQ(r2.rfind("truncated_video", 0), 0u) << r2;
  // Frames before the cut still decode when nothing later is asked for.
  DecodedVideo first = decode_frames(cut, [](int64_t) { return std::vector<int64_t>{0, 10, 20}; });
  EXPECT_EQ(first.frames.size(), 3u);
  // Garbage, a text file, an empty file, a missing file.
  const fs::path garbage = tmp_dir() / "garbage.avi";
  {
    std::mt19937_64 g(5);
    std::ofstream out(garbage, std::ios::binary);
    for (int i = 0; i < 100000; ++i) out.put(static_cast<char>(g() & 0xff));
  }
  const fs::path text = tmp_dir() / "notes.mp4";
  std::ofstream(text) << "not a video\n";
  const fs::path empty = tmp_dir() / "empty.avi";
  std::ofstream(empty).close();
  EXPECT_EQ(reason_of([&] { read_clip(garbage.string(), s, tf); }).rfind("not_a_video", 0), 0u);
  EXPECT_EQ(reason_of([&] { read_clip(text.string(), s, tf); }).rfind("not_a_video", 0), 0u);
  EXPECT_EQ(reason_of([&] { probe_video(empty.string()); }).rfind("not_a_video", 0), 0u);
  EXPECT_EQ(reason_of([&] { read_clip((tmp_dir() / "nope.avi").string(), s, tf); }).rfind("missing_file", 0), 0u);
  // A frame-size guard below the clip's 720 x 528.
  VideoReadOptions small;
  small.max_pixels = 100000;
  EXPECT_EQ(reason_of([&] { probe_video(clip("Megamind.avi"), small); }).rfind("video_too_large", 0), 0u);
}

TEST(VideoViews, ClipsTimesCropsWithTheCropsOfMmactionThreeCrop) {
  ViewOptions o;
  o.sampling.frames = 2;
  o.num_clips = 2;
  o.num_crops = 3;
  o.transform = eval_opts(64);
  Views v = read_views(clip("vtest.avi"), o);
  ASSERT_EQ(v.views.sizes(), (std::vector<int64_t>{6, 2, 3, 64, 64}));
  // By hand: vtest is 768 x 576; the shorter side to 64 -> 85 x 64 (int(64 * 768 / 576)); crops at
  // x = 0, lround(10.5) = 11, 21. Clip 1 of 2, frame 1 of 2: index
  // floor((1 + 0.75) * 795 / 2) = 695; view 1 * 3 + 2 = the right crop of clip 1.
  DecodedVideo d = decode_frames(clip("vtest.avi"), [](int64_t) { return std::vector<int64_t>{695}; });
  cv::Mat resized = resize_bicubic(d.frames[0], 85, 64);
  auto right = to_normalized_tensor(resized(cv::Rect(21, 0, 64, 64)), kImageNetMean, kImageNetStd);
  EXPECT_TRUE(torch::equal(v.views[5][1], right));
  auto left = to_normalized_tensor(resized(cv::Rect(0, 0, 64, 64)), kImageNetMean, kImageNetStd);
  EXPECT_TRUE(torch::equal(v.views[3][1], left));
  // One crop is read_clip's eval centre crop.
  o.num_clips = 1;
  o.num_crops = 1;
  Views one = read_views(clip("vtest.avi"), o);
  Clip c = read_clip(clip("vtest.avi"), o.sampling, ImageTransform(o.transform));
  EXPECT_TRUE(torch::equal(one.views[0], c.frames));
  // Portrait frames are cropped along their height.
  cv::Mat portrait(100, 50, CV_8UC3, cv::Scalar(1, 2, 3));
  auto crops = spatial_crops(portrait, 3, eval_opts(20));
  ASSERT_EQ(crops.size(), 3u);
  for (const auto& m : crops) EXPECT_EQ(m.size(), cv::Size(20, 20));
  EXPECT_THROW(read_views(clip("vtest.avi"), [] {
                 ViewOptions b;
                 b.num_crops = 0;
                 return b;
               }()),
               Error);
}

}  // namespace test_video
