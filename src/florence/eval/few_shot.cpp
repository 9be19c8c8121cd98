// Few-shot episodes on frozen features (see few_shot.h).
#include "florence/eval/few_shot.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <map>
#include <numeric>
#include <set>

#include "florence/core/error.h"
#include "florence/data/transforms.h"

namespace florence::eval {

namespace {

// splitmix64 finaliser (Steele, Lea, Flood 2014).
uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// The first k entries of a seeded partial Fisher-Yates shuffle of `v` (in draw order).
std::vector<int64_t> draw(std::vector<int64_t> v, size_t k, std::mt19937_64& rng) {
  for (size_t i = 0; i < k; ++i) {
    const size_t j = i + size_t(data::uniform_int(rng, uint64_t(v.size() - i)));
    std::swap(v[i], v[j]);
  }
  v.resize(k);
  return v;
}

}  // namespace

std::vector<std::vector<int64_t>> rows_by_class(const torch::Tensor& labels, int64_t num_classes) {
  std::vector<std::vector<int64_t>> rows(size_t(std::max<int64_t>(0, num_classes)));
  torch::Tensor l = labels.to(torch::kCPU, torch::kLong).contiguous();
  auto acc = l.accessor<int64_t, 1>();
  for (int64_t i = 0; i < l.size(0); ++i) {
    if (acc[i] < 0 || acc[i] >= num_classes) throw Error(fmt::format("few-shot: label {} of row {} out of range", acc[i], i));
    rows[size_t(acc[i])].push_back(i);
  }
  return rows;
}

std::vector<int64_t> eligible_classes(const std::vector<std::vector<int64_t>>& rows, int64_t need) {
  std::vector<int64_t> out;
  for (size_t c = 0; c < rows.size(); ++c)
    if (int64_t(rows[c].size()) >= need) out.push_back(int64_t(c));
  return out;
}

Episode sample_episode(const std::vector<std::vector<int64_t>>& rows, int64_t ways, int64_t shots, int64_t queries,
                       uint64_t seed, int64_t episode) {
  if (ways < 2) throw Error(fmt::format("few-shot: --ways must be >= 2, got {}", ways));
  if (shots < 1) throw Error(fmt::format("few-shot: --shots must be >= 1, got {}", shots));
  if (queries < 1) throw Error(fmt::format("few-shot: --queries must be >= 1, got {}", queries));
  const std::vector<int64_t> eligible = eligible_classes(rows, shots + queries);
  if (int64_t(eligible.size()) < ways)
    throw Error(fmt::format("few-shot: only {} classes have at least shots + queries = {} samples; {}-way episodes "
                            "need {} (lower --queries / --shots / --ways or use more data)",
                            eligible.size(), shots + queries, ways, ways));
  std::mt19937_64 rng(mix64(seed ^ mix64(uint64_t(episode) + 0x6570697364ull)));
  Episode e;
  e.classes = draw(eligible, size_t(ways), rng);
  for (int64_t w = 0; w < ways; ++w) {
    const auto& pool = rows[size_t(e.classes[size_t(w)])];
    std::vector<int64_t> picked = draw(pool, size_t(shots + queries), rng);
    for (int64_t i = 0; i < shots + queries; ++i) {
      if (i < shots) {
        e.support.push_back(picked[size_t(i)]);
        e.support_labels.push_back(w);
      } else {
        e.query.push_back(picked[size_t(i)]);
        e.query_labels.push_back(w);
      }
    }
  }
  return e;
}

MeanCI mean_ci95(const std::vector<double>& v) {
  if (v.empty()) throw Error("mean_ci95: no values");
  MeanCI r;
  r.n = int64_t(v.size());
  r.mean = std::accumulate(v.begin(), v.end(), 0.0) / double(r.n);
  double ss = 0;
  for (double x : v) ss += (x - r.mean) * (x - r.mean);
  r.std = std::sqrt(ss / double(r.n));
  if (r.n >= 2) r.ci95 = 1.96 * r.std / std::sqrt(double(r.n));
  return r;
}

double prototype_accuracy(const torch::Tensor& support, const torch::Tensor& support_labels, const torch::Tensor& query,
                          const torch::Tensor& query_labels, int64_t ways) {
  torch::Tensor protos = torch::zeros({ways, support.size(1)}, support.options());
  protos.index_add_(0, support_labels, support);
  torch::Tensor counts = torch::bincount(support_labels, {}, ways).to(support.scalar_type()).unsqueeze(1);
  protos = protos / counts;
  torch::Tensor d = torch::cdist(query, protos);  // [Q, ways] Euclidean
  return d.argmin(1).eq(query_labels).to(torch::kDouble).mean().item<double>();
}

void validate_few_shot_options(const FewShotOptions& o) {
  if (o.ways < 2) throw Error(fmt::format("few-shot: --ways must be >= 2, got {}", o.ways));
  if (o.shots < 1) throw Error(fmt::format("few-shot: --shots must be >= 1, got {}", o.shots));
  if (o.queries < 1) throw Error(fmt::format("few-shot: --queries must be >= 1, got {}", o.queries));
  if (o.episodes < 1) throw Error(fmt::format("few-shot: --episodes must be >= 1, got {}", o.episodes));
  if (o.splits.empty()) throw Error("few-shot: no split given");
  if (o.classifiers.empty()) throw Error("few-shot: no classifier given (--classifiers prototype,logreg)");
  std::set<std::string> seen;
  for (const auto& c : o.classifiers) {
    if (c != "prototype" && c != "logreg")
      throw Error("few-shot: unknown classifier '" + c + "' in --classifiers (prototype | logreg)");
    if (!seen.insert(c).second) throw Error("few-shot: classifier '" + c + "' listed twice in --classifiers");
  }
  if (o.l2 && !(*o.l2 >= 0 && std::isfinite(*o.l2)))
    throw Error(fmt::format("few-shot: --l2 must be a finite number >= 0, got {}", *o.l2));
  if (o.features.max_samples < 0)
    throw Error(fmt::format("few-shot: --max-samples must be >= 0, got {}", o.features.max_samples));
  if (o.logreg.max_iter < 1) throw Error(fmt::format("few-shot: logreg max_iter must be >= 1, got {}", o.logreg.max_iter));
}

nlohmann::json few_shot(EvalModel& m, const FewShotOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  validate_few_shot_options(o);
  FeatureOptions fo = o.features;
  fo.name = o.name;
  std::vector<FeatureSet> parts;
  nlohmann::json cache = nlohmann::json::array();
  for (const auto& split : o.splits) {
    parts.push_back(extract_features(m, o.data, split, fo));
    if (!parts.back().cache_file.empty()) cache.push_back(parts.back().cache_file);
  }
  FeatureSet set = parts.size() == 1 ? parts[0] : concat_feature_sets(parts);
  const int64_t C = int64_t(set.classes.size());
  torch::Tensor x = torch::nn::functional::normalize(set.features.to(torch::kDouble),
                                                     torch::nn::functional::NormalizeFuncOptions().dim(1));
  const auto rows = rows_by_class(set.labels, C);
  const auto eligible = eligible_classes(rows, o.shots + o.queries);
  nlohmann::json excluded = nlohmann::json::array();
  for (int64_t c = 0; c < C; ++c)
    if (int64_t(rows[size_t(c)].size()) < o.shots + o.queries) excluded.push_back(set.classes[size_t(c)]);
  if (!excluded.empty())
    spdlog::info("few-shot: {} of {} classes have fewer than {} samples and are never drawn: {}", excluded.size(), C,
                 o.shots + o.queries, excluded.dump());

  const double l2 = o.l2 ? *o.l2 : 1.0 / double(o.ways * o.shots);
  std::map<std::string, std::vector<double>> accs;
  for (int64_t e = 0; e < o.episodes; ++e) {
    Episode ep = sample_episode(rows, o.ways, o.shots, o.queries, o.seed, e);
    torch::Tensor s = x.index_select(0, torch::tensor(ep.support, torch::kLong));
    torch::Tensor q = x.index_select(0, torch::tensor(ep.query, torch::kLong));
    torch::Tensor sl = torch::tensor(ep.support_labels, torch::kLong), ql = torch::tensor(ep.query_labels, torch::kLong);
    for (const auto& c : o.classifiers) {
      double a;
      if (c == "prototype") {
        a = prototype_accuracy(s, sl, q, ql, o.ways);
      } else {
        LogRegOptions lo = o.logreg;
        lo.l2 = l2;
        LogRegModel lr = fit_logreg(s, sl, o.ways, lo);
        torch::NoGradGuard ng;
        a = lr.predict(q).eq(ql).to(torch::kDouble).mean().item<double>();
      }
      accs[c].push_back(a);
    }
  }
  nlohmann::json results = nlohmann::json::object();
  for (const auto& c : o.classifiers) {
    MeanCI ci = mean_ci95(accs[c]);
    results[c] = {{"mean", ci.mean}, {"ci95", ci.ci95 ? nlohmann::json(*ci.ci95) : nlohmann::json()}, {"std", ci.std}};
    spdlog::info("few-shot {} {}-way {}-shot ({}): {:.2f} +- {} % over {} episodes", o.name, o.ways, o.shots, c,
                 100 * ci.mean, ci.ci95 ? fmt::format("{:.2f}", 100 * *ci.ci95) : std::string("n/a (1 episode)"),
                 o.episodes);
  }
  std::string split_desc;
  for (const auto& s : o.splits) split_desc += (split_desc.empty() ? "" : ",") + s;
  return {{"task", "few-shot"},
          {"set", o.name},
          {"split", split_desc},
          {"model", m.describe()},
          {"features", fo.features},
          {"ways", o.ways},
          {"shots", o.shots},
          {"queries", o.queries},
          {"episodes", o.episodes},
          {"seed", o.seed},
          {"num_images", set.size()},
          {"num_classes", C},
          {"eligible_classes", eligible.size()},
          {"excluded_classes", excluded},
          {"skipped", set.skipped},
          {"results", results},
          {"chance", 1.0 / double(o.ways)},
          {"l2", l2},
          {"cache", cache},
          {"seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()}};
}

}  // namespace florence::eval
