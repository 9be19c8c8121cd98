// The video adapter: named configs and their counts (against the instantiated modules and the 2D
// counter), the inflated encoder against the image embedding of a still clip, multi-view
// averaging, and `video embed` end to end on the real opencv-doc clips, a still video written here,
// and a garbage file (a counted skip).
#include "florence/adapt/video/configs.h"
#include "florence/adapt/video/embed.h"
#include "florence/adapt/video/video_model.h"
#include "florence/core/checkpoint.h"
#include "florence/core/error.h"
#include "florence/data/transforms.h"
#include "florence/eval/encode.h"
#include "florence/model/info.h"
#include "florence/model/io.h"
#include "florence/model/registry.h"

#include <gtest/gtest.h>
#include <opencv2/imgproc.hpp>
#include <opencv2/videoio.hpp>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "support/paths.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_video_model {

namespace fs = std::filesystem;
using namespace florence;

namespace {

const std::string kClips = "/usr/share/doc/opencv-doc/examples/data/";

int64_t numel(const torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& [k, t] : core::state_dict(m)) n += t.numel();
  return n;
}

fs::path tmp_dir() {
  fs::path d = fs::path(FLORENCE_TEST_TMP) / "video_model";
  fs::create_directories(d);
  return d;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no florence::Error thrown>";
}

// A random florence-nano checkpoint (saved once per test binary).
const std::string& nano_checkpoint() {
  static const std::string path = [] {
    torch::manual_seed(31);
    model::ModelSpec spec = model::resolve_model("florence-nano");
    model::FlorenceModel m(*spec.florence);
    const std::string p = (tmp_dir() / "nano.safetensors").string();
    model::save_checkpoint(*m, spec, p);
    return p;
  }();
  return path;
}

}  // namespace

TEST(VideoConfigs, NamedConfigsAndTheirCounts) {
  EXPECT_EQ(video::video_config_names(), (std::vector<std::string>{"video-coswin-h", "video-nano"}));
  const auto nano = video::resolve_video_config("video-nano");
  EXPECT_EQ(nano.image.embed_dim, 48);
  EXPECT_EQ(nano.window(1), (std::array<int, 3>{2, 4, 4}));
  vision::VideoSwinTransformer m(nano);
  EXPECT_EQ(video::count_video(nano, 8, 64, 64).params, numel(*m));
  auto with_head = nano;
  with_head.num_classes = 10;
  vision::VideoSwinTransformer mh(with_head);
  EXPECT_EQ(video::count_video(with_head, 8, 64, 64).params, numel(*mh));
  // CoSwin-H video: the 2D tower's parameters plus the temporal extras, by hand: stem taps x2,
  // downsample taps x3, each stage's bias tables x (2Wt - 1).
  const auto h = video::resolve_video_config("video-coswin-h");
  const auto c2d = model::count_vision(h.image, 224, 224);
  const auto c3d = video::count_video(h, 32, 224, 224);
  int64_t extra = 352 * 3 * 7 * 7;  // one more stem tap
  for (int i = 0; i < 3; ++i) extra += 2 * int64_t(352 << i) * (2 * (352 << i)) * 3 * 3;  // two more taps
  const int wt[4] = {2, 4, 8, 8};
  for (int i = 0; i < 4; ++i) extra += int64_t(2 * wt[i] - 2) * 13 * 13 * h.image.num_heads[i] * h.image.depths[i];
  EXPECT_EQ(c3d.params - c2d.params, extra);
  EXPECT_NE(error_of([] { video::resolve_video_config("video-xl"); }).find("video-coswin-h, video-nano"),
            std::string::npos);
}

TEST(VideoConfigs, OneFrameTokenEqualsThe2DCount) {
  // One time token (T = tube), a 1-frame merge kernel and Wt = 1: exactly the 2D tower's work.
  auto c = video::resolve_video_config("video-nano");
  c.merge = {1, 1, 0};
  c.windows = {{1, 4, 4}, {1, 4, 4}, {1, 4, 4}};
  const auto v = video::count_video(c, c.tube, 64, 64);
  const auto i = model::count_vision(c.image, 64, 64);
  EXPECT_EQ(v.params, i.params + int64_t(c.tube - 1) * 48 * 3 * 7 * 7);
  EXPECT_DOUBLE_EQ(v.macs, i.macs + double(c.tube - 1) * 16 * 16 * 48 * 3 * 7 * 7);
}

TEST(VideoConfigs, JsonFileAndImageTowerSwap) {
  const fs::path f = tmp_dir() / "video.json";
  std::ofstream(f) << R"({"image": "florence-nano", "tube": 4, "windows": [[2,4,4],[2,4,4],[2,4,4]], "num_frames": 16})";
  const auto c = video::resolve_video_config(f.string());
  EXPECT_EQ(c.tube, 4);
  EXPECT_EQ(c.image.window_size, 4);
  std::ofstream(f) << R"({"image": "florence-nano", "tube": 0})";
  EXPECT_NE(error_of([&] { video::resolve_video_config(f.string()); }).find("tube"), std::string::npos);
  // On another tower (window 7, 4 stages): the spatial windows become 7; a list for 3 stages
  // falls back to the default rule.
  auto swapped = video::with_image_tower(video::resolve_video_config("video-coswin-h"),
                                         *model::resolve_model("coswin-t").vision);
  EXPECT_EQ(swapped.window(2), (std::array<int, 3>{8, 7, 7}));
  auto nano_on_t = video::with_image_tower(video::resolve_video_config("video-nano"),
                                           *model::resolve_model("coswin-t").vision);
  EXPECT_TRUE(nano_on_t.windows.empty());
  EXPECT_EQ(nano_on_t.window(3), (std::array<int, 3>{8, 7, 7}));
}

TEST(VideoEncoderTest, StillClipEmbedsAsItsFrame) {
  torch::manual_seed(8);
  model::FlorenceModel f(*model::resolve_model("florence-nano").florence);
  {
    torch::NoGradGuard ng;  // non-trivial norms, so a norm left at 1/0 by mistake would show
    for (auto& p : f->image_encoder->named_parameters()) {
      if (p.key().find("norm") != std::string::npos) p.value().uniform_(0.5, 1.5);
    }
  }
  f->eval();
  video::VideoEncoder enc = video::inflate_encoder(f, video::resolve_video_config("video-nano"));
  auto frame = torch::randn({3, 3, 64, 64});
  torch::NoGradGuard ng;
  auto img = f->encode_image(frame);
  auto vid = enc(frame.unsqueeze(2).expand({3, 3, 8, 64, 64}).contiguous());
  EXPECT_LE((img - vid).abs().max().item<double>(), 1e-4);
  EXPECT_NEAR(vid.norm(2, -1).min().item<double>(), 1.0, 1e-5);
}

TEST(MultiView, AveragesInBatches) {
  auto views = torch::arange(5 * 3 * 2 * 4 * 4, torch::kFloat32).view({5, 3, 2, 4, 4});
  int calls = 0;
  auto fn = [&](const torch::Tensor& v) {
    ++calls;
    return torch::stack({v.mean({1, 2, 3, 4}), v.amax({1, 2, 3, 4})}, 1);  // [b, 2]
  };
  auto avg = video::average_views(fn, views, 2);
  EXPECT_EQ(calls, 3);  // 2 + 2 + 1
  auto want = fn(views).mean(0);
  EXPECT_TRUE(torch::allclose(avg, want));
  EXPECT_NE(error_of([&] { video::average_views(fn, views.select(0, 0)); }).find("[V, 3, T, S, S]"),
            std::string::npos);
  EXPECT_NE(error_of([&] { video::average_views([](const torch::Tensor& v) { return v; }, views); }).find("expected [5, K]"),
            std::string::npos);
  // The layout helper: [V, T, 3, H, W] -> [V, 3, T, H, W].
  auto x = torch::randn({2, 4, 3, 5, 6});
  auto y = video::to_model_layout(x);
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2, 3, 4, 5, 6}));
  EXPECT_TRUE(torch::equal(y[1].select(1, 2), x[1][2]));
}

TEST(MultiView, RealClipViews) {
  data::ViewOptions o;
  o.sampling.frames = 2;
  o.num_clips = 2;
  o.num_crops = 3;
  o.transform.image_size = 32;
  o.transform.crop_pct = 1.0;
  auto fn = [](const torch::Tensor& v) { return v.mean({2, 3, 4}); };  // per-channel means [b, 3]
  auto avg = video::multi_view(fn, kClips + "Megamind.avi", o);
  auto views = data::read_views(kClips + "Megamind.avi", o).views;  // [6, 2, 3, 32, 32]
  auto want = views.mean({0, 1, 3, 4});
  EXPECT_LE((avg - want).abs().max().item<double>(), 1e-5);
}

TEST(VideoEmbed, RealClipsStillVideoAndGarbage) {
  // A still video: one frame of vtest.avi written 12 times with the lossless FFV1 codec (MJPEG's
  // rate control makes the frames differ by up to 41 grey levels); its embedding must be the image
  // embedding of the decoded frame (inflation is exact on a still clip).
  const fs::path still = tmp_dir() / "still.avi";
  {
    cv::VideoCapture cap(kClips + "vtest.avi", cv::CAP_FFMPEG);
    cv::Mat frame;
    ASSERT_TRUE(cap.read(frame));
    cv::VideoWriter w(still.string(), cv::CAP_FFMPEG, cv::VideoWriter::fourcc('F', 'F', 'V', '1'), 10.0, frame.size());
    ASSERT_TRUE(w.isOpened());
    for (int i = 0; i < 12; ++i) w.write(frame);
  }
  const fs::path garbage = tmp_dir() / "garbage.mp4";
  std::ofstream(garbage) << std::string(5000, 'x');

  video::VideoEmbedOptions o;
  o.load.checkpoint = nano_checkpoint();
  o.sampling.frames = 8;
  const std::vector<std::string> paths{kClips + "Megamind.avi", kClips + "tree.avi", still.string(), garbage.string()};
  video::VideoEmbedResult r = video::embed_videos(paths, o);
  ASSERT_EQ(r.keys.size(), 3u);
  EXPECT_EQ(r.embeds.sizes(), (std::vector<int64_t>{3, 128}));
  EXPECT_LE((r.embeds.norm(2, 1) - 1).abs().max().item<double>(), 1e-5);
  EXPECT_EQ(r.skipped, (data::SkipCounts{{"not_a_video", 1}}));
  EXPECT_EQ(r.skipped_paths, (std::vector<std::string>{garbage.string()}));
  EXPECT_EQ(r.infos[1].frames, 68);  // tree.avi: the decoded count
  EXPECT_EQ(r.config.window(2), (std::array<int, 3>{4, 4, 4}));

  eval::LoadOptions lo;
  lo.checkpoint = nano_checkpoint();
  eval::EvalModel m = eval::load_eval_model(lo);
  data::TransformOptions t;
  t.image_size = m.preprocess.image_size;
  t.crop_pct = *m.preprocess.crop_pct;
  data::DecodedVideo d = data::decode_frames(still.string(), [](int64_t) { return std::vector<int64_t>{5}; });
  std::mt19937_64 rng(0);
  auto img = eval::encode_image_tensor(m, data::ImageTransform(t).apply(d.frames[0], rng).unsqueeze(0));
  EXPECT_LE((img[0] - r.embeds[2]).abs().max().item<double>(), 1e-4);
  // Different videos give different embeddings.
  EXPECT_LT(torch::dot(r.embeds[0], r.embeds[1]).item<double>(), 0.9999);

  const std::string out = (tmp_dir() / "emb.safetensors").string();
  video::save_video_embeddings(r, o, out);
  auto f = core::load_safetensors(out);
  EXPECT_TRUE(torch::equal(f.tensors.at("video_embeds"), r.embeds));
  auto meta = nlohmann::json::parse(f.metadata.at("florence.video_embed"));
  EXPECT_EQ(meta["keys"][1], kClips + "tree.avi");
  EXPECT_EQ(meta["videos"][1]["container_frames"], 444);
  EXPECT_EQ(meta["skipped"]["not_a_video"], 1);
  EXPECT_TRUE(fs::exists(tmp_dir() / "emb.json"));

  EXPECT_NE(error_of([&] { video::embed_videos({garbage.string()}, o); }).find("none of the 1 videos"),
            std::string::npos);
}

}  // namespace test_video_model
