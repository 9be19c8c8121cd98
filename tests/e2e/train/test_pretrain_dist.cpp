// Distributed `florence pretrain` on localhost (c10d / Gloo), on a small real corpus: the first
// Emoji entries (npm emoji-datasource-google, built here with data::build_corpus) and a BPE
// vocabulary trained on their texts; a tiny two-tower config keeps every run to seconds.
//   * Equivalence: 2 processes x (global batch 8 split 4 + 4) == 1 process x batch 8, same seed,
//     across an epoch boundary, RandomResizedCrop and prompt-augmented stage-1 texts: the loss
//     of every step within 1e-4 relative and the final weights within 1e-5, for the global UniCL
//     loss, the --local-loss form, GradCache (--accum-steps 2) over gathered features, and the
//     torchrun form (when Debian's python3-torch provides torch.distributed.run).
//   * Resume across world sizes: 2 processes stop after 3 steps, 1 process resumes to the end,
//     and the reverse; both end at the 1-process run's weights (<= 1e-5).
//   * Failure: SIGKILL of rank 1 makes rank 0 exit 2 with the distributed error message within
//     --dist-timeout; under `florence launch`, the launcher exits non-zero and stops the rest.
// Needs the Emoji package that scripts/setup unpacks (data::default_emoji_dir()); skipped when it
// is missing.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "support/files.h"
#include "florence/core/checkpoint.h"
#include "florence/data/corpus.h"
#include "florence/data/webdataset.h"
#include "florence/text/bpe_trainer.h"
#include "support/emoji_corpus.h"
#include "support/paths.h"
#include "support/process.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_pretrain_dist {

using namespace florence;
namespace fs = std::filesystem;

namespace {
using florence::test::read_text;
using florence::test::read_jsonl;
using florence::test::free_port;

const fs::path kRoot = fs::path(FLORENCE_TEST_TMP) / "train_dist";




using florence::test::run_program;
using florence::test::spawn;
using florence::test::wait_status;

int run_cli(const std::string& args, const fs::path& log) { return run_program(FLORENCE_CLI, args, log); }

struct Corpus : florence::test::EmojiCorpus {
  fs::path model;  ///< the tiny two-tower config below
};

// The first 40 Emoji entries (with their skin-tone variants; shards of 16, so the loader shuffles
// their order), a 700-token BPE vocabulary from their train texts and a tiny two-tower config,
// built once per test binary.
const Corpus& corpus() {
  static Corpus c = [] {
    Corpus c;
    static_cast<florence::test::EmojiCorpus&>(c) = florence::test::emoji_corpus(kRoot, "emoji40", 40, 16, 700);
    if (!c.available) return c;
    // CoSwin with 2 stages at 32 px (8x8 then 4x4 tokens, window 4), a 1-layer text tower.
    c.model = kRoot / "tiny.json";
    std::ofstream(c.model) << R"({"type": "florence", "name": "tiny", "embed_dim": 32,
      "vision": {"variant": "coswin", "embed_dim": 16, "depths": [1, 1], "num_heads": [1, 2], "window_size": 4,
                 "image_size": 32, "patch_embed": {"kernel": 7, "stride": 4, "padding": 2},
                 "downsample": {"kernel": 3, "stride": 2, "padding": 1}, "drop_path_rate": 0.0},
      "text": {"width": 32, "heads": 1, "layers": 1, "context_length": 16}})";
    c.available = true;
    return c;
  }();
  return c;
}

// 8 samples per global batch; steps chosen to cross one epoch boundary.
int64_t steps_for(const Corpus& c) { return c.train_samples / 8 + 2; }

std::string train_args(const Corpus& c, int64_t steps, double dist_timeout_s = 60) {
  return fmt::format("--threads 1 pretrain --model {} --vocab {} --shards {} --workers 1 --no-progress --batch-size 8 "
                     "--lr 3e-3 --warmup-steps 1 --seed 11 --ckpt-every 0 --log-every 1 --steps {} --dist-timeout {}",
                     c.model.string(), c.vocab.string(), c.train_shards.string(), steps, dist_timeout_s);
}

std::string launch2(const std::string& args) { return "launch --nproc 2 -- " + args; }

// Largest |a - b| over all tensors of two weight files (same keys required).
double max_weight_diff(const fs::path& a, const fs::path& b, std::string* where = nullptr) {
  const auto ta = core::load_safetensors(a.string()).tensors;
  const auto tb = core::load_safetensors(b.string()).tensors;
  EXPECT_EQ(ta.size(), tb.size());
  double worst = 0;
  for (const auto& [k, t] : ta) {
    auto it = tb.find(k);
    if (it == tb.end()) {
      ADD_FAILURE() << "missing tensor " << k << " in " << b;
      continue;
    }
    const double d = (t.to(torch::kFloat64) - it->second.to(torch::kFloat64)).abs().max().item<double>();
    if (d > worst) {
      worst = d;
      if (where) *where = k;
    }
  }
  return worst;
}

// Worst relative loss difference per step between two runs' metrics (same number of steps).
double max_loss_rel_diff(const fs::path& run_a, const fs::path& run_b) {
  const auto a = read_jsonl(run_a / "metrics.jsonl"), b = read_jsonl(run_b / "metrics.jsonl");
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    EXPECT_EQ(a[i]["step"], b[i]["step"]);
    const double la = a[i]["loss"].get<double>(), lb = b[i]["loss"].get<double>();
    worst = std::max(worst, std::abs(la - lb) / std::max(std::abs(la), 1e-12));
  }
  return worst;
}

// The 1-process reference run (once per test process).
const fs::path& reference() {
  static fs::path ref = [] {
    const Corpus& c = corpus();
    const fs::path run = kRoot / "ref";
    fs::remove_all(run);
    const int rc = run_cli(train_args(c, steps_for(c)) + " --out " + run.string(), kRoot / "ref.log");
    EXPECT_EQ(rc, 0) << read_text(kRoot / "ref.log");
    return run;
  }();
  return ref;
}

void expect_matches_reference(const fs::path& run, const std::string& what) {
  const fs::path& ref = reference();
  const auto m = read_jsonl(run / "metrics.jsonl");
  ASSERT_EQ(int64_t(m.size()), steps_for(corpus())) << what << ": one metrics line per step, rank 0 only";
  EXPECT_EQ(m.back()["world_size"], 2) << what;
  const double loss_rel = max_loss_rel_diff(ref, run);
  std::string where;
  const double w = max_weight_diff(ref / "model.safetensors", run / "model.safetensors", &where);
  std::cout << what << ": max relative loss difference " << loss_rel << ", max |w_1proc - w_2proc| " << w << " ("
            << where << ")\n";
  EXPECT_LE(loss_rel, 1e-4) << what;
  EXPECT_LE(w, 1e-5) << what;
}

}  // namespace

// ------------------------------------------------------------------------------------------------

TEST(PretrainDist, TwoProcessesMatchOneProcessWithTheGlobalBatch) {
  const Corpus& c = corpus();
  if (!c.available) GTEST_SKIP() << c.skip_reason;
  ASSERT_GE(c.train_samples, 16);
  const fs::path& ref = reference();
  ASSERT_TRUE(fs::exists(ref / "model.safetensors"));
  const auto rm = read_jsonl(ref / "metrics.jsonl");
  ASSERT_EQ(int64_t(rm.size()), steps_for(c));
  EXPECT_EQ(rm.back()["epoch"], 1);  // the run crossed an epoch boundary
  EXPECT_EQ(rm.front()["stage"], 1);
  EXPECT_EQ(rm.back()["stage"], 2);

  struct Case {
    std::string name, flags;
  };
  for (const Case& k : {Case{"global loss", ""}, Case{"local loss", " --local-loss"},
                        Case{"global loss + GradCache (--accum-steps 2)", " --accum-steps 2"}}) {
    const fs::path run = kRoot / ("launch_" + std::to_string(std::hash<std::string>{}(k.name) % 1000));
    fs::remove_all(run);
    const fs::path log = kRoot / (run.filename().string() + ".log");
    const int rc = run_cli(launch2(train_args(c, steps_for(c)) + k.flags + " --out " + run.string()), log);
    ASSERT_EQ(rc, 0) << k.name << "\n" << read_text(log);
    expect_matches_reference(run, k.name);
    // Rank 0 alone writes: one config, one final model, no per-rank files.
    EXPECT_TRUE(fs::exists(run / "config.json"));
    EXPECT_EQ(nlohmann::json::parse(read_text(run / "config.json"))["world_size"], 2);
  }

  // The torchrun form, when Debian's python3-torch is installed.
  if (std::system((std::string(FLORENCE_PYTHON) + " -c 'import torch.distributed.run' >/dev/null 2>&1").c_str()) != 0) {
    std::cout << "torchrun not available; its form was not tested\n";
    return;
  }
  const fs::path run = kRoot / "torchrun";
  fs::remove_all(run);
  // --redirects/--tee: Debian 12's torch 1.13 under Python 3.11 cannot parse their default "0"
  // (Std.from_str iterates an IntFlag, which no longer yields the zero member: AttributeError
  // 'NoneType' object has no attribute 'get'); "2" sends stderr to the console and torchrun's log.
  const std::string args = fmt::format("-m torch.distributed.run --no_python --nnodes 1 --nproc_per_node 2 "
                                       "--master_addr 127.0.0.1 --master_port {} --redirects 2 --tee 2 {} {} --out {}",
                                       free_port(), FLORENCE_CLI, train_args(c, steps_for(c)), run.string());
  const int rc = run_program(FLORENCE_PYTHON, args, kRoot / "torchrun.log");
  ASSERT_EQ(rc, 0) << read_text(kRoot / "torchrun.log");
  expect_matches_reference(run, "torchrun form");
}

TEST(PretrainDist, ResumeAcrossWorldSizes) {
  const Corpus& c = corpus();
  if (!c.available) GTEST_SKIP() << c.skip_reason;
  const fs::path& ref = reference();
  const std::string args = train_args(c, steps_for(c));
  // 2 processes for 3 steps, then 1 process to the end.
  {
    const fs::path run = kRoot / "resume_2_to_1";
    fs::remove_all(run);
    ASSERT_EQ(run_cli(launch2(args + " --stop-after-steps 3 --out " + run.string()), kRoot / "r21a.log"), 0)
        << read_text(kRoot / "r21a.log");
    EXPECT_EQ(read_text(run / "checkpoints" / "latest"), "step_0000003.safetensors\n");
    const auto side = nlohmann::json::parse(read_text(run / "checkpoints" / "step_0000003.json"));
    EXPECT_EQ(side["train_state"]["world_size"], 2);
    EXPECT_EQ(side["train_state"]["global_batch_size"], 8);
    ASSERT_EQ(run_cli("--threads 2 pretrain --no-progress --resume " + run.string(), kRoot / "r21b.log"), 0)
        << read_text(kRoot / "r21b.log");
    const double w = max_weight_diff(ref / "model.safetensors", run / "model.safetensors");
    const double l = max_loss_rel_diff(ref, run);
    std::cout << "resume 2 -> 1 process: max |dw| " << w << ", max relative loss difference " << l << "\n";
    EXPECT_LE(w, 1e-5);
    EXPECT_LE(l, 1e-4);
  }
  // 1 process for 3 steps, then 2 processes to the end.
  {
    const fs::path run = kRoot / "resume_1_to_2";
    fs::remove_all(run);
    ASSERT_EQ(run_cli(args + " --stop-after-steps 3 --out " + run.string(), kRoot / "r12a.log"), 0)
        << read_text(kRoot / "r12a.log");
    ASSERT_EQ(run_cli(launch2("--threads 1 pretrain --no-progress --resume " + run.string()), kRoot / "r12b.log"), 0)
        << read_text(kRoot / "r12b.log");
    const double w = max_weight_diff(ref / "model.safetensors", run / "model.safetensors");
    const double l = max_loss_rel_diff(ref, run);
    std::cout << "resume 1 -> 2 processes: max |dw| " << w << ", max relative loss difference " << l << "\n";
    EXPECT_LE(w, 1e-5);
    EXPECT_LE(l, 1e-4);
    EXPECT_EQ(read_jsonl(run / "metrics.jsonl").back()["world_size"], 2);
  }
}

TEST(PretrainDist, KilledRankMakesTheOthersExitWithTheTimeoutMessage) {
  const Corpus& c = corpus();
  if (!c.available) GTEST_SKIP() << c.skip_reason;
  const double timeout = 20;
  auto wait_for_steps = [](const fs::path& run, size_t n) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(2);
    while (std::chrono::steady_clock::now() < deadline) {
      if (fs::exists(run / "metrics.jsonl") && read_jsonl(run / "metrics.jsonl").size() >= n) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  };
  const std::string args = train_args(c, 100000, timeout);

  // Two ranks started by hand with torchrun's variables; rank 1 is killed after 2 steps.
  {
    const fs::path run = kRoot / "killed";
    fs::remove_all(run);
    const std::string port = std::to_string(free_port());
    auto env = [&](int rank) {
      return std::vector<std::pair<std::string, std::string>>{{"RANK", std::to_string(rank)},
                                                              {"WORLD_SIZE", "2"},
                                                              {"LOCAL_RANK", std::to_string(rank)},
                                                              {"MASTER_ADDR", "127.0.0.1"},
                                                              {"MASTER_PORT", port}};
    };
    const pid_t r0 = spawn(FLORENCE_CLI, args + " --out " + run.string(), kRoot / "killed_rank0.log", env(0));
    const pid_t r1 = spawn(FLORENCE_CLI, args + " --out " + run.string(), kRoot / "killed_rank1.log", env(1));
    const bool started = wait_for_steps(run, 2);
    kill(r1, SIGKILL);
    const auto t_kill = std::chrono::steady_clock::now();
    EXPECT_EQ(wait_status(r1), 128 + SIGKILL);
    const int rc0 = wait_status(r0);
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_kill).count();
    const std::string log0 = read_text(kRoot / "killed_rank0.log");
    ASSERT_TRUE(started) << log0;
    std::cout << "rank 0 exited " << waited << " s after rank 1 was killed, status " << rc0 << "\n";
    EXPECT_EQ(rc0, 2) << log0;
    EXPECT_NE(log0.find("error: distributed: "), std::string::npos) << log0;
    EXPECT_NE(log0.find("--dist-timeout 20 s"), std::string::npos) << log0;
    EXPECT_LE(waited, timeout);
  }

  // Under `florence launch`: killing one child stops the job with a non-zero status.
  {
    const fs::path run = kRoot / "killed_launch";
    fs::remove_all(run);
    const pid_t launcher = spawn(FLORENCE_CLI, launch2(args + " --out " + run.string()), kRoot / "killed_launch.log");
    ASSERT_TRUE(wait_for_steps(run, 2)) << read_text(kRoot / "killed_launch.log");
    // The launcher's children; kill the one with RANK=1.
    std::vector<pid_t> kids;
    {
      std::ifstream f(fmt::format("/proc/{}/task/{}/children", launcher, launcher));
      for (pid_t p; f >> p;) kids.push_back(p);
    }
    ASSERT_EQ(kids.size(), 2u);
    pid_t victim = -1;
    for (pid_t p : kids) {
      std::istringstream env(read_text(fmt::format("/proc/{}/environ", p)));
      for (std::string var; std::getline(env, var, '\0');) {
        if (var == "RANK=1") victim = p;
      }
    }
    ASSERT_GT(victim, 0);
    kill(victim, SIGKILL);
    const auto t_kill = std::chrono::steady_clock::now();
    const int rc = wait_status(launcher);
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_kill).count();
    const std::string log = read_text(kRoot / "killed_launch.log");
    std::cout << "launch exited " << waited << " s after rank 1 was killed, status " << rc << "\n";
    EXPECT_NE(rc, 0) << log;
    EXPECT_NE(log.find("launch: rank "), std::string::npos) << log;  // names the first rank that failed
    EXPECT_LE(waited, timeout + 15.0);  // the launcher's grace period after the failure
    for (pid_t p : kids) EXPECT_NE(kill(p, 0), 0) << "child " << p << " still running";
  }
}

}  // namespace test_pretrain_dist
