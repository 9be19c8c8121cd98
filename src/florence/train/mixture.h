#pragma once
// Weighted, deterministic mixing of pretraining data sources, and the per-kind normalisation of
// their samples (image-text pairs vs classification data).
//
// A MixtureSource is itself a data::SampleSource, so the threaded Loader reads it like any other.
// Its parts are a table of (input, part) slots built once from a seed:
//   * no input has an explicit weight: the table is the concatenation of every input's parts
//     (each part exactly once; the Loader then shuffles the order);
//   * otherwise (missing weights count as 1): the table has as many slots as all inputs have
//     parts together (or `num_slots` when given); each slot picks input k with probability
//     w_k / sum(w) from a generator seeded by `seed`, and the part within input k is taken
//     round-robin through a seeded permutation of its parts, so an over-weighted input repeats
//     its parts evenly and an under-weighted one uses a seeded subset.
// The weight is therefore the expected share of PARTS: per-sample sources (manifests, image
// folders) mix by samples; shard sources mix by shards (equal-size shards = by samples). The
// trainer builds one mixture per epoch with seed (seed, epoch), so subsets differ between epochs
// and a resumed run rebuilds the same table.
//
// Sample normalisation done in read_part():
//   * kPairs:    label := -1 (UniCL derives the label from the text); text kept as is.
//   * kLabelled: the class name is classes()[label] of the wrapped source when it defines class
//                names (with '_' -> ' '), else the sample's text (ImageFolder / Fashion-MNIST
//                shards carry the class name as text); text := class name and
//                label := class_label(cleaned class name), a non-negative id (see below).
//                Samples without a class (label < 0 and no name) are skipped and counted under
//                "labelled_without_class".
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "florence/data/readers.h"

namespace florence::train {

enum class SourceKind { kPairs, kLabelled };

struct MixtureInput {
  std::shared_ptr<const data::SampleSource> source;
  double weight = -1;  ///< < 0: not given (see the table rules above); 0 excludes the input
  SourceKind kind = SourceKind::kPairs;
  std::string spec;  ///< what the user wrote (for logs)
};

class MixtureSource : public data::SampleSource {
 public:
  /// Throws florence::Error when `inputs` is empty, an input has no source or no parts, a weight
  /// is not finite, or all given weights are 0.
  MixtureSource(std::vector<MixtureInput> inputs, uint64_t seed, int64_t num_slots = -1);

  size_t num_parts() const override { return table_.size(); }
  void read_part(size_t part, const std::function<bool(data::Sample&)>& emit,
                 data::SkipCounts& skips) const override;
  int64_t size_hint() const override { return size_hint_; }
  std::string describe() const override;

  /// (input index, part of that input) of every slot, in table order.
  const std::vector<std::pair<int, size_t>>& table() const { return table_; }
  const std::vector<MixtureInput>& inputs() const { return inputs_; }

 private:
  std::vector<MixtureInput> inputs_;
  std::vector<std::pair<int, size_t>> table_;
  int64_t size_hint_ = -1;
};

/// UniCL label of a class name for classification data: the FNV-1a 64-bit hash of the cleaned
/// name (loss::text_label) with the top bit cleared, i.e. a non-negative id in [0, 2^63). Class
/// labels are therefore disjoint from text labels (always negative, see loss/unicl.h), and two
/// labelled sets that share a class name share its label. Stable across runs and machines.
int64_t class_label(std::string_view cleaned_class_name);

/// Splits "SPEC[:WEIGHT]": when the text after the last ':' parses fully as a number it is the
/// weight, else the whole string is the spec and the weight is -1 (not given). Throws
/// florence::Error on a negative or non-finite weight or an empty spec.
std::pair<std::string, double> parse_weighted_spec(const std::string& text);

/// Opens one source: kPairs + shards spec (data::list_shards forms) for `--shards`; a manifest
/// (.jsonl/.json/.tsv) for `--manifest`; for `--labelled`: a manifest file, a directory with
/// *.tar shards, a directory of class folders (ImageFolder), or a shard pattern.
/// `flag` is "shards", "manifest" or "labelled". Throws florence::Error naming the path.
std::shared_ptr<const data::SampleSource> open_source(const std::string& flag, const std::string& spec);

}  // namespace florence::train
