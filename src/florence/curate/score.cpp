// Pass 2 of the curation pipeline: relevance scores of the survivors; see score.h.
#include "florence/curate/score.h"

#include <spdlog/spdlog.h>

#include <memory>
#include <string>

#include "florence/core/error.h"
#include "florence/curate/relevance.h"
#include "florence/data/readers.h"
#include "florence/data/webdataset.h"

namespace florence::curate::detail {

namespace {

/// The alive samples of one shard, keyed by their record index (RelevanceScorer's contract).
class SurvivorSource : public data::SampleSource {
 public:
  SurvivorSource(std::string path, std::vector<std::pair<uint32_t, uint32_t>> wanted, const Table* table)
      : path_(std::move(path)), wanted_(std::move(wanted)), table_(table) {}
  size_t num_parts() const override { return 1; }
  void read_part(size_t part, const std::function<bool(data::Sample&)>& emit, data::SkipCounts& skips) const override {
    if (part != 0) throw Error("SurvivorSource: part out of range");
    data::ShardReader r(path_);
    data::Sample s;
    uint32_t pos = 0;
    size_t j = 0;
    while (j < wanted_.size() && r.next(s)) {
      if (pos == wanted_[j].first) {
        const uint32_t idx = wanted_[j].second;
        if (table_->keys.get(idx) != s.key)
          throw Error("curate: input shard '" + path_ + "' changed during curation (sample " + std::to_string(pos) + ")");
        s.key = std::to_string(idx);
        if (!emit(s)) return;
        ++j;
      }
      ++pos;
      s = data::Sample{};
    }
    if (j < wanted_.size()) throw Error("curate: input shard '" + path_ + "' changed during curation (fewer samples)");
  }
  std::string describe() const override { return "survivors of " + path_; }

 private:
  std::string path_;
  std::vector<std::pair<uint32_t, uint32_t>> wanted_;  // (pos, record index), by pos
  const Table* table_;
};

}  // namespace

std::vector<Score> score_survivors(const Table& t, const std::vector<InputShard>& inputs, const std::vector<uint32_t>& own,
                                   const std::vector<std::pair<size_t, size_t>>& ranges, RelevanceScorer& scorer,
                                   bool progress) {
  std::vector<Score> mine;
  for (uint32_t gi : own) {
    std::vector<std::pair<uint32_t, uint32_t>> wanted;
    for (size_t i = ranges[gi].first; i < ranges[gi].second; ++i)
      if (t.rec[i].stage == kKept) wanted.emplace_back(t.rec[i].pos, uint32_t(i));
    if (wanted.empty()) continue;
    for (const auto& [idx, s] : scorer.score(std::make_shared<SurvivorSource>(inputs[gi].path, std::move(wanted), &t)))
      mine.push_back({idx, s});
    if (progress) spdlog::info("curate: relevance: {} pair(s) scored", mine.size());
  }
  return mine;
}

}  // namespace florence::curate::detail
