// Performance against PyTorch-from-Python on the same machine, same weights, same threads, same
// run (issue: performance). Cases:
//   swin    Swin-T forward (1000-class head), batch 16, 224 px vs torchvision swin_t (bench/swin_peer.py)
//   coswin  florence-t encode_image (CoSwin-T + projection), batch 16, 224 px vs a Python CoSwin-T
//           built from torchvision's SwinTransformerBlock (bench/florence_peer.py image)
//   text    florence-t encode_text, batch 256, context 77 vs the Python text tower built from
//           nn.TransformerEncoderLayer (bench/florence_peer.py text)
//   train   one florence-t UniCL step (forward + backward + AdamW), batch 16, 224 px, as the trainer
//           runs it (train/run.h release_grads, train::adamw_step), vs the same step in Python
//           (bench/florence_peer.py train: zero_grad, torch.optim.AdamW)
//
//   bench_perf [--threads N] [--iters K] [--cases swin,coswin,text,train] [--work DIR]
//              [--image-batch 16] [--text-batch 256] [--train-batch 16] [--split P] [--profile]
//              [--precisions fp32,bf16]
//
// --precisions: each case runs once per listed precision, ours and the peer's in the same run
// (core/precision.h): fp32; bf16 = bfloat16 weights and activations at inference, and for the
// training step amp_bf16 (autocast; float32 master weights, optimizer and loss) on both sides. A peer
// that fails in a precision (PyTorch 1.13's CPU autocast throws at the first LayerNorm after a
// bfloat16 layer) is reported as failing, and the summary compares each side's fastest precision.
//
// Every measurement runs in its own process (this binary with --child CASE, or the Python peer), so
// each peak resident memory (getrusage ru_maxrss) is that case's alone. Weights and inputs are
// written once to --work by this process (florence-t with seed 0; the swin peer writes its own) and
// read by both sides; outputs are compared so that the timed programs are known to compute the
// same thing (max absolute error printed; train: the loss of every step).
// --split P (inference cases): ours runs P threads on batch/P rows each, with N/P intra-op threads
// per thread (the peer always runs one batch on N intra-op threads).
// --profile: each of our cases also runs one call under LibTorch's profiler (chrome trace in
// --work) and bench/profile_summary.py prints the self time per operator.
// GFLOP/s counts 2 FLOPs per multiply-add of matmuls and convolutions (model/info.h); a training
// step counts 3x the forward. The matmul peak is the best of five 2048^3 float32 matmuls here.
#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/torch.h>

#include <dlfcn.h>
#include <fmt/format.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "florence/core/checkpoint.h"
#include "florence/core/precision.h"
#include "florence/core/threads.h"
#include "florence/loss/unicl.h"
#include "florence/model/florence.h"
#include "florence/model/info.h"
#include "florence/model/registry.h"
#include "florence/train/grad_cache.h"
#include "florence/train/run.h"
#include "florence/train/run_state.h"
#include "florence/train/schedule.h"
#include "florence/vision/swin.h"
#include "florence/vision/swin_import.h"
#include "support/args.h"
#include "support/paths.h"

using namespace florence;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

namespace {

struct Args {
  int threads = 0, iters = 3, split = 1;
  bool profile = false;
  int64_t image_batch = 16, text_batch = 256, train_batch = 16;
  std::string cases = "swin,coswin,text,train";
  std::string precisions = "fp32";  ///< parent: the list to run
  std::string precision = "fp32";   ///< child: this measurement's
  std::string work = (fs::temp_directory_path() / "florence_bench_perf").string();
  std::string child;
};

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double peak_rss_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : (v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]));
}

double matmul_peak_gflops() {
  torch::InferenceMode guard;
  const int64_t n = 2048;
  auto a = torch::randn({n, n}), b = torch::randn({n, n});
  auto c = torch::mm(a, b);  // the output is reused: no page faults in the timed products
  double best = 0;
  for (int i = 0; i < 5; ++i) {
    auto t0 = Clock::now();
    torch::mm_out(c, a, b);
    best = std::max(best, 2.0 * double(n * n * n) / seconds_since(t0) / 1e9);
  }
  return best;
}

// OpenBLAS keeps its own thread pool (LibTorch's set_num_threads does not reach it); found at run
// time so a build on another BLAS still links.
void set_blas_threads(int n) {
  using Fn = void (*)(int);
  if (auto fn = reinterpret_cast<Fn>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) fn(n);
}

/// Times fn(rows) on P threads with `threads / P` intra-op threads each; returns the median
/// seconds per call over `iters` calls after one warm-up.
template <class Fn>
double time_split(const Fn& fn, int64_t batch, int parts, int threads, int iters) {
  std::vector<double> times;
  for (int it = 0; it <= iters; ++it) {
    auto t0 = Clock::now();
    if (parts <= 1) {
      fn(0, batch);
    } else {
      std::vector<std::thread> pool;
      const int per = std::max(1, threads / parts);
      for (int p = 0; p < parts; ++p) {
        const int64_t lo = batch * p / parts, hi = batch * (p + 1) / parts;
        pool.emplace_back([&, lo, hi, per] {
          at::set_num_threads(per);  // OpenMP's thread count is per calling thread
          fn(lo, hi);
        });
      }
      for (auto& t : pool) t.join();
    }
    if (it > 0) times.push_back(seconds_since(t0));
  }
  return median(times);
}

/// One more call of fn under the profiler, written to WORK/profile_CASE.json (chrome trace).
template <class Fn>
void profile_once(const Args& a, const std::string& name, const Fn& fn) {
  if (!a.profile) return;
  torch::autograd::profiler::RecordProfile guard(a.work + "/profile_" + name + "_" + a.precision + ".json");
  fn();
}

nlohmann::json result(const std::string& who, double sec, int64_t batch) {
  return {{"peer", who},
          {"sec_per_call", sec},
          {"items_per_s", double(batch) / sec},
          {"peak_rss_mib", peak_rss_mib()},
          {"threads", at::get_num_threads()}};
}

torch::Tensor random_ids(int64_t rows, int64_t context, const text::TextConfig& t, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto ids = torch::zeros({rows, context}, torch::kLong);
  auto body = torch::randint(1, std::min(t.sot_token, t.eot_token), {rows, context}, gen, torch::kLong);
  auto acc = ids.accessor<int64_t, 2>();
  auto b = body.accessor<int64_t, 2>();
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t eot = 1 + (r * 37) % (context - 1);  // EOT positions spread over the context
    acc[r][0] = t.sot_token;
    for (int64_t j = 1; j < eot; ++j) acc[r][j] = b[r][j];
    acc[r][eot] = t.eot_token;
  }
  return ids;
}

model::FlorenceModel load_florence(const std::string& work) {
  nlohmann::json j;
  std::ifstream(work + "/config.json") >> j;
  model::FlorenceModel m(model::FlorenceConfig::from_json(j));
  core::load_state_dict(*m, core::load_safetensors(work + "/weights.safetensors").tensors);
  return m;
}

// ---------------------------------------------------------------------------------------------
// Children: one measurement each, one JSON line on stdout.

nlohmann::json child_swin(const Args& a) {
  auto cfg = *model::resolve_model("swin-t").vision;
  cfg.num_classes = 1000;
  cfg.drop_path_rate = 0.0;
  vision::SwinTransformer swin(cfg);
  core::load_state_dict(*swin, vision::map_torchvision_swin(core::load_torch_state_dict(a.work + "/swin_t.pt"), true));
  swin->eval();
  const Precision p = parse_precision(a.precision);
  swin->to(storage_dtype(p));
  auto io = core::load_torch_state_dict(a.work + "/swin_t_io.pt");
  const torch::Tensor x = io.at("x").to(storage_dtype(p));
  torch::InferenceMode g;
  AutocastGuard amp(p == Precision::kAmpBf16, torch::kCPU);
  const torch::Tensor y = swin->forward(x);
  const double err = (y.to(torch::kFloat) - io.at("y")).abs().max().item<double>();
  const double sec = time_split([&](int64_t lo, int64_t hi) {
    AutocastGuard in_thread(p == Precision::kAmpBf16, torch::kCPU);  // autocast state is per thread
    swin->forward(x.slice(0, lo, hi));
  }, x.size(0), a.split, a.threads, a.iters);
  profile_once(a, "swin", [&] { swin->forward(x); });
  auto r = result("Swin-T (florence, C++)", sec, x.size(0));
  r["max_abs_err"] = err;
  return r;
}

/// One florence-t tower at inference: encode(inputs[in_key]) timed, its output saved as out_key.
nlohmann::json child_tower(const Args& a, const std::string& case_name, const std::string& in_key,
                           const std::string& out_key, const std::string& who, bool image) {
  auto m = load_florence(a.work);
  m->eval();
  const Precision p = parse_precision(a.precision);
  m->to(storage_dtype(p));  // encode_image casts its input to the weights' dtype
  m->set_autocast_bf16(p == Precision::kAmpBf16);
  const auto in = core::load_safetensors(a.work + "/inputs.safetensors").tensors;
  const torch::Tensor x = in.at(in_key);
  auto encode = [&](const torch::Tensor& t) { return image ? m->encode_image(t) : m->encode_text(t); };
  torch::InferenceMode g;
  const torch::Tensor y = encode(x);
  core::save_safetensors(a.work + "/ours_" + case_name + ".safetensors", {{out_key, y.contiguous()}});
  const double sec = time_split([&](int64_t lo, int64_t hi) { encode(x.slice(0, lo, hi)); }, x.size(0), a.split,
                                a.threads, a.iters);
  profile_once(a, case_name, [&] { encode(x); });
  return result(who, sec, x.size(0));
}

nlohmann::json child_train(const Args& a) {
  auto m = load_florence(a.work);
  m->train();
  const auto in = core::load_safetensors(a.work + "/inputs.safetensors").tensors;
  const torch::Tensor images = in.at("images"), ids = in.at("ids"), labels = in.at("labels");
  const torch::Tensor hp = in.at("hparams");
  // The trainer's optimizer (train/run.h): AdamW over the decay / no-decay groups.
  train::GroupedAdamW grouped(train::decay_groups(*m), hp[0].item<double>(), hp[1].item<double>(),
                              hp[2].item<double>(), hp[3].item<double>(), 1e-8);
  torch::optim::AdamW& opt = grouped.adamw();
  const Precision p = parse_precision(a.precision);
  if (p == Precision::kBf16) throw std::runtime_error("train: --precision bf16 is for inference; use amp_bf16");
  std::vector<double> times, losses;
  for (int it = 0; it <= a.iters; ++it) {
    auto t0 = Clock::now();
    const auto released = train::release_grads(opt);  // the trainer's step (train/run.cpp)
    train::ContrastiveStep cs = [&] {
      AutocastGuard amp(p == Precision::kAmpBf16, torch::kCPU);  // as train/run.cpp around a step
      return train::contrastive_backward(m, images, ids, labels, 1);
    }();
    train::zero_missing_grads(released);
    train::adamw_step(opt);
    losses.push_back(cs.loss.item<double>());
    if (it > 0) times.push_back(seconds_since(t0));
  }
  core::save_safetensors(a.work + "/ours_train.safetensors", {{"losses", torch::tensor(losses, torch::kFloat64)}});
  profile_once(a, "train", [&] {
    const auto released = train::release_grads(opt);
    {
      AutocastGuard amp(p == Precision::kAmpBf16, torch::kCPU);
      train::contrastive_backward(m, images, ids, labels, 1);
    }
    train::zero_missing_grads(released);
    train::adamw_step(opt);
  });
  return result("florence-t UniCL step (florence, C++)", median(times), images.size(0));
}

// ---------------------------------------------------------------------------------------------
// Parent.

nlohmann::json run_json(const std::string& cmd) {
  std::cerr << "$ " << cmd << "\n";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) throw std::runtime_error("cannot run: " + cmd);
  std::string text;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, p)) text.append(buf, n);
  const int rc = pclose(p);
  if (rc != 0) throw std::runtime_error("failed (status " + std::to_string(rc) + "): " + cmd);
  const auto nl = text.find_last_of('{');
  if (nl == std::string::npos) throw std::runtime_error("no JSON from: " + cmd);
  return nlohmann::json::parse(text.substr(nl));
}

double max_abs_diff(const std::string& a, const std::string& b, const std::string& key) {
  return (core::load_safetensors(a).tensors.at(key).to(torch::kFloat64) -
          core::load_safetensors(b).tensors.at(key).to(torch::kFloat64))
      .abs()
      .max()
      .item<double>();
}

void prepare_florence(const Args& a, const model::FlorenceConfig& cfg) {
  torch::manual_seed(0);
  model::FlorenceModel m(cfg);
  std::ofstream(a.work + "/config.json") << cfg.to_json().dump(2);
  core::save_safetensors(a.work + "/weights.safetensors", core::state_dict(*m));
}

/// WORK/inputs.safetensors for one case (the peer's interface: one inputs file per run).
void write_inputs(const Args& a, const model::FlorenceConfig& cfg, const std::string& mode) {
  const int64_t size = cfg.vision.image_size;
  torch::manual_seed(1);
  core::TensorMap t;
  if (mode == "image") {
    t = {{"images", torch::randn({a.image_batch, 3, size, size})}};
  } else if (mode == "text") {
    t = {{"ids", random_ids(a.text_batch, cfg.text.context_length, cfg.text, 2)}};
  } else {
    // Train batch: every caption twice, so UniCL has shared-label positives.
    auto labels = torch::arange(a.train_batch, torch::kLong).remainder(std::max<int64_t>(1, a.train_batch / 2));
    auto ids = random_ids(a.train_batch, cfg.text.context_length, cfg.text, 3).index_select(0, labels);
    t = {{"images", torch::randn({a.train_batch, 3, size, size})},
         {"ids", ids},
         {"labels", labels},
         {"hparams", torch::tensor({1e-4, 0.05, 0.9, 0.999}, torch::kFloat64)}};
  }
  core::save_safetensors(a.work + "/inputs.safetensors", t);
}

std::string self_path() {
  std::error_code ec;
  auto p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string("bench_perf") : p.string();
}

int parent(const Args& a) {
  fs::create_directories(a.work);
  const std::string py = std::string(FLORENCE_PYTHON);
  const std::string src = FLORENCE_SOURCE_DIR;
  const std::string common = " --threads " + std::to_string(a.threads) + " --iters " + std::to_string(a.iters);
  auto cfg = model::resolve_florence_config("florence-t");
  cfg.vision.drop_path_rate = 0.0;  // stochastic depth would make the two sides' steps differ
  const double peak = matmul_peak_gflops();
  prepare_florence(a, cfg);

  struct Row {
    std::string name, peer_name, precision;
    nlohmann::json ours, peer;  ///< peer: null when it failed (peer_error says why)
    std::string peer_error;
    double gflop_per_item = 0;
    std::string check;
  };
  std::vector<Row> rows;
  auto has = [&](const std::string& c) { return ("," + a.cases + ",").find("," + c + ",") != std::string::npos; };
  std::vector<std::string> precisions;
  {
    std::stringstream ss(a.precisions);
    for (std::string p; std::getline(ss, p, ',');) {
      if (p == "amp_bf16") p = "bf16";  // the list names the inference precision; training maps bf16 to amp_bf16
      parse_precision(p);               // throws on an unknown name
      precisions.push_back(p);
    }
  }
  const std::string me_base = self_path() + " --work " + a.work + common + " --split " + std::to_string(a.split) +
                              (a.profile ? " --profile" : "");
  // A peer that throws in a precision is a result ("fails"), not the end of the benchmark.
  auto run_peer = [&](Row& r, const std::string& cmd) {
    try {
      r.peer = run_json(cmd);
    } catch (const std::exception& e) {
      r.peer = nullptr;
      r.peer_error = "fails (see its stderr above)";
    }
  };
  const std::string size = std::to_string(cfg.vision.image_size);
  const std::string fpeer = py + " " + src + "/bench/florence_peer.py ";
  // The two florence-t towers at inference: (case, peer mode, output key, row label, peer label, GFLOP/item).
  struct Tower {
    const char *name, *mode, *key, *label, *peer;
    int64_t batch;
    double gflop;
  };
  const Tower towers[] = {
      {"coswin", "image", "image_embeds", "CoSwin-T encode_image", "Python CoSwin-T", a.image_batch,
       model::count_vision(cfg.vision, cfg.vision.image_size, cfg.vision.image_size).gflops()},
      {"text", "text", "text_embeds", "text tower encode_text", "Python text tower", a.text_batch,
       model::count_text(cfg.text, int(cfg.text.context_length)).gflops()}};
  for (const std::string& prec : precisions) {
    const std::string me = me_base + " --precision " + prec + " --child ";
    const std::string pp = " --precision " + prec;
    if (has("swin")) {
      Row r;
      r.precision = prec;
      r.name = "Swin-T forward, batch " + std::to_string(a.image_batch);
      run_peer(r, py + " " + src + "/bench/swin_peer.py " + a.work + common + " --batch " +
                      std::to_string(a.image_batch) + " --size 224" + pp);
      if (!fs::exists(a.work + "/swin_t.pt")) throw std::runtime_error("swin peer wrote no weights");
      r.ours = run_json(me + "swin");
      auto sc = *model::resolve_model("swin-t").vision;
      sc.num_classes = 1000;
      r.gflop_per_item = model::count_vision(sc, 224, 224).gflops();
      r.peer_name = "torchvision swin_t";
      r.check = "logits max |diff| to fp32 peer " + fmt::format("{:.1e}", r.ours["max_abs_err"].get<double>());
      rows.push_back(r);
    }
    for (const Tower& t : towers) {
      if (!has(t.name)) continue;
      Row r;
      r.precision = prec;
      r.name = std::string(t.label) + ", batch " + std::to_string(t.batch);
      write_inputs(a, cfg, t.mode);
      run_peer(r, fpeer + t.mode + " " + a.work + common + pp);
      r.ours = run_json(me + t.name);
      r.gflop_per_item = t.gflop;
      r.peer_name = t.peer;
      r.check = r.peer.is_null() ? "-"
                                 : fmt::format("embeds max |diff| {:.1e}",
                                               max_abs_diff(a.work + "/ours_" + t.name + ".safetensors",
                                                            a.work + "/peer_out.safetensors", t.key));
      rows.push_back(r);
    }
    if (has("train")) {
      const std::string tp = prec == "bf16" ? "amp_bf16" : prec;
      Row r;
      r.precision = tp;
      r.name = "florence-t UniCL step, batch " + std::to_string(a.train_batch);
      write_inputs(a, cfg, "train");
      run_peer(r, fpeer + "train " + a.work + common + " --precision " + tp);
      r.ours = run_json(me_base + " --precision " + tp + " --child train");
      r.gflop_per_item = 3.0 * (model::count_vision(cfg.vision, cfg.vision.image_size, cfg.vision.image_size).gflops() +
                                model::count_text(cfg.text, int(cfg.text.context_length)).gflops());
      r.peer_name = "Python florence-t step";
      const auto lo = core::load_safetensors(a.work + "/ours_train.safetensors").tensors.at("losses");
      if (r.peer.is_null()) {
        r.check = fmt::format("ours: loss step 1 {:.5f}, last {:.5f}", lo[0].item<double>(), lo[-1].item<double>());
      } else {
        const auto lp =
            core::load_safetensors(a.work + "/peer_out.safetensors").tensors.at("losses").to(torch::kFloat64);
        r.check = fmt::format("loss step 1 {:.5f} vs {:.5f}, last {:.5f} vs {:.5f}", lo[0].item<double>(),
                              lp[0].item<double>(), lo[-1].item<double>(), lp[-1].item<double>());
      }
      rows.push_back(r);
    }
  }

  std::printf("\n%d threads, median of %d timed calls after a warm-up; float32 matmul peak %.1f GFLOP/s%s\n\n",
              at::get_num_threads(), a.iters, peak,
              a.split > 1 ? fmt::format("; ours split into {} threads", a.split).c_str() : "");
  std::printf("| case | precision | ours items/s | peer items/s | ratio | ours GFLOP/s | %% of fp32 peak | ours peak MiB | peer peak MiB | same result |\n");
  std::printf("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n");
  for (const auto& r : rows) {
    const double o = r.ours["items_per_s"].get<double>();
    const double gfs = o * r.gflop_per_item;
    if (r.peer.is_null()) {
      std::printf("| %s (peer: %s) | %s | %.2f | %s | - | %.1f | %.1f%% | %.0f | - | %s |\n", r.name.c_str(),
                  r.peer_name.c_str(), r.precision.c_str(), o, r.peer_error.c_str(), gfs, 100.0 * gfs / peak,
                  r.ours["peak_rss_mib"].get<double>(), r.check.c_str());
      continue;
    }
    const double p = r.peer["items_per_s"].get<double>();
    std::printf("| %s (peer: %s) | %s | %.2f | %.2f | %.2fx | %.1f | %.1f%% | %.0f | %.0f | %s |\n", r.name.c_str(),
                r.peer_name.c_str(), r.precision.c_str(), o, p, o / p, gfs, 100.0 * gfs / peak,
                r.ours["peak_rss_mib"].get<double>(), r.peer["peak_rss_mib"].get<double>(), r.check.c_str());
  }
  if (precisions.size() > 1) {
    // Best against best: each side's fastest precision that ran, per case.
    std::printf("\nbest against best (each side's fastest precision that ran):\n\n");
    std::printf("| case | ours best | peer best | ratio |\n| --- | --- | --- | ---: |\n");
    std::vector<std::string> seen;
    for (const auto& r : rows) {
      if (std::find(seen.begin(), seen.end(), r.name) != seen.end()) continue;
      seen.push_back(r.name);
      double ob = 0, pb = 0;
      std::string op, ppn;
      for (const auto& q : rows) {
        if (q.name != r.name) continue;
        const double o = q.ours["items_per_s"].get<double>();
        if (o > ob) ob = o, op = q.precision;
        if (!q.peer.is_null() && q.peer["items_per_s"].get<double>() > pb) pb = q.peer["items_per_s"].get<double>(), ppn = q.precision;
      }
      std::printf("| %s | %.2f (%s) | %.2f (%s) | %.2fx |\n", r.name.c_str(), ob, op.c_str(), pb, ppn.c_str(), ob / pb);
    }
  }
  if (a.profile) {
    for (const std::string c : {"swin", "coswin", "text", "train"})
    for (const std::string p : {"fp32", "bf16", "amp_bf16"}) {
      const std::string trace = a.work + "/profile_" + c + "_" + p + ".json";
      if (!has(c) || !fs::exists(trace)) continue;
      std::printf("\nprofile of one call, case %s, %s (self time per operator):\n", c.c_str(), p.c_str());
      std::fflush(stdout);
      const std::string cmd = py + " " + src + "/bench/profile_summary.py " + trace;
      if (std::system(cmd.c_str()) != 0) std::fprintf(stderr, "profile summary failed: %s\n", cmd.c_str());
    }
  }
  return 0;
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto v = [&] { return florence::test::arg_value(i, argc, argv); };
    if (k == "--threads") a.threads = std::stoi(v());
    else if (k == "--iters") a.iters = std::stoi(v());
    else if (k == "--split") a.split = std::stoi(v());
    else if (k == "--cases") a.cases = v();
    else if (k == "--work") a.work = v();
    else if (k == "--image-batch") a.image_batch = std::stoll(v());
    else if (k == "--text-batch") a.text_batch = std::stoll(v());
    else if (k == "--train-batch") a.train_batch = std::stoll(v());
    else if (k == "--child") a.child = v();
    else if (k == "--profile") a.profile = true;
    else if (k == "--precisions") a.precisions = v();
    else if (k == "--precision") a.precision = v();
    else throw std::runtime_error("unknown argument " + k);
  }
  if (a.iters < 1 || a.split < 1) throw std::runtime_error("--iters and --split must be >= 1");
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    Args a = parse(argc, argv);
    a.threads = configure_threads(a.threads);
    if (a.child.empty()) return parent(a);
    if (a.split > 1) set_blas_threads(std::max(1, a.threads / a.split));
    nlohmann::json r;
    if (a.child == "swin") r = child_swin(a);
    else if (a.child == "coswin") r = child_tower(a, "coswin", "images", "image_embeds", "CoSwin-T encode_image (florence, C++)", true);
    else if (a.child == "text") r = child_tower(a, "text", "ids", "text_embeds", "text tower encode_text (florence, C++)", false);
    else if (a.child == "train") r = child_train(a);
    else throw std::runtime_error("unknown case " + a.child);
    std::cout << r.dump() << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  }
}
