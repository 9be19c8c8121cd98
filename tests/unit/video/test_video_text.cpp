// The video-text model and caption retrieval: a freshly loaded VideoTextModel embeds a still clip as
// the two-tower model embeds its frame and a caption exactly as the two-tower model does; a
// video-text checkpoint saves and loads with its vocabulary; caption_retrieval on a hand-computed
// case (ranks, R@1 and the queries without a clip).
#include "florence/adapt/video/clip_input.h"
#include "florence/adapt/video/configs.h"
#include "florence/adapt/video/retrieval.h"
#include "florence/adapt/video/video_text.h"
#include "florence/core/error.h"
#include "florence/model/io.h"
#include "florence/model/registry.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "support/paths.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_video_text {

using namespace florence;

TEST(VideoTextModel, LoadedFromATwoTowerModelEmbedsAStillClipAsItsFrame) {
  torch::manual_seed(12);
  model::FlorenceModel f(*model::resolve_model("florence-nano").florence);
  {
    torch::NoGradGuard ng;  // non-trivial norms and temperature, so a weight left unloaded would show
    for (auto& p : f->named_parameters())
      if (p.key().find("norm") != std::string::npos) p.value().uniform_(0.5, 1.5);
    f->logit_scale.fill_(3.1);
  }
  f->eval();
  vision::VideoSwinConfig cfg = video::with_image_tower(video::resolve_video_config("video-nano"), f->config().vision);
  cfg.num_frames = 4;
  video::VideoTextModel m(cfg, f->config());
  m->load_from(f);
  m->eval();
  torch::NoGradGuard ng;
  const auto frames = torch::randn({2, 3, 64, 64});
  const auto img = f->encode_image(frames);
  const auto vid = m->encode_video(frames.unsqueeze(2).expand({2, 3, 4, 64, 64}).contiguous());
  EXPECT_LE((img - vid).abs().max().item<double>(), 1e-4);
  auto ids = torch::randint(1, 400, {3, 32}, torch::kLong);
  ids.index_put_({torch::indexing::Slice(), 20}, f->config().text.eot_token);  // each row needs its EOT
  EXPECT_LE((f->encode_text(ids) - m->encode_text(ids)).abs().max().item<double>(), 1e-6);
  EXPECT_DOUBLE_EQ(m->temperature().item<double>(), f->temperature().item<double>());
  // A two-tower model of another width does not fit: a clear error.
  auto wide = *model::resolve_model("florence-nano").florence;
  wide.embed_dim = 64;
  model::FlorenceModel g(wide);
  video::VideoTextModel m2(cfg, f->config());
  try {
    m2->load_from(g);
    ADD_FAILURE() << "no error for a 64-wide projection";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("image_projection"), std::string::npos) << e.what();
  }
}

TEST(VideoTextModel, RefusesAHeadAndNonCheckpoints) {
  auto cfg = video::resolve_video_config("video-nano");
  cfg.num_classes = 5;
  EXPECT_THROW(video::VideoTextModel(cfg, *model::resolve_model("florence-nano").florence), Error);
  const std::filesystem::path dir = std::filesystem::path(FLORENCE_TEST_TMP) / "video_text";
  std::filesystem::create_directories(dir);
  const std::string plain = (dir / "nano.safetensors").string();
  const auto spec = model::resolve_model("florence-nano");
  model::FlorenceModel f(*spec.florence);
  model::save_checkpoint(*f, spec, plain);
  EXPECT_FALSE(video::is_video_text_checkpoint(plain));
  EXPECT_FALSE(video::is_video_text_checkpoint((dir / "missing.safetensors").string()));
  // A "video_text" entry that is not a boolean is a clear error naming the sidecar, not a silent "no".
  {
    nlohmann::json side = nlohmann::json::parse(std::ifstream(dir / "nano.json"));
    side["video_text"] = "true";
    std::ofstream(dir / "nano.json") << side.dump();
    try {
      video::is_video_text_checkpoint(plain);
      ADD_FAILURE() << "a string \"video_text\" passed";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("nano.json: \"video_text\" must be true or false"), std::string::npos)
          << e.what();
    }
    side.erase("video_text");
    std::ofstream(dir / "nano.json") << side.dump();
  }
  try {
    video::load_video_text(plain, torch::kCPU);
    ADD_FAILURE() << "a two-tower checkpoint loaded as a video-text one";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a `video train --task retrieval` checkpoint"), std::string::npos)
        << e.what();
  }
}

// Two captions a = (1, 0), b = (0, 1), three clips (captions a, b, a):
//   clip0 (0.6, 0.8), clip1 (0.5, 0.866), clip2 (0.28, 0.96).
// text -> video: a scores [0.6, 0.5, 0.28] -> clip0 (correct) first: rank 1;
//                b scores [0.8, 0.866, 0.96] -> clip2, clip1: rank 2.
// A third caption c = (0.6, 0.8) has no clip: it is not a text query, but it is a candidate text.
TEST(CaptionRetrieval, HandComputed) {
  const auto video = torch::tensor({0.6, 0.8, 0.5, 0.866, 0.28, 0.96}, torch::kFloat).view({3, 2});
  const auto text = torch::tensor({1.0, 0.0, 0.0, 1.0, 0.6, 0.8}, torch::kFloat).view({3, 2});
  const nlohmann::json r = video::caption_retrieval(video, {"a", "b", "a"}, text, {"a", "b", "c"});
  EXPECT_EQ(r["num_clips"], 3);
  EXPECT_EQ(r["num_captions"], 3);
  EXPECT_EQ(r["t2v"]["num_queries"], 2);  // "c" has no clip: not a query
  EXPECT_DOUBLE_EQ(r["t2v"]["R@1"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(r["t2v"]["mean_rank"].get<double>(), 1.5);
  EXPECT_EQ(r["v2t"]["num_queries"], 3);
  EXPECT_EQ(r["v2t"]["num_items"], 3);  // every caption is a candidate
  EXPECT_DOUBLE_EQ(r["v2t"]["R@1"].get<double>(), 0.0);
  // clip0 against a, b, c: c (0.6*0.6 + 0.8*0.8 = 1.0) and b (0.8) beat a (0.6): rank 3.
  // clip1: b 0.866, c 0.9928 -> rank 2; clip2: c 0.936, b 0.96 -> a (0.28) rank 3.
  EXPECT_NEAR(r["v2t"]["mean_rank"].get<double>(), (3 + 2 + 3) / 3.0, 1e-12);
  EXPECT_THROW(video::caption_retrieval(video, {"a", "b", "z"}, text, {"a", "b", "c"}), Error);
  EXPECT_THROW(video::caption_retrieval(video, {"a", "b"}, text, {"a", "b", "c"}), Error);
}

// The caption queries are the distinct captions of the clips read, in order of first appearance.
TEST(CaptionRetrieval, DistinctCaptionsKeepFirstAppearanceOrder) {
  EXPECT_EQ(video::distinct_captions({"b", "a", "b", "c", "a"}), (std::vector<std::string>{"b", "a", "c"}));
  EXPECT_TRUE(video::distinct_captions({}).empty());
  EXPECT_EQ(video::distinct_captions({"x"}), (std::vector<std::string>{"x"}));
}

}  // namespace test_video_text
