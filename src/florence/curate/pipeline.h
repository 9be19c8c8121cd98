#pragma once
// `florence curate`: the FLD-900M-style curation pipeline (Florence, arXiv 2111.11432, Sec. 2.1)
// over WebDataset shards, streaming and parallel.
//
// Stages, in order (each can be switched off; a sample removed by one stage is not seen by the
// later ones):
//   validate   undecodable image ("undecodable_image"), image above max_pixels
//              ("image_too_large"), empty text ("empty_text": nothing but white space), text longer
//              than max_text_chars code points ("text_too_long"), a key seen before in the same
//              input ("duplicate_key": keys are scoped by input, so two inputs may reuse keys),
//              and the samples the shard reader itself drops: text not valid UTF-8
//              ("invalid_utf8_text"), no image member ("missing_image"), a cut/corrupt member
//              ("corrupt_member"). A shard that cannot be opened, is empty (0 bytes) or is not a
//              tar at all is "unreadable_shard" (counted in report.json counts.unreadable_shards
//              and listed in "problem_shards" with the reason); a shard whose reading hit a read
//              error after some members (truncated / corrupt tail) keeps the samples read before
//              the error and is counted in counts.truncated_shards (also listed). When every
//              input shard is unreadable, curate() throws.
//   small      shorter side < min_size pixels ("small_image").
//   exact      equal pixel hash (curate/phash.h pixel_hash: XXH3-128 of the decoded RGB pixels):
//              "exact_duplicate", duplicate_of = the group's representative.
//   near       64-bit perceptual hash (pHash, or dHash) within near_dup_threshold bits of a kept
//              image (curate/cluster.h: multi-index hashing, leader or connected-component
//              clusters): "near_duplicate", duplicate_of = the cluster's representative.
//              Representatives (both duplicate stages): the largest image, ties by key.
//   relevance  cosine similarity of a checkpoint's image and text embeddings below the cut
//              (curate/relevance.h): "low_similarity"; pairs the model's loader cannot score
//              (text empty after CLIP cleaning) are "not_scored".
//   balance    MetaCLIP-style balancing over the exact text or an entry list
//              (curate/balance.h): "balance_sampled_out", "no_entry_match".
//
// Passes over the input (each reads the shards front to back; no image is held beyond the
// sample being processed):
//   1. scan      decode every image once; keep a fixed-size record per sample (sizes, text length,
//                pixel hash, perceptual hash, text hash, flags) plus its key;
//   -  decide    validate/small/exact/near on the records (global, deterministic);
//   2. score     (relevance only) decode survivors again and run the model, shard by shard;
//   -  decide    relevance cut and balancing;
//   3. write     copy kept samples, bytes unchanged, into curated shards; decode only the few
//                samples shown in the montage.
// The output directory is only checked (read-only) before pass 1, and every option, the balance
// entry list and (relevance) the model with its vocabulary are loaded before pass 1 too; files of a
// previous run are removed (with overwrite) only right before pass 3, so a run that fails earlier
// leaves the previous output as it was.
//
// Memory therefore grows with the record table and the hash index (bytes per image are printed
// in the report), not with the images.
//
// The code follows the outline, one file each: records.h (the record table and its exchange
// between processes), scan.h (pass 1), decisions.h (the stages' decisions), score.h (pass 2),
// output.h (out_dir checks and pass 3), report.h (report.json, removed.jsonl, montage.png),
// inputs.cpp (resolve_inputs), options.cpp (CurateOptions, resolve_relevance_vocab) and
// pipeline.cpp (curate(), the sequence).
//
// Output (out_dir):
//   <rel>/<shard>.tar  one curated shard per input shard that keeps any sample, at the input
//                      shard's path relative to its input root (with several inputs, under the
//                      root's path below the roots' common folder: data/a/train + data/b/train ->
//                      a/train/, b/train/), so a corpus root OUT/{train,val,test}/ maps to the same
//                      layout; samples in input order, members as written by ShardWriter.
//   report.json        options, counts in/out per stage with reasons, distributions (image sizes,
//                      text lengths, similarity histogram, near-duplicate distances and cluster
//                      sizes), index statistics, per-shard counts and performance (throughput,
//                      peak memory).
//   removed.jsonl      one line per removed sample, in input order:
//                      {"key", "shard", "stage", "reason"[, "duplicate_of"[, "duplicate_of_shard"],
//                       "distance"][, "similarity"][, "error"]}; duplicate_of_shard is given when the
//                      representative lives in another shard; an unreadable shard is one line with
//                      key null and its "error".
//   montage.png        a sample of near-duplicate clusters (see montage.h).
//
// Several processes (torchrun-style): process `rank` of `world_size` scans the input shards
// i with i % world_size == rank, the record tables are exchanged with Collective::all_gather,
// every process takes the same decisions on the same global table, and each writes only its own
// shards; rank 0 writes report.json, removed.jsonl and montage.png. The decisions depend only on
// the table, so the output equals the one-process run (relevance batches never span shards, so
// the scores are the same numbers too).
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "florence/curate/cluster.h"
#include "florence/curate/phash.h"
#include "florence/eval/load_options.h"

namespace florence::curate {

/// Default Hamming threshold of the near-duplicate stage (64-bit pHash). Chosen from
/// bench/bench_neardup.cpp on real images (see docs/curation.md for the sweep).
inline constexpr int kDefaultNearDupThreshold = 10;

struct CurateOptions {
  std::vector<std::string> inputs;  ///< corpus roots (DIR/<split>/*.tar), shard dirs, files or brace patterns
  std::string out_dir;
  /// Replace the output of a previous curate run in out_dir. Such output is recognised by its
  /// report.json (a curate report); only the shards that report lists, report.json,
  /// removed.jsonl, montage.png and the .curate-tmp folder are removed. A folder holding .tar
  /// files (or removed.jsonl / montage.png) without a curate report.json, or .tar files the
  /// report does not list, is refused even with overwrite (curate never deletes foreign data).
  bool overwrite = false;

  // Stage switches.
  bool validate = true, small = true, exact = true, near = true, relevance = false, balance = false;

  // validate
  int64_t max_text_chars = 1000;  ///< our choice; CLIP/Florence keep at most 76 tokens anyway
  bool allow_empty_text = false;  ///< keep empty texts (label-only data)
  int64_t max_pixels = int64_t(1024) * 1024 * 1024 / 4 / 3;  ///< data::kDefaultMaxPixels (PIL's bomb guard)
  // small
  int min_size = 32;  ///< our choice (Florence does not state its threshold)
  // near
  HashKind hash = HashKind::kPHash;
  int near_dup_threshold = kDefaultNearDupThreshold;
  ClusterMode cluster = ClusterMode::kLeader;
  int index_chunks = 0;  ///< multi-index hashing chunks, 0 = auto (HammingIndex::auto_chunks)
  // relevance
  eval::LoadOptions model;  ///< checkpoint / model / vocab / device / preprocess (batch size)
  /// Remove pairs whose cosine similarity is < threshold (in [-1, 1]). Exactly one of threshold
  /// and percentile is given when the relevance stage is on (they are mutually exclusive).
  std::optional<double> relevance_threshold;
  std::optional<double> relevance_percentile;  ///< remove score < this percentile (0..100) of scores
  // balance
  double balance_t = 0;             ///< MetaCLIP's t (> 0 when balancing)
  std::string balance_entries;      ///< entry list file; empty = balance over the exact text
  uint64_t seed = 0;
  // montage
  int montage_clusters = 16;  ///< rows (clusters) in montage.png; 0 = no montage
  int montage_members = 7;    ///< tiles per row (representative included)
  int montage_tile = 96;      ///< tile size in px

  int threads = 0;      ///< worker threads (0 = all cores)
  bool progress = true; ///< log progress lines

  /// Throws florence::Error naming the first invalid option (no file is read).
  void validate_options() const;
  /// Switches on exactly the stages of a comma-separated list ("validate,small,exact,near,
  /// relevance,balance", any subset, any order) and off the others. Throws florence::Error on an
  /// empty list, an empty item ("validate,,near") or an unknown stage name.
  void set_stages(const std::string& list);
  nlohmann::json to_json() const;
};

/// The exchange the multi-process path needs: every rank contributes its bytes and receives all
/// ranks' contributions in rank order (a generic all-gather; the dist component provides one over
/// c10d). world_size 1 needs none.
struct Collective {
  int rank = 0, world_size = 1;
  std::function<std::vector<std::string>(const std::string&)> all_gather;
};

/// Runs the pipeline and returns report.json's content (identical on every rank). Throws
/// florence::Error on bad options, no input shard, an unreadable balance entry list, a relevance
/// model or vocabulary that cannot be loaded, an out_dir that holds curated output already
/// (without overwrite), holds files curate did not write (see CurateOptions::overwrite) or lies
/// inside an input, every input shard unreadable, an input shard that changes between passes,
/// or an I/O error writing the output; per-sample problems are removals with a reason, never
/// errors. Everything but the last two is detected before out_dir is modified.
nlohmann::json curate(const CurateOptions& options, const Collective& collective = {});

/// A few human-readable lines from curate()'s report: counts per stage, throughput, peak memory.
std::string format_curate_summary(const nlohmann::json& report);

/// Where each input shard goes: the shards of every input (in order) and their output paths
/// relative to out_dir (see the top of this file). Throws florence::Error when an input has no
/// shard or two shards map to the same output path.
struct InputShard {
  std::string path;
  std::string out_rel;
  uint32_t input = 0;  ///< index of the input (in `inputs`) the shard comes from; scopes duplicate keys
};
std::vector<InputShard> resolve_inputs(const std::vector<std::string>& inputs);

/// The BPE vocabulary the relevance stage loads for `model`: --vocab when given, else the one the
/// checkpoint's run recorded or keeps, by the rules of model/run_artifacts.h (the sidecar's
/// "vocab", vocab.bpe.gz / vocab.bpe beside the checkpoint or in its run folder, the sidecar's
/// train_state.options.vocab; recorded relative paths are also tried relative to the checkpoint's
/// folder, since they are often relative to the folder training ran in). Returns "" only without
/// a checkpoint (random init). Throws florence::Error when --vocab does not exist, when the
/// sidecar is not valid JSON, or when no candidate exists (naming the recorded paths that do not
/// exist, or saying there is none).
std::string resolve_relevance_vocab(const eval::LoadOptions& model);

}  // namespace florence::curate
