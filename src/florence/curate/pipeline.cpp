// The curation pipeline: curate() runs the passes and decisions that pipeline.h outlines; each
// part lives in its own file (records / scan / decisions / score / output / report / inputs /
// options .cpp).
#include "florence/curate/pipeline.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <set>

#include "florence/core/error.h"
#include "florence/core/parallel.h"
#include "florence/curate/balance.h"
#include "florence/curate/decisions.h"
#include "florence/curate/output.h"
#include "florence/curate/records.h"
#include "florence/curate/relevance.h"
#include "florence/curate/report.h"
#include "florence/curate/scan.h"
#include "florence/curate/score.h"

namespace florence::curate {

using nlohmann::json;
using namespace detail;

json curate(const CurateOptions& opt, const Collective& coll) {
  opt.validate_options();
  if (coll.world_size < 1 || coll.rank < 0 || coll.rank >= coll.world_size)
    throw Error("curate: bad rank " + std::to_string(coll.rank) + " / world size " + std::to_string(coll.world_size));
  if (coll.world_size > 1 && !coll.all_gather) throw Error("curate: world size > 1 needs an all_gather");
  const auto t_start = Clock::now();
  const int threads = core::resolve_threads(opt.threads);
  const std::vector<InputShard> inputs = resolve_inputs(opt.inputs);
  if (inputs.size() >= kNone) throw Error("curate: too many input shards");
  // Everything that can fail on the options is checked before out_dir is touched: the folder
  // itself (read-only), the entry list, the relevance model and its vocabulary.
  const PreviousOutput previous = check_out_dir(opt, inputs);
  std::vector<uint32_t> own;
  for (uint32_t i = 0; i < inputs.size(); ++i)
    if (int(i % uint32_t(coll.world_size)) == coll.rank) own.push_back(i);
  std::unique_ptr<EntryList> entries;
  if (opt.balance && !opt.balance_entries.empty()) entries = std::make_unique<EntryList>(EntryList::from_file(opt.balance_entries));
  std::unique_ptr<RelevanceScorer> scorer;
  std::string vocab;
  if (opt.relevance) {
    eval::LoadOptions lo = opt.model;
    vocab = resolve_relevance_vocab(lo);
    lo.vocab = vocab;
    scorer = std::make_unique<RelevanceScorer>(lo, threads);
  }
  if (opt.progress)
    spdlog::info("curate: rank {}/{}: {} of {} input shard(s), {} thread(s)", coll.rank, coll.world_size, own.size(),
                 inputs.size(), threads);

  // Pass 1: scan this rank's shards, then the global table.
  auto t0 = Clock::now();
  Table local = scan(inputs, own, opt, entries.get(), threads);
  const int64_t scanned_here = int64_t(local.rec.size());
  const double scan_s = seconds_since(t0);
  Table t = exchange_tables(std::move(local), coll, inputs.size(), entries != nullptr);
  if (t.rec.size() >= kNone) throw Error("curate: more than 2^32 - 2 samples in one run");
  {
    size_t unreadable = 0, first = inputs.size();
    for (size_t i = 0; i < t.shards.size(); ++i)
      if (t.shards[i].unreadable) {
        ++unreadable;
        first = std::min(first, i);
      }
    if (unreadable == inputs.size())
      throw Error("curate: none of the " + std::to_string(inputs.size()) + " input shard(s) could be read (e.g. '" +
                  inputs[first].path + "': " + t.shards[first].problem + "); nothing to curate");
  }
  const auto ranges = shard_ranges(t, inputs.size());

  // Stages 1-4 on the global table (every rank takes the same decisions).
  t0 = Clock::now();
  Decisions d;
  if (opt.validate) decide_validate(t, opt, inputs);
  if (opt.small) decide_small(t, opt);
  if (opt.exact) d.exact = decide_exact(t, opt);
  if (opt.near) d.near = decide_near(t, opt, threads, d.clusters);
  d.seconds = seconds_since(t0);

  // Pass 2: relevance scores of this rank's survivors, then all of them.
  double score_s = 0;
  // The later passes read the shards again: the reader's warnings were logged in pass 1.
  ReaderWarningFilter quiet_reader;
  if (opt.relevance) {
    t0 = Clock::now();
    const std::vector<Score> mine = score_survivors(t, inputs, own, ranges, *scorer, opt.progress);
    std::vector<Score> all;
    for (const json& j : gather_json(json{{"scores", to_blob(mine)}}, coll)) {
      const auto part = from_blob<Score>(j.at("scores"), "scores");
      all.insert(all.end(), part.begin(), part.end());
    }
    score_s = seconds_since(t0);
    t0 = Clock::now();
    d.relevance = decide_relevance(t, opt, all, scorer->describe());
    d.relevance["vocab"] = vocab;
    d.seconds += seconds_since(t0);
  }
  if (opt.balance) {
    t0 = Clock::now();
    d.balance = decide_balance(t, opt, entries.get(), d.examples);
    d.seconds += seconds_since(t0);
  }

  // Only now, with every decision taken, the previous run's files go (rank 0), and no rank
  // starts writing before they are gone.
  if (coll.rank == 0) remove_previous_output(opt, previous);
  if (coll.world_size > 1) gather_json(json::object(), coll);

  // Pass 3: write this rank's curated shards; thumbnails for the montage, texts for the report.
  t0 = Clock::now();
  const auto montage_rows = opt.near && opt.montage_clusters > 0 ? select_montage(t, d.clusters, opt)
                                                                  : std::vector<std::vector<uint32_t>>{};
  std::set<uint32_t> montage_idx, example_idx(d.examples.begin(), d.examples.end());
  for (const auto& row : montage_rows) montage_idx.insert(row.begin(), row.end());
  const WrittenShards w = write_shards(t, inputs, own, ranges, montage_idx, example_idx, opt, threads);
  const double write_s = seconds_since(t0);
  const json perf_here{{"rank", coll.rank},
                       {"scanned", scanned_here},
                       {"scan_s", scan_s},
                       {"score_s", score_s},
                       {"write_s", write_s},
                       {"total_s", seconds_since(t_start)},
                       {"peak_rss_bytes", peak_rss_bytes()}};
  const std::vector<json> finals =
      gather_json(json{{"thumbs", w.thumbs}, {"texts", w.texts}, {"written", w.written}, {"perf", perf_here}}, coll);
  // Every rank has written all of its shards: only now do they move into out_dir, and the report
  // (rank 0) follows once every rank's are in place.
  publish_shards(w);
  if (coll.world_size > 1) gather_json(json::object(), coll);

  // The report, identical on every rank; rank 0 writes the files.
  std::map<uint32_t, std::vector<uint8_t>> thumbs;
  json report = build_report(opt, coll.world_size, threads, inputs, t, ranges, d, finals, thumbs);
  if (coll.rank == 0) {
    write_report_files(opt, inputs, t, ranges, d, montage_rows, thumbs, report);
  } else if (!montage_rows.empty()) {
    report["montage"] = "montage.png";
  }
  return report;
}

}  // namespace florence::curate
