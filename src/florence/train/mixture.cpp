#include "florence/train/mixture.h"

#include <spdlog/spdlog.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <numeric>
#include <random>

#include "florence/core/error.h"
#include "florence/data/transforms.h"
#include "florence/data/webdataset.h"
#include "florence/loss/unicl.h"
#include "florence/text/tokenizer.h"
#include "florence/train/seeding.h"

namespace florence::train {

namespace fs = std::filesystem;

int64_t class_label(std::string_view cleaned_class_name) {
  return loss::text_label(cleaned_class_name) & INT64_MAX;
}

MixtureSource::MixtureSource(std::vector<MixtureInput> inputs, uint64_t seed, int64_t num_slots)
    : inputs_(std::move(inputs)) {
  if (inputs_.empty()) throw Error("data mixture: no data source given");
  bool any_weight = false;
  double total_weight = 0;
  size_t total_parts = 0;
  for (const auto& in : inputs_) {
    if (!in.source) throw Error(fmt::format("data mixture: source '{}' is null", in.spec));
    if (in.source->num_parts() == 0) throw Error(fmt::format("data mixture: source '{}' is empty", in.spec));
    if (!std::isfinite(in.weight)) throw Error(fmt::format("data mixture: weight of '{}' is not finite", in.spec));
    if (in.weight >= 0) any_weight = true;
    total_parts += in.source->num_parts();
  }
  if (!any_weight) {
    for (size_t k = 0; k < inputs_.size(); ++k) {
      for (size_t p = 0; p < inputs_[k].source->num_parts(); ++p) table_.emplace_back(int(k), p);
    }
  } else {
    std::vector<double> w;
    for (const auto& in : inputs_) w.push_back(in.weight < 0 ? 1.0 : in.weight);
    total_weight = std::accumulate(w.begin(), w.end(), 0.0);
    if (!(total_weight > 0)) throw Error("data mixture: all source weights are 0");
    const size_t slots = num_slots > 0 ? size_t(num_slots) : total_parts;
    std::mt19937_64 rng(seed_mix({kTagMixture, seed}));
    // Per input: a seeded permutation of its parts, walked round-robin (re-drawn at each wrap).
    std::vector<std::vector<size_t>> perm(inputs_.size());
    std::vector<size_t> cursor(inputs_.size(), 0);
    auto reshuffle = [&](size_t k) {
      auto& p = perm[k];
      p.resize(inputs_[k].source->num_parts());
      std::iota(p.begin(), p.end(), size_t{0});
      for (size_t i = p.size(); i > 1; --i) std::swap(p[i - 1], p[data::uniform_int(rng, i)]);
      cursor[k] = 0;
    };
    for (size_t k = 0; k < inputs_.size(); ++k) reshuffle(k);
    table_.reserve(slots);
    for (size_t s = 0; s < slots; ++s) {
      double r = data::uniform01(rng) * total_weight;
      size_t k = 0;
      while (k + 1 < w.size() && (r >= w[k] || w[k] == 0)) {
        r -= w[k];
        ++k;
      }
      if (w[k] == 0) {  // rounding at the top end landed on a zero-weight input: take the last positive
        for (size_t j = w.size(); j-- > 0;) {
          if (w[j] > 0) {
            k = j;
            break;
          }
        }
      }
      if (cursor[k] == perm[k].size()) reshuffle(k);
      table_.emplace_back(int(k), perm[k][cursor[k]++]);
    }
  }
  // Size hint: exact when every input knows its size and has one sample per part.
  bool exact = true;
  for (const auto& in : inputs_) {
    if (in.source->size_hint() < 0 || size_t(in.source->size_hint()) != in.source->num_parts()) exact = false;
  }
  size_hint_ = exact ? int64_t(table_.size()) : -1;
  for (const auto& in : inputs_) {
    for (const auto& [reason, n] : in.source->load_skips()) load_skips_[reason] += n;
  }
}

void MixtureSource::read_part(size_t part, const std::function<bool(data::Sample&)>& emit,
                              data::SkipCounts& skips) const {
  if (part >= table_.size()) {
    throw Error(fmt::format("data mixture: part {} out of range ({} parts)", part, table_.size()));
  }
  const auto [k, inner] = table_[part];
  const MixtureInput& in = inputs_[size_t(k)];
  if (in.kind == SourceKind::kPairs) {
    in.source->read_part(inner, [&](data::Sample& s) {
      s.label = -1;
      return emit(s);
    }, skips);
    return;
  }
  const auto& classes = in.source->classes();
  in.source->read_part(inner, [&](data::Sample& s) {
    std::string name;
    if (!classes.empty() && s.label >= 0 && size_t(s.label) < classes.size()) {
      name = classes[size_t(s.label)];
      for (char& c : name) {
        if (c == '_') c = ' ';
      }
    } else if (s.label >= 0) {
      name = s.text;
    }
    std::string cleaned;
    if (!name.empty() && text::find_invalid_utf8(name) < 0) cleaned = text::Tokenizer::clean(name);
    if (cleaned.empty()) {
      ++skips["labelled_without_class"];
      return true;
    }
    s.text = cleaned;
    s.label = class_label(cleaned);
    return emit(s);
  }, skips);
}

std::string MixtureSource::describe() const {
  std::string s = fmt::format("mixture of {} source(s), {} parts:", inputs_.size(), table_.size());
  std::vector<size_t> counts(inputs_.size(), 0);
  for (const auto& [k, p] : table_) ++counts[size_t(k)];
  for (size_t k = 0; k < inputs_.size(); ++k) {
    const auto& in = inputs_[k];
    s += fmt::format(" [{} {}{}: {} -> {} slots]", in.kind == SourceKind::kPairs ? "pairs" : "labelled", in.spec,
                     in.weight >= 0 ? fmt::format(" w={}", in.weight) : "", in.source->describe(), counts[k]);
  }
  return s;
}

std::pair<std::string, double> parse_weighted_spec(const std::string& text) {
  std::string spec = text;
  double weight = -1;
  const size_t colon = text.rfind(':');
  if (colon != std::string::npos && colon + 1 < text.size()) {
    const std::string tail = text.substr(colon + 1);
    char* end = nullptr;
    const double v = std::strtod(tail.c_str(), &end);
    if (end && *end == '\0' && end != tail.c_str()) {
      if (!std::isfinite(v) || v < 0) {
        throw Error(fmt::format("data source '{}': weight must be a finite number >= 0", text));
      }
      weight = v;
      spec = text.substr(0, colon);
    }
  }
  if (spec.empty()) throw Error(fmt::format("data source '{}': empty path", text));
  return {spec, weight};
}

std::shared_ptr<const data::SampleSource> open_source(const std::string& flag, const std::string& spec) {
  auto is_manifest = [](const std::string& p) {
    const std::string ext = fs::path(p).extension().string();
    return ext == ".jsonl" || ext == ".json" || ext == ".tsv";
  };
  if (flag == "shards") return data::ShardSource::from_spec(spec);
  if (flag == "manifest") return std::make_shared<data::ManifestSource>(spec);
  if (flag != "labelled") throw Error(fmt::format("unknown data source flag '--{}'", flag));
  std::error_code ec;
  if (fs::is_regular_file(spec, ec) && is_manifest(spec)) return std::make_shared<data::ManifestSource>(spec);
  if (fs::is_directory(spec, ec)) {
    bool has_tar = false;
    for (const auto& e : fs::directory_iterator(spec, ec)) {
      if (e.is_regular_file() && e.path().extension() == ".tar") has_tar = true;
    }
    if (has_tar) return data::ShardSource::from_spec(spec);
    return std::make_shared<data::ImageFolderSource>(spec);
  }
  return data::ShardSource::from_spec(spec);
}

}  // namespace florence::train
