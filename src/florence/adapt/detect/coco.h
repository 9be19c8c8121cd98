#pragma once
// COCO-format detection data: the instances JSON (images, annotations, categories) and the
// results JSON (a list of detections), read, validated and written with nlohmann-json.
//
// Instances JSON (cocodataset.org/#format-data, "Object Detection"):
//   {"images":      [{"id", "file_name", "width", "height"}, ...],
//    "annotations": [{"id", "image_id", "category_id", "bbox": [x, y, w, h], "area", "iscrowd"}, ...],
//    "categories":  [{"id", "name", "supercategory"}, ...],
//    "info": {...}, "licenses": [...]}               (optional, kept as given)
//   bbox is in pixels: (x, y) the top-left corner, w/h the width/height (>= 0).
//   Required: images[].{id, file_name, width, height}, annotations[].{id, image_id, category_id,
//   bbox}, categories[].{id, name}. Optional with defaults: area (w*h), iscrowd (0),
//   supercategory (""). Other fields (segmentation, keypoints, ...) are accepted and not kept.
// Results JSON (what pycocotools COCO.loadRes reads): [{"image_id", "category_id",
//   "bbox": [x, y, w, h], "score"}, ...]; extra fields are ignored.
//
// Ids are JSON integers (int64). Errors: florence::Error naming the file (the `origin` string),
// the array and the index of the offending entry, and the field, e.g.
//   "val.json: annotations[12]: 'bbox' has a negative width (-3)".
// Checked: missing fields, wrong types (ids must be integers, bbox four finite numbers, score a
// finite number), duplicate ids, annotations/results naming an unknown image or category id,
// negative bbox width/height/area, image width/height < 1, iscrowd not 0/1/bool.
#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace florence::detect {

/// A box as COCO stores it: [x, y, w, h] in pixels, (x, y) the top-left corner.
using CocoBox = std::array<double, 4>;

struct CocoImage {
  int64_t id = 0;
  std::string file_name;
  int64_t width = 0, height = 0;  ///< pixels, >= 1
};

struct CocoCategory {
  int64_t id = 0;
  std::string name;
  std::string supercategory;
};

struct CocoAnnotation {
  int64_t id = 0;
  int64_t image_id = 0;
  int64_t category_id = 0;
  CocoBox bbox{0, 0, 0, 0};
  double area = 0;       ///< pixels^2; the COCO evaluation's area ranges use this, not w*h
  bool iscrowd = false;  ///< crowd regions: matches to them are neither TP nor FP (coco_eval.h)
};

/// One instances file. Order is kept as read: it decides pycocotools' tie order (coco_eval.h).
struct CocoDataset {
  std::vector<CocoImage> images;
  std::vector<CocoAnnotation> annotations;
  std::vector<CocoCategory> categories;
  nlohmann::json info = nlohmann::json::object();     ///< "info", written back as read
  nlohmann::json licenses = nlohmann::json::array();  ///< "licenses", written back as read

  /// Index of an image / category id in images / categories; -1 if unknown.
  int64_t image_index(int64_t id) const;
  int64_t category_index(int64_t id) const;
  /// Rebuilds the id -> index maps (call after editing images/categories by hand).
  void reindex();

 private:
  std::map<int64_t, int64_t> image_index_, category_index_;
};

/// One detection of a results file.
struct CocoResult {
  int64_t image_id = 0;
  int64_t category_id = 0;
  CocoBox bbox{0, 0, 0, 0};
  double score = 0;
};

/// Parses and validates an instances JSON document; `origin` (usually the file name) prefixes
/// every error. Throws florence::Error (see the top of this file).
CocoDataset coco_from_json(const nlohmann::json& j, const std::string& origin);
/// Validates an in-memory data set (the same checks as coco_from_json) and rebuilds its index.
void validate_coco(CocoDataset& d, const std::string& origin);
/// The instances JSON of `d` (every field listed at the top; area and iscrowd always written).
nlohmann::json coco_to_json(const CocoDataset& d);

/// Reads / writes an instances file (writes are atomic: a temporary file renamed over `path`).
CocoDataset read_coco(const std::string& path);
void write_coco(const std::string& path, const CocoDataset& d);

/// Parses and validates a results document against the data set it answers: every image_id and
/// category_id must exist in `gt` (pycocotools asserts the images; unknown categories are an error
/// here rather than silently dropped). An empty list is valid.
std::vector<CocoResult> coco_results_from_json(const nlohmann::json& j, const CocoDataset& gt,
                                               const std::string& origin);
nlohmann::json coco_results_to_json(const std::vector<CocoResult>& results);
std::vector<CocoResult> read_coco_results(const std::string& path, const CocoDataset& gt);
void write_coco_results(const std::string& path, const std::vector<CocoResult>& results);

/// [x1, y1, x2, y2] corners <-> COCO [x, y, w, h].
CocoBox xyxy_to_coco(double x1, double y1, double x2, double y2);
std::array<double, 4> coco_to_xyxy(const CocoBox& b);

}  // namespace florence::detect
