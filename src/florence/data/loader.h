#pragma once
// Threaded, deterministic batch loader over any SampleSource (readers.h).
//
// Threads of one epoch: 1 reader, `num_workers` workers, 1 assembler; the caller consumes
// batches with next().
//   reader    - decides the epoch's part order, keeps this rank's parts, reads them in that order
//               (through a shuffle buffer for shard sources) and numbers the samples 0, 1, 2, ...
//               (the sequence index n); it never runs more than `window` samples ahead of the
//               assembler (window = prefetch * batch_size, at least 2 * num_workers).
//   workers   - take any pending sample, check its text, tokenize it, decode + transform its image
//               with a generator seeded from (seed, epoch, rank, n), and put the result into slot
//               n % window.
//   assembler - takes results strictly in order n = 0, 1, 2, ..., drops bad ones (counting the
//               reason), fills batches of batch_size good samples and pushes them into a bounded
//               queue of `prefetch` batches.
//
// Determinism: the part order (a permutation drawn from (seed, epoch), identical on all ranks),
// the rank's share of parts (every world_size-th part of that order, starting at rank), the
// shuffle buffer (its own generator from (seed, epoch, rank)) and each sample's augmentation
// generator (seeded from (seed, epoch, rank, n)) do not depend on thread timing or on
// num_workers. Whether a sample is bad is a property of the sample alone (its bytes and text),
// so the sequence of good samples, and hence every batch, is the same for any number of workers:
// a skipped sample simply lets the next good one (in n order) take its place in the batch.
//
// Ranks: parts are disjoint across ranks and their union is every part, per epoch. Ranks can get
// different sample counts (unequal shards; per-sample sources differ by at most one sample per
// rank); a distributed trainer must agree on the number of steps itself.
//
// Bad samples never stop the loader; they are counted per reason in EpochStats::skipped and the
// first few are logged with their origin. Reasons counted here: "missing_image", "bad_image"
// (undecodable), "image_too_large" (decompression-bomb guard), "invalid_utf8_text",
// "empty_text", "tokenize_error", plus the read-time reasons of the source (readers.h).
// Failures that are not about one sample (out of memory, a bug) end the epoch and are rethrown by
// next().
#include <torch/types.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "florence/data/readers.h"
#include "florence/data/transforms.h"

namespace florence::text {
class Tokenizer;
}

namespace florence::data {

struct LoaderOptions {
  int64_t batch_size = 32;
  int image_size = 224;
  /// true: train augmentation (RandomResizedCrop + flip); false: eval resize + center crop.
  bool train = true;
  double crop_pct = 0.875;  ///< eval only, see TransformOptions::crop_pct
  std::array<float, 3> mean = kImageNetMean;
  std::array<float, 3> std = kImageNetStd;
  uint64_t seed = 0;
  int num_workers = 0;  ///< decode/transform threads; <= 0 = std::thread::hardware_concurrency()
  int prefetch = 4;     ///< batches queued ahead of the consumer (>= 1)
  int rank = 0, world_size = 1;
  int context_length = 77;  ///< token ids per text (CLIP: 77)
  bool drop_last = false;   ///< drop the epoch's last partial batch (counted in dropped_last)
  /// Shuffle the part order each epoch (and, for streaming shard sources, pass samples through a
  /// shuffle buffer of `shuffle_buffer` samples). false: parts in source order, no buffer.
  bool shuffle = true;
  int64_t shuffle_buffer = 1000;
  /// Skip samples whose text is empty (after CLIP's cleaning when a tokenizer is given, else
  /// after trimming ASCII whitespace). false: empty texts are kept (label-only data).
  bool require_text = true;
  bool hflip = true;  ///< train: horizontal flip with p = 0.5
  int64_t max_pixels = kDefaultMaxPixels;

  /// The per-image pipeline these options describe.
  TransformOptions transform_options() const;
};

struct Batch {
  torch::Tensor images;  ///< [B, 3, S, S] float32, RGB, normalised with LoaderOptions mean/std
  torch::Tensor ids;     ///< [B, context_length] int64 CLIP token ids; undefined without tokenizer
  torch::Tensor labels;  ///< [B] int64 class ids, -1 where a sample has none
  std::vector<std::string> keys;   ///< sample keys, row order
  std::vector<std::string> texts;  ///< raw texts, row order (UniCL hashes the exact text)
  int64_t size() const { return int64_t(keys.size()); }
};

struct EpochStats {
  int64_t epoch = -1;
  int64_t read = 0;     ///< samples the reader delivered (good + skipped by the loader)
  int64_t samples = 0;  ///< samples emitted in batches
  int64_t batches = 0;
  int64_t dropped_last = 0;  ///< good samples dropped by drop_last
  SkipCounts skipped;        ///< reason -> count (loader and source read-time reasons)
  int64_t bytes = 0;         ///< encoded image bytes of all delivered samples
  double wait_seconds = 0;   ///< time the consumer spent blocked in next()
  double elapsed_seconds = 0;  ///< from start_epoch to the end of the epoch (or now)
  bool finished = false;
  int64_t skipped_total() const;
  std::string summary() const;  ///< one line for logs
};

class Loader {
 public:
  /// `tokenizer` may be null: then Batch::ids is undefined and texts are only checked for UTF-8
  /// validity (and emptiness with require_text). Throws florence::Error on invalid options
  /// (batch_size < 1, prefetch < 1, world_size < 1, rank outside [0, world_size),
  /// context_length < 2, or bad transform options) or a null source.
  Loader(std::shared_ptr<const SampleSource> source, LoaderOptions options,
         std::shared_ptr<const text::Tokenizer> tokenizer = nullptr);
  /// Stops the running epoch (if any) and joins its threads.
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  /// Starts epoch `epoch` (stopping a running one first). Order and augmentation depend only on
  /// (seed, epoch, rank, world_size) and the source content.
  void start_epoch(int64_t epoch);
  /// Next batch of the current epoch; false when the epoch is exhausted. Rethrows a failure of a
  /// loader thread. Throws florence::Error when no epoch was started.
  bool next(Batch& out);
  /// Stops the current epoch early and joins all threads (idempotent).
  void stop();
  /// Statistics of the current (or last) epoch.
  EpochStats stats() const;

  const LoaderOptions& options() const { return opt_; }
  const SampleSource& source() const { return *source_; }
  /// The parts this rank reads in `epoch`, in reading order (exposed for tests and logs).
  std::vector<size_t> parts_for_epoch(int64_t epoch) const;

 private:
  struct Run;
  std::shared_ptr<const SampleSource> source_;
  LoaderOptions opt_;
  std::shared_ptr<const text::Tokenizer> tokenizer_;
  ImageTransform transform_;
  int num_workers_ = 1;
  std::unique_ptr<Run> run_;
  EpochStats last_stats_;
};

}  // namespace florence::data
