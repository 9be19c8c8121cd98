#pragma once
// Image-text relevance filtering. Florence (arXiv 2111.11432, Sec. 2.1) lists image-text
// relevance among the FLD-900M filters without naming the scorer or the cut; here the scorer is a
// Florence checkpoint of our own: each pair's score is the cosine similarity of its image and text
// embeddings (FlorenceModel::encode_image / encode_text, both L2-normalised, so
// the score is their dot product, in [-1, 1]); pairs scoring under a cut are removed.
#include <cstdint>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace florence::data {
class SampleSource;
}
namespace florence::eval {
struct EvalModel;
struct LoadOptions;
}  // namespace florence::eval

namespace florence::curate {

/// The p-th percentile (p in [0, 100]) of `values` with linear interpolation between the two
/// closest ranks (NumPy's default "linear" method): position p/100 * (n - 1) in sorted order.
/// Throws florence::Error when values is empty or p is outside [0, 100].
double percentile_linear(std::vector<double> values, double p);

/// The relevance cut: max(threshold, percentile_linear(scores, percentile)) over the options
/// given; -infinity when neither is given. A pair is kept when its score >= cut (pairs exactly
/// at the cut are kept). Throws as percentile_linear when a percentile is given for no scores.
double relevance_cut(const std::vector<float>& scores, std::optional<double> threshold, std::optional<double> percentile);

/// Row-wise dot products of two [N, D] float arrays (row-major): the cosine similarity of
/// L2-normalised embeddings.
std::vector<float> row_dots(const float* a, const float* b, int64_t rows, int64_t dim);

/// Scores pairs with a loaded two-tower model (eval/encode.h).
class RelevanceScorer {
 public:
  /// Loads the model (eval::load_eval_model; needs a vocabulary). `threads`: loader decode
  /// threads (0 = all cores). Throws florence::Error as load_eval_model, or when the model has
  /// no tokenizer.
  RelevanceScorer(const eval::LoadOptions& options, int threads);
  ~RelevanceScorer();

  /// Scores every sample `source` yields. The source must give each sample a key that is the
  /// decimal row id the score belongs to (the pipeline's internal id). Samples the eval loader
  /// drops (undecodable image, text empty after CLIP cleaning) get no score. Returns
  /// (row id, score) pairs in source order. Batches never span two calls, so a shard scored alone
  /// gives the same numbers in any process.
  std::vector<std::pair<uint32_t, float>> score(std::shared_ptr<const data::SampleSource> source);

  /// {"model", "checkpoint", "preprocess", "temperature"} of the scoring model.
  nlohmann::json describe() const;

 private:
  std::unique_ptr<eval::EvalModel> m_;
  int threads_ = 0;
};

}  // namespace florence::curate
