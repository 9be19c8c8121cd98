#pragma once
// L2-regularised multinomial logistic regression on fixed features, fitted with L-BFGS
// (the classifier of CLIP's linear-probe protocol, Radford et al. 2021 §3.2 / appendix A.3, and
// of the logistic-regression few-shot baseline).
//
// Objective, for features x_i [F], labels y_i in [0, C), weights W [F, C] and bias b [C]:
//     J(W, b) = (1/N) sum_i -log softmax(x_i W + b)_{y_i}  +  (lambda / 2) ||W||_F^2
// The bias is not regularised. J is strictly convex in W for lambda > 0, so the minimiser is
// unique up to a common shift of the biases, which the gradient leaves unchanged.
// Relation to scikit-learn's LogisticRegression(C=...) (which CLIP used): sklearn minimises
//     C * sum_i CE_i + 1/2 ||W||^2      =>  the same minimiser when lambda = 1 / (C * N).
// With the mean (not the sum) of the losses, lambda does not change meaning when the training set
// grows (e.g. when the classifier is refit on train + val after the sweep).
//
// Computation: float64 on the features' device; torch::optim::LBFGS with the strong-Wolfe line
// search, started from zero weights (or a warm start) and run until the largest gradient entry is
// below `tolerance_grad` or `max_iter` iterations are spent.
#include <torch/types.h>

#include <cstdint>
#include <vector>

namespace florence::eval {

struct LogRegOptions {
  double l2 = 1e-4;              ///< lambda above (>= 0)
  int64_t max_iter = 1000;       ///< L-BFGS iterations (>= 1)
  double tolerance_grad = 1e-8;  ///< stop when max |dJ/dtheta| <= this (>= 0)
  double tolerance_change = 1e-12;  ///< stop when the objective or step changes by less (>= 0)
  int64_t history = 20;          ///< L-BFGS memory (pairs of vectors, >= 1)
  bool fit_bias = true;
};

struct LogRegModel {
  torch::Tensor weight;  ///< [F, C] float64
  torch::Tensor bias;    ///< [C] float64 (zeros without fit_bias)
  double l2 = 0;
  double objective = 0;  ///< J at the solution
  double grad_max = 0;   ///< max |dJ/dtheta| at the solution (convergence check)
  int64_t evaluations = 0;  ///< objective/gradient evaluations spent

  /// Logits x W + b: x [N, F] (any float dtype / device) -> [N, C] float64 on the weights' device.
  torch::Tensor logits(const torch::Tensor& x) const;
  /// argmax of the logits: [N] int64.
  torch::Tensor predict(const torch::Tensor& x) const;
};

/// J(W, b) of the file comment: x [N, F], y [N] int64 in [0, C) (both on weight's device).
/// Returns a 0-d float64 tensor (differentiable w.r.t. weight and bias).
torch::Tensor logreg_objective(const torch::Tensor& x, const torch::Tensor& y, const torch::Tensor& weight,
                               const torch::Tensor& bias, double l2);

/// Fits the model. x: [N, F] float (converted to float64 on its device), y: [N] int64 class ids in
/// [0, num_classes). warm_start: initial weights (same F, C), e.g. the neighbour of a sweep.
/// Throws florence::Error on shape mismatch, N == 0, num_classes < 2, labels outside the range,
/// non-finite features, or invalid options (l2 < 0 or not finite, max_iter < 1, history < 1,
/// negative tolerances).
LogRegModel fit_logreg(const torch::Tensor& x, const torch::Tensor& y, int64_t num_classes,
                       const LogRegOptions& options = {}, const LogRegModel* warm_start = nullptr);

/// One point of a regularisation sweep.
struct SweepPoint {
  double l2 = 0;
  double val_accuracy = 0;  ///< top-1 on the validation features, in [0, 1]
  double objective = 0;
  int64_t evaluations = 0;
};

struct SweepResult {
  double best_l2 = 0;
  double best_val_accuracy = 0;
  std::vector<SweepPoint> points;  ///< in evaluation order
};

/// CLIP's regularisation search (Radford et al. 2021, appendix A.3): lambda in
/// [10^-6, 10^6]; first the 7 values 10^-6, 10^-4, ..., 10^6 (2 decades apart), then repeatedly
/// the two values half the current step to either side of the best one, halving the step until it
/// is 1/8 decade (CLIP's resolution: 96 log-spaced steps over 12 decades). The best value is the
/// one with the highest validation top-1; ties go to the larger lambda (the simpler model).
/// Each fit is warm-started from the already fitted lambda nearest in log scale.
/// `min_log10` / `max_log10` / `steps_per_decade` override the range and the final resolution.
SweepResult sweep_l2(const torch::Tensor& x_train, const torch::Tensor& y_train, const torch::Tensor& x_val,
                     const torch::Tensor& y_val, int64_t num_classes, const LogRegOptions& base = {},
                     double min_log10 = -6, double max_log10 = 6, int steps_per_decade = 8);

}  // namespace florence::eval
