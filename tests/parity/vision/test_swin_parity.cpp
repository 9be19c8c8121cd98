// Parity of SwinTransformer (variant "swin", Swin-T dims) against torchvision 0.14 swin_t.
//
// tests/parity/vision/swin_reference.py (run with FLORENCE_PYTHON = Debian's python3 with
// python3-torch / python3-torchvision) writes a randomly initialised swin_t state dict and the
// pooled 768-d features (before the classifier) for [2,3,224,224] and [1,3,100,300] inputs. We
// import the weights with map_torchvision_swin, load them strictly and compare.
// Tolerance: max|ours - ref| / max|ref| <= 1e-4 (float32, 12 blocks; observed ~1e-6).
#include "florence/core/checkpoint.h"
#include "florence/core/error.h"
#include "florence/core/threads.h"
#include "florence/vision/swin.h"
#include "florence/vision/swin_import.h"
#include "florence/vision/swin_layers.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include "support/paths.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_swin_parity {

namespace fs = std::filesystem;
using namespace florence;

namespace {

constexpr double kTolerance = 1e-4;

struct Reference {
  core::TensorMap weights;  // torchvision names
  core::TensorMap io;
  std::string error;  // non-empty if the reference could not be produced or read
};

#define REQUIRE_REFERENCE() ASSERT_TRUE(reference().error.empty()) << reference().error

// Runs the reference script once per test binary; reuses its files while they are newer than
// the script (the script is deterministic: torch.manual_seed(0)).
const Reference& reference() {
  static const Reference ref = [] {
    const fs::path dir = fs::path(FLORENCE_TEST_TMP) / "swin_parity";
    const fs::path script = fs::path(FLORENCE_SOURCE_DIR) / "tests/parity/vision/swin_reference.py";
    const fs::path weights = dir / "weights.pt", io = dir / "io.pt";
    auto fresh = [&](const fs::path& f) {
      return fs::exists(f) && fs::last_write_time(f) > fs::last_write_time(script);
    };
    Reference r;
    if (!fresh(weights) || !fresh(io)) {
      fs::create_directories(dir);
      const std::string cmd = std::string(FLORENCE_PYTHON) + " '" + script.string() + "' '" + dir.string() + "'";
      const int rc = std::system(cmd.c_str());
      if (rc != 0) {
        r.error = "reference script failed (rc " + std::to_string(rc) + "): " + cmd;
        return r;
      }
    }
    try {
      r.weights = core::load_torch_state_dict(weights.string());
      r.io = core::load_torch_state_dict(io.string());
    } catch (const std::exception& e) {
      r.error = e.what();
    }
    return r;
  }();
  return ref;
}

vision::SwinConfig swin_t_config() {
  vision::SwinConfig c;
  c.variant = "swin";
  c.embed_dim = 96;
  c.depths = {2, 2, 6, 2};
  c.num_heads = {3, 6, 12, 24};
  c.window_size = 7;
  c.patch_embed = {4, 4, 0};
  c.drop_path_rate = 0.0;
  c.num_classes = 0;
  return c;
}

double max_rel_error(const torch::Tensor& ours, const torch::Tensor& ref) {
  return (ours - ref).abs().max().item<double>() / ref.abs().max().item<double>();
}

class SwinParity : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { configure_threads(2); }
};

TEST_F(SwinParity, RelativePositionIndexMatchesTorchvisionBuffer) {
  REQUIRE_REFERENCE();
  const auto& w = reference().weights;
  auto it = w.find("features.1.0.attn.relative_position_index");
  ASSERT_NE(it, w.end());
  auto ours = vision::relative_position_index(7).view(-1);
  EXPECT_TRUE(torch::equal(ours, it->second.to(torch::kLong).view(-1)));
}

TEST_F(SwinParity, PooledFeaturesMatchTorchvisionSwinT) {
  REQUIRE_REFERENCE();
  const auto& ref = reference();
  vision::SwinTransformer model(swin_t_config());
  auto mapped = vision::map_torchvision_swin(ref.weights);
  EXPECT_EQ(mapped.count("head.weight"), 0u);
  core::load_state_dict(*model, mapped);  // strict: throws on any missing/unexpected key
  model->eval();
  torch::NoGradGuard no_grad;
  for (const std::string name : {"224", "100x300"}) {
    const auto& x = ref.io.at("x" + name);
    const auto& y = ref.io.at("y" + name);
    std::vector<torch::Tensor> stages;
    auto out = model->forward_features(x, &stages);
    ASSERT_EQ(out.sizes(), y.sizes()) << name;
    const double err = max_rel_error(out, y);
    std::printf("[swin parity] input %s: max|ours-ref|/max|ref| = %.3e (tolerance %.0e)\n", name.c_str(), err,
                kTolerance);
    EXPECT_LE(err, kTolerance) << name;
    ASSERT_EQ(stages.size(), 4u);
    if (name == "100x300") {  // the geometry this input was chosen for (see swin_reference.py)
      EXPECT_EQ(stages[0].sizes(), (std::vector<int64_t>{1, 96, 25, 75}));
      EXPECT_EQ(stages[1].sizes(), (std::vector<int64_t>{1, 192, 13, 38}));
      EXPECT_EQ(stages[2].sizes(), (std::vector<int64_t>{1, 384, 7, 19}));
      EXPECT_EQ(stages[3].sizes(), (std::vector<int64_t>{1, 768, 4, 10}));
    }
    // The pooled feature is the mean of the last (normed) stage map.
    EXPECT_TRUE(torch::allclose(stages[3].mean({2, 3}), out, 1e-5, 1e-6)) << name;
  }
}

TEST_F(SwinParity, ComparisonDetectsAPerturbedWeight) {
  // Negative control: the same comparison must fail when the last block's zero-offset
  // relative-position bias (token attending to itself) is off by 3 in every head (bias tables
  // are ~0.02 in scale).
  REQUIRE_REFERENCE();
  const auto& ref = reference();
  vision::SwinTransformer model(swin_t_config());
  auto mapped = vision::map_torchvision_swin(ref.weights);
  auto table = mapped.at("layers.3.blocks.1.attn.relative_position_bias_table").clone();
  table[84] += 3.0;  // row 84 = offset (0, 0) of the 13x13 table
  mapped["layers.3.blocks.1.attn.relative_position_bias_table"] = table;
  core::load_state_dict(*model, mapped);
  model->eval();
  torch::NoGradGuard no_grad;
  const double err = max_rel_error(model->forward_features(ref.io.at("x100x300")), ref.io.at("y100x300"));
  std::printf("[swin parity] perturbed weight: max rel error = %.3e (must exceed %.0e)\n", err, kTolerance);
  EXPECT_GT(err, kTolerance);
}

TEST_F(SwinParity, HeadIsKeptOnRequestAndMatchesLogits) {
  REQUIRE_REFERENCE();
  const auto& ref = reference();
  auto cfg = swin_t_config();
  cfg.num_classes = 1000;
  vision::SwinTransformer model(cfg);
  core::load_state_dict(*model, vision::map_torchvision_swin(ref.weights, /*keep_head=*/true));
  model->eval();
  torch::NoGradGuard no_grad;
  auto logits = model->forward(ref.io.at("x100x300"));
  auto expected = torch::nn::functional::linear(ref.io.at("y100x300"), ref.weights.at("head.weight"),
                                                ref.weights.at("head.bias"));
  ASSERT_EQ(logits.sizes(), expected.sizes());
  EXPECT_LE(max_rel_error(logits, expected), kTolerance);
}

TEST_F(SwinParity, UnknownTorchvisionKeyIsNamed) {
  REQUIRE_REFERENCE();
  core::TensorMap tv = reference().weights;
  tv["features.1.0.attn.logit_scale"] = torch::zeros({3, 1, 1});
  try {
    vision::map_torchvision_swin(tv);
    FAIL() << "expected florence::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("features.1.0.attn.logit_scale"), std::string::npos) << e.what();
  }
}

}  // namespace

#undef REQUIRE_REFERENCE

}  // namespace test_swin_parity
