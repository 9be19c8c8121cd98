// Relevance scores and cuts; see relevance.h.
#include "florence/curate/relevance.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "florence/core/error.h"
#include "florence/data/loader.h"
#include "florence/eval/encode.h"

namespace florence::curate {

double percentile_linear(std::vector<double> values, double p) {
  if (values.empty()) throw Error("relevance percentile: no scored pairs");
  if (!(p >= 0 && p <= 100)) throw Error("relevance percentile must be in [0, 100], got " + std::to_string(p));
  std::sort(values.begin(), values.end());
  const double pos = p / 100.0 * double(values.size() - 1);
  const size_t lo = size_t(std::floor(pos));
  const size_t hi = std::min(values.size() - 1, lo + 1);
  const double frac = pos - double(lo);
  return values[lo] + (values[hi] - values[lo]) * frac;
}

double relevance_cut(const std::vector<float>& scores, std::optional<double> threshold, std::optional<double> percentile) {
  double cut = -std::numeric_limits<double>::infinity();
  if (threshold) cut = *threshold;
  if (percentile) cut = std::max(cut, percentile_linear(std::vector<double>(scores.begin(), scores.end()), *percentile));
  return cut;
}

std::vector<float> row_dots(const float* a, const float* b, int64_t rows, int64_t dim) {
  std::vector<float> out(static_cast<size_t>(rows));
  for (int64_t i = 0; i < rows; ++i) {
    double s = 0;
    for (int64_t d = 0; d < dim; ++d) s += double(a[i * dim + d]) * double(b[i * dim + d]);
    out[size_t(i)] = float(s);
  }
  return out;
}

RelevanceScorer::RelevanceScorer(const eval::LoadOptions& options, int threads)
    : m_(std::make_unique<eval::EvalModel>(eval::load_eval_model(options))), threads_(threads) {
  eval::require_tokenizer(*m_, "curate relevance filtering");
}

RelevanceScorer::~RelevanceScorer() = default;

nlohmann::json RelevanceScorer::describe() const { return m_->describe(); }

std::vector<std::pair<uint32_t, float>> RelevanceScorer::score(std::shared_ptr<const data::SampleSource> source) {
  data::LoaderOptions lo;
  lo.batch_size = m_->preprocess.batch_size;
  lo.image_size = m_->preprocess.image_size;
  lo.train = false;
  lo.crop_pct = *m_->preprocess.crop_pct;
  lo.mean = *m_->preprocess.mean;
  lo.std = *m_->preprocess.std;
  lo.num_workers = threads_;
  lo.shuffle = false;
  lo.require_text = true;
  lo.context_length = m_->context_length;
  lo.drop_last = false;
  data::Loader loader(source, lo, m_->tokenizer);
  std::vector<std::pair<uint32_t, float>> out;
  torch::NoGradGuard ng;
  loader.start_epoch(0);
  data::Batch b;
  while (loader.next(b)) {
    torch::Tensor u = m_->model->encode_image(b.images.to(m_->device)).to(torch::kCPU, torch::kFloat).contiguous();
    torch::Tensor v = m_->model->encode_text(b.ids.to(m_->device)).to(torch::kCPU, torch::kFloat).contiguous();
    const std::vector<float> s = row_dots(u.data_ptr<float>(), v.data_ptr<float>(), u.size(0), u.size(1));
    for (int64_t i = 0; i < b.size(); ++i) out.emplace_back(uint32_t(std::stoul(b.keys[size_t(i)])), s[size_t(i)]);
  }
  loader.stop();
  const data::EpochStats st = loader.stats();
  if (st.skipped_total() > 0) spdlog::info("curate: relevance: {} sample(s) not scored ({})", st.skipped_total(), st.summary());
  return out;
}

}  // namespace florence::curate
