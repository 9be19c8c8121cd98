#pragma once
// `florence eval linear-probe`: CLIP's linear-probe protocol (Radford et al. 2021 §3.2 and
// appendix A.3) on any labelled source.
//   1. frozen image features of the train, val and test splits (features.h: encoded once,
//      cached on disk);
//   2. L2-regularised multinomial logistic regression (logreg.h, L-BFGS) fitted on train for each
//      lambda of CLIP's sweep, scored by top-1 on val (sweep_l2);
//   3. the best lambda refit on train + val (`refit_on_val`, our choice; CLIP's text leaves this
//      step open) or on train alone, and scored on test: top-1 / top-5 / per-class
//      (metrics.h ClassificationMetrics, with chance levels).
// Without a validation split, `val_fraction` of the train features (a seeded random subset) is
// held out for the sweep. Classes are the train split's (all classes named in it, also those that a
// --max-train-samples subset misses, so the test set does not depend on the subset); val/test rows
// of other classes are dropped and counted (skipped["class_not_in_train"]). Train classes without
// a sample in the final training data are logged as a warning and listed in the result: their
// test images cannot be classified correctly (they still count, as errors).
#include <nlohmann/json.hpp>

#include <optional>
#include <string>

#include "florence/eval/encode.h"
#include "florence/eval/features.h"
#include "florence/eval/logreg.h"

namespace florence::eval {

struct LinearProbeOptions {
  std::string name;                 ///< set name in the result
  std::string train, val, test;     ///< data specs (open_source forms); val may be empty
  std::string train_split = "train", val_split = "val", test_split = "test";
  double val_fraction = 0.2;        ///< used when `val` is empty
  FeatureOptions features;          ///< kind, class field, cache; max_samples (>= 0) applies to train
  int64_t max_eval_samples = 0;     ///< subset of val and test (0 = all; >= 0)
  bool refit_on_val = true;
  LogRegOptions logreg;             ///< l2 is chosen by the sweep unless `fixed_l2` is set
  /// A fixed lambda (>= 0) instead of the sweep; its val top-1 is still measured (one fit on the
  /// training part, scored on val) and reported as the sweep's only point.
  std::optional<double> fixed_l2;
  double min_log10 = -6, max_log10 = 6;  ///< sweep range, log10(lambda)
  int steps_per_decade = 8;              ///< final sweep resolution (>= 1)
};

/// Runs the protocol. Result JSON:
///   {"task": "linear-probe", "set", "model": EvalModel::describe(), "features", "feature_dim",
///    "num_train", "num_val", "num_test", "classes", "num_trained_classes",
///    "classes_without_train_samples": [names], "test_samples_of_untrained_classes",
///    "skipped": {split: {reason: n}},
///    "sweep": {"best_l2", "best_val_top1", "fixed", "points": [{"l2", "val_top1"}...]},
///    "final": {"l2", "trained_on", "num_samples", "objective", "max_grad", "evaluations", "train_top1"},
///    "metrics": ClassificationMetrics::to_json(classes) (test), "cache": [files], "seconds"}
/// Accuracies are fractions in [0, 1]; with `fixed_l2` the sweep holds that single point.
/// Throws florence::Error (before any image is encoded where possible) for invalid options
/// (fixed_l2 < 0, logreg.max_iter < 1, negative subset sizes, val_fraction outside (0, 1) without
/// a val split, an empty sweep range), when a split has no labelled image, or when the training
/// data (after the --max-train-samples subset and the held-out part) has fewer than 2 classes.
nlohmann::json linear_probe(EvalModel& m, const LinearProbeOptions& options);

}  // namespace florence::eval
