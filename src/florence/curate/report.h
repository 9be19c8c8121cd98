#pragma once
// Internal to the curation pipeline (pipeline.h): report.json, removed.jsonl and montage.png
// from the decided table, and the statistics they show. format_curate_summary (pipeline.h) is
// the human-readable digest of the same report.
#include <cstdint>
#include <map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "florence/curate/decisions.h"
#include "florence/curate/pipeline.h"
#include "florence/curate/records.h"

namespace florence::curate::detail {

/// {"count", "min", "p05", "p50", "p95", "max", "mean", "hist": {"edges", "counts"}} of `v`
/// (quantiles: the nearest rank of p (n - 1)); histogram bin k = [edges[k], edges[k+1]), the last
/// open-ended; without values only the count; without edges no histogram.
nlohmann::json distribution(std::vector<double> v, const std::vector<double>& edges);

/// `bins` left edges splitting [lo, hi) evenly (lo, lo + (hi - lo) / bins, ...).
std::vector<double> linspace_edges(double lo, double hi, int bins);

/// The process's peak resident memory in bytes (getrusage).
int64_t peak_rss_bytes();

/// The near-duplicate clusters montage.png shows (opt.montage_clusters rows, each the
/// representative then up to opt.montage_members - 1 removed members): half the most doubtful
/// clusters (largest distance), half a sample seeded by opt.seed. Record indices.
std::vector<std::vector<uint32_t>> select_montage(const Table& t, const std::vector<Cluster>& clusters,
                                                  const CurateOptions& opt);

/// report.json's content (see pipeline.h), the same on every rank: counts per stage with reasons,
/// distributions, the shards, performance. `finals` holds every rank's pass-3 output and timing
/// ({"thumbs", "texts", "written", "perf"}, output.h WrittenShards); the balance section's example
/// texts are quoted into d.balance, and the montage's thumbnails are returned in `thumbs`.
nlohmann::json build_report(const CurateOptions& opt, int world_size, int threads, const std::vector<InputShard>& inputs,
                            const Table& t, const std::vector<std::pair<size_t, size_t>>& ranges, Decisions& d,
                            const std::vector<nlohmann::json>& finals, std::map<uint32_t, std::vector<uint8_t>>& thumbs);

/// Rank 0's files in opt.out_dir: removed.jsonl (input order; the reader's drops after their
/// shard's records), montage.png when `montage_rows` is not empty (then report["montage"] is
/// set), report.json last; then the temporary folder goes. Throws florence::Error on an I/O error.
void write_report_files(const CurateOptions& opt, const std::vector<InputShard>& inputs, const Table& t,
                        const std::vector<std::pair<size_t, size_t>>& ranges, const Decisions& d,
                        const std::vector<std::vector<uint32_t>>& montage_rows,
                        const std::map<uint32_t, std::vector<uint8_t>>& thumbs, nlohmann::json& report);

}  // namespace florence::curate::detail
