// Benchmark: our modulated deformable conv (src/florence/adapt/detect/deform_conv.h) against
// torchvision.ops.deform_conv2d from Python (bench/deform_conv_peer.py), same shapes, same thread
// count, measured in the same run: DyHead-sized 3x3 convs, 256 -> 256 channels, stride 1, padding
// 1, on the P3..P7 maps of a 512-px and a 64-px input (batch 1 by default).
// Timing: median of --iters runs after one warm-up; forward without autograd, and forward +
// backward of input, offset, mask, weight and bias. The peer also writes its inputs and output for
// the first shape, which we recompute ("same result": max|ours - tv| / max|tv|).
// Usage: bench_deform_conv [--threads 2] [--iters 5] [--batch 1] [--work DIR]
#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "florence/adapt/detect/deform_conv.h"
#include "florence/core/checkpoint.h"
#include "florence/core/threads.h"
#include "support/paths.h"

using namespace florence;

namespace {

template <class F>
double median_seconds(F&& fn, int iters) {
  fn();  // warm-up
  std::vector<double> t;
  for (int i = 0; i < iters; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  const size_t m = t.size() / 2;
  return t.size() % 2 ? t[m] : 0.5 * (t[m - 1] + t[m]);
}

std::string run_json(const std::string& cmd) {
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return {};
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  const int rc = pclose(p);
  if (rc != 0) return {};
  const auto pos = out.rfind("{\"peer\"");
  return pos == std::string::npos ? std::string() : out.substr(pos);
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2, iters = 5;
  int64_t batch = 1;
  std::string work = std::string(FLORENCE_TEST_TMP) + "/bench_deform_conv";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--threads") threads = std::stoi(v);
    else if (k == "--iters") iters = std::stoi(v);
    else if (k == "--batch") batch = std::stoll(v);
    else if (k == "--work") work = v;
    else {
      std::fprintf(stderr, "unknown flag %s\n", k.c_str());
      return 2;
    }
  }
  configure_threads(threads);
  std::filesystem::create_directories(work);
  // (input side, level, map side): P3..P7 of a 512-px and a 64-px input (stride 8..128; maps >= 1).
  struct Shape {
    int input, level;
    int64_t side;
  };
  std::vector<Shape> shapes;
  for (int input : {512, 64})
    for (int level = 3; level <= 7; ++level) shapes.push_back({input, level, std::max<int64_t>(1, input >> level)});
  nlohmann::json list = nlohmann::json::array();
  for (const auto& s : shapes) list.push_back({batch, 256, s.side, s.side, 256});

  const std::string cmd = fmt::format("{} {}/bench/deform_conv_peer.py '{}' --threads {} --iters {} --shapes '{}'",
                                      FLORENCE_PYTHON, FLORENCE_SOURCE_DIR, work, threads, iters, list.dump());
  const std::string peer_text = run_json(cmd);
  if (peer_text.empty()) {
    std::fprintf(stderr, "peer failed: %s\n", cmd.c_str());
    return 1;
  }
  const auto peer = nlohmann::json::parse(peer_text);

  // Same result on the first shape, from the peer's own tensors.
  const auto chk = core::load_torch_state_dict(work + "/check.pt");
  const auto ours_check = detect::deform_conv2d(chk.at("x"), chk.at("offset"), chk.at("weight"), chk.at("bias"),
                                                chk.at("mask"), {{1, 1}, {1, 1}, {1, 1}});
  const double same = (ours_check - chk.at("out")).abs().max().item<double>() / chk.at("out").abs().max().item<double>();

  std::printf("deform conv 3x3, 256 -> 256, batch %ld, %d threads, median of %d (torch %s, torchvision %s)\n",
              long(batch), threads, iters, peer["torch"].get<std::string>().c_str(),
              peer["torchvision"].get<std::string>().c_str());
  std::printf("same result on %ldx%ld: max|ours - tv| / max|tv| = %.2e\n", long(shapes[0].side), long(shapes[0].side), same);
  std::printf("| input | level | map | ours fwd ms | tv fwd ms | fwd speed-up | ours fwd+bwd ms | tv fwd+bwd ms | fwd+bwd speed-up |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  torch::manual_seed(0);
  for (size_t i = 0; i < shapes.size(); ++i) {
    const int64_t H = shapes[i].side;
    auto x = torch::randn({batch, 256, H, H});
    auto off = torch::randn({batch, 18, H, H}) * 2.0;
    auto mask = torch::rand({batch, 9, H, H});
    auto w = torch::randn({256, 256, 3, 3}) * 0.02;
    auto b = torch::randn({256});
    const double fwd = median_seconds(
        [&] {
          torch::NoGradGuard ng;
          detect::deform_conv2d(x, off, w, b, mask, {{1, 1}, {1, 1}, {1, 1}});
        },
        iters);
    std::vector<torch::Tensor> leaves;
    for (const auto& t : {x, off, mask, w, b}) leaves.push_back(t.clone().requires_grad_(true));
    auto gout = torch::randn({batch, 256, H, H});
    const double fb = median_seconds(
        [&] {
          for (auto& t : leaves) t.mutable_grad() = torch::Tensor();
          auto y = detect::deform_conv2d(leaves[0], leaves[1], leaves[3], leaves[4], leaves[2], {{1, 1}, {1, 1}, {1, 1}});
          y.backward(gout);
        },
        iters);
    const auto& pc = peer["cases"][i];
    const double tf = pc["fwd_s"].get<double>(), tfb = pc["fwdbwd_s"].get<double>();
    std::printf("| %d px | P%d | %ldx%ld | %.2f | %.2f | %.2fx | %.2f | %.2f | %.2fx |\n", shapes[i].input,
                shapes[i].level, long(H), long(H), 1e3 * fwd, 1e3 * tf, tf / fwd, 1e3 * fb, 1e3 * tfb, tfb / fb);
  }
  return 0;
}
