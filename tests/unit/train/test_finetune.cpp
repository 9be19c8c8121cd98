// Fine-tuning (train/finetune.h): loss and metric building blocks by hand, layer ids for
// layer-wise lr decay, and short runs on REAL Fashion-MNIST images (Debian dataset-fashion-mnist,
// read from its IDX files): training lowers the loss and beats chance on held-out test images,
// an interrupted + resumed run ends at the same weights as an uninterrupted one, and the image
// tower of a two-tower checkpoint is what fine-tuning starts from.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <opencv2/imgcodecs.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>

#include "florence/core/checkpoint.h"
#include "florence/core/error.h"
#include "florence/data/idx.h"
#include "florence/data/readers.h"
#include "florence/model/florence.h"
#include "florence/model/io.h"
#include "florence/model/registry.h"
#include "florence/train/finetune.h"
#include "support/paths.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_finetune {

using namespace florence;
namespace fs = std::filesystem;

namespace {

TEST(Finetune, SmoothedCrossEntropyByHand) {
  // Two classes, logits (ln 3, 0): p = (3/4, 1/4). Label 0, eps 0.1:
  //   0.9 * -ln(3/4) + 0.1 * (-ln(3/4) - ln(1/4)) / 2
  torch::Tensor logits = torch::tensor({{std::log(3.0), 0.0}}, torch::kDouble);
  torch::Tensor y = torch::tensor({0}, torch::kLong);
  const double want = 0.9 * -std::log(0.75) + 0.1 * (-std::log(0.75) - std::log(0.25)) / 2;
  EXPECT_NEAR(train::smoothed_cross_entropy(logits, y, 0.1).item<double>(), want, 1e-12);
  EXPECT_NEAR(train::smoothed_cross_entropy(logits, y, 0.0).item<double>(), -std::log(0.75), 1e-12);
  // Equal logits: both terms are ln 2 whatever eps.
  torch::Tensor flat = torch::zeros({2, 2}, torch::kDouble);
  EXPECT_NEAR(train::smoothed_cross_entropy(flat, torch::tensor({0, 1}, torch::kLong), 0.3).item<double>(),
              std::log(2.0), 1e-12);
}

TEST(Finetune, TopKWithPessimisticTies) {
  torch::Tensor s = torch::tensor({{1.0, 1.0, 0.0}, {0.2, 0.9, 0.5}, {0.1, 0.2, 0.3}});
  torch::Tensor y = torch::tensor({0, 2, 2}, torch::kLong);
  // Row 0: tie with class 1 counts against -> rank 2; row 1: rank 2; row 2: rank 1.
  EXPECT_NEAR(train::topk_accuracy(s, y, 1), 1.0 / 3.0, 1e-12);
  EXPECT_NEAR(train::topk_accuracy(s, y, 2), 1.0, 1e-12);
}

TEST(Finetune, LayerIdsFollowSimMimRule) {
  const std::vector<int> depths = {1, 2, 2};  // florence-nano; L = 5 + 2 = 7, last id 6
  EXPECT_EQ(train::layer_id("patch_embed.proj.weight", depths), 0);
  EXPECT_EQ(train::layer_id("layers.0.blocks.0.attn.qkv.weight", depths), 1);
  EXPECT_EQ(train::layer_id("layers.0.downsample.proj.weight", depths), 1);
  EXPECT_EQ(train::layer_id("layers.1.blocks.0.norm1.weight", depths), 2);
  EXPECT_EQ(train::layer_id("layers.1.blocks.1.mlp.fc1.bias", depths), 3);
  EXPECT_EQ(train::layer_id("layers.1.downsample.norm.weight", depths), 3);
  EXPECT_EQ(train::layer_id("layers.2.blocks.1.attn.relative_position_bias_table", depths), 5);
  EXPECT_EQ(train::layer_id("norm.weight", depths), 6);
  EXPECT_EQ(train::layer_id("head.weight", depths), 6);
}

// Real Fashion-MNIST images as in-memory samples (PNG bytes, meta category = class name).
std::shared_ptr<data::VectorSource> fashion(const std::string& split, size_t offset, size_t n) {
  const data::FashionMnist fm = data::load_fashion_mnist(data::kFashionMnistDir, split);
  std::vector<data::Sample> out;
  for (size_t i = offset; i < offset + n && i < fm.size(); ++i) {
    cv::Mat img(28, 28, CV_8UC1, const_cast<uint8_t*>(fm.images.data() + i * 784));
    data::Sample s;
    s.key = split + "-" + std::to_string(i);
    cv::imencode(".png", img, s.image);
    s.image_ext = "png";
    s.label = fm.labels[i];
    s.text = data::fashion_mnist_classes()[fm.labels[i]];
    s.meta["category"] = s.text;
    out.push_back(std::move(s));
  }
  return std::make_shared<data::VectorSource>(std::move(out));
}

train::FinetuneOptions small_run(const std::string& out) {
  train::FinetuneOptions o;
  o.model = "florence-nano";
  o.out_dir = out;
  o.batch_size = 32;
  o.lr = 2e-3;
  o.min_lr = 1e-5;
  o.warmup_steps = 5;
  o.augment = "none";
  o.image_size = 32;  // 8x8 tokens after the stride-4 stem: fast on 2 cores
  o.crop_pct = 1.0;
  o.workers = 2;
  o.handle_signals = false;
  o.log_every = 20;
  return o;
}

const fs::path kTmp = fs::path(FLORENCE_TEST_TMP) / "finetune";

TEST(Finetune, LearnsRealFashionMnistAndBeatsChance) {
  fs::remove_all(kTmp / "learn");
  train::FinetuneOptions o = small_run((kTmp / "learn").string());
  o.steps = 80;
  train::FinetuneSources src{fashion("train", 0, 1600), fashion("train", 1600, 200), fashion("test", 0, 500)};
  const train::FinetuneResult r = train::finetune(o, src);
  ASSERT_FALSE(r.interrupted);
  std::cout << "loss first10 " << r.first_loss_mean << " last10 " << r.last_loss_mean << "; test top-1 "
            << r.result["metrics"]["top1"] << " top-5 " << r.result["metrics"]["top5"] << "\n";
  EXPECT_NEAR(r.first_loss, std::log(10.0), 0.5);  // a fresh 10-class head starts near ln 10
  EXPECT_LT(r.last_loss_mean, r.first_loss_mean - 0.5);
  const auto& m = r.result.at("metrics");
  EXPECT_EQ(m.at("num_samples").get<int64_t>(), 500);
  EXPECT_DOUBLE_EQ(m.at("chance").at("top1").get<double>(), 0.1);
  EXPECT_GT(m.at("top1").get<double>(), 0.45);  // chance 10 %
  EXPECT_GT(m.at("top5").get<double>(), m.at("top1").get<double>());
  EXPECT_GT(r.result.at("val_top1").get<double>(), 0.45);
  EXPECT_TRUE(fs::exists(kTmp / "learn" / "model.safetensors"));
  EXPECT_TRUE(fs::exists(kTmp / "learn" / "metrics.jsonl"));
  // The saved classifier is a vision checkpoint with the class names and preprocessing.
  auto spec = model::read_checkpoint_spec((kTmp / "learn" / "model.safetensors").string());
  ASSERT_TRUE(spec && spec->vision);
  EXPECT_EQ(spec->vision->num_classes, 10);
}

TEST(Finetune, ResumeReproducesUninterruptedRun) {
  fs::remove_all(kTmp / "full");
  fs::remove_all(kTmp / "split");
  train::FinetuneSources src{fashion("train", 0, 320), nullptr, nullptr};
  train::FinetuneOptions a = small_run((kTmp / "full").string());
  a.steps = 16;  // 10 batches per epoch: crosses an epoch boundary after the resume point
  a.layer_decay = 0.8;
  a.augment = "rrc";
  const auto ra = train::finetune(a, src);
  train::FinetuneOptions b = a;
  b.out_dir = (kTmp / "split").string();
  b.stop_after_steps = 7;
  const auto rb1 = train::finetune(b, src);
  ASSERT_TRUE(rb1.interrupted);
  EXPECT_EQ(rb1.steps_done, 7);
  b.stop_after_steps = 0;
  b.resume = b.out_dir;
  const auto rb2 = train::finetune(b, src);
  ASSERT_FALSE(rb2.interrupted);
  EXPECT_EQ(rb2.start_step, 7);
  const auto wa = core::load_safetensors((kTmp / "full" / "model.safetensors").string()).tensors;
  const auto wb = core::load_safetensors((kTmp / "split" / "model.safetensors").string()).tensors;
  ASSERT_EQ(wa.size(), wb.size());
  double diff = 0;
  for (const auto& [k, t] : wa) diff = std::max(diff, (t - wb.at(k)).abs().max().item<double>());
  std::cout << "resume max |weight diff| " << diff << "\n";
  EXPECT_LE(diff, 1e-6);
  EXPECT_NEAR(ra.last_loss, rb2.last_loss, 1e-5);
}

TEST(Finetune, StartsFromTheCheckpointsImageTower) {
  fs::remove_all(kTmp / "init");
  fs::create_directories(kTmp / "init");
  model::ModelSpec spec = model::resolve_model("florence-nano");
  torch::manual_seed(11);
  model::FlorenceModel two(*spec.florence);
  const std::string ck = (kTmp / "init" / "pre.safetensors").string();
  model::save_checkpoint(*two, spec, ck);
  train::FinetuneOptions o = small_run((kTmp / "init" / "run").string());
  o.model.clear();
  o.checkpoint = ck;
  o.steps = 1;
  o.lr = 1e-12;  // one (near-zero) step: the weights stay the checkpoint's
  o.min_lr = 0;
  o.weight_decay = 0;
  const auto r = train::finetune(o, {fashion("train", 0, 64), nullptr, nullptr});
  const auto w = core::load_safetensors(r.final_weights).tensors;
  const auto ref = core::state_dict(*two);
  int64_t compared = 0;
  for (const auto& [k, t] : w) {
    if (k.rfind("head.", 0) == 0) continue;
    ASSERT_TRUE(ref.count("image_encoder." + k)) << k;
    EXPECT_LE((t - ref.at("image_encoder." + k)).abs().max().item<double>(), 1e-6) << k;
    ++compared;
  }
  EXPECT_GT(compared, 20);
  EXPECT_EQ(w.at("head.weight").size(0), 10);
  // A wrong checkpoint is an error naming the problem, not a crash.
  o.checkpoint = (kTmp / "init" / "missing.safetensors").string();
  o.out_dir = (kTmp / "init" / "run2").string();
  EXPECT_THROW(train::finetune(o, {fashion("train", 0, 64), nullptr, nullptr}), Error);
}

std::string error_of(const train::FinetuneOptions& o, const train::FinetuneSources& src) {
  try {
    train::finetune(o, src);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Bad options are errors naming the option, checked before any data is read or model built.
TEST(Finetune, RejectsBadOptions) {
  const train::FinetuneSources src{fashion("train", 0, 64), nullptr, nullptr};
  train::FinetuneOptions base = small_run((kTmp / "bad").string());
  base.steps = 1;
  auto expect = [&](const std::function<void(train::FinetuneOptions&)>& edit, const std::string& want) {
    train::FinetuneOptions o = base;
    edit(o);
    const std::string msg = error_of(o, src);
    EXPECT_NE(msg.find(want), std::string::npos) << "got: '" << msg << "', want: '" << want << "'";
  };
  expect([](auto& o) { o.steps = -3; }, "--steps must be >= 1, got -3");
  expect([](auto& o) { o.steps = 0; }, "give --steps N or --epochs N");
  expect([](auto& o) { o.steps = 0; o.epochs = -1; }, "--epochs must be >= 1");
  expect([](auto& o) { o.warmup_steps = -2; }, "--warmup-steps must be >= 0");
  expect([](auto& o) { o.max_train_samples = -1; }, "--max-train-samples must be >= 0");
  expect([](auto& o) { o.max_eval_samples = -5; }, "--max-eval-samples must be >= 0");
  expect([](auto& o) { o.ckpt_every = -1; }, "--ckpt-every must be >= 0");
  expect([](auto& o) { o.keep_checkpoints = -1; }, "--keep-checkpoints must be >= 0");
  expect([](auto& o) { o.stop_after_steps = -1; }, "--stop-after-steps must be >= 0");
  expect([](auto& o) { o.log_every = 0; }, "--log-every must be >= 1");
  // A missing file or a folder as --checkpoint says so (not "no sidecar JSON").
  fs::create_directories(kTmp / "bad" / "ckdir");
  expect([](auto& o) { o.checkpoint = (kTmp / "bad" / "nope.safetensors").string(); }, "does not exist");
  expect([](auto& o) { o.checkpoint = (kTmp / "bad" / "ckdir").string(); }, "is a directory");
  EXPECT_FALSE(fs::exists(kTmp / "bad" / "checkpoints"));  // nothing was written
}

// The ">= 2 classes" rule applies to the training subset, not to the split it is drawn from.
TEST(Finetune, TrainingSubsetNeedsTwoClasses) {
  fs::remove_all(kTmp / "subset");
  const train::FinetuneSources src{fashion("train", 0, 64), nullptr, nullptr};
  train::FinetuneOptions o = small_run((kTmp / "subset" / "one").string());
  o.steps = 2;
  o.batch_size = 1;
  o.max_train_samples = 1;
  const std::string msg = error_of(o, src);
  EXPECT_NE(msg.find("has 1 class(es) of the split's 10"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(kTmp / "subset" / "one" / "model.safetensors"));
  // Two samples of two different classes (seed 0 draws samples of 2 classes from these 64): the
  // run goes ahead with the 10-class head and lists the 8 classes it never saw.
  o.out_dir = (kTmp / "subset" / "two").string();
  o.max_train_samples = 2;
  o.steps = 1;
  const auto r = train::finetune(o, src);
  ASSERT_FALSE(r.interrupted);
  EXPECT_EQ(r.result.at("classes").size(), 10u);
  EXPECT_EQ(r.result.at("num_train").get<int64_t>(), 2);
  const auto& missing = r.result.at("data").at("classes_without_train_samples");
  EXPECT_EQ(missing.size(), 8u);
  for (const auto& c : missing) {
    const auto& all = r.result.at("classes");
    EXPECT_NE(std::find(all.begin(), all.end(), c), all.end()) << c;
  }
}

}  // namespace

}  // namespace test_finetune
