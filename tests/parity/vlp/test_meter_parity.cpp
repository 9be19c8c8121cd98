// Parity of the METER-style fusion against an independent PyTorch reference
// (tests/parity/vlp/meter_reference.py: nn.MultiheadAttention / nn.TransformerEncoderLayer /
// nn.LayerNorm composites with random weights, loaded here through our strict state-dict loader).
// References are float64 from the same float32 weights and inputs.
// Tolerance: max|ours - ref| / max|ref| <= 1e-5 (float32 forward; measured values are printed).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "florence/adapt/vlp/meter.h"
#include "florence/core/checkpoint.h"
#include "support/paths.h"
#include "unit/vlp/meter_test_config.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_meter_parity {

namespace {

using namespace florence;

constexpr double kTol = 1e-5;

double rel_err(const torch::Tensor& ours, const torch::Tensor& ref) {
  auto a = ours.to(torch::kDouble), b = ref.to(torch::kDouble);
  EXPECT_EQ(a.sizes(), b.sizes());
  return (a - b).abs().max().item<double>() / b.abs().max().item<double>();
}

class MeterParity : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::string(FLORENCE_TEST_TMP) + "/meter_parity";
    std::filesystem::create_directories(dir_);
    // The reference with the dimensions of test::tiny_meter_config().
    const auto c = test::tiny_meter_config();
    const std::string cmd = fmt::format(
        "{} {}/tests/parity/vlp/meter_reference.py --out {} --seed 3 --vocab {} --context {} --text-width {} "
        "--text-heads {} --text-layers {} --image-width {} --hidden {} --heads {} --layers {} --ffn {} --answers {}",
        FLORENCE_PYTHON, FLORENCE_SOURCE_DIR, dir_, c.towers.text.vocab_size, c.towers.text.context_length,
        c.towers.text.width, c.towers.text.heads, c.towers.text.layers, c.towers.vision.num_features(), c.hidden,
        c.heads, c.layers, c.intermediate, c.num_answers);
    ok_ = std::system(cmd.c_str()) == 0;
  }
  void SetUp() override { ASSERT_TRUE(ok_) << "reference script failed"; }

  static inline std::string dir_;
  static inline bool ok_ = false;
};

TEST_F(MeterParity, CoAttentionLayer) {
  vlp::CoAttentionLayer layer(test::tiny_meter_config().fusion_options());
  core::load_state_dict(*layer, core::load_torch_state_dict(dir_ + "/layer_weights.pt"));
  layer->eval();
  const auto io = core::load_torch_state_dict(dir_ + "/layer_io.pt");
  torch::NoGradGuard no_grad;
  auto out = layer->forward(io.at("x"), io.at("y"), io.at("x_mask"), io.at("y_mask"));
  const double e = rel_err(out, io.at("out"));
  std::printf("[co-attention layer] rel err %.3e\n", e);
  EXPECT_LE(e, kTol);
  // Without the masks the padded keys are read and the result moves away from the reference.
  EXPECT_GT(rel_err(layer->forward(io.at("x"), io.at("y"), {}, {}), io.at("out")), 100 * kTol);
}

TEST_F(MeterParity, FusionAndHeadsFromIds) {
  vlp::MeterModel model(test::tiny_meter_config());
  auto weights = core::load_torch_state_dict(dir_ + "/weights.pt");
  for (const auto& [k, v] : core::state_dict(*model)) {
    if (k.rfind("vit_model.", 0) == 0) weights[k] = v;  // the image tower is not part of this check
  }
  core::load_state_dict(*model, weights);
  model->eval();
  const auto io = core::load_torch_state_dict(dir_ + "/io.pt");
  torch::NoGradGuard no_grad;
  torch::Tensor mask;
  auto text = model->encode_text(io.at("ids"), &mask);
  auto out = model->fuse(text, mask, io.at("image_tokens"));
  const double e_text = rel_err(out.text_feats, io.at("text_feats"));
  const double e_image = rel_err(out.image_feats, io.at("image_feats"));
  const double e_cls = rel_err(out.cls_feats, io.at("cls_feats"));
  const double e_itm = rel_err(model->itm_logits(out), io.at("itm"));
  const double e_mlm = rel_err(model->mlm_logits(out), io.at("mlm"));
  const double e_vqa = rel_err(model->vqa_logits(out), io.at("vqa"));
  std::printf("[meter fusion] rel err text %.3e image %.3e cls %.3e itm %.3e mlm %.3e vqa %.3e\n", e_text, e_image,
              e_cls, e_itm, e_mlm, e_vqa);
  for (double e : {e_text, e_image, e_cls, e_itm, e_mlm, e_vqa}) EXPECT_LE(e, kTol);

  // The padding mask really ends each text at its first EOT (row 3 has a second EOT in its padding).
  EXPECT_TRUE(torch::equal(mask.sum(1), torch::tensor({12, 7, 3, 9}, torch::kLong))) << mask;
  // Perturbing one fusion weight breaks parity: the check is sensitive. (A value bias, not a key
  // bias: a key bias shifts all of a query's scores equally and softmax ignores it.)
  model->named_parameters()["cross_modal_image_layers.1.crossattention.self.value.bias"].add_(0.05);
  auto moved = model->fuse(text, mask, io.at("image_tokens"));
  EXPECT_GT(rel_err(moved.cls_feats, io.at("cls_feats")), 10 * kTol);
}

}  // namespace

}  // namespace test_meter_parity
