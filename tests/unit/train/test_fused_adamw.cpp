// train::adamw_step (one fused pass over all parameters) against LibTorch's torch::optim::AdamW
// step on the same parameters, groups and gradients: parameters and state after several steps,
// parameters that skip a step, state that the other implementation continues, thread-count
// independence, and the fall-back to opt.step() for tensors the kernel does not take.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <sstream>
#include <vector>

#include "florence/train/run_state.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_fused_adamw {

using florence::train::adamw_step;

struct Net : torch::nn::Module {
  // Shapes of a transformer block's parameters, plus a 0-d scale (the temperature).
  Net() {
    w1 = register_parameter("w1", torch::randn({96, 48}));
    b1 = register_parameter("b1", torch::randn({96}));
    w2 = register_parameter("w2", torch::randn({7, 5, 3}));
    ln = register_parameter("ln", torch::randn({48}));
    t = register_parameter("t", torch::randn({}));
  }
  torch::Tensor w1, b1, w2, ln, t;
};

std::unique_ptr<torch::optim::AdamW> make_opt(Net& n) {
  auto base = torch::optim::AdamWOptions(1e-2).betas(std::make_tuple(0.9, 0.98)).eps(1e-6).weight_decay(0.1);
  auto no_decay = base;
  no_decay.weight_decay(0.0).lr(3e-2);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(std::vector<torch::Tensor>{n.w1, n.w2}, std::make_unique<torch::optim::AdamWOptions>(base));
  groups.emplace_back(std::vector<torch::Tensor>{n.b1, n.ln, n.t},
                      std::make_unique<torch::optim::AdamWOptions>(no_decay));
  return std::make_unique<torch::optim::AdamW>(std::move(groups), base);
}

void set_grads(Net& n, int step, bool skip_ln) {
  torch::manual_seed(100 + step);
  for (auto& p : n.parameters()) p.mutable_grad() = torch::randn_like(p) * 0.1;
  if (skip_ln) n.ln.mutable_grad() = torch::Tensor();  // no gradient this step: no update, no state change
}

const torch::optim::AdamWParamState& state_of(torch::optim::AdamW& opt, const torch::Tensor& p) {
  auto& st = opt.state();
  // The optimizer's own key (run_state.cpp handles both LibTorch key forms; 1.13 uses the string).
  std::ostringstream os;
  os << static_cast<const void*>(p.unsafeGetTensorImpl());
  return static_cast<const torch::optim::AdamWParamState&>(*st.at(os.str()));
}

void expect_same(Net& a, torch::optim::AdamW& oa, Net& b, torch::optim::AdamW& ob, double rtol, double atol) {
  auto pa = a.named_parameters(), pb = b.named_parameters();
  for (const auto& item : pa) {
    const auto& x = item.value();
    const auto& y = pb[item.key()];
    EXPECT_TRUE(torch::allclose(x, y, rtol, atol)) << item.key() << " max diff " << (x - y).abs().max().item<double>();
    const auto& sa = state_of(oa, x);
    const auto& sb = state_of(ob, y);
    EXPECT_EQ(sa.step(), sb.step()) << item.key();
    // A few float32 ulp of |m| ~ 1e-2 and |v| ~ 1e-4.
    EXPECT_TRUE(torch::allclose(sa.exp_avg(), sb.exp_avg(), rtol, 1e-8))
        << item.key() << " " << (sa.exp_avg() - sb.exp_avg()).abs().max().item<double>();
    EXPECT_TRUE(torch::allclose(sa.exp_avg_sq(), sb.exp_avg_sq(), rtol, 1e-10))
        << item.key() << " " << (sa.exp_avg_sq() - sb.exp_avg_sq()).abs().max().item<double>();
  }
}

// Ten steps, the no-decay parameter `ln` without a gradient on steps 2 and 5: parameters, moments and
// step counts follow LibTorch's AdamW to float rounding (measured: max difference ~1e-7 at |p| ~ 1).
TEST(FusedOps, AdamWStepFollowsLibTorch) {
  torch::manual_seed(0);
  Net a, b;
  {
    torch::NoGradGuard g;
    for (auto& item : a.named_parameters()) b.named_parameters()[item.key()].copy_(item.value());
  }
  const auto w1_start = a.w1.detach().clone();
  auto oa = make_opt(a), ob = make_opt(b);
  for (int step = 0; step < 10; ++step) {
    set_grads(a, step, step == 2 || step == 5);
    set_grads(b, step, step == 2 || step == 5);
    oa->step();
    adamw_step(*ob);
  }
  expect_same(a, *oa, b, *ob, 1e-5, 1e-6);
  EXPECT_EQ(state_of(*ob, b.ln).step(), 8);
  EXPECT_EQ(state_of(*ob, b.w1).step(), 10);
  EXPECT_GT((b.w1 - w1_start).abs().max().item<float>(), 0.05f);  // ten steps of ~lr each moved it
  // Each implementation continues the other's state: five more steps crossed over.
  for (int step = 10; step < 15; ++step) {
    set_grads(a, step, false);
    set_grads(b, step, false);
    adamw_step(*oa);
    ob->step();
  }
  expect_same(a, *oa, b, *ob, 1e-5, 1e-6);
}

// The same step on 1 and 2 intra-op threads gives the same bits.
TEST(FusedOps, AdamWStepBitsIndependentOfThreads) {
  const int before = torch::get_num_threads();
  std::vector<torch::Tensor> results;
  for (int threads : {1, 2}) {
    torch::set_num_threads(threads);
    torch::manual_seed(5);
    Net n;
    // A large tensor, so that the 2-thread run really splits the range.
    auto big = n.register_parameter("big", torch::randn({300000}));
    auto opt = make_opt(n);
    opt->param_groups()[0].params().push_back(big);
    for (int step = 0; step < 3; ++step) {
      set_grads(n, step, false);
      adamw_step(*opt);
    }
    results.push_back(torch::cat({big.detach(), n.w1.detach().flatten()}));
  }
  torch::set_num_threads(before);
  EXPECT_TRUE(torch::equal(results[0], results[1]));
}

// A float64 parameter is not the kernel's: the whole step goes to opt.step() (equal bits).
TEST(FusedOps, AdamWStepFallsBackForOtherDtypes) {
  torch::manual_seed(7);
  auto pa = torch::randn({10, 10}, torch::kFloat64).requires_grad_(true);
  auto pb = pa.detach().clone().requires_grad_(true);
  torch::optim::AdamW oa({pa}, torch::optim::AdamWOptions(1e-2).weight_decay(0.1));
  torch::optim::AdamW ob({pb}, torch::optim::AdamWOptions(1e-2).weight_decay(0.1));
  for (int step = 0; step < 3; ++step) {
    const auto g = torch::randn({10, 10}, torch::kFloat64);
    pa.mutable_grad() = g.clone();
    pb.mutable_grad() = g.clone();
    oa.step();
    adamw_step(ob);
  }
  EXPECT_TRUE(torch::equal(pa, pb));
}

}  // namespace test_fused_adamw
