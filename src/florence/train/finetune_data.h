#pragma once
// Fine-tuning data views (finetune.h): a corpus split as a source, the samples of a split whose
// class is among the training classes (relabelled to their ids), or its image-text pairs, each
// optionally a seeded random subset.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "florence/data/readers.h"

namespace florence::train {

/// The source of split `split` of `data`: DATA/<split> when that folder exists, DATA itself when
/// split is "", else null. `pairs`: image-text data (shards, or a manifest file), else labelled
/// data (shards, manifest or class folders).
std::shared_ptr<const data::SampleSource> open_split(const std::string& data, const std::string& split, bool pairs);

struct ClassView {
  std::shared_ptr<const data::SampleSource> source;  ///< null when no sample is kept
  int64_t size = 0;
  data::SkipCounts skipped;
  std::vector<int64_t> class_counts;  ///< kept samples per class id (classify views only)
};

/// Samples of `src` whose class (meta `class_field`, data/relabel.h) is in `classes`, labelled with
/// its index there; others are counted under "class_not_in_train". `max_samples` > 0: a subset of
/// that size drawn with `seed`.
ClassView class_view(std::shared_ptr<const data::SampleSource> src, const std::string& class_field,
                     const std::vector<std::string>& classes, int64_t max_samples, uint64_t seed);

/// Image-text view for retrieval fine-tuning: samples with a non-empty text (label -1); empty
/// texts are counted under "empty_text".
ClassView pair_view(std::shared_ptr<const data::SampleSource> src, int64_t max_samples, uint64_t seed);

}  // namespace florence::train
