#pragma once
// `florence eval few-shot`: N-way K-shot episodes on frozen features, reported as the mean
// accuracy with a 95% confidence interval (the CD-FSL benchmark's convention, Guo et al. 2020,
// "A Broader Study of Cross-Domain Few-Shot Learning", which Florence §4 reports).
//
// Episode e (0-based) of a run with seed s draws from its own generator
// std::mt19937_64(mix(s, e)) with data::uniform_int (platform independent):
//   1. `ways` distinct classes, uniformly among the classes that have at least shots + queries
//      samples (classes with fewer are never drawn; counted in the result);
//   2. for each drawn class, shots + queries distinct samples uniformly from that class: the first
//      `shots` are the support set, the rest the queries.
// Episode labels are 0..ways-1 in draw order. The same (seed, episode) always gives the same
// episode, whatever other episodes were drawn.
//
// Classifiers per episode (on the frozen features, L2-normalised first):
//   prototype  nearest class mean (ProtoNet, Snell et al. 2017): the query's class is the one whose
//              support mean has the smallest Euclidean distance to it.
//   logreg     the L2-regularised multinomial logistic regression of logreg.h on the support set,
//              with lambda = 1 / (ways * shots) unless given: the minimiser of scikit-learn's
//              default LogisticRegression(C=1), the classifier used by the "Rethinking few-shot"
//              baseline (Tian et al. 2020) and in CD-FSL's linear evaluation.
// Confidence interval: 95% CI half-width = 1.96 * std / sqrt(E) with std the population standard
// deviation (divide by E) of the E per-episode accuracies, as CD-FSL's test script computes it
// (numpy.std). With E = 1 there is no spread to estimate: the CI is undefined (null in the
// result JSON, "n/a" in the CLI), not 0.
#include <torch/types.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "florence/eval/encode.h"
#include "florence/eval/features.h"
#include "florence/eval/logreg.h"

namespace florence::eval {

struct Episode {
  std::vector<int64_t> classes;         ///< drawn class ids (into the set's classes), draw order
  std::vector<int64_t> support;         ///< row indices, class-major: ways * shots
  std::vector<int64_t> support_labels;  ///< 0..ways-1
  std::vector<int64_t> query;           ///< row indices, class-major: ways * queries
  std::vector<int64_t> query_labels;
};

/// Classes (ids) that have at least `need` samples, ascending. labels: [N] int64 class ids.
std::vector<int64_t> eligible_classes(const std::vector<std::vector<int64_t>>& rows_by_class, int64_t need);

/// Rows of each class id in ascending row order: labels [N] int64 in [0, num_classes).
std::vector<std::vector<int64_t>> rows_by_class(const torch::Tensor& labels, int64_t num_classes);

/// Draws episode `episode` (see the top of this file). Throws florence::Error when fewer than
/// `ways` classes have shots + queries samples, or ways < 2, shots < 1, queries < 1.
Episode sample_episode(const std::vector<std::vector<int64_t>>& rows_by_class, int64_t ways, int64_t shots,
                       int64_t queries, uint64_t seed, int64_t episode);

/// Mean, population std and 95% CI half-width (1.96 * population std / sqrt(E)) of E values.
struct MeanCI {
  double mean = 0, std = 0;
  std::optional<double> ci95;  ///< empty for E < 2 (undefined from a single value)
  int64_t n = 0;
};
/// Throws florence::Error on an empty input. The CI is left empty for a single value.
MeanCI mean_ci95(const std::vector<double>& values);

/// Accuracy of the nearest-prototype classifier (features already L2-normalised).
double prototype_accuracy(const torch::Tensor& support, const torch::Tensor& support_labels, const torch::Tensor& query,
                          const torch::Tensor& query_labels, int64_t ways);

struct FewShotOptions {
  std::string name;
  std::string data;                  ///< data spec (open_source forms)
  std::vector<std::string> splits{"test"};  ///< pooled together
  FeatureOptions features;
  int64_t ways = 5, shots = 1, queries = 15;
  int64_t episodes = 600;            ///< CD-FSL: 600 episodes
  uint64_t seed = 0;
  /// Non-empty, distinct, each "prototype" or "logreg".
  std::vector<std::string> classifiers{"prototype", "logreg"};
  std::optional<double> l2;          ///< logreg lambda (>= 0); unset = 1 / (ways * shots)
  LogRegOptions logreg;
};

/// Checks the options that need no data (ways >= 2, shots >= 1, queries >= 1, episodes >= 1,
/// splits and classifiers non-empty, classifiers known and distinct, l2 >= 0 when given,
/// features.max_samples >= 0, logreg.max_iter >= 1). Throws florence::Error naming the option.
void validate_few_shot_options(const FewShotOptions& options);

/// Runs the episodes. Result JSON:
///   {"task": "few-shot", "set", "model", "features", "ways", "shots", "queries", "episodes", "seed",
///    "num_images", "num_classes", "eligible_classes", "excluded_classes": [names], "skipped",
///    "results": {classifier: {"mean", "ci95" (null for 1 episode), "std"}}, "chance": 1/ways, "l2",
///    "cache", "seconds"}
/// Accuracies are fractions in [0, 1]. Throws florence::Error on bad options (checked by
/// validate_few_shot_options before any image is encoded) or too few eligible classes.
nlohmann::json few_shot(EvalModel& m, const FewShotOptions& options);

}  // namespace florence::eval
