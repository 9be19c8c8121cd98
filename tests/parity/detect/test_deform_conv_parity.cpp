// Parity of deform_conv2d (our CPU kernel, and the ATen-ops composite form) with
// torchvision.ops.deform_conv2d (Debian python3-torchvision 0.14): output and the gradients of
// input, offset, mask, weight and bias for a given grad_out.
//
// tests/parity/detect/deform_conv_reference.py draws float32 tensors and runs torchvision on their
// float64 copies (cases listed there: taps far outside the image, integer offsets landing on -1
// and H exactly, strides 1-2, dilations 1-2, a 3x2 kernel, offset groups 1-4, weight groups 2, no
// mask / no bias). Relative error of a tensor = max|ours - ref| / max|ref| over all its elements.
// Tolerances: float32 run of our kernel <= 1e-5 (the brief's bound); float64 run <= 1e-10.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "florence/adapt/detect/deform_conv.h"
#include "florence/core/checkpoint.h"
#include "florence/core/threads.h"
#include "support/paths.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_deform_conv_parity {

namespace fs = std::filesystem;
using namespace florence;

namespace {

const char* kCases[] = {"basic",           "stride2_dil2_og2", "rect_wgroups", "far_outside",
                        "integer_offsets", "no_mask_no_bias",  "dyhead_like"};

struct Ref {
  core::TensorMap t;
  std::string error;
};

const Ref& reference() {
  static const Ref r = [] {
    Ref out;
    const fs::path dir = fs::path(FLORENCE_TEST_TMP) / "deform_conv_parity";
    fs::create_directories(dir);
    const std::string cmd = std::string(FLORENCE_PYTHON) + " '" + FLORENCE_SOURCE_DIR +
                            "/tests/parity/detect/deform_conv_reference.py' '" + dir.string() + "'";
    if (std::system(cmd.c_str()) != 0) {
      out.error = "reference script failed: " + cmd;
      return out;
    }
    try {
      out.t = core::load_torch_state_dict((dir / "cases.pt").string());
    } catch (const std::exception& e) {
      out.error = e.what();
    }
    return out;
  }();
  return r;
}

torch::Tensor get(const std::string& name, const std::string& field) {
  const auto& t = reference().t;
  auto it = t.find(name + "." + field);
  return it == t.end() ? torch::Tensor() : it->second;
}

double rel_err(const torch::Tensor& ours, const torch::Tensor& ref) {
  EXPECT_EQ(ours.sizes(), ref.sizes());
  const auto a = ours.to(torch::kDouble), b = ref.to(torch::kDouble);
  return (a - b).abs().max().item<double>() / b.abs().max().item<double>();
}

// Runs one case in `dtype` through `fn` (deform_conv2d or the composite); returns the worst
// relative error over the output and the five gradients, printing each.
template <class Fn>
double run_case(const std::string& name, torch::ScalarType dtype, Fn fn, const char* label) {
  auto leaf = [&](const char* f) {
    auto t = get(name, f);
    return t.defined() ? t.to(dtype).detach().requires_grad_(true) : torch::Tensor();
  };
  auto x = leaf("input"), off = leaf("offset"), mask = leaf("mask"), w = leaf("weight"), b = leaf("bias");
  const auto g = get(name, "geo");
  detect::DeformConvGeometry geo{{g[0].item<int64_t>(), g[1].item<int64_t>()},
                                 {g[2].item<int64_t>(), g[3].item<int64_t>()},
                                 {g[4].item<int64_t>(), g[5].item<int64_t>()}};
  auto y = fn(x, off, w, b, mask, geo);
  (y * get(name, "grad_out").to(dtype)).sum().backward();
  double worst = 0;
  auto cmp = [&](const char* what, const torch::Tensor& ours, const char* ref_field) {
    const auto ref = get(name, ref_field);
    if (!ref.defined()) return;
    ASSERT_TRUE(ours.defined()) << name << " " << what;
    const double e = rel_err(ours, ref);
    std::printf("[deform_conv %s %s] %-16s %-7s rel err %.3e\n", label, dtype == torch::kFloat ? "f32" : "f64",
                name.c_str(), what, e);
    worst = std::max(worst, e);
  };
  cmp("out", y, "out");
  cmp("input", x.grad(), "g_input");
  cmp("offset", off.grad(), "g_offset");
  if (mask.defined()) cmp("mask", mask.grad(), "g_mask");
  cmp("weight", w.grad(), "g_weight");
  if (b.defined()) cmp("bias", b.grad(), "g_bias");
  return worst;
}

class DeformConvParity : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { configure_threads(2); }
  void SetUp() override { ASSERT_TRUE(reference().error.empty()) << reference().error; }
};

TEST_F(DeformConvParity, KernelFloat32WithinOneInOneHundredThousand) {
  for (const char* name : kCases) EXPECT_LE(run_case(name, torch::kFloat, detect::deform_conv2d, "kernel"), 1e-5) << name;
}

TEST_F(DeformConvParity, KernelFloat64MatchesToRounding) {
  for (const char* name : kCases)
    EXPECT_LE(run_case(name, torch::kDouble, detect::deform_conv2d, "kernel"), 1e-10) << name;
}

TEST_F(DeformConvParity, CompositeFormMatchesToo) {
  for (const char* name : kCases)
    EXPECT_LE(run_case(name, torch::kDouble, detect::deform_conv2d_composite, "composite"), 1e-10) << name;
}

TEST_F(DeformConvParity, ComparisonDetectsAHalfPixelShift) {
  // Negative control: shifting every dx offset by half a pixel must break parity by far.
  const std::string name = "basic";
  auto x = get(name, "input"), off = get(name, "offset").clone(), w = get(name, "weight");
  off.index_put_({torch::indexing::Slice(), torch::indexing::Slice(1, torch::indexing::None, 2)},
                 off.index({torch::indexing::Slice(), torch::indexing::Slice(1, torch::indexing::None, 2)}) + 0.5);
  torch::NoGradGuard ng;
  const auto y = detect::deform_conv2d(x, off, w, get(name, "bias"), get(name, "mask"), {{1, 1}, {1, 1}, {1, 1}});
  const double e = rel_err(y, get(name, "out"));
  std::printf("[deform_conv] half-pixel shift: rel err %.3e (must exceed 1e-2)\n", e);
  EXPECT_GT(e, 1e-2);
}

}  // namespace

}  // namespace test_deform_conv_parity
