// classify(): probabilities are softmax(tau * cosine) with the model's temperature applied before
// the softmax, checked against embeddings computed directly with the model's encoders.
#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>

#include "florence/core/error.h"
#include "florence/data/transforms.h"
#include "florence/eval/embed.h"
#include "florence/eval/zero_shot.h"
#include "florence/text/tokenizer.h"
#include "support/paths.h"
#include "support/vocab.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_classify {

using namespace florence;
namespace fs = std::filesystem;

namespace {

struct Fixture {
  eval::EvalModel m;
  std::vector<std::string> files;
};

Fixture& fixture() {
  static Fixture f = [] {
    torch::manual_seed(0);
    Fixture x;
    eval::LoadOptions lo;
    lo.model = "florence-nano";
    lo.vocab = ::test::clip_vocab();
    lo.preprocess.crop_pct = 1.0;
    x.m = eval::load_eval_model(lo);
    fs::path d = fs::path(FLORENCE_TEST_TMP) / "unit_eval_classify";
    fs::remove_all(d);
    fs::create_directories(d);
    cv::RNG rng(7);
    for (int i = 0; i < 3; ++i) {
      cv::Mat img(80, 64, CV_8UC3);
      rng.fill(img, cv::RNG::UNIFORM, 0, 255);
      const std::string p = (d / ("img" + std::to_string(i) + ".png")).string();
      cv::imwrite(p, img);
      x.files.push_back(p);
    }
    return x;
  }();
  return f;
}

void set_logit_scale(eval::EvalModel& m, double tau) {
  torch::NoGradGuard ng;
  m.model->logit_scale.fill_(std::log(tau));
}

}  // namespace

TEST(Classify, ProbabilitiesAreSoftmaxOfTauTimesCosine) {
  Fixture& f = fixture();
  set_logit_scale(f.m, 37.0);
  const std::vector<std::string> labels{"red car", "a dog", "tree"};
  eval::ClassifyResult r = eval::classify(f.m, eval::image_inputs(f.files), labels, {"{}"});
  ASSERT_EQ(r.probs.sizes(), (std::vector<int64_t>{3, 3}));
  EXPECT_NEAR(r.temperature, 37.0, 1e-4);
  EXPECT_EQ(r.image_keys, f.files);

  // Independent path: the eval transform + encoders called directly.
  data::TransformOptions to;
  to.image_size = 64;
  to.crop_pct = 1.0;
  data::ImageTransform tf(to);
  std::mt19937_64 rng(0);
  std::vector<torch::Tensor> imgs;
  for (const auto& p : f.files) imgs.push_back(tf(data::read_file_bytes(p), rng));
  torch::NoGradGuard ng;
  torch::Tensor u = f.m.model->encode_image(torch::stack(imgs)).to(torch::kDouble);
  torch::Tensor ids = f.m.tokenizer->tokenize(labels, f.m.context_length);
  torch::Tensor v = f.m.model->encode_text(ids).to(torch::kDouble);
  torch::Tensor cos = torch::matmul(u, v.t());
  torch::Tensor want = torch::softmax(37.0 * cos, 1);
  EXPECT_TRUE(r.probs.to(torch::kDouble).allclose(want, 1e-4, 1e-5)) << r.probs << "\n" << want;
  EXPECT_TRUE(r.probs.sum(1).allclose(torch::ones({3}), 0, 1e-5));
  // log(p_i / p_j) = tau * (c_i - c_j): the temperature is inside the softmax.
  for (int64_t i = 0; i < 3; ++i) {
    const double lhs = std::log(r.probs[i][0].item<double>() / r.probs[i][1].item<double>());
    const double rhs = 37.0 * (r.cosine[i][0].item<double>() - r.cosine[i][1].item<double>());
    EXPECT_NEAR(lhs, rhs, 1e-3);
  }
}

TEST(Classify, TemperatureChangesSharpnessAndIsClamped) {
  Fixture& f = fixture();
  const std::vector<std::string> labels{"red car", "a dog"};
  set_logit_scale(f.m, 1.0);
  eval::ClassifyResult soft = eval::classify(f.m, eval::image_inputs({f.files[0]}), labels);
  set_logit_scale(f.m, 1000.0);  // exp(logit_scale) is clamped at 100 (CLIP / UniCL)
  eval::ClassifyResult sharp = eval::classify(f.m, eval::image_inputs({f.files[0]}), labels);
  EXPECT_NEAR(sharp.temperature, 100.0, 1e-6);
  const double c = soft.cosine[0][0].item<double>() - soft.cosine[0][1].item<double>();
  EXPECT_NEAR(soft.probs[0][0].item<double>(), 1.0 / (1.0 + std::exp(-c)), 1e-5);
  EXPECT_NEAR(sharp.probs[0][0].item<double>(), 1.0 / (1.0 + std::exp(-100.0 * c)), 1e-5);
  EXPECT_THROW(eval::classify(f.m, eval::image_inputs({f.files[0]}), {"only"}), florence::Error);
  EXPECT_THROW(eval::classify(f.m, eval::image_inputs({f.files[0]}), {"a", "a"}), florence::Error);
}

// A class-names entry replaces the class's words in every template: the embedding of class
// "Flags" with {"Flags": "flag"} is the embedding of the class "flag" without a table, and a class
// without an entry keeps its own name with '_' read as a space.
TEST(Classify, ClassNamesTableChangesThePromptWords) {
  Fixture& f = fixture();
  const std::vector<std::string> templates{"{}", "a photo of a {}."};
  torch::Tensor mapped = eval::class_embeddings(f.m, {"Flags", "hair_dryer"}, templates, {{"Flags", "flag"}});
  torch::Tensor direct = eval::class_embeddings(f.m, {"flag", "hair dryer"}, templates);
  torch::Tensor plain = eval::class_embeddings(f.m, {"Flags"}, templates);
  ASSERT_EQ(mapped.sizes(), (std::vector<int64_t>{2, f.m.embed_dim()}));
  EXPECT_TRUE(mapped.allclose(direct, 0, 1e-6));
  EXPECT_FALSE(mapped[0].allclose(plain[0], 0, 1e-3));  // "Flags" and "flag" are different tokens
}

}  // namespace test_classify
