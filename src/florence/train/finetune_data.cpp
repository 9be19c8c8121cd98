// Fine-tuning data views; see finetune_data.h.
#include "florence/train/finetune_data.h"

#include <filesystem>
#include <map>

#include "florence/core/error.h"
#include "florence/data/relabel.h"
#include "florence/train/mixture.h"

namespace florence::train {

namespace fs = std::filesystem;

namespace {

/// The data spec of one split: DATA/<split> when that folder exists; DATA itself when split is
/// "" ; otherwise "" (no such split).
std::string split_spec(const std::string& data, const std::string& split) {
  if (split.empty()) return data;
  std::error_code ec;
  if (fs::is_directory(fs::path(data) / split, ec)) return (fs::path(data) / split).string();
  return {};
}

}  // namespace

std::shared_ptr<const data::SampleSource> open_split(const std::string& data, const std::string& split, bool pairs) {
  const std::string spec = split_spec(data, split);
  if (spec.empty()) return nullptr;
  const std::string ext = fs::path(spec).extension().string();
  if (pairs && (ext == ".jsonl" || ext == ".json" || ext == ".tsv")) return open_source("manifest", spec);
  return open_source(pairs ? "shards" : "labelled", spec);
}


ClassView class_view(std::shared_ptr<const data::SampleSource> src, const std::string& class_field,
                     const std::vector<std::string>& classes, int64_t max_samples, uint64_t seed) {
  ClassView v;
  const data::ClassIndex idx = data::index_classes(*src, class_field);
  v.skipped = idx.skipped;
  std::map<std::string, int64_t> ids;
  for (size_t i = 0; i < classes.size(); ++i) ids[classes[i]] = int64_t(i);
  data::ClassIndex mapped;
  mapped.classes = classes;
  for (size_t i = 0; i < idx.keys.size(); ++i) {
    auto it = ids.find(idx.classes[size_t(idx.labels[i])]);
    if (it == ids.end()) {
      ++v.skipped["class_not_in_train"];
      continue;
    }
    mapped.keys.push_back(idx.keys[i]);
    mapped.labels.push_back(it->second);
  }
  std::vector<size_t> subset;
  if (max_samples > 0 && size_t(max_samples) < mapped.keys.size())
    subset = data::seeded_subset(mapped.keys.size(), size_t(max_samples), seed);
  v.size = subset.empty() ? int64_t(mapped.keys.size()) : int64_t(subset.size());
  v.class_counts.assign(classes.size(), 0);
  if (subset.empty())
    for (int64_t l : mapped.labels) ++v.class_counts[size_t(l)];
  else
    for (size_t i : subset) ++v.class_counts[size_t(mapped.labels[i])];
  if (v.size > 0) v.source = data::relabelled_view(std::move(src), mapped, subset);
  return v;
}

ClassView pair_view(std::shared_ptr<const data::SampleSource> src, int64_t max_samples, uint64_t seed) {
  ClassView v;
  data::ClassIndex idx;
  for (size_t p = 0; p < src->num_parts(); ++p)
    src->read_part(
        p,
        [&](data::Sample& s) {
          if (s.text.find_first_not_of(" \t\r\n") == std::string::npos) {
            ++v.skipped["empty_text"];
            return true;
          }
          idx.keys.push_back(s.key);
          idx.labels.push_back(-1);
          return true;
        },
        v.skipped);
  std::vector<size_t> subset;
  if (max_samples > 0 && size_t(max_samples) < idx.keys.size())
    subset = data::seeded_subset(idx.keys.size(), size_t(max_samples), seed);
  v.size = subset.empty() ? int64_t(idx.keys.size()) : int64_t(subset.size());
  if (v.size > 0) v.source = data::relabelled_view(std::move(src), idx, subset);
  return v;
}

data::LoaderOptions training_loader_options(const RunOptions& o, const std::string& augment, int image_size) {
  data::LoaderOptions lo;
  lo.batch_size = o.batch_size;
  lo.image_size = image_size;
  lo.train = augment == "rrc";
  lo.hflip = augment == "rrc";
  lo.crop_pct = 1.0;
  lo.seed = o.seed;
  lo.num_workers = o.workers;
  lo.drop_last = true;
  return lo;
}

void start_epoch_after(data::Loader& loader, int64_t epoch, int64_t consumed) {
  loader.start_epoch(epoch);
  data::Batch b;
  for (int64_t i = 0; i < consumed; ++i)
    if (!loader.next(b))
      throw Error(fmt::format("resume: epoch {} has only {} batches, the checkpoint consumed {}", epoch, i, consumed));
}

}  // namespace florence::train
