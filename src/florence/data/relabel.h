#pragma once
// Classification views of any sample source, for the transfer tasks (linear probe, few-shot,
// fine-tuning): which class each sample belongs to, a seeded subset of the samples, and a source
// that emits exactly the chosen samples with `label` set to their class id.
//
// Class of a sample (the rule the zero-shot evaluation uses, eval/zero_shot.h class_of):
// the string meta field `class_field` (the corpora of corpus.h write "category"), else the meta
// field "class" (ImageFolderSource), else classes()[label] of the source when it names its
// classes; empty when none applies. Class ids index the sorted (byte order) class names.
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "florence/data/readers.h"

namespace florence::data {

/// The class name of one sample by the rule above ("" when it has none).
std::string sample_class(const Sample& s, const std::vector<std::string>& source_classes,
                         const std::string& class_field);

struct ClassIndex {
  std::vector<std::string> classes;  ///< sorted distinct class names
  std::vector<std::string> keys;     ///< samples with a class, source order
  std::vector<int64_t> labels;       ///< class id of each key
  SkipCounts skipped;                ///< "no_class", "duplicate_key" and the source's read-time reasons
  /// Number of samples per class id.
  std::vector<int64_t> counts() const;
};

/// One pass over `source` that reads sample metadata (no image is decoded) and records the class
/// of every sample. Samples without a class are counted under "no_class" (first few logged); a
/// key seen twice keeps its first occurrence and counts "duplicate_key".
ClassIndex index_classes(const SampleSource& source, const std::string& class_field = "category");

/// Positions of a seeded uniform random subset of k out of n items (partial Fisher-Yates with
/// data::uniform_int, platform independent), sorted ascending. k >= n returns 0..n-1.
std::vector<size_t> seeded_subset(size_t n, size_t k, uint64_t seed);

/// A view of `base` that emits only the samples whose key is in `labels`, with Sample::label set
/// to the mapped id (other samples are passed over silently: they are not part of the view).
/// Parts are the base's parts, so loaders shuffle and split it like the base.
class RelabelledSource : public SampleSource {
 public:
  /// Throws florence::Error for a null base.
  RelabelledSource(std::shared_ptr<const SampleSource> base, std::unordered_map<std::string, int64_t> labels,
                   std::vector<std::string> class_names);
  size_t num_parts() const override { return base_->num_parts(); }
  void read_part(size_t part, const std::function<bool(Sample&)>& emit, SkipCounts& skips) const override;
  /// -1 (streaming, so loaders use their shuffle buffer) when the base is streaming, else the
  /// number of selected samples.
  int64_t size_hint() const override { return base_->size_hint() < 0 ? -1 : int64_t(labels_.size()); }
  std::string describe() const override;

 private:
  std::shared_ptr<const SampleSource> base_;
  std::unordered_map<std::string, int64_t> labels_;
};

/// The view of `index` restricted to the given positions into index.keys (all when empty).
std::shared_ptr<RelabelledSource> relabelled_view(std::shared_ptr<const SampleSource> base, const ClassIndex& index,
                                                  const std::vector<size_t>& positions = {});

}  // namespace florence::data
