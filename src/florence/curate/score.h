#pragma once
// Internal to the curation pipeline (pipeline.h): pass 2, the relevance scores. The survivors of
// the first four stages are read again, shard by shard, and scored by the relevance model
// (curate/relevance.h); a shard is one scoring call, so batches never span shards and the scores
// are the same numbers in any process layout.
#include <cstdint>
#include <utility>
#include <vector>

#include "florence/curate/decisions.h"
#include "florence/curate/pipeline.h"
#include "florence/curate/records.h"

namespace florence::curate {
class RelevanceScorer;
}

namespace florence::curate::detail {

/// Scores the alive records of the shards `own` (this rank's). Pairs the scorer's loader drops
/// get no score. Logs progress per shard when `progress`. Throws florence::Error when an input
/// shard changed since pass 1, or as the scorer.
std::vector<Score> score_survivors(const Table& t, const std::vector<InputShard>& inputs, const std::vector<uint32_t>& own,
                                   const std::vector<std::pair<size_t, size_t>>& ranges, RelevanceScorer& scorer,
                                   bool progress);

}  // namespace florence::curate::detail
