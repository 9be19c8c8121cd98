#pragma once
// Internal to the curation pipeline (pipeline.h): pass 1, the scan. Each of this rank's input
// shards is read once; every sample is decoded and hashed into a Record (records.h), the samples
// the shard reader drops are recorded with their keys, and unreadable or truncated shards are
// noted. Nothing but the records outlives the sample being processed.
#include <cstdint>
#include <vector>

#include "florence/curate/pipeline.h"
#include "florence/curate/records.h"

namespace florence::curate {
class EntryList;
}

namespace florence::curate::detail {

/// Pass 1 over the shards `own` (indices into `inputs`): one reader thread feeds `threads`
/// workers through a bounded queue (at most 4 * threads batches of 16 samples in flight). The
/// table's records are sorted by (shard, pos); with `entries` (entry-list balancing) each record
/// also gets the entries its text matches. Per-sample problems become record flags or Dropped
/// entries and unreadable shards a logged skip; rethrows the first error of a thread otherwise.
Table scan(const std::vector<InputShard>& inputs, const std::vector<uint32_t>& own, const CurateOptions& opt,
           const EntryList* entries, int threads);

/// While alive, the default logger drops data::ShardReader's warnings: passes 2 and 3 read the
/// shards again and the reader would repeat, sample by sample, what pass 1 logged. Process-wide
/// and counted, so ranks run as threads (tests) restore the original logger only when the last
/// one leaves.
class ReaderWarningFilter {
 public:
  ReaderWarningFilter();
  ~ReaderWarningFilter();
  ReaderWarningFilter(const ReaderWarningFilter&) = delete;
  ReaderWarningFilter& operator=(const ReaderWarningFilter&) = delete;
};

}  // namespace florence::curate::detail
