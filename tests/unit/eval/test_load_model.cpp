// eval::load_eval_model and the vocabulary: a random-init model takes the text tower's vocabulary
// size and SOT / EOT ids from the vocabulary given (as `pretrain --vocab` does), so its text
// queries work; a checkpoint whose text tower expects another EOT id is refused at load time
// (before: every text query failed later with "contain no EOT token", found by the `http` fuzz
// harness through `florence serve`).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "florence/core/error.h"
#include "florence/eval/encode.h"
#include "florence/model/florence.h"
#include "florence/model/io.h"
#include "florence/model/registry.h"

#include <nlohmann/json.hpp>
#include "florence/text/bpe_trainer.h"
#include "florence/text/tokenizer.h"
#include "support/paths.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_load_model {

using namespace florence;
namespace fs = std::filesystem;

namespace {

/// A 546-token BPE vocabulary learnt from a few lines (EOT id 545), in a fresh folder.
fs::path small_vocab(const fs::path& dir) {
  fs::remove_all(dir);
  fs::create_directories(dir);
  {
    std::ofstream t(dir / "texts.txt");
    for (int i = 0; i < 8; ++i) t << "a photo of a red disc; a green square on blue; picture number " << i << "\n";
  }
  text::BpeTrainerOptions bo;
  bo.vocab_size = 600;  // the text supports 32 merges: 512 + 32 + 2 = 546 tokens
  text::train_bpe({(dir / "texts.txt").string()}, bo, (dir / "vocab.bpe").string());
  return dir / "vocab.bpe";
}

}  // namespace

TEST(LoadEvalModel, RandomInitTextTowerFollowsTheVocabulary) {
  const fs::path vocab = small_vocab(fs::path(FLORENCE_TEST_TMP) / "unit_eval_load_model_a");
  const text::Tokenizer tok = text::Tokenizer::from_file(vocab.string());
  ASSERT_EQ(tok.vocab_size(), 546);
  torch::manual_seed(0);
  eval::LoadOptions lo;
  lo.model = "florence-nano";
  lo.vocab = vocab.string();
  eval::EvalModel m = eval::load_eval_model(lo);
  EXPECT_EQ(m.spec.florence->text.vocab_size, 546);
  EXPECT_EQ(m.spec.florence->text.eot_token, 545);
  EXPECT_EQ(m.spec.florence->text.sot_token, tok.sot_id());
  EXPECT_EQ(m.model->text_encoder->named_parameters()["token_embedding.weight"].size(0), 546);
  const torch::Tensor e = eval::encode_texts(m, {"a red disc", "picture number 3"});
  ASSERT_EQ(e.sizes(), (std::vector<int64_t>{2, m.embed_dim()}));
  EXPECT_TRUE(torch::isfinite(e).all().item<bool>());
  EXPECT_NEAR(e.norm(2, 1)[0].item<double>(), 1.0, 1e-5);
}

TEST(LoadEvalModel, CheckpointWithAnotherEotIsRefused) {
  const fs::path dir = fs::path(FLORENCE_TEST_TMP) / "unit_eval_load_model_b";
  const fs::path vocab = small_vocab(dir);
  torch::manual_seed(0);
  const model::ModelSpec spec = model::resolve_model("florence-nano");  // CLIP's ids: EOT 49407
  model::FlorenceModel net(*spec.florence);
  const std::string ckpt = (dir / "model.safetensors").string();
  model::save_checkpoint(*net, spec, ckpt, torch::kFloat, {});
  eval::LoadOptions lo;
  lo.checkpoint = ckpt;
  lo.vocab = vocab.string();
  try {
    (void)eval::load_eval_model(lo);
    FAIL() << "a vocabulary with EOT 545 was accepted for a tower expecting 49407";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("ends texts with token 545"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("expects EOT 49407"), std::string::npos) << e.what();
  }
}

// Preprocessing and sizes a stranger's sidecar may hold: an error naming the entry (before: a mean of
// 1e300 made every embedding NaN with exit 0; 1e9 blocks exhausted the memory block by block).
TEST(LoadEvalModel, ForgedSidecarNumbersAreRefused) {
  const fs::path dir = fs::path(FLORENCE_TEST_TMP) / "unit_eval_load_model_c";
  fs::remove_all(dir);
  fs::create_directories(dir);
  torch::manual_seed(0);
  const model::ModelSpec spec = model::resolve_model("florence-nano");
  model::FlorenceModel net(*spec.florence);
  const std::string ckpt = (dir / "model.safetensors").string();
  model::save_checkpoint(*net, spec, ckpt, torch::kFloat, {{"preprocess", {{"mean", {1e300, 0.0, 0.0}}}}});
  eval::LoadOptions lo;
  lo.checkpoint = ckpt;
  try {
    (void)eval::load_eval_model(lo);
    FAIL() << "a mean of 1e300 was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("preprocess.mean[0]: 1e+300 is not a finite number in range"), std::string::npos)
        << e.what();
  }
  nlohmann::json cfg = model::spec_to_json(spec);
  cfg["vision"]["depths"] = {1, 1000000000};
  EXPECT_THROW(model::spec_from_json(cfg, "forged.json"), Error);
  cfg = model::spec_to_json(spec);
  cfg["text"]["layers"] = 1000000;
  EXPECT_THROW(model::spec_from_json(cfg, "forged.json"), Error);
}

}  // namespace test_load_model
