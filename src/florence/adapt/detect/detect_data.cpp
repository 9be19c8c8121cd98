// Detection splits and batches; see detect_data.h.
#include "florence/adapt/detect/detect_data.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "florence/core/error.h"
#include "florence/core/files.h"
#include "florence/data/transforms.h"

namespace florence::detect {

namespace fs = std::filesystem;

DetectionSplit open_detection_split(const std::string& root, const std::string& split, int64_t max_images) {
  if (split.empty()) throw Error("detection data: empty split name");
  DetectionSplit s;
  s.name = split;
  s.ann_file = (fs::path(root) / "annotations" / ("instances_" + split + ".json")).string();
  std::error_code ec;
  if (!fs::is_regular_file(s.ann_file, ec))
    throw Error(fmt::format("detection data: no annotation file '{}' (split '{}' of '{}')", s.ann_file, split, root));
  std::vector<fs::path> candidates = {fs::path(root) / "images" / split, fs::path(root) / split};
  if (const auto us = split.find('_'); us != std::string::npos)
    candidates.push_back(fs::path(root) / "images" / split.substr(0, us));
  candidates.push_back(fs::path(root) / "images");
  for (const auto& c : candidates)
    if (fs::is_directory(c, ec)) {
      s.image_dir = c.string();
      break;
    }
  if (s.image_dir.empty()) {
    std::string tried;
    for (const auto& c : candidates) tried += (tried.empty() ? "" : ", ") + c.string();
    throw Error(fmt::format("detection data: no image folder for split '{}' (tried {})", split, tried));
  }
  s.coco = read_coco(s.ann_file);
  if (max_images > 0 && int64_t(s.coco.images.size()) > max_images) {
    s.coco.images.resize(size_t(max_images));
    s.coco.reindex();
    std::vector<CocoAnnotation> kept;
    for (const auto& a : s.coco.annotations)
      if (s.coco.image_index(a.image_id) >= 0) kept.push_back(a);
    s.coco.annotations = std::move(kept);
  }
  s.image_annotations.assign(s.coco.images.size(), {});
  for (size_t i = 0; i < s.coco.annotations.size(); ++i)
    s.image_annotations[size_t(s.coco.image_index(s.coco.annotations[i].image_id))].push_back(int64_t(i));
  return s;
}

int64_t LabelMap::label(int64_t category_id) const {
  const auto it = std::lower_bound(category_ids.begin(), category_ids.end(), category_id);
  return it != category_ids.end() && *it == category_id ? int64_t(it - category_ids.begin()) : -1;
}

LabelMap LabelMap::from_categories(const std::vector<CocoCategory>& categories) {
  std::vector<CocoCategory> sorted = categories;
  std::sort(sorted.begin(), sorted.end(), [](const CocoCategory& a, const CocoCategory& b) { return a.id < b.id; });
  LabelMap m;
  for (const auto& c : sorted) m.category_ids.push_back(c.id), m.names.push_back(c.name);
  return m;
}

nlohmann::json LabelMap::to_json() const {
  nlohmann::json a = nlohmann::json::array();
  for (size_t i = 0; i < category_ids.size(); ++i) a.push_back({{"id", category_ids[i]}, {"name", names[i]}});
  return a;
}

LabelMap LabelMap::from_json(const nlohmann::json& j, const std::string& origin) {
  if (!j.is_array()) throw Error(origin + ": 'categories' must be an array of {id, name}");
  std::vector<CocoCategory> cats;
  for (const auto& e : j) {
    if (!e.is_object() || !e.contains("id") || !e["id"].is_number_integer() || !e.contains("name") || !e["name"].is_string())
      throw Error(origin + ": each category needs an integer 'id' and a string 'name', got " + e.dump());
    cats.push_back({e["id"].get<int64_t>(), e["name"].get<std::string>(), ""});
  }
  LabelMap m = from_categories(cats);
  for (size_t i = 1; i < m.category_ids.size(); ++i)
    if (m.category_ids[i] == m.category_ids[i - 1]) throw Error(fmt::format("{}: category id {} repeated", origin, m.category_ids[i]));
  return m;
}

void BatchStats::add(const BatchStats& o) {
  images += o.images, unreadable += o.unreadable, boxes += o.boxes, crowd += o.crowd, tiny += o.tiny;
  unknown_category += o.unknown_category;
}

nlohmann::json BatchStats::to_json() const {
  return {{"images", images}, {"unreadable", unreadable}, {"boxes", boxes},
          {"crowd", crowd},   {"tiny", tiny},             {"unknown_category", unknown_category}};
}

DetectionBatch load_detection_batch(const DetectionSplit& split, const std::vector<int64_t>& indices,
                                    const LabelMap& labels, const BatchOptions& o, const std::vector<bool>& flip) {
  if (o.image_size < 1) throw Error("detection batch: image_size must be >= 1");
  DetectionBatch b;
  std::vector<torch::Tensor> images;
  for (size_t k = 0; k < indices.size(); ++k) {
    const int64_t idx = indices[k];
    if (idx < 0 || idx >= int64_t(split.coco.images.size()))
      throw Error(fmt::format("detection batch: image index {} outside the split's {} images", idx, split.coco.images.size()));
    const CocoImage& im = split.coco.images[size_t(idx)];
    const fs::path file = fs::path(split.image_dir) / im.file_name;
    cv::Mat rgb;
    try {
      const std::string bytes = core::read_text_file(file);
      rgb = data::decode_rgb(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    } catch (const Error& e) {
      ++b.stats.unreadable;
      spdlog::warn("detection data: skipping '{}': {}", file.string(), e.what());
      continue;
    }
    // The annotation's width/height define the box coordinates; a decoded size that differs is
    // resized by the file's own size (the scale then maps the file's pixels to the canvas).
    const double s = double(o.image_size) / double(std::max(rgb.cols, rgb.rows));
    const int w = std::clamp(int(std::lround(rgb.cols * s)), 1, o.image_size);
    const int h = std::clamp(int(std::lround(rgb.rows * s)), 1, o.image_size);
    if (w != rgb.cols || h != rgb.rows) cv::resize(rgb, rgb, cv::Size(w, h), 0, 0, cv::INTER_LINEAR);
    const bool mirror = k < flip.size() && flip[k];
    if (mirror) cv::flip(rgb, rgb, 1);
    torch::Tensor canvas = torch::zeros({3, o.image_size, o.image_size});
    canvas.index_put_({torch::indexing::Slice(), torch::indexing::Slice(0, h), torch::indexing::Slice(0, w)},
                      data::to_normalized_tensor(rgb, o.mean, o.std));
    // Box coordinates are in the annotation's pixel frame (width x height of the image entry).
    const double sx = double(w) / double(im.width), sy = double(h) / double(im.height);
    std::vector<float> boxes;
    std::vector<int64_t> labs;
    for (int64_t ai : split.image_annotations[size_t(idx)]) {
      const CocoAnnotation& a = split.coco.annotations[size_t(ai)];
      if (a.iscrowd) {
        ++b.stats.crowd;
        continue;
      }
      const int64_t lab = labels.label(a.category_id);
      if (lab < 0) {
        ++b.stats.unknown_category;
        continue;
      }
      double x1 = a.bbox[0] * sx, y1 = a.bbox[1] * sy, x2 = (a.bbox[0] + a.bbox[2]) * sx, y2 = (a.bbox[1] + a.bbox[3]) * sy;
      x1 = std::clamp(x1, 0.0, double(w)), x2 = std::clamp(x2, 0.0, double(w));
      y1 = std::clamp(y1, 0.0, double(h)), y2 = std::clamp(y2, 0.0, double(h));
      if (x2 - x1 < 1 || y2 - y1 < 1) {
        ++b.stats.tiny;
        continue;
      }
      if (mirror) std::swap(x1, x2), x1 = w - x1, x2 = w - x2;
      boxes.insert(boxes.end(), {float(x1), float(y1), float(x2), float(y2)});
      labs.push_back(o.class_agnostic ? 0 : lab);
    }
    DetectionTarget t;
    t.boxes = torch::tensor(boxes, torch::kFloat).reshape({-1, 4});
    t.labels = torch::tensor(labs, torch::kLong).reshape({-1});
    b.stats.boxes += t.boxes.size(0);
    b.targets.push_back(t);
    images.push_back(canvas);
    b.image_ids.push_back(im.id);
    b.scales.emplace_back(sx, sy);
    b.sizes.emplace_back(h, w);
  }
  b.stats.images = int64_t(images.size());
  if (!images.empty()) b.images = torch::stack(images);
  return b;
}

}  // namespace florence::detect
