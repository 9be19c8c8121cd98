// Parity of florence::text::TextTransformer against an independent PyTorch reference
// (tests/parity/text/text_reference.py: nn.TransformerEncoderLayer stack, norm_first, QuickGELU,
// causal mask, first-EOT pooling), with the reference's random weights loaded through our
// strict state-dict loader. Reference outputs are float64 from the same float32 weights.
// Tolerance: max|ours - ref| / max|ref| <= 1e-4 (float32 forward over 3 layers; measured ~1e-6).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "florence/core/checkpoint.h"
#include "florence/core/error.h"
#include "florence/text/text_transformer.h"
#include "support/paths.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_text_parity {

namespace {

using florence::text::TextConfig;
using florence::text::TextTransformer;

constexpr double kTol = 1e-4;

double rel_err(const torch::Tensor& ours, const torch::Tensor& ref) {
  auto a = ours.to(torch::kDouble), b = ref.to(torch::kDouble);
  EXPECT_EQ(a.sizes(), b.sizes());
  return (a - b).abs().max().item<double>() / b.abs().max().item<double>();
}

TextConfig small_config(double eps) {
  TextConfig c;
  c.vocab_size = 49408;
  c.context_length = 77;
  c.width = 64;
  c.heads = 4;
  c.layers = 3;
  c.norm_eps = eps;
  return c;
}

void run_case(double eps, const std::string& tag) {
  const TextConfig cfg = small_config(eps);
  const std::string dir = std::string(FLORENCE_TEST_TMP) + "/text_parity_" + tag;
  std::filesystem::create_directories(dir);
  const std::string cmd = fmt::format(
      "{} {}/tests/parity/text/text_reference.py --out {} --width {} --heads {} --layers {} "
      "--vocab {} --context {} --eps {} --seed 7",
      FLORENCE_PYTHON, FLORENCE_SOURCE_DIR, dir, cfg.width, cfg.heads, cfg.layers, cfg.vocab_size,
      cfg.context_length, eps);
  ASSERT_EQ(std::system(cmd.c_str()), 0) << "reference script failed: " << cmd;

  TextTransformer model(cfg);
  florence::core::load_state_dict(*model, florence::core::load_torch_state_dict(dir + "/weights.pt"));
  model->eval();
  const auto io = florence::core::load_torch_state_dict(dir + "/io.pt");
  torch::NoGradGuard no_grad;

  const auto& ids = io.at("ids");
  ASSERT_EQ(ids.size(1), 77);
  const double e_pooled = rel_err(model->forward(ids), io.at("pooled"));
  const double e_tokens = rel_err(model->forward_tokens(ids), io.at("tokens"));
  const double e_pooled_s = rel_err(model->forward(io.at("ids_short")), io.at("pooled_short"));
  const double e_tokens_s = rel_err(model->forward_tokens(io.at("ids_short")), io.at("tokens_short"));
  std::printf("[text parity eps=%g] rel err pooled %.3e tokens %.3e | L=20: pooled %.3e tokens %.3e\n",
              eps, e_pooled, e_tokens, e_pooled_s, e_tokens_s);
  EXPECT_LE(e_pooled, kTol);
  EXPECT_LE(e_tokens, kTol);
  EXPECT_LE(e_pooled_s, kTol);
  EXPECT_LE(e_tokens_s, kTol);

  // The check is sensitive: perturbing one weight slightly must break parity.
  {
    auto w = model->named_parameters()["resblocks.1.mlp.c_fc.bias"];
    w.add_(0.05);
    EXPECT_GT(rel_err(model->forward(ids), io.at("pooled")), 10 * kTol);
  }
}

TEST(TextParity, UniclEps1e12) { run_case(1e-12, "eps1e-12"); }

TEST(TextParity, ClipEps1e5) { run_case(1e-5, "eps1e-5"); }

}  // namespace

}  // namespace test_text_parity
