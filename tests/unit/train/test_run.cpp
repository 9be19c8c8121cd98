// The shared run layer (train/run.h) with a small task of its own: linear regression on data that
// is a pure function of (seed, epoch, batch), 5 batches per epoch. Checks the checkpoint cadence and
// pruning, resume equal to the uninterrupted run, the NaN guards, signals, epoch roll-over, the
// schedule with per-group lr scales, and the options field table (JSON, resume merge).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <random>
#include <thread>

#include "florence/core/checkpoint.h"
#include "florence/core/error.h"
#include "florence/core/files.h"
#include "florence/core/precision.h"
#include "florence/model/io.h"
#include "florence/train/run.h"
#include "florence/train/run_state.h"
#include "florence/train/seeding.h"
#include "support/files.h"
#include "support/paths.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_run {

namespace fs = std::filesystem;
using namespace florence;

namespace {

const fs::path kTmp = fs::path(FLORENCE_TEST_TMP) / "train_run";

struct ToyOptions : train::RunOptions {
  int64_t batches_per_epoch = 5;
  int64_t milestone = 0;       // steps_done that is a milestone (0: none)
  int64_t signal_at = 0;       // raise `signal` during this 1-based step (0: never)
  int signal = SIGINT;         // Ctrl-C; SIGTERM is what Slurm and Kubernetes send before a kill
  int64_t inf_grad_at = 0;     // make the gradient infinite at this 1-based step (0: never)
  double head_scale = 1.0;     // lr scale of the bias group
  template <class F>
  void visit(F&& f) {
    RunOptions::visit(f);
    f(train::Field{"batches_per_epoch", "--batches-per-epoch", ""}, batches_per_epoch);
  }
  template <class F>
  void visit(F&& f) const {
    RunOptions::visit(f);
    f(train::Field{"batches_per_epoch", "--batches-per-epoch", ""}, batches_per_epoch);
  }
};

class ToyTask : public train::TrainTask {
 public:
  explicit ToyTask(ToyOptions o) : o_(std::move(o)) {}
  std::string name() const override { return "toy"; }
  const train::RunOptions& options() const override { return o_; }
  nlohmann::json options_json() const override { return train::options_to_json(o_); }
  void validate() override { o_.validate_run(true); }
  int64_t setup(const train::RunContext&) override {
    torch::manual_seed(int64_t(o_.seed));
    lin_ = torch::nn::Linear(4, 1);
    spec_.name = "toy";
    return o_.steps > 0 ? o_.steps : o_.epochs * o_.batches_per_epoch;
  }
  torch::nn::Module& module() override { return *lin_; }
  const model::ModelSpec& spec() const override { return spec_; }
  std::vector<train::ParamGroup> param_groups() override {
    return {{{lin_->weight}, true, 1.0}, {{lin_->bias}, false, o_.head_scale}};
  }
  void open_epoch(const train::Position& pos) override {
    epoch_ = pos.epoch;
    next_ = pos.batches_in_epoch;
    ++opened;
  }
  bool next_batch(const train::Position&) override {
    if (next_ >= o_.batches_per_epoch) return false;
    std::mt19937_64 g(train::seed_mix({o_.seed, uint64_t(epoch_), uint64_t(next_)}));
    std::normal_distribution<float> n(0.f, 1.f);
    x_ = torch::empty({8, 4});
    for (int64_t i = 0; i < 32; ++i) x_.view(-1)[i] = n(g);
    y_ = x_.matmul(torch::tensor({1.f, -2.f, 0.5f, 3.f}).unsqueeze(1)) + 0.25;
    ++next_;
    return true;
  }
  train::StepOutput step(const train::Position& pos) override {
    if (o_.signal_at == pos.step + 1) std::raise(o_.signal);
    torch::Tensor pred = lin_->forward(x_);
    forward_dtype = pred.scalar_type();
    NoAutocastGuard fp32_loss;
    torch::Tensor loss = torch::mse_loss(pred.to(torch::kFloat), y_);
    loss.backward();
    if (o_.inf_grad_at == pos.step + 1) lin_->weight.mutable_grad().fill_(std::numeric_limits<float>::infinity());
    train::StepOutput out;
    out.loss = loss.item<double>();
    out.samples = 8;
    out.metrics = {{"toy", pos.batches_in_epoch}};
    return out;
  }
  bool is_milestone(int64_t done) const override { return o_.milestone > 0 && done == o_.milestone; }
  nlohmann::json train_state(const train::Position& pos) const override { return {{"toy_epoch", pos.epoch}}; }
  bool supports_amp() const override { return amp_ok; }
  int opened = 0;
  bool amp_ok = false;
  torch::ScalarType forward_dtype = torch::kFloat;

 private:
  ToyOptions o_;
  torch::nn::Linear lin_{nullptr};
  model::ModelSpec spec_;
  int64_t epoch_ = 0, next_ = 0;
  torch::Tensor x_, y_;
};

ToyOptions toy(const std::string& name) {
  ToyOptions o;
  o.out_dir = (kTmp / name).string();
  fs::remove_all(o.out_dir);
  o.steps = 12;
  o.lr = 0.05;
  o.warmup_steps = 2;
  o.ckpt_every = 3;
  o.keep_checkpoints = 2;
  o.progress = 0;
  o.handle_signals = true;
  o.seed = 7;
  return o;
}

std::vector<std::string> checkpoints(const fs::path& run) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(run / "checkpoints"))
    if (e.path().extension() == ".safetensors" && e.path().string().find(".optim.") == std::string::npos)
      names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

core::TensorMap weights(const fs::path& p) { return core::load_safetensors(p.string()).tensors; }

}  // namespace

TEST(RunLayer, CheckpointsEpochsAndPruning) {
  ToyOptions o = toy("cadence");
  o.milestone = 5;
  ToyTask t(o);
  const train::RunResult r = train::run_task(t);
  EXPECT_FALSE(r.interrupted);
  EXPECT_EQ(r.steps_done, 12);
  // 12 steps of 5 batches: epochs 0, 1, 2 (opened three times).
  EXPECT_EQ(t.opened, 3);
  // Periodic 3, 6, 9, 12 (the end) keep the newest 2; the milestone 5 is never pruned.
  EXPECT_EQ(checkpoints(o.out_dir),
            (std::vector<std::string>{"step_0000005.safetensors", "step_0000009.safetensors",
                                      "step_0000012.safetensors"}));
  EXPECT_EQ(core::read_text_file(fs::path(o.out_dir) / "checkpoints" / "latest"), "step_0000012.safetensors\n");
  const auto side = core::read_json_file(fs::path(o.out_dir) / "checkpoints" / "step_0000009.json");
  const auto& st = side.at("train_state");
  EXPECT_EQ(st.at("step"), 9);
  EXPECT_EQ(st.at("epoch"), 1);
  EXPECT_EQ(st.at("batches_in_epoch"), 4);
  EXPECT_EQ(st.at("toy_epoch"), 1);
  EXPECT_EQ(st.at("options").at("batches_per_epoch"), 5);
  EXPECT_TRUE(fs::exists(fs::path(o.out_dir) / "checkpoints" / "step_0000009.optim.safetensors"));
  // metrics.jsonl: one line per step with the engine's fields and the task's.
  const auto lines = test::read_jsonl(fs::path(o.out_dir) / "metrics.jsonl");
  ASSERT_EQ(lines.size(), 12u);
  EXPECT_EQ(lines[6].at("step"), 7);
  EXPECT_EQ(lines[6].at("epoch"), 1);
  EXPECT_EQ(lines[6].at("toy"), 1);
  EXPECT_LT(lines[11].at("loss").get<double>(), lines[0].at("loss").get<double>());
  // The schedule: warm-up 2 steps to 0.05, then cosine to 0 over the remaining 10.
  EXPECT_NEAR(lines[0].at("lr").get<double>(), 0.025, 1e-12);
  EXPECT_NEAR(lines[1].at("lr").get<double>(), 0.05, 1e-12);
  EXPECT_NEAR(lines[7].at("lr").get<double>(), 0.5 * 0.05 * (1 + std::cos(M_PI * 5 / 10)), 1e-12);
  const auto cfg = core::read_json_file(fs::path(o.out_dir) / "config.json");
  EXPECT_EQ(cfg.at("total_steps"), 12);
  EXPECT_EQ(cfg.at("options").at("lr"), 0.05);
  EXPECT_TRUE(fs::exists(fs::path(o.out_dir) / "model.safetensors"));
  EXPECT_EQ(r.final_weights, (fs::path(o.out_dir) / "model.safetensors").string());
  // A fresh run into a folder with checkpoints is refused.
  ToyTask again(o);
  EXPECT_THROW(train::run_task(again), Error);
  // A checkpoint whose train_state holds a position no run has is refused naming the file (before:
  // "step": 1e300 resumed at step -9223372036854775484).
  const fs::path sidecar_file = fs::path(o.out_dir) / "checkpoints" / "step_0000012.json";
  const nlohmann::json good = core::read_json_file(sidecar_file);
  for (const nlohmann::json& bad : {nlohmann::json(1e300), nlohmann::json(-5)}) {
    nlohmann::json forged = good;
    forged["train_state"]["step"] = bad;
    core::write_text_atomic(sidecar_file, forged.dump());
    ToyOptions r = o;
    r.resume = o.out_dir;
    ToyTask resumed(r);
    try {
      train::run_task(resumed);
      ADD_FAILURE() << "resumed from step " << bad.dump();
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(sidecar_file.string()), std::string::npos) << e.what();
    }
  }
  core::write_text_atomic(sidecar_file, good.dump());
}

TEST(RunLayer, ResumeEqualsTheUninterruptedRun) {
  ToyOptions full = toy("full");
  ToyTask a(full);
  train::run_task(a);
  ToyOptions part = toy("part");
  part.stop_after_steps = 7;
  ToyTask b(part);
  const auto rb = train::run_task(b);
  EXPECT_TRUE(rb.interrupted);
  EXPECT_EQ(rb.steps_done, 7);
  EXPECT_TRUE(rb.final_weights.empty());
  part.stop_after_steps = 0;
  part.resume = part.out_dir;
  ToyTask c(part);
  const auto rc = train::run_task(c);
  EXPECT_EQ(rc.start_step, 7);
  EXPECT_EQ(rc.steps_done, 12);
  const auto wa = weights(fs::path(full.out_dir) / "model.safetensors");
  const auto wc = weights(fs::path(part.out_dir) / "model.safetensors");
  for (const auto& [k, v] : wa) EXPECT_TRUE(torch::equal(v, wc.at(k))) << k;
  // metrics.jsonl of the resumed run: the first 7 lines kept, 5 appended, same losses.
  const auto la = test::read_jsonl(fs::path(full.out_dir) / "metrics.jsonl");
  const auto lc = test::read_jsonl(fs::path(part.out_dir) / "metrics.jsonl");
  ASSERT_EQ(lc.size(), 12u);
  for (size_t i = 0; i < 12; ++i) EXPECT_EQ(la[i].at("loss"), lc[i].at("loss")) << i;
}

// A run folder copied elsewhere resumes in the copy: the options read for --resume name the folder
// given (or the one holding the checkpoint given), not the out_dir the original run saved, and the
// original's files stay as they were.
TEST(RunLayer, ResumedCopyWritesIntoTheCopy) {
  ToyOptions o = toy("copy_src");
  o.stop_after_steps = 6;
  ToyTask t(o);
  EXPECT_TRUE(train::run_task(t).interrupted);
  const fs::path copy = kTmp / "copy_dst";
  fs::remove_all(copy);
  fs::copy(o.out_dir, copy, fs::copy_options::recursive);
  const train::SavedRunKind any{"", "", "", "toy"};
  EXPECT_EQ(train::load_saved_options(copy.string(), any).at("out_dir"), copy.string());
  const std::string ckpt = (copy / "checkpoints" / "step_0000006.safetensors").string();
  EXPECT_EQ(train::load_saved_options(ckpt, any).at("out_dir"), copy.string());
  const std::string metrics_before = core::read_text_file(fs::path(o.out_dir) / "metrics.jsonl");
  ToyOptions r;
  train::options_from_json(r, train::load_saved_options(copy.string(), any), "toy");
  r.resume = copy.string();
  r.stop_after_steps = 0;  // per invocation (the resume merge takes it from the command line)
  r.progress = 0;
  ToyTask tr(r);
  const train::RunResult res = train::run_task(tr);
  EXPECT_EQ(res.start_step, 6);
  EXPECT_EQ(res.steps_done, 12);
  EXPECT_TRUE(fs::exists(copy / "model.safetensors"));
  EXPECT_FALSE(fs::exists(fs::path(o.out_dir) / "model.safetensors"));
  EXPECT_EQ(core::read_text_file(fs::path(o.out_dir) / "metrics.jsonl"), metrics_before);
}

TEST(RunLayer, NonFiniteLossAndGradientStopBeforeTheStep) {
  ToyOptions o = toy("nan");
  o.debug_nan_at_step = 8;
  ToyTask t(o);
  try {
    train::run_task(t);
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("non-finite loss"), std::string::npos) << msg;
    EXPECT_NE(msg.find("step 8"), std::string::npos) << msg;
    EXPECT_NE(msg.find("step_0000006.safetensors"), std::string::npos) << msg;
  }
  EXPECT_EQ(core::read_text_file(fs::path(o.out_dir) / "checkpoints" / "latest"), "step_0000006.safetensors\n");
  ToyOptions g = toy("inf_grad");
  g.inf_grad_at = 2;
  ToyTask tg(g);
  try {
    train::run_task(tg);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("non-finite gradient norm at step 2"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(fs::path(g.out_dir) / "checkpoints" / "latest"));
}

TEST(RunLayer, SignalFinishesTheStepAndCheckpoints) {
  ToyOptions o = toy("signal");
  o.signal_at = 4;
  ToyTask t(o);
  const auto r = train::run_task(t);
  EXPECT_TRUE(r.interrupted);
  EXPECT_EQ(r.steps_done, 4);
  EXPECT_EQ(core::read_text_file(fs::path(o.out_dir) / "checkpoints" / "latest"), "step_0000004.safetensors\n");
  EXPECT_FALSE(fs::exists(fs::path(o.out_dir) / "model.safetensors"));
}

// Issue 23: SIGTERM (Slurm's and Kubernetes' stop signal) checkpoints and stops like Ctrl-C, and the
// run resumes from there to the uninterrupted run's step count.
TEST(RunLayer, SigtermFinishesTheStepAndCheckpoints) {
  ToyOptions o = toy("sigterm");
  o.signal_at = 3;
  o.signal = SIGTERM;
  ToyTask t(o);
  const auto r = train::run_task(t);
  EXPECT_TRUE(r.interrupted);
  EXPECT_EQ(r.steps_done, 3);
  EXPECT_EQ(core::read_text_file(fs::path(o.out_dir) / "checkpoints" / "latest"), "step_0000003.safetensors\n");
  ToyOptions again = o;
  again.signal_at = 0;
  again.resume = o.out_dir;
  ToyTask t2(again);
  const auto r2 = train::run_task(t2);
  EXPECT_FALSE(r2.interrupted);
  EXPECT_EQ(r2.steps_done, o.steps);
  EXPECT_TRUE(fs::exists(fs::path(o.out_dir) / "model.safetensors"));
}

// Helper of RunLayer.KillNineWhileCheckpointingKeepsLatestValid (run as a child process of this test
// program): trains the toy task with a checkpoint after every step until it is killed. Skipped unless
// FLORENCE_KILL_CHILD_DIR names its run folder.
TEST(RunLayerKillChild, Child) {
  const char* dir = std::getenv("FLORENCE_KILL_CHILD_DIR");
  if (!dir) GTEST_SKIP() << "the child process of RunLayer.KillNineWhileCheckpointingKeepsLatestValid";
  ToyOptions o = toy("unused");
  o.out_dir = dir;
  o.steps = 1000000;
  o.ckpt_every = 1;
  o.handle_signals = false;
  ToyTask t(o);
  train::run_task(t);
}

// Issue 23: `kill -9` at any moment of a checkpoint write leaves checkpoints/latest naming a complete
// checkpoint (weights, sidecar, optimizer state) and the run resumes from it. The child writes a
// checkpoint every step (most of its time is spent writing them) and is killed at varying moments.
TEST(RunLayer, KillNineWhileCheckpointingKeepsLatestValid) {
  const std::string exe = fs::read_symlink("/proc/self/exe").string();
  for (int round = 0; round < 4; ++round) {
    const fs::path dir = kTmp / ("kill9_" + std::to_string(round));
    fs::remove_all(dir);
    fs::create_directories(dir);
    std::vector<std::string> env_strings;
    for (char** e = environ; *e; ++e) env_strings.emplace_back(*e);
    env_strings.push_back("FLORENCE_KILL_CHILD_DIR=" + dir.string());
    std::vector<char*> envp;
    for (auto& e : env_strings) envp.push_back(e.data());
    envp.push_back(nullptr);
    std::string filter = "--gtest_filter=RunLayerKillChild.Child";
    char* argv[] = {const_cast<char*>(exe.c_str()), filter.data(), nullptr};
    pid_t pid = 0;
    ASSERT_EQ(posix_spawn(&pid, exe.c_str(), nullptr, nullptr, argv, envp.data()), 0);
    // Wait for a few checkpoints, then kill at a moment that differs per round.
    const fs::path latest = dir / "checkpoints" / "latest";
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (std::chrono::steady_clock::now() < deadline) {
      if (fs::exists(latest) && core::read_text_file(latest) >= "step_0000005") break;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(1000 + 3733 * round));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status)) << "the child ended before it was killed";
    ASSERT_TRUE(fs::exists(latest));
    std::string name = core::read_text_file(latest);
    ASSERT_FALSE(name.empty());
    name.pop_back();  // "step_NNNNNNN.safetensors\n"
    const fs::path ckpt = dir / "checkpoints" / name;
    EXPECT_NO_THROW(core::load_safetensors(ckpt.string())) << name;
    EXPECT_NO_THROW(core::load_safetensors(train::optim_path(ckpt.string()))) << name;
    EXPECT_TRUE(fs::exists(model::sidecar_path(ckpt.string()))) << name;
    const int64_t step = std::stoll(name.substr(5, 7));
    ToyOptions o = toy("unused");
    o.out_dir = dir.string();
    o.resume = dir.string();
    o.steps = 1000000;
    o.ckpt_every = 1;
    o.stop_after_steps = step + 2;
    ToyTask t(o);
    const auto r = train::run_task(t);
    EXPECT_EQ(r.start_step, step);
    EXPECT_EQ(r.steps_done, step + 2);
  }
}

TEST(RunLayer, GroupLearningRateScales) {
  ToyOptions o = toy("scales");
  o.steps = 1;
  o.warmup_steps = 0;
  o.grad_clip = 0;
  o.weight_decay = 0;
  o.head_scale = 0.0;  // the bias group does not move
  ToyTask t(o);
  torch::manual_seed(7);
  const torch::Tensor bias0 = torch::nn::Linear(4, 1)->bias.detach().clone();
  train::run_task(t);
  const auto w = weights(fs::path(o.out_dir) / "model.safetensors");
  EXPECT_TRUE(torch::equal(w.at("bias"), bias0));
  EXPECT_FALSE(torch::equal(w.at("weight"), torch::nn::Linear(4, 1)->weight.detach()));
}

TEST(RunLayer, DataCursorStartsAResumedEpochWhereTheReaderStood) {
  train::DataCursor c;
  c.epoch = 2, c.item = 13, c.skipped = 5;
  // The epoch it was saved in, 2 batches of 4 in (13 items: 8 read + 5 skipped): item 13.
  EXPECT_EQ(c.start({50, 2, 2}, 4), 13);
  // Another epoch, or no cursor: batches x batch.
  EXPECT_EQ(c.start({50, 3, 0}, 4), 0);
  EXPECT_EQ(train::DataCursor{}.start({50, 2, 2}, 4), 8);
  // Resumed with another --batch-size (8): still the item where the reader stood.
  EXPECT_EQ(c.start({50, 2, 2}, 8), 13);

  // Round trip through a sidecar; a checkpoint without one gives epoch -1; bad entries are errors.
  const nlohmann::json side = {{"train_state", {{"step", 50}, {"data_cursor", c.to_json()}}}};
  const train::DataCursor back = train::DataCursor::from_sidecar(side, "ck.json");
  EXPECT_EQ(back.epoch, 2);
  EXPECT_EQ(back.item, 13);
  EXPECT_EQ(back.skipped, 5);
  EXPECT_EQ(train::DataCursor::from_sidecar({{"train_state", {{"step", 1}}}}, "ck.json").epoch, -1);
  const auto message = [](const nlohmann::json& cursor) {
    try {
      train::DataCursor::from_sidecar({{"train_state", {{"data_cursor", cursor}}}}, "ck.json");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message({{"epoch", 0}, {"item", -1}, {"skipped", 0}}).find("must be >= 0"), std::string::npos);
  EXPECT_NE(message({{"epoch", 0}, {"item", 3}}).find("no 'skipped'"), std::string::npos);
  EXPECT_NE(message({{"epoch", "x"}, {"item", 3}, {"skipped", 0}}).find("ck.json"), std::string::npos);
  EXPECT_NE(message(7).find("not an object"), std::string::npos);
}

TEST(RunOptionsTable, JsonRoundTripUnknownKeysAndResumeMerge) {
  ToyOptions o;
  o.lr = 0.125;
  o.batches_per_epoch = 9;
  o.stop_after_steps = 5;
  const nlohmann::json j = train::options_to_json(o);
  EXPECT_EQ(j.at("lr"), 0.125);
  EXPECT_EQ(j.at("batches_per_epoch"), 9);
  ToyOptions back;
  train::options_from_json(back, j, "toy options");
  EXPECT_EQ(train::options_to_json(back), j);
  try {
    train::options_from_json(back, {{"nope", 1}}, "toy options");
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "toy options: unknown key 'nope'");
  }
  EXPECT_THROW(train::options_from_json(back, {{"lr", "fast"}}, "toy options"), Error);
  // Numbers out of the field's range are errors naming the key (before: "steps": 1e300 became
  // INT64_MIN and the message blamed --steps; "seed": 1e300 became 0 without a word).
  for (const char* key : {"steps", "seed", "batch_size"}) {
    try {
      train::options_from_json(back, {{key, 1e300}}, "toy options");
      ADD_FAILURE() << key;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("toy options: bad value for '") + key + "': 1e+300"),
                std::string::npos)
          << e.what();
    }
  }
  // Resume merge: given flags and per-invocation fields come from this invocation.
  ToyOptions saved;
  saved.lr = 0.5;
  saved.batches_per_epoch = 3;
  saved.stop_after_steps = 99;
  saved.seed = 11;
  ToyOptions parsed;
  parsed.lr = 0.25;
  parsed.batches_per_epoch = 4;
  parsed.seed = 12;
  const ToyOptions m = train::options_overlay(saved, parsed, [](const char* f) { return std::string(f) == "--lr"; },
                                              "merge");
  EXPECT_EQ(m.lr, 0.25);               // given
  EXPECT_EQ(m.batches_per_epoch, 3);   // not given: saved
  EXPECT_EQ(m.seed, 11u);              // not given: saved
  EXPECT_EQ(m.stop_after_steps, 0);    // per invocation: this one's (not given = 0)
}

TEST(RunOptionsTable, RangeChecksNameTheFlag) {
  auto msg = [](const std::function<void(train::RunOptions&)>& edit) {
    train::RunOptions o;
    o.out_dir = "x";
    o.steps = 1;
    edit(o);
    try {
      o.validate_run(true);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_EQ(msg([](auto&) {}), "");
  EXPECT_NE(msg([](auto& o) { o.lr = 0; }).find("--lr must be > 0"), std::string::npos);
  EXPECT_NE(msg([](auto& o) { o.steps = 0; }).find("give --steps N or --epochs N"), std::string::npos);
  EXPECT_NE(msg([](auto& o) { o.epochs = 2; }).find("not both"), std::string::npos);
  EXPECT_NE(msg([](auto& o) { o.log_every = 0; }).find("--log-every must be >= 1"), std::string::npos);
  EXPECT_NE(msg([](auto& o) { o.out_dir.clear(); }).find("--out RUN_DIR is required"), std::string::npos);
  EXPECT_EQ(msg([](auto& o) { o.precision = "amp_bf16"; }), "");
  EXPECT_NE(msg([](auto& o) { o.precision = "bf16"; }).find("training takes fp32, or amp_bf16"), std::string::npos);
  EXPECT_NE(msg([](auto& o) { o.precision = "fp16"; }).find("unknown --precision 'fp16'"), std::string::npos);
}

// --precision amp_bf16: a task that has not declared support is refused before anything runs; one
// that has runs its steps under bfloat16 autocast (the linear layer's output is bfloat16) with
// float32 weights, and learns.
TEST(RunLayer, AmpBf16OnlyForTasksWrittenForIt) {
  setenv("FLORENCE_BF16_ANYWAY", "1", 1);  // the numerics on any CPU
  ToyOptions o = toy("amp_refused");
  o.precision = "amp_bf16";
  ToyTask refused(o);
  try {
    train::run_task(refused);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("toy does not support --precision amp_bf16"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(fs::path(o.out_dir) / "checkpoints"));

  // The same 40 steps in float32 and in amp_bf16: both fit the regression (loss below a tenth of
  // the first step's) and end within 0.05 of each other (bfloat16 keeps ~3 significant digits).
  ToyOptions f = toy("amp_fp32");
  f.steps = 40;
  f.lr = 0.3;
  ToyTask fp32(f);
  fp32.amp_ok = true;
  const train::RunResult r32 = train::run_task(fp32);
  EXPECT_EQ(fp32.forward_dtype, torch::kFloat);
  ToyOptions a = toy("amp_runs");
  a.precision = "amp_bf16";
  a.steps = 40;
  a.lr = 0.3;
  ToyTask amp(a);
  amp.amp_ok = true;
  const train::RunResult r = train::run_task(amp);
  EXPECT_EQ(r.steps_done, 40);
  EXPECT_EQ(amp.forward_dtype, torch::kBFloat16);
  EXPECT_LT(r32.last_loss, 0.1 * r32.first_loss);
  EXPECT_LT(r.last_loss, 0.1 * r.first_loss);
  EXPECT_NEAR(r.last_loss, r32.last_loss, 0.05);
  EXPECT_NE(r.last_loss, r32.last_loss);  // bfloat16 really ran
  for (const auto& kv : weights(fs::path(a.out_dir) / "model.safetensors")) EXPECT_EQ(kv.second.scalar_type(), torch::kFloat);
  EXPECT_EQ(core::read_json_file(fs::path(a.out_dir) / "config.json")["options"]["precision"], "amp_bf16");
  EXPECT_EQ(core::read_json_file(fs::path(a.out_dir) / "config.json")["precision"], "amp_bf16");

  // Where bfloat16 would be emulated (forced here with FLORENCE_BF16_ANYWAY=0) the run falls back to
  // float32, and config.json says so next to what was asked.
  setenv("FLORENCE_BF16_ANYWAY", "0", 1);
  ToyOptions fb = toy("amp_fallback");
  fb.precision = "amp_bf16";
  fb.steps = 2;
  ToyTask fallback(fb);
  fallback.amp_ok = true;
  train::run_task(fallback);
  unsetenv("FLORENCE_BF16_ANYWAY");
  EXPECT_EQ(fallback.forward_dtype, torch::kFloat);
  const nlohmann::json cfg = core::read_json_file(fs::path(fb.out_dir) / "config.json");
  EXPECT_EQ(cfg["options"]["precision"], "amp_bf16");
  EXPECT_EQ(cfg["precision"], "fp32");
}

}  // namespace test_run
