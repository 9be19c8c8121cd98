// Parity of the detector's pieces with PyTorch / torchvision (tests/parity/detect/
// detection_reference.py):
//  * one DyHead block (DyConv) against a PyTorch DyConv written in the script on
//    torchvision.ops.deform_conv2d, same weights loaded strictly by DynamicHead's names; even and
//    odd pyramids; both coarse-level offset modes; gradients of the level inputs, the offset conv and
//    the coarser-level deform conv. References are float64 from the float32 weights and inputs; ours
//    runs in float32. Relative error = max|ours - ref| / max|ref| per tensor, tolerance 1e-5.
//  * sigmoid focal loss and GIoU loss (torchvision.ops.sigmoid_focal_loss /
//    generalized_box_iou_loss, reduction none; tolerance 1e-6 relative: DynamicHead's GIoU places its
//    1e-7 epsilons slightly differently), box IoU (1e-6), nms and batched_nms (identical indices).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "florence/adapt/detect/box_ops.h"
#include "florence/adapt/detect/dyhead.h"
#include "florence/core/checkpoint.h"
#include "florence/core/threads.h"
#include "support/paths.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_detection_parity {

namespace fs = std::filesystem;
using namespace florence;
using namespace florence::detect;

namespace {

struct Ref {
  core::TensorMap weights, io, ops;
  std::string error;
};

const Ref& reference() {
  static const Ref r = [] {
    Ref out;
    const fs::path dir = fs::path(FLORENCE_TEST_TMP) / "detection_parity";
    fs::create_directories(dir);
    const std::string cmd = std::string(FLORENCE_PYTHON) + " '" + FLORENCE_SOURCE_DIR +
                            "/tests/parity/detect/detection_reference.py' '" + dir.string() + "'";
    if (std::system(cmd.c_str()) != 0) {
      out.error = "reference script failed: " + cmd;
      return out;
    }
    try {
      out.weights = core::load_torch_state_dict((dir / "dyhead_weights.pt").string());
      out.io = core::load_torch_state_dict((dir / "dyhead_io.pt").string());
      out.ops = core::load_torch_state_dict((dir / "ops.pt").string());
    } catch (const std::exception& e) {
      out.error = e.what();
    }
    return out;
  }();
  return r;
}

double rel_err(const torch::Tensor& ours, const torch::Tensor& ref) {
  EXPECT_EQ(ours.sizes(), ref.sizes());
  const auto a = ours.detach().to(torch::kDouble), b = ref.to(torch::kDouble);
  return (a - b).abs().max().item<double>() / b.abs().max().item<double>();
}

class DetectionParity : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { configure_threads(2); }
  void SetUp() override { ASSERT_TRUE(reference().error.empty()) << reference().error; }
};

DyConv loaded_block(CoarseOffsets mode) {
  DyConv block(32, 32, mode);
  core::load_state_dict(*block, reference().weights);  // strict: every DynamicHead name must match
  return block;
}

std::vector<torch::Tensor> inputs(const std::string& tag, bool grad) {
  std::vector<torch::Tensor> xs;
  for (int l = 0; l < 3; ++l) xs.push_back(reference().io.at(tag + ".x" + std::to_string(l)).clone().requires_grad_(grad));
  return xs;
}

TEST_F(DetectionParity, DyHeadBlockForwardBothOffsetModes) {
  const auto& io = reference().io;
  for (const std::string tag : {"even", "odd"}) {
    for (const auto mode : {CoarseOffsets::kCrop, CoarseOffsets::kReference}) {
      auto block = loaded_block(mode);
      torch::NoGradGuard ng;
      const auto ys = block->forward(inputs(tag, false));
      for (int l = 0; l < 3; ++l) {
        const auto& ref = io.at(tag + "." + to_string(mode) + ".y" + std::to_string(l));
        const double e = rel_err(ys[size_t(l)], ref);
        std::printf("[dyhead %s %s] level %d rel err %.3e\n", tag.c_str(), to_string(mode).c_str(), l, e);
        EXPECT_LE(e, 1e-5) << tag << " " << to_string(mode) << " level " << l;
      }
    }
    // The two modes must really differ on the levels that read a coarser one (else the test above
    // could not tell them apart).
    for (int l = 0; l < 2; ++l) {
      const double d = rel_err(io.at(tag + ".crop.y" + std::to_string(l)), io.at(tag + ".reference.y" + std::to_string(l)));
      std::printf("[dyhead %s] crop vs reference level %d differ by %.3e\n", tag.c_str(), l, d);
      EXPECT_GT(d, 1e-3);
    }
  }
}

TEST_F(DetectionParity, DyHeadBlockGradients) {
  const auto& io = reference().io;
  for (const std::string tag : {"even", "odd"}) {
    auto block = loaded_block(CoarseOffsets::kCrop);
    auto xs = inputs(tag, true);
    const auto ys = block->forward(xs);
    torch::Tensor total = torch::zeros({}, torch::kFloat);
    for (int l = 0; l < 3; ++l) total = total + (ys[size_t(l)] * io.at(tag + ".crop.r" + std::to_string(l))).sum();
    total.backward();
    for (int l = 0; l < 3; ++l) {
      const double e = rel_err(xs[size_t(l)].grad(), io.at(tag + ".crop.g" + std::to_string(l)));
      std::printf("[dyhead %s grad] input level %d rel err %.3e\n", tag.c_str(), l, e);
      EXPECT_LE(e, 1e-5);
    }
    const double eo = rel_err(block->offset->weight.grad(), io.at(tag + ".crop.g_offset_w"));
    const double ec = rel_err(block->DyConv[0]->as<Conv3x3NormImpl>()->conv->weight.grad(), io.at(tag + ".crop.g_conv0_w"));
    std::printf("[dyhead %s grad] offset conv weight %.3e, DyConv.0 weight %.3e\n", tag.c_str(), eo, ec);
    EXPECT_LE(eo, 1e-5);
    EXPECT_LE(ec, 1e-5);
  }
}

TEST_F(DetectionParity, FocalGiouIouMatchTorchvision) {
  const auto& o = reference().ops;
  const double ef = rel_err(sigmoid_focal_loss(o.at("focal.logits"), o.at("focal.targets"), 0.25, 2.0), o.at("focal.loss"));
  const double eg = rel_err(giou_loss(o.at("giou.pred").to(torch::kDouble), o.at("giou.target").to(torch::kDouble)),
                            o.at("giou.loss"));
  const double ei = rel_err(box_iou(o.at("iou.a"), o.at("iou.b")), o.at("iou.iou"));
  std::printf("[ops] focal %.3e giou %.3e iou %.3e\n", ef, eg, ei);
  EXPECT_LE(ef, 1e-6);
  EXPECT_LE(eg, 1e-6);
  EXPECT_LE(ei, 1e-6);
}

TEST_F(DetectionParity, NmsKeepsTorchvisionsIndices) {
  const auto& o = reference().ops;
  const auto keep = nms(o.at("nms.boxes"), o.at("nms.scores"), 0.5);
  const auto bkeep = batched_nms(o.at("nms.boxes"), o.at("nms.scores"), o.at("nms.labels"), 0.6);
  std::printf("[ops] nms keeps %ld of 300, batched_nms %ld\n", long(keep.size(0)), long(bkeep.size(0)));
  EXPECT_TRUE(torch::equal(keep, o.at("nms.keep"))) << keep << o.at("nms.keep");
  EXPECT_TRUE(torch::equal(bkeep, o.at("nms.batched_keep")));
  EXPECT_LT(keep.size(0), 300);  // something was suppressed
}

}  // namespace

}  // namespace test_detection_parity
