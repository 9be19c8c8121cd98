#pragma once
// Frozen image features of a labelled data set, for the transfer evaluations (linear probe,
// few-shot), cached on disk so that a set is encoded once per model and reused by every sweep,
// episode and re-run.
//
// Features (--features):
//   pooled  the image tower's pooled feature before the projection, [N, C_img] (final LayerNorm,
//           global average pooling): what CLIP's linear probes use ("features before the linear
//           projection to the embedding space", Radford et al. 2021 §3.2). The default.
//   embed   the L2-normalised joint-space embedding, [N, D] (FlorenceModel::encode_image).
// Both with the model's eval preprocessing (encode.h), in source order.
//
// Class of a sample: the rule of zero_shot.h class_of() (meta `class_field`, else meta "class",
// else the source's class names); samples without one are counted under skipped["no_class"].
// Class ids index the set's class names sorted by byte order.
//
// Subsets: max_samples > 0 keeps a seeded uniform random subset of that many samples (chosen
// from a pass over the sample metadata that decodes no pixels, so only the kept images are
// decoded), in source order.
//
// Cache: CACHE_DIR/<name>_<split>_<features>_<hash>.safetensors with tensors "features" [N, F]
// float32 and "labels" [N] int64, and metadata "florence.features" = the JSON that identifies the
// content (checkpoint path, size and modification time, model, data spec, split, features,
// preprocessing, class field, subset size and seed, random-init seed) plus "classes" and
// "skipped". A file is reused only when that JSON matches exactly; it is written atomically.
#include <torch/types.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "florence/data/readers.h"
#include "florence/eval/encode.h"

namespace florence::eval {

struct FeatureOptions {
  std::string features = "pooled";     ///< "pooled" | "embed"
  std::string class_field = "category";
  int64_t max_samples = 0;             ///< 0 = all, else a seeded random subset of this size (>= 0)
  uint64_t seed = 0;                   ///< subset seed
  std::string cache_dir;               ///< empty = no cache
  std::string name;                    ///< set name for cache files and logs
  /// Identifies a randomly initialised model in the cache key (its init seed); ignored when the
  /// model has a checkpoint.
  int64_t random_init_seed = -1;
};

struct FeatureSet {
  torch::Tensor features;             ///< [N, F] float32 CPU
  torch::Tensor labels;               ///< [N] int64 CPU, ids into `classes`
  std::vector<std::string> classes;   ///< class names, sorted
  data::SkipCounts skipped;           ///< dropped samples by reason
  std::string cache_file;             ///< the cache file used or written ("" without a cache)
  bool from_cache = false;
  double seconds = 0;                 ///< encoding time (0 when read from the cache)
  int64_t size() const { return features.defined() ? features.size(0) : 0; }
};

/// Encodes (or reads from the cache) the labelled images of `data_spec` (open_source() forms) /
/// `split`. Throws florence::Error for an unknown `features` kind, max_samples < 0, an unusable
/// source, or a set without any labelled image. `classes` lists every class of the split, also
/// those a max_samples subset happens to miss.
FeatureSet extract_features(EvalModel& m, const std::string& data_spec, const std::string& split,
                            const FeatureOptions& options);

/// Re-indexes `set` onto the class list `classes` (e.g. the training split's): rows whose class
/// is not in it are dropped and counted under skipped["class_not_in_train"].
FeatureSet align_classes(const FeatureSet& set, const std::vector<std::string>& classes);

/// Concatenates sets (classes become the sorted union; labels re-indexed).
FeatureSet concat_feature_sets(const std::vector<FeatureSet>& sets);

}  // namespace florence::eval
