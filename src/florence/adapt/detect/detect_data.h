#pragma once
// Detection data for training and evaluation: one COCO-format split (coco.h) with its image
// folder, the category <-> label maps, and batches of resized, padded, normalised images with
// their box targets.
//
// Layout of a set root ROOT (what `florence data build detection` writes; a user's COCO set in
// the same layout works unchanged):
//   ROOT/annotations/instances_{split}.json      e.g. instances_train.json, instances_train_seen.json
//   images of that split: the first existing folder of ROOT/images/{split}, ROOT/{split},
//   ROOT/images/{split up to its first '_'} (instances_train_seen -> images/train), ROOT/images.
//
// Geometry (detectron2's ResizeShortestEdge + padding, with the LONGER side fixed so that every
// batch has one square shape): an image of w x h is resized bilinearly (cv::INTER_LINEAR) by
// s = size / max(w, h) to (round(w s), round(h s)), placed at the top-left of a size x size canvas
// and the rest is 0 after normalisation (the mean colour). Boxes are multiplied by s; predictions
// are divided by s to return to the original pixels. Optional horizontal flip (training): the
// resized image is mirrored inside its own width (x -> w' - x), boxes likewise.
//
// Targets: crowd boxes (iscrowd 1) and boxes narrower or lower than 1 pixel after resizing are not
// training targets (counted in BatchStats); images without boxes stay as negatives. An image that
// cannot be read or decoded is a counted, logged skip (its place in the batch is dropped).
#include <torch/types.h>

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "florence/adapt/detect/atss.h"
#include "florence/adapt/detect/coco.h"

namespace florence::detect {

/// One split: its COCO data set, where its images are and the label of each category.
struct DetectionSplit {
  std::string name;       ///< the split name ("train", "test_unseen", ...)
  std::string ann_file;   ///< ROOT/annotations/instances_{name}.json
  std::string image_dir;  ///< the folder its file_names are relative to
  CocoDataset coco;
  /// Annotations of each image (indices into coco.annotations), in image order.
  std::vector<std::vector<int64_t>> image_annotations;
};

/// Reads ROOT/annotations/instances_{split}.json and finds its image folder (rule above).
/// max_images > 0 keeps the first max_images images (file order) and their annotations. Throws
/// florence::Error for a missing annotation file or image folder, and coco.h's errors.
DetectionSplit open_detection_split(const std::string& root, const std::string& split, int64_t max_images = 0);

/// Contiguous labels of COCO categories: label l <-> category_ids[l] (ids in increasing order).
struct LabelMap {
  std::vector<int64_t> category_ids;
  std::vector<std::string> names;
  /// Label of a category id; -1 when the id is not mapped.
  int64_t label(int64_t category_id) const;
  static LabelMap from_categories(const std::vector<CocoCategory>& categories);
  nlohmann::json to_json() const;  ///< [{"id", "name"}, ...] in label order
  static LabelMap from_json(const nlohmann::json& j, const std::string& origin);
};

struct BatchOptions {
  int image_size = 160;  ///< the square canvas side, pixels
  std::array<float, 3> mean{0.485f, 0.456f, 0.406f}, std{0.229f, 0.224f, 0.225f};
  bool class_agnostic = false;  ///< every label 0
};

/// Counts of what a batch left out.
struct BatchStats {
  int64_t images = 0;           ///< images in the batch
  int64_t unreadable = 0;       ///< images skipped (read / decode error)
  int64_t boxes = 0;            ///< targets
  int64_t crowd = 0;            ///< crowd boxes left out of the targets
  int64_t tiny = 0;             ///< boxes < 1 px wide or high after resizing
  int64_t unknown_category = 0; ///< boxes whose category has no label
  void add(const BatchStats& o);
  nlohmann::json to_json() const;
};

/// A batch: images [B, 3, S, S] float32 normalised, one target per image (boxes xyxy on the
/// canvas, labels int64), and per image its COCO id, scales and size on the canvas.
struct DetectionBatch {
  torch::Tensor images;
  std::vector<DetectionTarget> targets;
  std::vector<int64_t> image_ids;
  std::vector<std::pair<double, double>> scales;  ///< (sx, sy): canvas pixels per annotation pixel
  std::vector<std::pair<int64_t, int64_t>> sizes;  ///< (height, width) of the resized image
  BatchStats stats;
};

/// Loads images `indices` of `split` (indices into split.coco.images); flip[i] mirrors image i
/// (empty = none). Unreadable images are skipped (stats.unreadable, a warning naming the file);
/// the batch may then be smaller, or empty (images undefined).
DetectionBatch load_detection_batch(const DetectionSplit& split, const std::vector<int64_t>& indices,
                                    const LabelMap& labels, const BatchOptions& options,
                                    const std::vector<bool>& flip = {});

}  // namespace florence::detect
