// Multinomial logistic regression with L-BFGS and CLIP's regularisation sweep (see logreg.h).
#include "florence/eval/logreg.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <cmath>
#include <map>

#include "florence/core/error.h"

namespace florence::eval {

torch::Tensor LogRegModel::logits(const torch::Tensor& x) const {
  if (!weight.defined()) throw Error("logistic regression: model is not fitted");
  if (x.dim() != 2 || x.size(1) != weight.size(0))
    throw Error(fmt::format("logistic regression: features must be [N, {}], got {}", weight.size(0), c10::str(x.sizes())));
  return torch::addmm(bias, x.to(weight.device(), torch::kDouble), weight);
}

torch::Tensor LogRegModel::predict(const torch::Tensor& x) const { return logits(x).argmax(1); }

torch::Tensor logreg_objective(const torch::Tensor& x, const torch::Tensor& y, const torch::Tensor& weight,
                               const torch::Tensor& bias, double l2) {
  torch::Tensor z = torch::addmm(bias, x, weight);
  torch::Tensor ce = torch::nll_loss(torch::log_softmax(z, 1), y);  // mean over rows
  return ce + 0.5 * l2 * weight.pow(2).sum();
}

LogRegModel fit_logreg(const torch::Tensor& x_in, const torch::Tensor& y_in, int64_t num_classes,
                       const LogRegOptions& o, const LogRegModel* warm) {
  if (x_in.dim() != 2)
    throw Error(fmt::format("logistic regression: features must be [N, F], got {}", c10::str(x_in.sizes())));
  if (y_in.dim() != 1 || y_in.size(0) != x_in.size(0))
    throw Error(fmt::format("logistic regression: labels must be [{}], got {}", x_in.size(0), c10::str(y_in.sizes())));
  if (x_in.size(0) == 0) throw Error("logistic regression: no training samples");
  if (num_classes < 2) throw Error("logistic regression: needs at least 2 classes");
  if (!(o.l2 >= 0) || !std::isfinite(o.l2)) throw Error(fmt::format("logistic regression: l2 must be >= 0, got {}", o.l2));
  if (o.max_iter < 1) throw Error(fmt::format("logistic regression: max_iter must be >= 1, got {}", o.max_iter));
  if (o.history < 1) throw Error(fmt::format("logistic regression: history must be >= 1, got {}", o.history));
  if (!(o.tolerance_grad >= 0) || !(o.tolerance_change >= 0))
    throw Error(fmt::format("logistic regression: tolerances must be >= 0, got {} / {}", o.tolerance_grad,
                            o.tolerance_change));
  const torch::Device dev = x_in.device();
  torch::Tensor x = x_in.to(torch::kDouble).contiguous();
  torch::Tensor y = y_in.to(dev, torch::kLong);
  if (!torch::isfinite(x).all().item<bool>()) throw Error("logistic regression: non-finite feature values");
  const int64_t lo = y.min().item<int64_t>(), hi = y.max().item<int64_t>();
  if (lo < 0 || hi >= num_classes)
    throw Error(fmt::format("logistic regression: labels must be in [0, {}), got [{}, {}]", num_classes, lo, hi));
  const int64_t f = x.size(1);
  const auto opts = torch::TensorOptions().dtype(torch::kDouble).device(dev);

  torch::Tensor w = torch::zeros({f, num_classes}, opts), b = torch::zeros({num_classes}, opts);
  if (warm && warm->weight.defined() && warm->weight.size(0) == f && warm->weight.size(1) == num_classes) {
    w.copy_(warm->weight);
    if (o.fit_bias) b.copy_(warm->bias);
  }
  w.set_requires_grad(true);
  std::vector<torch::Tensor> params{w};
  if (o.fit_bias) {
    b.set_requires_grad(true);
    params.push_back(b);
  }
  torch::optim::LBFGSOptions lo_opts(1.0);
  lo_opts.max_iter(o.max_iter)
      .max_eval(o.max_iter * 5 / 4 + 1)
      .tolerance_grad(o.tolerance_grad)
      .tolerance_change(o.tolerance_change)
      .history_size(o.history)
      .line_search_fn("strong_wolfe");
  torch::optim::LBFGS opt(params, lo_opts);
  int64_t evals = 0;
  auto closure = [&]() -> torch::Tensor {
    opt.zero_grad();
    torch::Tensor loss = logreg_objective(x, y, w, b, o.l2);
    loss.backward();
    ++evals;
    return loss;
  };
  opt.step(closure);

  LogRegModel m;
  {
    // Objective and gradient at the returned point (the optimiser may stop on a line-search step).
    opt.zero_grad();
    torch::Tensor loss = logreg_objective(x, y, w, b, o.l2);
    loss.backward();
    m.objective = loss.item<double>();
    double g = w.grad().abs().max().item<double>();
    if (o.fit_bias) g = std::max(g, b.grad().abs().max().item<double>());
    m.grad_max = g;
  }
  if (!std::isfinite(m.objective)) throw Error("logistic regression: the optimisation diverged (non-finite objective)");
  m.weight = w.detach().clone();
  m.bias = b.detach().clone();
  m.l2 = o.l2;
  m.evaluations = evals;
  return m;
}

namespace {

double accuracy(const LogRegModel& m, const torch::Tensor& x, const torch::Tensor& y) {
  torch::NoGradGuard ng;
  torch::Tensor pred = m.predict(x);
  return pred.eq(y.to(pred.device())).to(torch::kDouble).mean().item<double>();
}

}  // namespace

SweepResult sweep_l2(const torch::Tensor& x_train, const torch::Tensor& y_train, const torch::Tensor& x_val,
                     const torch::Tensor& y_val, int64_t num_classes, const LogRegOptions& base, double min_log10,
                     double max_log10, int steps_per_decade) {
  if (!(max_log10 >= min_log10)) throw Error("regularisation sweep: empty range");
  if (steps_per_decade < 1) throw Error("regularisation sweep: steps_per_decade must be >= 1");
  if (x_val.size(0) == 0) throw Error("regularisation sweep: no validation samples");
  SweepResult res;
  // Grid positions are kept as integer multiples of the final resolution 1/steps_per_decade so
  // that "already evaluated" is an exact comparison.
  const int64_t lo = int64_t(std::llround(min_log10 * steps_per_decade));
  const int64_t hi = int64_t(std::llround(max_log10 * steps_per_decade));
  std::map<int64_t, LogRegModel> fitted;
  std::map<int64_t, double> acc;
  auto eval_at = [&](int64_t pos) {
    if (pos < lo || pos > hi || fitted.count(pos)) return;
    const LogRegModel* warm = nullptr;
    int64_t best_d = -1;
    for (const auto& [p, m] : fitted) {
      const int64_t d = std::llabs(p - pos);
      if (best_d < 0 || d < best_d) {
        best_d = d;
        warm = &m;
      }
    }
    LogRegOptions o = base;
    o.l2 = std::pow(10.0, double(pos) / steps_per_decade);
    LogRegModel m = fit_logreg(x_train, y_train, num_classes, o, warm);
    const double a = accuracy(m, x_val, y_val);
    res.points.push_back({o.l2, a, m.objective, m.evaluations});
    spdlog::debug("sweep: lambda {:.3g}: val top-1 {:.4f} ({} evaluations, max grad {:.2g})", o.l2, a, m.evaluations,
                  m.grad_max);
    acc[pos] = a;
    fitted.emplace(pos, std::move(m));
  };
  auto best_pos = [&]() {
    int64_t best = acc.begin()->first;
    for (const auto& [p, a] : acc)
      if (a >= acc[best]) best = p;  // ascending order: ties go to the larger lambda
    return best;
  };
  // Coarse grid: every 2 decades (CLIP: 1e-6, 1e-4, ..., 1e6).
  int64_t step = 2 * int64_t(steps_per_decade);
  for (int64_t p = lo; p <= hi; p += step) eval_at(p);
  if (acc.empty()) eval_at(lo);
  while (step > 1) {
    step /= 2;
    const int64_t b = best_pos();
    eval_at(b - step);
    eval_at(b + step);
  }
  const int64_t b = best_pos();
  res.best_l2 = std::pow(10.0, double(b) / steps_per_decade);
  res.best_val_accuracy = acc[b];
  return res;
}

}  // namespace florence::eval
