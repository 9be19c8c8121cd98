// Class index, seeded subsets and the relabelled source view (see relabel.h).
#include "florence/data/relabel.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>
#include <numeric>
#include <random>
#include <unordered_set>

#include "florence/core/error.h"
#include "florence/data/transforms.h"

namespace florence::data {

std::string sample_class(const Sample& s, const std::vector<std::string>& source_classes,
                         const std::string& class_field) {
  if (s.meta.is_object()) {
    for (const std::string& f : {class_field, std::string("class")}) {
      auto it = s.meta.find(f);
      if (it != s.meta.end() && it->is_string() && !it->get<std::string>().empty()) return it->get<std::string>();
    }
  }
  if (s.label >= 0 && s.label < int64_t(source_classes.size())) return source_classes[size_t(s.label)];
  return {};
}

std::vector<int64_t> ClassIndex::counts() const {
  std::vector<int64_t> c(classes.size(), 0);
  for (int64_t l : labels) ++c[size_t(l)];
  return c;
}

ClassIndex index_classes(const SampleSource& source, const std::string& class_field) {
  ClassIndex out;
  std::vector<std::string> names;
  std::unordered_set<std::string> seen;
  for (size_t p = 0; p < source.num_parts(); ++p) {
    source.read_part(
        p,
        [&](Sample& s) {
          if (!seen.insert(s.key).second) {
            if (out.skipped["duplicate_key"]++ < 5) spdlog::warn("class index: duplicate key '{}' skipped", s.key);
            return true;
          }
          std::string c = sample_class(s, source.classes(), class_field);
          if (c.empty()) {
            if (out.skipped["no_class"]++ < 5)
              spdlog::warn("class index: sample '{}' has no class (meta '{}'), skipped", s.key, class_field);
            return true;
          }
          out.keys.push_back(s.key);
          names.push_back(std::move(c));
          return true;
        },
        out.skipped);
  }
  std::map<std::string, int64_t> ids;
  for (const auto& n : names) ids.emplace(n, 0);
  int64_t next = 0;
  for (auto& [n, id] : ids) {
    id = next++;
    out.classes.push_back(n);
  }
  out.labels.reserve(names.size());
  for (const auto& n : names) out.labels.push_back(ids.at(n));
  return out;
}

std::vector<size_t> seeded_subset(size_t n, size_t k, uint64_t seed) {
  std::vector<size_t> idx(n);
  std::iota(idx.begin(), idx.end(), size_t(0));
  if (k >= n) return idx;
  std::mt19937_64 rng(seed);
  for (size_t i = 0; i < k; ++i) {
    const size_t j = i + size_t(uniform_int(rng, uint64_t(n - i)));
    std::swap(idx[i], idx[j]);
  }
  idx.resize(k);
  std::sort(idx.begin(), idx.end());
  return idx;
}

RelabelledSource::RelabelledSource(std::shared_ptr<const SampleSource> base,
                                   std::unordered_map<std::string, int64_t> labels,
                                   std::vector<std::string> class_names)
    : base_(std::move(base)), labels_(std::move(labels)) {
  if (!base_) throw Error("RelabelledSource: no base source");
  classes_ = std::move(class_names);
  load_skips_ = base_->load_skips();
}

void RelabelledSource::read_part(size_t part, const std::function<bool(Sample&)>& emit, SkipCounts& skips) const {
  base_->read_part(
      part,
      [&](Sample& s) {
        auto it = labels_.find(s.key);
        if (it == labels_.end()) return true;
        s.label = it->second;
        return emit(s);
      },
      skips);
}

std::string RelabelledSource::describe() const {
  return std::to_string(labels_.size()) + " labelled samples (" + std::to_string(classes_.size()) + " classes) of " +
         base_->describe();
}

std::shared_ptr<RelabelledSource> relabelled_view(std::shared_ptr<const SampleSource> base, const ClassIndex& index,
                                                  const std::vector<size_t>& positions) {
  std::unordered_map<std::string, int64_t> labels;
  if (positions.empty()) {
    labels.reserve(index.keys.size());
    for (size_t i = 0; i < index.keys.size(); ++i) labels.emplace(index.keys[i], index.labels[i]);
  } else {
    labels.reserve(positions.size());
    for (size_t p : positions) {
      if (p >= index.keys.size()) throw Error("relabelled_view: position out of range");
      labels.emplace(index.keys[p], index.labels[p]);
    }
  }
  return std::make_shared<RelabelledSource>(std::move(base), std::move(labels), index.classes);
}

}  // namespace florence::data
