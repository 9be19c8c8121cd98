#pragma once
// How an action set's clips become Video CoSwin input, shared by the video training tasks
// (action_train.h: action recognition; video_text.h: video-text contrastive training) and by
// `florence video eval`: frame sampling, the single-frame baseline, the per-clip transform and the
// seeded subsets of a split.
#include <torch/types.h>

#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "florence/adapt/video/action_train.h"
#include "florence/data/readers.h"
#include "florence/data/transforms.h"
#include "florence/train/run.h"

namespace florence::video {

/// Temporal jitter of a training clip: its frames sit at offset k of kTrainOffsets inside each
/// sampling segment, k drawn per clip (data/video.h sample_indices).
constexpr int kTrainOffsets = 4;

/// Seeded random subset of n clips (n <= 0 or >= size: all of them), kept in manifest order.
std::vector<ActionClip> subset(std::vector<ActionClip> all, int64_t n, uint64_t seed);

/// How clips become model input. "video": `frames` frames spread uniformly over the clip;
/// "single-frame": one frame repeated `tube` times (one temporal token: the inflated tower then
/// gives the image tower's feature of that frame).
struct InputSpec {
  std::string input = "video";  ///< "video" | "single-frame"
  int frames = 8;               ///< T of "video"
  int tube = 2;                 ///< the tokenizer's temporal kernel: single-frame repeats the frame this often
  int image_size = 64;          ///< S, pixels: frames are resized to S x S (crop_pct 1: the whole frame)
  std::array<float, 3> mean = data::kImageNetMean, std = data::kImageNetStd;

  bool single() const { return input == "single-frame"; }
  /// Frames sampled from the video.
  int sampled() const { return single() ? 1 : frames; }
  /// Frames the model sees.
  int model_frames() const { return single() ? tube : frames; }
  /// {"image_size", "crop_pct": 1, "mean", "std"}: the sidecar "preprocess" entry.
  nlohmann::json preprocess_json() const;
  /// {"input", "frames", "tube", "preprocess"}. from_json throws nlohmann::json::exception on a
  /// missing or mistyped field.
  nlohmann::json to_json() const;
  static InputSpec from_json(const nlohmann::json& j);
  /// The frame transform: resize to S (crop_pct 1), never a horizontal flip (it would turn
  /// move_left into move_right); train_crop: one RandomResizedCrop box, area U(0.5, 1).
  data::TransformOptions transform(bool train_crop) const;
};

/// The input of a training run: --input and --frames, the frame size and mean / std of the
/// checkpoint's "preprocess" entry (model/run_artifacts.h; image_size defaults to `tower_size`,
/// mean / std to ImageNet's). Throws florence::Error for a mistyped preprocess entry.
InputSpec input_spec(const VideoTrainOptions& o, const nlohmann::json& preprocess, int tower_size);

/// [T', 3, S, S] sampled frames -> [3, T, S, S] model layout (a single frame repeated `tube` times).
torch::Tensor to_model_input(torch::Tensor frames, const InputSpec& in);

/// One training clip: frames at a random offset inside each sampling segment and one geometry
/// (crop box) for the whole clip, both drawn from `rng`. Returns [3, T, S, S]. Throws
/// data::VideoError for an unreadable video.
torch::Tensor read_train_clip(const std::string& path, const InputSpec& in, const data::ImageTransform& tf,
                              std::mt19937_64& rng);

/// All test views of one clip: [V, 3, T, S, S], V = clips x crops (data::read_views). Throws
/// data::VideoError for an unreadable video.
torch::Tensor read_test_views(const std::string& path, const InputSpec& in, int clips, int crops);

/// Multi-view evaluation input: the test views of each clip, read in groups of up to `group`
/// clips; `fn` gets a group as views [g * V, 3, T, S, S] (V = clips x crops, clip-major) with the
/// clips' indices into `clips`. Unreadable clips are skipped, counted in `skipped` by
/// data::VideoError::reason and logged. Returns the number of clips passed to `fn`.
int64_t for_each_view_group(const std::vector<ActionClip>& clips, const InputSpec& in, int num_clips, int num_crops,
                            data::SkipCounts& skipped,
                            const std::function<void(const torch::Tensor&, const std::vector<size_t>&)>& fn,
                            int group = 8);

/// The clips of a split that have a caption; the others are counted in `skipped` under
/// "no_caption" and, when there are any, logged once naming `what`.
std::vector<ActionClip> captioned_clips(std::vector<ActionClip> clips, data::SkipCounts& skipped, const std::string& what);

/// True when a checkpoint sidecar says `video train --task retrieval` wrote it ("video_text": true;
/// false or absent: false). Throws florence::Error naming `where` (the sidecar file) when the entry
/// is not a boolean.
bool sidecar_is_video_text(const nlohmann::json& sidecar, const std::string& where = "");

/// Resume: throws florence::Error when the run's --input or --frames differ from those the
/// checkpoint `ckpt` (sidecar "video") was trained with.
void check_resume_input(const nlohmann::json& sidecar, const InputSpec& in, const std::string& ckpt);

/// Throws florence::Error naming `where` unless `in` is usable: input video | single-frame,
/// frames, tube and image_size >= 1.
void validate_input_spec(const InputSpec& in, const std::string& where);

/// The range checks the video training tasks share (--data, --input, --augment, --frames,
/// --test-clips / --test-crops, --max-*-clips), as florence::Error naming the flag.
void validate_clip_options(const VideoTrainOptions& o);

/// Training batches of one epoch: the clips in a seeded order that is a function of (seed, epoch),
/// read `batch` readable clips at a time; each clip's frame offsets and crop are drawn from a
/// generator seeded by (seed, epoch, its position in the order). An unreadable clip is counted,
/// logged and replaced by the next clip in the order, so one bad file costs no batch and no job.
/// The batch after the one returned is read ahead, so epoch_done() knows when a pass has ended
/// even when unreadable clips end it early. The reader's position (train::DataCursor: the clips
/// of the batches returned and of a tail that fills none, not of the batch read ahead; skipped
/// counts the unreadable ones among them) goes into each checkpoint, so a resumed run
/// reopens the epoch at the same clip and continues as the uninterrupted run. Steps per epoch stay
/// clips / batch (the task's plan), so with unreadable clips a run of --epochs N makes slightly
/// more than N passes over the readable ones.
class ClipBatches {
 public:
  /// order_tag / clip_tag: the task's seed_mix tags (train/seeding.h), distinct per task.
  ClipBatches(uint64_t order_tag, uint64_t clip_tag) : order_tag_(order_tag), clip_tag_(clip_tag) {}
  /// Starts epoch pos.epoch over n clips at cursor().start(pos, batch).
  void open(size_t n, uint64_t seed, const train::Position& pos, int64_t batch);
  /// The next `batch` readable clips: x [batch, 3, T, S, S], read: their indices into `clips`.
  /// False when the epoch has fewer than `batch` readable clips left (those are dropped, as a
  /// last partial batch is; fewer than `batch` clips left are not decoded at all). Throws
  /// florence::Error when the first 64 clips this process tries are all unreadable (a decoder
  /// problem, not bad files). The first 20 skips are logged one by one, then every 100th.
  bool next(const std::vector<ActionClip>& clips, const InputSpec& in, const data::ImageTransform& tf, torch::Tensor& x,
            std::vector<size_t>& read);
  /// Where the reader stands (saved in checkpoints); skipped = unreadable clips so far.
  const train::DataCursor& cursor() const { return cur_; }
  /// After next() returned true: whether that batch was the epoch's last full one.
  bool epoch_done() const { return !ahead_.ok; }
  /// Resume: continue from a checkpoint's cursor (train::DataCursor::from_sidecar).
  void restore(const train::DataCursor& c) { cur_ = c; }

 private:
  struct Batch {
    bool ok = false;
    torch::Tensor x;
    std::vector<size_t> read;
    int64_t end = 0, skipped = 0;  // position after its last clip; unreadable clips passed over
  };
  /// Reads the batch starting at clip `from` of the order.
  Batch read_batch(int64_t from, const std::vector<ActionClip>& clips, const InputSpec& in,
                   const data::ImageTransform& tf);
  /// ahead_ = the batch at the cursor; when there is none, the cursor moves past the tail.
  void read_ahead(const std::vector<ActionClip>& clips, const InputSpec& in, const data::ImageTransform& tf);

  uint64_t order_tag_, clip_tag_, seed_ = 0;
  int64_t batch_ = 1;
  train::DataCursor cur_;
  std::vector<size_t> order_;
  Batch ahead_;                // the next batch, read ahead
  bool ahead_valid_ = false;   // false right after open(): nothing read yet
  int64_t read_here_ = 0, failed_here_ = 0;  // clips read / skipped by this process (fail-fast, log rate)
};

}  // namespace florence::video
