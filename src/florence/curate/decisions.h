#pragma once
// Internal to the curation pipeline (pipeline.h): the decision of each stage on the global record
// table (records.h). A decision only reads records and marks removals (stage, reason,
// duplicate_of, distance); it never reads a shard, so every rank takes the same decisions on the
// same table. Each returns the stage's section of report.json (null-free JSON object).
#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

#include "florence/curate/pipeline.h"
#include "florence/curate/records.h"

namespace florence::curate {
class EntryList;
}

namespace florence::curate::detail {

/// Marks record `r` removed by `stage` for `reason` (duplicate_of: the record it repeats).
void drop_record(Record& r, Stage stage, Reason reason, uint32_t duplicate_of = kNone, int distance = 0);

/// validate: the scan's flags (undecodable, too large, empty text unless allowed, text too long),
/// then repeated keys within one input (`inputs[shard].input`; the first occurrence in input
/// order stays): samples of different inputs never collide, their outputs go to separate folders.
void decide_validate(Table& t, const CurateOptions& opt, const std::vector<InputShard>& inputs);

/// small: decoded images whose shorter side is below opt.min_size.
void decide_small(Table& t, const CurateOptions& opt);

/// exact: equal pixel hashes; the group's representative (largest, ties by key) stays.
nlohmann::json decide_exact(Table& t, const CurateOptions& opt);

/// A near-duplicate cluster: its kept representative and removed members (most distant first,
/// then by key), record indices.
struct Cluster {
  uint32_t rep = 0;
  std::vector<uint32_t> members;
  int max_distance = 0;
};

/// near: perceptual hashes within opt.near_dup_threshold bits (curate/cluster.h); fills
/// `clusters` (for the montage) and returns the stage's statistics with the index's.
nlohmann::json decide_near(Table& t, const CurateOptions& opt, int threads, std::vector<Cluster>& clusters);

/// What the decisions produced, for the report: each stage's section (null when it did not run),
/// the near-duplicate clusters (montage), the records whose text the balance section quotes, and
/// the seconds spent deciding.
struct Decisions {
  nlohmann::json exact = nullptr, near = nullptr, relevance = nullptr, balance = nullptr;
  std::vector<Cluster> clusters;
  std::vector<uint32_t> examples;
  double seconds = 0;
};

/// A relevance score of record `idx` (exchanged between ranks as bytes).
struct Score {
  uint32_t idx;
  float value;
};

/// relevance: stores `scores` in the records, then removes the alive records scored below the
/// cut (curate/relevance.h relevance_cut) and those without a score ("not_scored"). `model`:
/// the scorer's description for the report.
nlohmann::json decide_relevance(Table& t, const CurateOptions& opt, const std::vector<Score>& scores,
                                const nlohmann::json& model);

/// balance: MetaCLIP balancing over the alive records (curate/balance.h), over `entries` when
/// given, else over the exact text. Fills `examples` with a record per most frequent text (text
/// mode) so that pass 3 can quote the texts in the report.
nlohmann::json decide_balance(Table& t, const CurateOptions& opt, const EntryList* entries, std::vector<uint32_t>& examples);

}  // namespace florence::curate::detail
