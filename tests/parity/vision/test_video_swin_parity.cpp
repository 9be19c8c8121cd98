// Parity of WindowAttention3d (3D window partition / reverse, cyclic shift, region mask, relative
// position bias) against a PyTorch implementation written with pad / roll / view / permute
// (tests/parity/vision/video_swin_reference.py, run with FLORENCE_PYTHON = Debian's python3-torch),
// where ours moves tokens with one row gather. Five cases: every axis shifted, spatial padding,
// padded time, every axis shrunk to one window, plain windows.
// Tolerance: max |ours - ref| <= 1e-5 (float32, one attention layer; observed ~1e-7).
#include "florence/core/checkpoint.h"
#include "florence/vision/video_swin_layers.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "support/paths.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_video_swin_parity {

namespace fs = std::filesystem;
using namespace florence;

namespace {

constexpr double kTolerance = 1e-5;
constexpr int kCases = 5;

struct Reference {
  core::TensorMap t;
  std::string error;
};

const Reference& reference() {
  static const Reference ref = [] {
    const fs::path dir = fs::path(FLORENCE_TEST_TMP) / "video_swin_parity";
    const fs::path script = fs::path(FLORENCE_SOURCE_DIR) / "tests/parity/vision/video_swin_reference.py";
    const fs::path file = dir / "attention3d.pt";
    Reference r;
    if (!fs::exists(file) || fs::last_write_time(file) <= fs::last_write_time(script)) {
      fs::create_directories(dir);
      const std::string cmd = std::string(FLORENCE_PYTHON) + " '" + script.string() + "' '" + dir.string() + "'";
      const int rc = std::system(cmd.c_str());
      if (rc != 0) {
        r.error = "reference script failed (rc " + std::to_string(rc) + "): " + cmd;
        return r;
      }
    }
    try {
      r.t = core::load_torch_state_dict(file.string());
    } catch (const std::exception& e) {
      r.error = e.what();
    }
    return r;
  }();
  return ref;
}

vision::Size3 size3(const torch::Tensor& t) {
  return {t[0].item<int64_t>(), t[1].item<int64_t>(), t[2].item<int64_t>()};
}

}  // namespace

TEST(VideoSwinParity, WindowAttention3dMatchesPyTorch) {
  const Reference& ref = reference();
  ASSERT_TRUE(ref.error.empty()) << ref.error;
  for (int i = 0; i < kCases; ++i) {
    const std::string p = "case" + std::to_string(i) + ".";
    ASSERT_TRUE(ref.t.count(p + "x")) << p;
    const auto& x = ref.t.at(p + "x");
    vision::WindowAttention3dOptions o;
    o.dim = x.size(4);
    o.num_heads = ref.t.at(p + "relative_position_bias_table").size(1);
    o.window = size3(ref.t.at(p + "window"));
    o.shift = size3(ref.t.at(p + "shift"));
    vision::WindowAttention3d m(o);
    core::TensorMap w;
    for (const char* k : {"qkv.weight", "qkv.bias", "proj.weight", "proj.bias", "relative_position_bias_table"}) {
      w[k] = ref.t.at(p + k);
    }
    core::load_state_dict(*m, w);
    m->eval();
    torch::NoGradGuard ng;
    const auto y = m(x);
    const auto& want = ref.t.at(p + "y");
    ASSERT_EQ(y.sizes(), want.sizes()) << p;
    const double err = (y - want).abs().max().item<double>();
    EXPECT_LE(err, kTolerance) << p << " max abs error " << err;
    EXPECT_GT(want.abs().max().item<double>(), 0.1) << p;  // a non-trivial output
  }
}

}  // namespace test_video_swin_parity
