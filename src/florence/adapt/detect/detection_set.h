#pragma once
// A detection set from real art (`florence data build detection`): scenes of real sprites
// (sprites.h) at varied scales, overlapping and partly occluding each other, on varied
// backgrounds (scene.h), written in COCO format so that a user's own COCO set and this one go
// through the same reader, trainer and evaluator.
//
// Output (OUT = DetectionSetOptions::out_dir):
//   OUT/images/{train,val,test}/NNNNNNNN.png     scenes (RGB PNG, image_size square)
//   OUT/annotations/instances_{split}.json       COCO instances: images (file_name relative to
//                                                OUT/images/{split}/), annotations, categories
//                                                (id = table index + 1, every category with
//                                                sprites in all splits; extra field "unseen")
//   OUT/annotations/instances_{train,val}_seen.json   the zero-shot training view: only the
//                                                scenes drawn from seen categories, seen categories
//   OUT/annotations/instances_test_{seen,unseen}.json the test scenes with only the seen / only
//                                                the unseen categories' boxes (ids unchanged)
//   OUT/summary.json      counts per split x category, COCO area classes per split, unseen
//                         categories, sprite and background summaries, failures
//
// Boxes: the sprite's VISIBLE pixels' box (alpha >= 128 and not covered by a later sprite: the
// canvas owner map), like COCO's modal boxes. "area" is that box's w*h (not a mask area: the set
// has boxes only, and pycocotools measures detections by box area too, so the area ranges compare
// like with like); extra fields: visible_pixels, occluded (1 - visible / pasted pixels), sprite.
// A placement may hide at most 1 - min_visible of any earlier sprite, so every sprite in an image
// is annotated (no unannotated, fully hidden objects).
// Scales: per sprite a COCO area class is drawn (p_small / p_medium / p_large), then a box area
// log-uniformly inside it: small [10^2, 32^2), medium [32^2, 96^2), large [96^2, (0.9 size)^2]
// (pycocotools' ranges, absolute pixels; large is dropped when the image is too small for it).
// Splits: scenes of a split use that split's sprites and photos only (test sprites are never seen
// in training). Train and val scenes are drawn from seen categories only with probability
// p_seen_only, else from all categories; test scenes from all categories.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "florence/data/scene.h"
#include "florence/data/sprites.h"

namespace florence::detect {

struct DetectionSetOptions {
  std::string out_dir;
  data::SpriteBankOptions sprites;
  data::BackgroundOptions backgrounds;
  int image_size = 160;  ///< square scenes, pixels
  int64_t train_images = 3500, val_images = 500, test_images = 1000;
  int min_objects = 2, max_objects = 7;
  double p_small = 0.35, p_medium = 0.45, p_large = 0.2;  ///< COCO area class of each sprite's box
  double min_visible = 0.5;    ///< see top
  double p_seen_only = 0.6;    ///< train/val scenes drawn from seen categories only
  double p_repeat_category = 0.2;
  /// Names of the unseen (zero-shot) categories; empty = the table's `unseen` flags.
  std::vector<std::string> unseen;
  uint64_t seed = 0;
  int threads = 0;
  bool overwrite = false;
  bool progress = true;
};

/// Builds the set; returns summary.json's content. Throws florence::Error when out_dir holds a set
/// and overwrite is false, an option is out of range, an unseen name is not a category, or fewer
/// than 2 seen categories have sprites in every split. Sprites that cannot be placed are counted
/// in summary["failures"]; an image left without any object is counted and not written.
nlohmann::json build_detection_set(const DetectionSetOptions& options);

/// A target box area (pixels) for a sprite in a size x size image: class by the probabilities
/// (large gets probability 0 when (0.9 size)^2 <= 96^2), then log-uniform in the class's range.
double draw_box_area(std::mt19937_64& rng, int size, double p_small, double p_medium, double p_large);

/// Longer side that gives a w x h sprite the box area `area` at the same aspect.
double longer_side_for_area(double area, int w, int h);

}  // namespace florence::detect
