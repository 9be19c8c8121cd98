// CLIP's linear-probe protocol (see linear_probe.h).
#include "florence/eval/linear_probe.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>

#include "florence/core/error.h"
#include "florence/data/relabel.h"
#include "florence/eval/metrics.h"

namespace florence::eval {

namespace {

FeatureSet subset_rows(const FeatureSet& s, const std::vector<size_t>& rows) {
  FeatureSet o = s;
  std::vector<int64_t> idx(rows.begin(), rows.end());
  torch::Tensor t = torch::tensor(idx, torch::kLong);
  o.features = s.features.index_select(0, t);
  o.labels = s.labels.index_select(0, t);
  return o;
}

double top1(const LogRegModel& m, const FeatureSet& s) {
  torch::NoGradGuard ng;
  return m.predict(s.features).eq(s.labels).to(torch::kDouble).mean().item<double>();
}

// Samples per class id of `s` (labels index s.classes): [C] int64 CPU.
torch::Tensor class_counts(const FeatureSet& s) {
  return torch::bincount(s.labels.to(torch::kCPU), {}, int64_t(s.classes.size()));
}

int64_t num_present(const FeatureSet& s) { return class_counts(s).gt(0).sum().item<int64_t>(); }

// Options that can be checked before any image is encoded.
void validate(const LinearProbeOptions& o) {
  if (o.train.empty() || o.test.empty()) throw Error("linear probe: train and test data are required");
  if (o.val.empty() && !(o.val_fraction > 0 && o.val_fraction < 1))
    throw Error(fmt::format("linear probe: --val-fraction must be in (0, 1), got {}", o.val_fraction));
  if (o.fixed_l2 && !(*o.fixed_l2 >= 0 && std::isfinite(*o.fixed_l2)))
    throw Error(fmt::format("linear probe: --l2 must be a finite number >= 0, got {}", *o.fixed_l2));
  if (o.logreg.max_iter < 1)
    throw Error(fmt::format("linear probe: --max-iter must be >= 1, got {}", o.logreg.max_iter));
  if (o.features.max_samples < 0)
    throw Error(fmt::format("linear probe: --max-train-samples must be >= 0, got {}", o.features.max_samples));
  if (o.max_eval_samples < 0)
    throw Error(fmt::format("linear probe: --max-eval-samples must be >= 0, got {}", o.max_eval_samples));
  if (!o.fixed_l2) {
    if (!(o.max_log10 >= o.min_log10)) throw Error("linear probe: empty lambda sweep range");
    if (o.steps_per_decade < 1) throw Error("linear probe: steps_per_decade must be >= 1");
  }
}

}  // namespace

nlohmann::json linear_probe(EvalModel& m, const LinearProbeOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  validate(o);

  FeatureOptions fo = o.features;
  fo.name = o.name;
  FeatureSet train = extract_features(m, o.train, o.train_split, fo);
  if (train.classes.size() < 2) throw Error("linear probe: the train split has fewer than 2 classes");
  // The class list names every class of the split, also those a subset misses: count the classes
  // that actually have training samples.
  if (const int64_t present = num_present(train); present < 2)
    throw Error(fmt::format("linear probe: the training data ({} samples{}) has {} class(es) of the split's {}; "
                            "need at least 2 (raise --max-train-samples)",
                            train.size(), fo.max_samples > 0 ? fmt::format(", --max-train-samples {}", fo.max_samples) : "",
                            present, train.classes.size()));
  FeatureOptions eo = fo;
  eo.max_samples = o.max_eval_samples;
  FeatureSet test = align_classes(extract_features(m, o.test, o.test_split, eo), train.classes);
  FeatureSet val;
  std::string val_desc;
  nlohmann::json cache = nlohmann::json::array();
  for (const FeatureSet* s : {&train, &test})
    if (!s->cache_file.empty()) cache.push_back(s->cache_file);
  FeatureSet fit_set = train;
  if (!o.val.empty()) {
    val = align_classes(extract_features(m, o.val, o.val_split, eo), train.classes);
    if (!val.cache_file.empty()) cache.push_back(val.cache_file);
    val_desc = o.val_split + " split";
  } else {
    // Hold out a seeded subset of train for the sweep.
    const size_t n = size_t(train.size());
    const size_t k = std::max<size_t>(1, size_t(double(n) * o.val_fraction + 0.5));
    std::vector<size_t> held = data::seeded_subset(n, k, fo.seed ^ 0x76616cull);
    std::vector<bool> is_held(n, false);
    for (size_t i : held) is_held[i] = true;
    std::vector<size_t> rest;
    for (size_t i = 0; i < n; ++i)
      if (!is_held[i]) rest.push_back(i);
    val = subset_rows(train, held);
    fit_set = subset_rows(train, rest);
    val_desc = fmt::format("{:.0f}% of train held out", 100 * o.val_fraction);
  }
  if (val.size() == 0) throw Error("linear probe: no validation samples of the train classes");
  if (test.size() == 0) throw Error("linear probe: no test samples of the train classes");
  if (const int64_t present = num_present(fit_set); present < 2)
    throw Error(fmt::format("linear probe: the training part left after holding out {} has {} class(es); need at least "
                            "2 (more train data, a smaller --val-fraction, or a val split)",
                            val_desc, present));
  const int64_t C = int64_t(train.classes.size());

  SweepResult sweep;
  double l2 = 0;
  LogRegModel fixed_model;  // with a fixed lambda: the fit on fit_set, scored on val
  if (!o.fixed_l2) {
    sweep = sweep_l2(fit_set.features, fit_set.labels, val.features, val.labels, C, o.logreg, o.min_log10, o.max_log10,
                     o.steps_per_decade);
    l2 = sweep.best_l2;
    spdlog::info("linear probe: best lambda {:.3g} (val top-1 {:.4f}, {} fits)", l2, sweep.best_val_accuracy,
                 sweep.points.size());
  } else {
    l2 = *o.fixed_l2;
    LogRegOptions lo = o.logreg;
    lo.l2 = l2;
    fixed_model = fit_logreg(fit_set.features, fit_set.labels, C, lo);
    const double a = top1(fixed_model, val);
    sweep.best_l2 = l2;
    sweep.best_val_accuracy = a;
    sweep.points.push_back({l2, a, fixed_model.objective, fixed_model.evaluations});
    spdlog::info("linear probe: fixed lambda {:.3g} (val top-1 {:.4f})", l2, a);
  }
  // Final classifier.
  FeatureSet final_set = fit_set;
  std::string trained_on = o.val.empty() ? "train minus held-out" : "train";
  if (o.refit_on_val) {
    final_set.features = torch::cat({fit_set.features, val.features}, 0);
    final_set.labels = torch::cat({fit_set.labels, val.labels}, 0);
    trained_on = o.val.empty() ? "train" : "train+val";
  }
  LogRegOptions lo = o.logreg;
  lo.l2 = l2;
  LogRegModel final_model =
      (o.fixed_l2 && !o.refit_on_val) ? fixed_model : fit_logreg(final_set.features, final_set.labels, C, lo);

  // Train classes the final classifier never saw a sample of (a --max-train-samples subset or the
  // held-out part can miss classes): their test images are always misclassified.
  nlohmann::json untrained = nlohmann::json::array();
  int64_t untrained_test = 0;
  {
    const torch::Tensor have = class_counts(final_set), test_n = class_counts(test);
    for (int64_t c = 0; c < C; ++c)
      if (have[c].item<int64_t>() == 0) {
        untrained.push_back(train.classes[size_t(c)]);
        untrained_test += test_n[c].item<int64_t>();
      }
    if (!untrained.empty())
      spdlog::warn("linear probe: {} of {} classes have no training sample ({}); their {} test images count as errors",
                   untrained.size(), C, untrained.dump(), untrained_test);
  }
  torch::Tensor scores;
  {
    torch::NoGradGuard ng;
    scores = final_model.logits(test.features).to(torch::kCPU);
  }
  ClassificationMetrics cm = classification_metrics(scores, test.labels, {1, 5});

  nlohmann::json points = nlohmann::json::array();
  for (const auto& p : sweep.points) points.push_back({{"l2", p.l2}, {"val_top1", p.val_accuracy}});
  nlohmann::json r = {
      {"task", "linear-probe"},
      {"set", o.name},
      {"model", m.describe()},
      {"features", fo.features},
      {"feature_dim", train.features.size(1)},
      {"num_train", fit_set.size()},
      {"num_val", val.size()},
      {"num_test", test.size()},
      {"validation", val_desc},
      {"classes", train.classes},
      {"num_trained_classes", C - int64_t(untrained.size())},
      {"classes_without_train_samples", untrained},
      {"test_samples_of_untrained_classes", untrained_test},
      {"skipped", {{"train", train.skipped}, {"val", val.skipped}, {"test", test.skipped}}},
      {"sweep",
       {{"best_l2", sweep.best_l2},
        {"best_val_top1", sweep.best_val_accuracy},
        {"fixed", o.fixed_l2.has_value()},
        {"points", points}}},
      {"final",
       {{"l2", l2},
        {"trained_on", trained_on},
        {"num_samples", final_set.size()},
        {"objective", final_model.objective},
        {"max_grad", final_model.grad_max},
        {"evaluations", final_model.evaluations},
        {"train_top1", top1(final_model, final_set)}}},
      {"metrics", cm.to_json(train.classes)},
      {"cache", cache},
      {"seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()}};
  return r;
}

}  // namespace florence::eval
