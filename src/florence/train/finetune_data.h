#pragma once
// Data of the training tasks. Fine-tuning views (finetune.h): a corpus split as a source, the
// samples of a split whose class is among the training classes (relabelled to their ids), or its
// image-text pairs, each optionally a seeded random subset. And the loader set-up the tasks share:
// the options of a training epoch and the skip past the batches a resumed checkpoint consumed.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "florence/data/loader.h"
#include "florence/data/readers.h"
#include "florence/train/options.h"

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

/// Loader options of a training epoch from the engine options: o.batch_size, o.seed, o.workers,
/// full batches only (drop_last), `image_size` pixels; augment "rrc": RandomResizedCrop + flip,
/// else the whole image resized (crop_pct 1). Normalisation, texts and context length stay at the
/// LoaderOptions defaults for the caller to set.
data::LoaderOptions training_loader_options(const RunOptions& o, const std::string& augment, int image_size);

/// Starts `epoch` on `loader` and reads past the `consumed` batches of it that a resumed checkpoint
/// had trained on (the epoch's order is seeded, so the rest follows exactly). Throws florence::Error
/// when the epoch has fewer batches than that.
void start_epoch_after(data::Loader& loader, int64_t epoch, int64_t consumed);

}  // namespace florence::train
