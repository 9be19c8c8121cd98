// --precision: names, the CPU check, bfloat16 inference against float32 on real images and texts
// (the amp_bf16 training step: tests/unit/train/test_amp.cpp). FLORENCE_BF16_ANYWAY=1 is set so the
// numerics are tested on any CPU (without avx512_bf16 bfloat16 is emulated: slow, same values).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "florence/core/error.h"
#include "florence/core/precision.h"
#include "florence/data/corpus.h"
#include "florence/data/readers.h"
#include "florence/eval/encode.h"
#include "florence/model/florence.h"
#include "florence/model/registry.h"
#include "support/paths.h"
#include "support/vocab.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_precision {

using namespace florence;
namespace fs = std::filesystem;

namespace {

struct Anyway {
  Anyway() { setenv("FLORENCE_BF16_ANYWAY", "1", 1); }
};

eval::EvalModel load(const std::string& precision) {
  eval::LoadOptions o;
  o.model = "florence-t";  // the CLIP vocabulary fits its text tower; random init, same seed
  o.vocab = ::test::clip_vocab();
  o.precision = precision;
  o.preprocess.batch_size = 8;
  o.preprocess.num_workers = 1;
  torch::manual_seed(7);
  return eval::load_eval_model(o);
}

// The smallest cosine between matching rows of a and b ([N, D] each).
double min_row_cosine(const torch::Tensor& a, const torch::Tensor& b) {
  return torch::cosine_similarity(a.to(torch::kDouble), b.to(torch::kDouble), 1).min().item<double>();
}

}  // namespace

TEST(Precision, NamesAndRefusals) {
  EXPECT_EQ(parse_precision("fp32"), Precision::kFp32);
  EXPECT_EQ(parse_precision("bf16"), Precision::kBf16);
  EXPECT_EQ(parse_precision("amp_bf16"), Precision::kAmpBf16);
  for (const char* bad : {"", "fp16", "BF16", "amp", "bf16 "}) EXPECT_THROW(parse_precision(bad), Error) << bad;
  EXPECT_EQ(precision_name(Precision::kAmpBf16), "amp_bf16");
  EXPECT_EQ(storage_dtype(Precision::kBf16), torch::kBFloat16);
  EXPECT_EQ(storage_dtype(Precision::kAmpBf16), torch::kFloat);
  // fp32 is never changed; bf16 stays bf16 where the CPU has it (or with FLORENCE_BF16_ANYWAY).
  EXPECT_EQ(resolve_precision(Precision::kFp32, torch::kCPU, "test"), Precision::kFp32);
  Anyway anyway;
  EXPECT_EQ(resolve_precision(Precision::kBf16, torch::kCPU, "test"), Precision::kBf16);
}

// Autocast runs the linear layer in bfloat16 and, through the kernels AutocastGuard registers,
// LayerNorm in float32 (LibTorch 1.13's CPU autocast throws here without them); the guard restores
// the state, and NoAutocastGuard keeps a region in float32.
TEST(Precision, AutocastGuardNormsInFloat32) {
  torch::manual_seed(0);
  torch::nn::Linear lin(16, 16);
  torch::nn::LayerNorm ln(torch::nn::LayerNormOptions({16}));
  const torch::Tensor x = torch::randn({4, 16});
  const torch::Tensor want = ln(lin(x));
  {
    AutocastGuard amp(true, torch::kCPU);
    const torch::Tensor h = lin(x);
    EXPECT_EQ(h.scalar_type(), torch::kBFloat16);
    const torch::Tensor y = ln(h);
    EXPECT_EQ(y.scalar_type(), torch::kFloat);
    EXPECT_LT((y - want).abs().max().item<double>(), 0.05);  // bfloat16 linear: ~3 significant digits
    {
      NoAutocastGuard fp32;
      EXPECT_EQ(lin(x).scalar_type(), torch::kFloat);
    }
    EXPECT_EQ(lin(x).scalar_type(), torch::kBFloat16);
  }
  EXPECT_EQ(lin(x).scalar_type(), torch::kFloat);
  { AutocastGuard off(false, torch::kCPU); EXPECT_EQ(lin(x).scalar_type(), torch::kFloat); }
}

// The bar: bfloat16 image and text embeddings within cosine 0.999 of float32, on real
// images (emoji PNGs) and real texts (their names), through the eval loader and tokenizer.
TEST(Precision, Bf16EmbeddingsMatchFloat32OnRealImagesAndTexts) {
  const fs::path pkg = data::default_emoji_dir();
  if (!fs::exists(pkg / "emoji.json")) GTEST_SKIP() << "emoji-datasource-google not unpacked (scripts/setup)";
  Anyway anyway;
  // 8 emoji images in an ImageFolder layout (symlinks) and their names.
  const fs::path dir = fs::path(FLORENCE_TEST_TMP) / "precision" / "images";
  fs::remove_all(dir);
  fs::create_directories(dir / "emoji");
  std::ifstream jf(pkg / "emoji.json");
  const nlohmann::json all = nlohmann::json::parse(jf);
  std::vector<std::string> texts;
  for (const auto& e : all) {
    const fs::path img = pkg / "img" / "google" / "64" / e.value("image", "");
    if (!e.value("has_img_google", false) || !fs::is_regular_file(img) || e.value("name", "").empty()) continue;
    fs::create_symlink(img, dir / "emoji" / img.filename());
    texts.push_back("a picture of " + e.value("name", ""));
    if (texts.size() == 8) break;
  }
  ASSERT_EQ(texts.size(), 8u);

  eval::EvalModel f32 = load("fp32"), b16 = load("bf16"), amp = load("amp_bf16");
  EXPECT_EQ(b16.precision, "bf16");
  EXPECT_EQ(b16.model->image_projection.scalar_type(), torch::kBFloat16);
  EXPECT_EQ(b16.model->logit_scale.scalar_type(), torch::kFloat);
  EXPECT_EQ(amp.model->image_projection.scalar_type(), torch::kFloat);
  const auto src = std::make_shared<data::ImageFolderSource>(dir.string());
  const torch::Tensor i32 = eval::encode_source(f32, src, false).embeds;
  const torch::Tensor i16 = eval::encode_source(b16, src, false).embeds;
  const torch::Tensor iamp = eval::encode_source(amp, src, false).embeds;
  const torch::Tensor t32 = eval::encode_texts(f32, texts), t16 = eval::encode_texts(b16, texts);
  const torch::Tensor tamp = eval::encode_texts(amp, texts);
  ASSERT_EQ(i32.size(0), 8);
  for (const auto& t : {i16, t16, iamp, tamp}) EXPECT_EQ(t.scalar_type(), torch::kFloat);
  EXPECT_GE(min_row_cosine(i16, i32), 0.999);
  EXPECT_GE(min_row_cosine(t16, t32), 0.999);
  EXPECT_GE(min_row_cosine(iamp, i32), 0.999);
  EXPECT_GE(min_row_cosine(tamp, t32), 0.999);
  // Not the same numbers: bfloat16 really ran.
  EXPECT_GT((i16 - i32).abs().max().item<double>(), 1e-6);
  EXPECT_GT((t16 - t32).abs().max().item<double>(), 1e-6);
  EXPECT_GT((iamp - i32).abs().max().item<double>(), 1e-6);
  // The pooled image features (linear probe / few-shot `--features pooled`) in the same precision.
  torch::NoGradGuard ng;
  torch::manual_seed(5);
  const torch::Tensor px = torch::randn({2, 3, 224, 224});
  const torch::Tensor p32 = f32.model->image_features(px), p16 = b16.model->image_features(px);
  const torch::Tensor pamp = amp.model->image_features(px);
  for (const auto& t : {p32, p16, pamp}) EXPECT_EQ(t.scalar_type(), torch::kFloat);
  EXPECT_GE(min_row_cosine(p16, p32), 0.999);
  EXPECT_GE(min_row_cosine(pamp, p32), 0.999);
  EXPECT_GT((p16 - p32).abs().max().item<double>(), 1e-6);
  EXPECT_GT((pamp - p32).abs().max().item<double>(), 1e-6);
}

}  // namespace test_precision
