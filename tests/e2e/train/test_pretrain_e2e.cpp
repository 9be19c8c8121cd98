// End-to-end `florence pretrain` on real data: the Emoji corpus (npm emoji-datasource-google,
// built here with data::build_corpus into FLORENCE_TEST_TMP) and a BPE vocabulary trained on its
// train-split texts with text::train_bpe.
//   * Learning: florence-nano trains for a couple of minutes; the loss falls and held-out
//     (val + test split) image->text retrieval R@5 is at least 3x chance.
//   * Resume: N steps + --resume + N steps ends at the same weights (<= 1e-6) as 2N steps.
//   * NaN guard: --debug-nan-at-step K stops with a non-zero exit, the message, and the last good
//     checkpoint as `latest`, nothing written for step K.
//   * Ctrl-C: SIGINT to the CLI process finishes the step, writes a checkpoint, exits 0.
// Needs the Emoji package that scripts/setup unpacks (data::default_emoji_dir()); skipped when it
// is missing.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "support/files.h"
#include "florence/core/checkpoint.h"
#include "florence/data/corpus.h"
#include "florence/data/loader.h"
#include "florence/data/readers.h"
#include "florence/data/webdataset.h"
#include "florence/model/io.h"
#include "florence/text/bpe_trainer.h"
#include "florence/text/tokenizer.h"
#include "support/emoji_corpus.h"
#include "support/paths.h"
#include "support/process.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_pretrain_e2e {

using namespace florence;
namespace fs = std::filesystem;

namespace {
using florence::test::read_text;
using florence::test::read_jsonl;

const fs::path kRoot = fs::path(FLORENCE_TEST_TMP) / "train_e2e";



// Runs the CLI with `args`, stdout+stderr to `log`; returns the exit status (128 + signal when killed).
int run_cli(const std::string& args, const fs::path& log) { return florence::test::run_program(FLORENCE_CLI, args, log); }

// Starts the CLI in the background.
pid_t spawn_cli(const std::string& args, const fs::path& log) { return florence::test::spawn(FLORENCE_CLI, args, log); }

using Corpus = florence::test::EmojiCorpus;

// The Emoji corpus (all entries, shards of 500) and a 1,200-token BPE vocabulary from its train
// texts, built once per test binary.
const Corpus& corpus() {
  static const Corpus c = florence::test::emoji_corpus(kRoot, "emoji", 0, 500, 1200);
  return c;
}

std::string common_args(const Corpus& c) {
  return fmt::format("--threads 2 pretrain --model florence-nano --vocab {} --shards {} --workers 1 --no-progress",
                     c.vocab.string(), c.train_shards.string());
}

}  // namespace

// ------------------------------------------------------------------------------------------------

TEST(PretrainE2E, LossFallsAndHeldOutRetrievalBeatsChance) {
  const Corpus& c = corpus();
  if (!c.available) GTEST_SKIP() << c.skip_reason;
  const fs::path run = kRoot / "run_main";
  fs::remove_all(run);
  const int64_t steps = 120;
  const int rc = run_cli(common_args(c) + fmt::format(" --out {} --steps {} --batch-size 64 --lr 2e-3 "
                                                      "--warmup-steps 10 --augment none --ckpt-every 0 --log-every 20",
                                                      run.string(), steps),
                         kRoot / "main.log");
  ASSERT_EQ(rc, 0) << read_text(kRoot / "main.log");

  // Metrics: one line per step with the documented fields; the loss falls.
  const auto m = read_jsonl(run / "metrics.jsonl");
  ASSERT_EQ(int64_t(m.size()), steps);
  for (const char* k : {"step", "stage", "epoch", "loss", "lr", "logit_scale", "img_per_s", "data_wait_fraction",
                        "time"}) {
    EXPECT_TRUE(m[0].contains(k)) << k;
  }
  EXPECT_EQ(m.front()["stage"], 1);
  EXPECT_EQ(m.back()["stage"], 2);  // default plan: 180/1180 of the steps in stage 2
  auto mean_loss = [&](size_t from, size_t to) {
    double s = 0;
    for (size_t i = from; i < to; ++i) s += m[i]["loss"].get<double>();
    return s / double(to - from);
  };
  const double first = mean_loss(0, 10), last = mean_loss(m.size() - 10, m.size());
  std::cout << "loss: first 10 steps " << first << ", last 10 steps " << last << "\n";
  // A model that has learned nothing sits at 2 ln(64) = 8.32 (UniCL sums both directions).
  // Observed 8.74 -> 6.73 with OpenBLAS's Haswell kernels and 8.74 -> 7.59 with its SkylakeX ones
  // (2026-12-06, same binary, OPENBLAS_CORETYPE): when the model leaves the plateau depends on the
  // rounding of the matmuls, so the bar is 0.5 below chance, and learning is also checked on
  // held-out retrieval below.
  EXPECT_LT(last, first - 1.0);
  EXPECT_LT(last, 2.0 * std::log(64.0) - 0.5);
  EXPECT_TRUE(fs::exists(run / "config.json"));
  EXPECT_TRUE(fs::exists(run / "model.safetensors"));

  // Held-out retrieval, image -> text, on the val + test splits (disjoint from train by the
  // corpus' stable split; skin-tone variants stay with their base emoji).
  const auto spec = model::resolve_spec("", (run / "model.safetensors").string());
  ASSERT_TRUE(spec.florence);
  EXPECT_EQ(spec.florence->text.vocab_size, text::Tokenizer::from_file(c.vocab.string()).vocab_size());
  model::FlorenceModel net = model::load_florence(spec, (run / "model.safetensors").string());
  net->eval();
  auto tok = std::make_shared<text::Tokenizer>(text::Tokenizer::from_file(c.vocab.string()));
  std::vector<std::string> shards = data::list_shards((c.root / "val").string());
  for (const auto& s : data::list_shards((c.root / "test").string())) shards.push_back(s);
  data::LoaderOptions lo;
  lo.batch_size = 128;
  lo.image_size = 64;
  lo.train = false;
  lo.crop_pct = 1.0;
  lo.shuffle = false;
  lo.num_workers = 1;
  data::Loader loader(std::make_shared<data::ShardSource>(shards), lo, nullptr);
  loader.start_epoch(0);
  std::vector<torch::Tensor> img_emb;
  std::vector<std::string> img_text;
  data::Batch b;
  torch::NoGradGuard ng;
  while (loader.next(b)) {
    img_emb.push_back(net->encode_image(b.images));
    for (const auto& t : b.texts) img_text.push_back(text::Tokenizer::clean(t));
  }
  std::vector<std::string> uniq(img_text.begin(), img_text.end());
  std::sort(uniq.begin(), uniq.end());
  uniq.erase(std::unique(uniq.begin(), uniq.end()), uniq.end());
  ASSERT_GE(uniq.size(), 50u);
  std::map<std::string, int64_t> index;
  for (size_t i = 0; i < uniq.size(); ++i) index[uniq[i]] = int64_t(i);
  torch::Tensor txt = net->encode_text(tok->tokenize(uniq, spec.florence->text.context_length));
  torch::Tensor sims = torch::cat(img_emb).matmul(txt.t());  // [N_img, N_txt]
  torch::Tensor top5 = std::get<1>(sims.topk(5, 1));
  int64_t hits = 0;
  for (int64_t i = 0; i < top5.size(0); ++i) {
    const int64_t want = index[img_text[size_t(i)]];
    for (int64_t k = 0; k < 5; ++k) hits += top5[i][k].item<int64_t>() == want;
  }
  const double r5 = double(hits) / double(top5.size(0));
  const double chance = 5.0 / double(uniq.size());  // one correct text among the unique texts
  std::cout << "held-out image->text R@5 = " << r5 << " over " << top5.size(0) << " images / " << uniq.size()
            << " texts (chance " << chance << ")\n";
  EXPECT_GE(r5, 3.0 * chance);
}

TEST(PretrainE2E, ResumeReproducesTheStraightRun) {
  const Corpus& c = corpus();
  if (!c.available) GTEST_SKIP() << c.skip_reason;
  const fs::path straight = kRoot / "run_straight", split = kRoot / "run_split";
  fs::remove_all(straight);
  fs::remove_all(split);
  // Accumulation (GradCache), two stages (stage 2 starts at step 4) and prompt augmentation all
  // take part; 2N = 8 steps.
  const std::string args = common_args(c) + " --steps 8 --stage1-steps 4 --batch-size 16 --accum-steps 2 --lr 1e-3 "
                                             "--warmup-steps 2 --seed 5 --ckpt-every 0";
  ASSERT_EQ(run_cli(args + " --out " + straight.string(), kRoot / "straight.log"), 0)
      << read_text(kRoot / "straight.log");
  ASSERT_EQ(run_cli(args + " --out " + split.string() + " --stop-after-steps 3", kRoot / "split1.log"), 0)
      << read_text(kRoot / "split1.log");
  EXPECT_EQ(read_text(split / "checkpoints" / "latest"), "step_0000003.safetensors\n");
  EXPECT_FALSE(fs::exists(split / "model.safetensors"));  // not finished
  // Resume with the run directory only: the saved options are reused.
  ASSERT_EQ(run_cli("--threads 2 pretrain --no-progress --resume " + split.string(), kRoot / "split2.log"), 0)
      << read_text(kRoot / "split2.log");
  const auto a = core::load_safetensors((straight / "model.safetensors").string()).tensors;
  const auto b = core::load_safetensors((split / "model.safetensors").string()).tensors;
  ASSERT_EQ(a.size(), b.size());
  double worst = 0;
  std::string worst_name;
  for (const auto& [k, t] : a) {
    const double d = (t - b.at(k)).abs().max().item<double>();
    if (d > worst) {
      worst = d;
      worst_name = k;
    }
  }
  std::cout << "resume: max |w_straight - w_resumed| = " << worst << " (" << worst_name << ")\n";
  EXPECT_LE(worst, 1e-6);
  // The resumed run's metrics continue the first one's: 8 lines, steps 1..8.
  const auto m = read_jsonl(split / "metrics.jsonl");
  ASSERT_EQ(m.size(), 8u);
  for (size_t i = 0; i < m.size(); ++i) EXPECT_EQ(m[i]["step"], int64_t(i + 1));
  const auto ms = read_jsonl(straight / "metrics.jsonl");
  EXPECT_NEAR(m[7]["loss"].get<double>(), ms[7]["loss"].get<double>(), 1e-5);
  // A fresh run into a directory with checkpoints is refused.
  EXPECT_EQ(run_cli(args + " --out " + split.string(), kRoot / "refuse.log"), 2);
  EXPECT_NE(read_text(kRoot / "refuse.log").find("--resume"), std::string::npos);
}

// The fused paths (core/fused.h: QuickGELU, bias inside the matmul, one-pass AdamW, gradients
// released instead of zeroed) against LibTorch's (FLORENCE_FUSED_KERNELS=0) on the same 8 steps:
// the same run to float rounding. Measured 2026-12-07: losses within 3e-6, weights within 2.4e-6.
TEST(PretrainE2E, FusedKernelsFollowTheLibTorchPath) {
  const Corpus& c = corpus();
  if (!c.available) GTEST_SKIP() << c.skip_reason;
  const fs::path fused = kRoot / "run_fused", plain = kRoot / "run_libtorch";
  fs::remove_all(fused);
  fs::remove_all(plain);
  const std::string args = common_args(c) + " --steps 8 --stage1-steps 4 --batch-size 16 --accum-steps 2 --lr 1e-3 "
                                             "--warmup-steps 2 --seed 5 --ckpt-every 0";
  ASSERT_EQ(run_cli(args + " --out " + fused.string(), kRoot / "fused.log"), 0) << read_text(kRoot / "fused.log");
  ::setenv("FLORENCE_FUSED_KERNELS", "0", 1);
  const int rc = run_cli(args + " --out " + plain.string(), kRoot / "libtorch.log");
  ::unsetenv("FLORENCE_FUSED_KERNELS");
  ASSERT_EQ(rc, 0) << read_text(kRoot / "libtorch.log");
  const auto mf = read_jsonl(fused / "metrics.jsonl"), mp = read_jsonl(plain / "metrics.jsonl");
  ASSERT_EQ(mf.size(), 8u);
  ASSERT_EQ(mp.size(), 8u);
  double worst_loss = 0;
  for (size_t i = 0; i < mf.size(); ++i)
    worst_loss = std::max(worst_loss, std::abs(mf[i]["loss"].get<double>() - mp[i]["loss"].get<double>()));
  const auto a = core::load_safetensors((fused / "model.safetensors").string()).tensors;
  const auto b = core::load_safetensors((plain / "model.safetensors").string()).tensors;
  ASSERT_EQ(a.size(), b.size());
  double worst = 0;
  for (const auto& [k, t] : a) worst = std::max(worst, (t - b.at(k)).abs().max().item<double>());
  std::cout << "fused vs LibTorch paths: max |loss diff| " << worst_loss << ", max |w diff| " << worst << "\n";
  EXPECT_LE(worst_loss, 1e-4);
  EXPECT_LE(worst, 1e-4);
  EXPECT_GT(worst_loss + worst, 0.0);  // the two runs did take different code paths
}

TEST(PretrainE2E, NanLossStopsAndKeepsTheLastGoodCheckpoint) {
  const Corpus& c = corpus();
  if (!c.available) GTEST_SKIP() << c.skip_reason;
  const fs::path run = kRoot / "run_nan";
  fs::remove_all(run);
  const int rc = run_cli(common_args(c) + " --out " + run.string() +
                             " --steps 10 --batch-size 16 --ckpt-every 2 --debug-nan-at-step 5",
                         kRoot / "nan.log");
  const std::string log = read_text(kRoot / "nan.log");
  EXPECT_EQ(rc, 2) << log;
  EXPECT_NE(log.find("non-finite loss"), std::string::npos) << log;
  EXPECT_NE(log.find("step 5"), std::string::npos) << log;
  EXPECT_EQ(read_text(run / "checkpoints" / "latest"), "step_0000004.safetensors\n");
  EXPECT_TRUE(fs::exists(run / "checkpoints" / "step_0000004.optim.safetensors"));
  EXPECT_FALSE(fs::exists(run / "checkpoints" / "step_0000005.safetensors"));
  EXPECT_FALSE(fs::exists(run / "model.safetensors"));
  EXPECT_EQ(read_jsonl(run / "metrics.jsonl").size(), 4u);  // nothing logged for the bad step
}

TEST(PretrainE2E, SigintWritesACheckpointAndExitsCleanly) {
  const Corpus& c = corpus();
  if (!c.available) GTEST_SKIP() << c.skip_reason;
  const fs::path run = kRoot / "run_sigint";
  fs::remove_all(run);
  const fs::path log = kRoot / "sigint.log";
  const pid_t pid = spawn_cli(common_args(c) + " --out " + run.string() + " --steps 100000 --batch-size 16", log);
  ASSERT_GT(pid, 0);
  // Wait until two steps are logged (at most 3 minutes), then interrupt.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(3);
  while (std::chrono::steady_clock::now() < deadline) {
    if (fs::exists(run / "metrics.jsonl") && read_jsonl(run / "metrics.jsonl").size() >= 2) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ASSERT_EQ(kill(pid, SIGINT), 0);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  const std::string out = read_text(log);
  ASSERT_TRUE(WIFEXITED(status)) << out;
  EXPECT_EQ(WEXITSTATUS(status), 0) << out;
  EXPECT_NE(out.find("stopped after step"), std::string::npos) << out;
  // The checkpoint is the last completed step.
  const int64_t done = int64_t(read_jsonl(run / "metrics.jsonl").size());
  EXPECT_GE(done, 2);
  const std::string name = fmt::format("step_{:07d}.safetensors", done);
  EXPECT_EQ(read_text(run / "checkpoints" / "latest"), name + "\n");
  const auto side = nlohmann::json::parse(read_text(run / "checkpoints" / fmt::format("step_{:07d}.json", done)));
  EXPECT_EQ(side["train_state"]["step"], done);
  EXPECT_EQ(side["train_state"]["batches_in_epoch"], done);
}

}  // namespace test_pretrain_e2e
