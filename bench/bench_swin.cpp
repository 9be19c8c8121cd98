// Forward throughput of Swin-T and CoSwin-T (ours) beside torchvision swin_t from Python,
// same weights, same threads, same run. Prints a table with the ratio and the achieved
// GFLOP/s against a float32 matmul peak measured in this run.
//
//   bench_swin [--threads N] [--batch 16] [--size 224] [--iters 5] [--work DIR]
//
// The peer (bench/swin_peer.py) runs first under Debian's python3; it writes its weights,
// which our Swin-T loads through the torchvision key mapping, and its output, which ours must
// match (max relative error printed) so that the timed models are really the same.
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>

#include "florence/core/checkpoint.h"
#include "florence/core/threads.h"
#include "florence/model/info.h"
#include "florence/model/registry.h"
#include "florence/vision/swin.h"
#include "florence/vision/swin_import.h"

using namespace florence;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Best of a few 2048^3 float32 matmuls: the machine's practical GEMM peak (DESIGN.md).
double matmul_peak_gflops() {
  torch::InferenceMode guard;
  const int64_t n = 2048;
  auto a = torch::randn({n, n}), b = torch::randn({n, n});
  auto c = torch::mm(a, b);
  double best = 0;
  for (int i = 0; i < 5; ++i) {
    auto t0 = Clock::now();
    c = torch::mm(a, b);
    best = std::max(best, 2.0 * n * n * n / seconds_since(t0) / 1e9);
  }
  return best;
}

double time_forward(vision::SwinTransformer& m, const torch::Tensor& x, int iters) {
  torch::InferenceMode guard;
  m->forward(x);  // warm-up (caches, allocator)
  auto t0 = Clock::now();
  for (int i = 0; i < iters; ++i) m->forward(x);
  return seconds_since(t0) / iters;
}

std::string arg(int argc, char** argv, const std::string& name, const std::string& def) {
  for (int i = 1; i + 1 < argc; ++i)
    if (argv[i] == name) return argv[i + 1];
  return def;
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = configure_threads(std::stoi(arg(argc, argv, "--threads", "0")));
  const int batch = std::stoi(arg(argc, argv, "--batch", "16"));
  const int size = std::stoi(arg(argc, argv, "--size", "224"));
  const int iters = std::stoi(arg(argc, argv, "--iters", "5"));
  const std::string work = arg(argc, argv, "--work", (std::filesystem::temp_directory_path() / "florence_bench_swin").string());

  const std::string peer_cmd = std::string(FLORENCE_PYTHON) + " " + FLORENCE_SOURCE_DIR + "/bench/swin_peer.py " + work +
                               " --threads " + std::to_string(threads) + " --batch " + std::to_string(batch) +
                               " --size " + std::to_string(size) + " --iters " + std::to_string(iters) + " > " + work +
                               "_peer.json";
  std::filesystem::create_directories(work);
  std::cerr << "running the Python peer: " << peer_cmd << "\n";
  if (std::system(peer_cmd.c_str()) != 0) {
    std::cerr << "peer failed\n";
    return 1;
  }
  nlohmann::json peer;
  {
    std::ifstream in(work + "_peer.json");
    peer = nlohmann::json::parse(in);
  }

  const double peak = matmul_peak_gflops();

  // Swin-T with the peer's weights (classifier head kept, to time the same network).
  auto swin_cfg = *model::resolve_model("swin-t").vision;
  swin_cfg.num_classes = 1000;
  swin_cfg.drop_path_rate = 0.0;
  vision::SwinTransformer swin(swin_cfg);
  core::load_state_dict(*swin, vision::map_torchvision_swin(core::load_torch_state_dict(work + "/swin_t.pt"), true));
  swin->eval();
  auto io = core::load_torch_state_dict(work + "/swin_t_io.pt");
  const torch::Tensor x = io.at("x");
  double rel_err;
  {
    torch::InferenceMode g;
    auto y = swin->forward(x);
    rel_err = ((y - io.at("y")).abs().max() / io.at("y").abs().max()).item<double>();
  }
  const double t_swin = time_forward(swin, x, iters);

  auto coswin_cfg = *model::resolve_model("coswin-t").vision;
  coswin_cfg.drop_path_rate = 0.0;
  vision::SwinTransformer coswin(coswin_cfg);
  coswin->eval();
  const double t_coswin = time_forward(coswin, x, iters);

  const double peer_ips = peer["images_per_s"].get<double>();
  const double gf_swin = model::count_vision(swin_cfg, size, size).gflops();
  const double gf_coswin = model::count_vision(coswin_cfg, size, size).gflops();
  auto row = [&](const char* name, double sec, double gflop_per_img) {
    const double ips = batch / sec;
    const double gfs = ips * gflop_per_img;
    std::printf("| %-34s | %8.2f | %6.2fx | %7.1f | %5.1f%% |\n", name, ips, ips / peer_ips, gfs, 100.0 * gfs / peak);
  };
  std::printf("\nforward, batch %d, %dx%d, %d threads, float32, %d timed iterations; matmul peak %.1f GFLOP/s\n", batch,
              size, size, threads, iters, peak);
  std::printf("Swin-T (ours, peer's weights) vs peer: max relative error %.2e\n\n", rel_err);
  std::printf("| %-34s | %8s | %7s | %7s | %6s |\n", "model", "images/s", "vs peer", "GFLOP/s", "% peak");
  std::printf("|%s|%s|%s|%s|%s|\n", std::string(36, '-').c_str(), std::string(10, '-').c_str(),
              std::string(9, '-').c_str(), std::string(9, '-').c_str(), std::string(8, '-').c_str());
  row("torchvision swin_t (Python peer)", batch / peer_ips, gf_swin);
  row("Swin-T (florence, C++)", t_swin, gf_swin);
  row("CoSwin-T (florence, C++)", t_coswin, gf_coswin);
  return rel_err < 1e-3 ? 0 : 2;
}
