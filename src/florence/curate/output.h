#pragma once
// Internal to the curation pipeline (pipeline.h): the output folder. Before pass 1 it is only
// checked (what a previous curate run left there, and nothing foreign); its old files are removed
// only once every decision is taken; pass 3 writes the curated shards into a temporary folder
// (kTmpDir) and, once every rank has written all of its shards, renames them into place
// (publish_shards), so a run that fails while writing (a full disk) leaves only kTmpDir.
#include <cstdint>
#include <filesystem>
#include <set>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "florence/curate/pipeline.h"
#include "florence/curate/records.h"

namespace florence::curate::detail {

/// The folder below out_dir holding shards being written (an interrupted run leaves it behind).
inline const char* const kTmpDir = ".curate-tmp";

/// What a previous curate run left in out_dir and may be removed (with overwrite).
struct PreviousOutput {
  std::vector<std::filesystem::path> files;  // listed shards + report.json / removed.jsonl / montage.png
  bool tmp_dir = false;                      // out_dir/.curate-tmp (an interrupted run's partial shards)
};

/// Checks out_dir against the inputs and finds what a previous curate run wrote there; touches
/// nothing. Throws florence::Error when out_dir lies inside an input (or the reverse), is not a
/// directory, holds curate output without `overwrite`, or holds files curate did not write:
/// .tar files (or removed.jsonl / montage.png) without a curate report.json, a report.json that
/// is not curate's, or .tar files the previous report does not list.
PreviousOutput check_out_dir(const CurateOptions& opt, const std::vector<InputShard>& inputs);

/// Removes what check_out_dir found (rank 0; the caller synchronises the ranks afterwards).
/// Throws florence::Error naming a file that cannot be removed.
void remove_previous_output(const CurateOptions& opt, const PreviousOutput& prev);

/// What pass 3 of one rank produced, for the report (exchanged between ranks as JSON):
/// thumbs {record index: PNG bytes} of the montage's samples, texts {record index: text} of the
/// balance section's examples, written [[shard, kept samples, bytes written]].
struct WrittenShards {
  nlohmann::json thumbs = nlohmann::json::object(), texts = nlohmann::json::object(), written = nlohmann::json::array();
  /// (finished shard in out_dir/kTmpDir, its place out_dir/<out_rel>) for publish_shards.
  std::vector<std::pair<std::string, std::string>> finished;
};

/// Pass 3 over the shards `own`: copies the kept samples, bytes unchanged, into a shard in
/// out_dir/kTmpDir per input shard that keeps any (publish_shards moves them to out_dir/<out_rel>),
/// on up to `threads`
/// threads; decodes only the samples in `montage_idx` (thumbnails of opt.montage_tile px) and
/// keeps the texts of `example_idx`. Throws florence::Error when an input shard changed since
/// pass 1 (another key or fewer samples) or on an I/O error.
WrittenShards write_shards(const Table& t, const std::vector<InputShard>& inputs, const std::vector<uint32_t>& own,
                           const std::vector<std::pair<size_t, size_t>>& ranges, const std::set<uint32_t>& montage_idx,
                           const std::set<uint32_t>& example_idx, const CurateOptions& opt, int threads);

/// Renames the shards write_shards finished into out_dir (each rank its own, after every rank has
/// written all of its shards). Throws florence::Error naming the file when a rename fails.
void publish_shards(const WrittenShards& written);

}  // namespace florence::curate::detail
