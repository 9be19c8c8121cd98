// Frozen features of labelled sets with an on-disk cache (see features.h).
#include "florence/eval/features.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <cctype>
#include <chrono>
#include <filesystem>
#include <map>
#include <set>

#include "florence/core/checkpoint.h"
#include "florence/core/error.h"
#include "florence/data/loader.h"
#include "florence/data/relabel.h"

namespace fs = std::filesystem;

namespace florence::eval {

namespace {

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

std::string safe_name(const std::string& s) {
  std::string o;
  for (char c : s) o += (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_') ? c : '_';
  return o.empty() ? std::string("set") : o;
}

nlohmann::json cache_identity(const EvalModel& m, const std::string& data_spec, const std::string& split,
                              const FeatureOptions& o) {
  nlohmann::json ck = nullptr;
  if (!m.checkpoint.empty()) {
    std::error_code ec;
    const fs::path p = fs::absolute(m.checkpoint);
    const auto size = fs::file_size(p, ec);
    const auto mtime = fs::last_write_time(p, ec);
    ck = {{"path", p.lexically_normal().string()},
          {"size", ec ? -1 : int64_t(size)},
          {"mtime", int64_t(mtime.time_since_epoch().count())}};
  }
  return {{"checkpoint", ck},
          {"random_init_seed", m.checkpoint.empty() ? o.random_init_seed : -1},
          {"model", m.spec.name},
          {"data", fs::absolute(data_spec).lexically_normal().string()},
          {"split", split},
          {"features", o.features},
          {"class_field", o.class_field},
          {"max_samples", o.max_samples},
          {"subset_seed", o.max_samples > 0 ? int64_t(o.seed) : 0},
          {"preprocess", m.preprocess.to_json()},
          {"precision", m.precision}};
}

torch::Tensor forward_features(EvalModel& m, const torch::Tensor& images, const std::string& kind) {
  if (kind == "embed") return m.model->encode_image(images);
  return m.model->image_features(images);
}

}  // namespace

FeatureSet extract_features(EvalModel& m, const std::string& data_spec, const std::string& split,
                            const FeatureOptions& o) {
  if (o.features != "pooled" && o.features != "embed")
    throw Error("--features must be 'pooled' or 'embed', got '" + o.features + "'");
  if (o.max_samples < 0) throw Error(fmt::format("features: the subset size must be >= 0 (0 = all), got {}", o.max_samples));
  const auto t0 = std::chrono::steady_clock::now();
  const nlohmann::json identity = cache_identity(m, data_spec, split, o);
  fs::path cache_file;
  if (!o.cache_dir.empty()) {
    cache_file = fs::path(o.cache_dir) / fmt::format("{}_{}_{}_{:016x}.safetensors", safe_name(o.name), safe_name(split),
                                                     o.features, fnv1a(identity.dump()));
    std::error_code ec;
    if (fs::is_regular_file(cache_file, ec)) {
      try {
        core::SafetensorsFile f = core::load_safetensors(cache_file.string());
        auto meta = nlohmann::json::parse(f.metadata.at("florence.features"));
        if (meta.at("identity") == identity) {
          FeatureSet s;
          s.features = f.tensors.at("features").to(torch::kFloat);
          s.labels = f.tensors.at("labels").to(torch::kLong);
          s.classes = meta.at("classes").get<std::vector<std::string>>();
          s.skipped = meta.at("skipped").get<data::SkipCounts>();
          s.cache_file = cache_file.string();
          s.from_cache = true;
          spdlog::info("features: {} {} ({} x {}) from cache {}", o.name, split, s.features.size(0),
                       s.features.size(1), cache_file.string());
          return s;
        }
        spdlog::info("features: cache {} belongs to other inputs; re-encoding", cache_file.string());
      } catch (const std::exception& e) {
        spdlog::warn("features: ignoring unreadable cache file {} ({})", cache_file.string(), e.what());
      }
    }
  }

  std::shared_ptr<data::SampleSource> source = open_source(data_spec, split);
  const data::ClassIndex index = data::index_classes(*source, o.class_field);
  if (index.keys.empty())
    throw Error(fmt::format("features: no labelled image in '{}' split '{}' (class field '{}')", data_spec, split,
                            o.class_field));
  std::vector<size_t> subset;
  if (o.max_samples > 0 && size_t(o.max_samples) < index.keys.size())
    subset = data::seeded_subset(index.keys.size(), size_t(o.max_samples), o.seed);
  auto view = data::relabelled_view(source, index, subset);

  data::Loader loader(view, eval_loader_options(m, /*require_text=*/false), nullptr);
  std::vector<torch::Tensor> feats, labels;
  {
    torch::NoGradGuard ng;
    loader.start_epoch(0);
    data::Batch b;
    while (loader.next(b)) {
      feats.push_back(forward_features(m, b.images.to(m.device), o.features).to(torch::kCPU, torch::kFloat));
      labels.push_back(b.labels.clone());
    }
    loader.stop();
  }
  FeatureSet s;
  s.skipped = index.skipped;
  for (const auto& [k, v] : loader.stats().skipped) s.skipped[k] += v;
  if (feats.empty()) throw Error(fmt::format("features: no image of '{}' split '{}' could be decoded", data_spec, split));
  s.features = torch::cat(feats, 0);
  s.labels = torch::cat(labels, 0);
  s.classes = index.classes;
  s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  spdlog::info("features: {} {}: {} images x {} ({}), {} classes, {:.1f} s", o.name, split, s.features.size(0),
               s.features.size(1), o.features, s.classes.size(), s.seconds);
  if (!cache_file.empty()) {
    fs::create_directories(cache_file.parent_path());
    nlohmann::json meta = {{"identity", identity}, {"classes", s.classes}, {"skipped", s.skipped}};
    core::save_safetensors(cache_file.string(), {{"features", s.features}, {"labels", s.labels}},
                           {{"florence.features", meta.dump()}});
    s.cache_file = cache_file.string();
  }
  return s;
}

FeatureSet align_classes(const FeatureSet& set, const std::vector<std::string>& classes) {
  std::map<std::string, int64_t> ids;
  for (size_t i = 0; i < classes.size(); ++i) ids[classes[i]] = int64_t(i);
  std::vector<int64_t> map(set.classes.size(), -1);
  for (size_t i = 0; i < set.classes.size(); ++i) {
    auto it = ids.find(set.classes[i]);
    if (it != ids.end()) map[i] = it->second;
  }
  FeatureSet out;
  out.classes = classes;
  out.skipped = set.skipped;
  out.cache_file = set.cache_file;
  out.from_cache = set.from_cache;
  out.seconds = set.seconds;
  std::vector<int64_t> keep, lab;
  auto acc = set.labels.accessor<int64_t, 1>();
  for (int64_t i = 0; i < set.labels.size(0); ++i) {
    const int64_t l = map[size_t(acc[i])];
    if (l < 0) {
      ++out.skipped["class_not_in_train"];
      continue;
    }
    keep.push_back(i);
    lab.push_back(l);
  }
  out.features = set.features.index_select(0, torch::tensor(keep, torch::kLong));
  out.labels = torch::tensor(lab, torch::kLong);
  return out;
}

FeatureSet concat_feature_sets(const std::vector<FeatureSet>& sets) {
  if (sets.empty()) throw Error("concat_feature_sets: no sets");
  std::set<std::string> all;
  for (const auto& s : sets) all.insert(s.classes.begin(), s.classes.end());
  const std::vector<std::string> classes(all.begin(), all.end());
  FeatureSet out;
  out.classes = classes;
  std::vector<torch::Tensor> f, l;
  for (const auto& s : sets) {
    FeatureSet a = align_classes(s, classes);
    f.push_back(a.features);
    l.push_back(a.labels);
    for (const auto& [k, v] : s.skipped) out.skipped[k] += v;
    out.seconds += s.seconds;
    out.from_cache = out.from_cache || s.from_cache;
  }
  out.features = torch::cat(f, 0);
  out.labels = torch::cat(l, 0);
  return out;
}

}  // namespace florence::eval
