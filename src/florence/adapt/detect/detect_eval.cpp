// Detector loading, COCO evaluation, single-image detection, drawing, box-prior baseline; see
// detect_eval.h.
#include "florence/adapt/detect/detect_eval.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>
#include <random>

#include "florence/core/error.h"
#include "florence/core/files.h"
#include "florence/data/scene.h"
#include "florence/data/transforms.h"
#include "florence/model/io.h"

namespace florence::detect {

namespace fs = std::filesystem;

nlohmann::json detector_checkpoint_extra(const DetectorConfig& config, const LabelMap& labels, const BatchOptions& pre) {
  DetectorConfig c = config;
  if (!c.class_agnostic && c.class_names.empty()) c.class_names = labels.names;
  return {{"detector", detector_config_to_json(c)},
          {"categories", labels.to_json()},
          {"preprocess", {{"image_size", pre.image_size}, {"mean", pre.mean}, {"std", pre.std}}}};
}

LoadedDetector load_detector(const std::string& weights, const torch::Device& device) {
  std::error_code ec;
  if (!fs::is_regular_file(weights, ec))
    throw Error(fmt::format("detector checkpoint '{}' {}", weights,
                            fs::exists(weights, ec) ? "is not a file" : "does not exist"));
  const std::string side_path = model::sidecar_path(weights);
  if (!fs::is_regular_file(side_path, ec))
    throw Error(fmt::format("'{}' has no sidecar '{}': not a detector checkpoint", weights, side_path));
  const nlohmann::json side = core::read_json_file(side_path);
  if (!side.contains("detector") || !side.contains("categories"))
    throw Error(fmt::format("'{}' is not a detector checkpoint (no 'detector' / 'categories' in its sidecar)", side_path));
  LoadedDetector d;
  d.weights = weights;
  d.config = detector_config_from_json(side["detector"], side_path + ": detector");
  d.labels = LabelMap::from_json(side["categories"], side_path);
  if (!d.config.class_agnostic && int64_t(d.labels.category_ids.size()) != d.config.classes())
    throw Error(fmt::format("{}: {} categories for a {}-class detector", side_path, d.labels.category_ids.size(),
                            d.config.classes()));
  if (side.contains("preprocess")) {
    const auto& p = side["preprocess"];
    try {
      d.preprocess.image_size = p.value("image_size", d.config.image_size);
      if (p.contains("mean")) d.preprocess.mean = p["mean"].get<std::array<float, 3>>();
      if (p.contains("std")) d.preprocess.std = p["std"].get<std::array<float, 3>>();
    } catch (const nlohmann::json::exception& e) {
      throw Error(fmt::format("{}: bad 'preprocess': {}", side_path, e.what()));
    }
  } else {
    d.preprocess.image_size = d.config.image_size;
  }
  d.preprocess.class_agnostic = d.config.class_agnostic;
  d.model = Detector(d.config);
  model::ModelSpec spec;
  spec.name = d.config.name;
  spec.vision = d.config.backbone;
  try {
    core::load_state_dict(*d.model, model::read_weights(weights, spec));
  } catch (const Error& e) {
    throw Error(fmt::format("loading detector '{}': {}", weights, e.what()));
  }
  d.model->to(device);
  d.model->eval();
  return d;
}

nlohmann::json DetectEvalResult::to_json(const DetectionSplit& split) const {
  std::string set = fs::path(split.ann_file).parent_path().parent_path().filename().string();
  return {{"task", "detection"},
          {"set", set},
          {"split", split.name},
          {"annotations", split.ann_file},
          {"images", split.coco.images.size()},
          {"ground_truth_boxes", split.coco.annotations.size()},
          {"detections", results.size()},
          {"dropped_detections", dropped},
          {"data", data.to_json()},
          {"metrics", metrics.to_json(&split.coco)},
          {"seconds", seconds}};
}

DetectEvalResult evaluate_detector(Detector& model, const DetectionSplit& split, const LabelMap& labels,
                                   const BatchOptions& pre, const DetectEvalOptions& o, const torch::Device& device) {
  const auto t0 = std::chrono::steady_clock::now();
  if (o.batch_size < 1) throw Error("detection eval: batch size must be >= 1");
  if (split.coco.categories.empty()) throw Error(fmt::format("detection eval: '{}' has no categories", split.ann_file));
  const bool agnostic = o.class_agnostic || model->config().class_agnostic;
  // Label -> the split's category id (-1: the split lacks it). A class-agnostic detector's one
  // label is reported as the split's first category (categories are pooled then).
  std::vector<int64_t> to_cat;
  if (agnostic) {
    to_cat = {split.coco.categories.front().id};
  } else {
    for (int64_t id : labels.category_ids) to_cat.push_back(split.coco.category_index(id) >= 0 ? id : -1);
  }
  DetectEvalResult r;
  const bool was_training = model->is_training();
  model->eval();
  const int64_t n = int64_t(split.coco.images.size());
  for (int64_t start = 0; start < n; start += o.batch_size) {
    std::vector<int64_t> idx;
    for (int64_t i = start; i < std::min(n, start + o.batch_size); ++i) idx.push_back(i);
    const DetectionBatch b = load_detection_batch(split, idx, labels, pre);
    r.data.add(b.stats);
    if (b.stats.images == 0) continue;
    const std::vector<Detections> dets = model->predict(b.images.to(device), b.sizes);
    for (size_t i = 0; i < dets.size(); ++i) {
      Detections d = dets[i];
      if (!agnostic) {
        // Keep the labels the split has.
        const torch::Tensor lab = d.labels.to(torch::kCPU);
        std::vector<int64_t> keep;
        for (int64_t k = 0; k < lab.size(0); ++k) {
          const int64_t l = lab[k].item<int64_t>();
          if (l >= 0 && l < int64_t(to_cat.size()) && to_cat[size_t(l)] >= 0) keep.push_back(k);
          else ++r.dropped;
        }
        if (int64_t(keep.size()) != lab.size(0)) {
          const torch::Tensor ki = torch::tensor(keep, torch::kLong).to(d.boxes.device());
          d.boxes = d.boxes.index_select(0, ki), d.scores = d.scores.index_select(0, ki);
          d.labels = d.labels.index_select(0, ki);
        }
      } else {
        d.labels = torch::zeros_like(d.labels);
      }
      const auto [sx, sy] = b.scales[i];
      const auto res = to_coco_results(d, b.image_ids[i], to_cat, 1.0 / sx, 1.0 / sy);
      r.results.insert(r.results.end(), res.begin(), res.end());
    }
  }
  if (was_training) model->train();
  if (r.data.unreadable > 0)
    spdlog::warn("detection eval: {} of {} images of '{}' could not be read (their boxes count as missed)",
                 r.data.unreadable, n, split.ann_file);
  CocoEvalParams params;
  params.use_cats = !agnostic;
  if (o.max_dets != 100) params.max_dets = {1, 10, int(o.max_dets)};
  r.metrics = evaluate_bbox(split.coco, r.results, params);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

namespace {

/// A training box relative to its image's size, with its category and image.
struct RelativeBox {
  int64_t category;
  double x, y, w, h;
  int64_t image_id;
};

/// The non-crowd annotations of `train` as boxes relative to their image, those whose category
/// `keep` accepts.
template <class Keep>
std::vector<RelativeBox> relative_boxes(const DetectionSplit& train, Keep keep) {
  std::vector<RelativeBox> out;
  for (const auto& a : train.coco.annotations) {
    if (a.iscrowd || !keep(a.category_id)) continue;
    const auto& im = train.coco.images[size_t(train.coco.image_index(a.image_id))];
    out.push_back(
        {a.category_id, a.bbox[0] / im.width, a.bbox[1] / im.height, a.bbox[2] / im.width, a.bbox[3] / im.height, im.id});
  }
  return out;
}

/// Draws `per_image` boxes for every image of `split` from `pool` with `make(box, image)`; when
/// `split` is the pool's own split (`same`), never an image's own boxes (leave one image out), and
/// images with no other image's box are skipped.
template <class Make>
std::vector<CocoResult> draw_boxes(const std::vector<RelativeBox>& pool, const DetectionSplit& split, bool same,
                                   int64_t per_image, std::mt19937_64& rng, Make make) {
  std::map<int64_t, int64_t> own;
  if (same)
    for (const auto& p : pool) ++own[p.image_id];
  std::vector<CocoResult> out;
  for (const auto& im : split.coco.images) {
    if (same && own[im.id] == int64_t(pool.size())) continue;  // no other image's box to draw
    for (int64_t k = 0; k < per_image; ++k) {
      const RelativeBox* q = nullptr;
      do q = &pool[size_t(data::uniform_int(rng, pool.size()))];
      while (same && q->image_id == im.id);
      out.push_back(make(*q, im));
    }
  }
  return out;
}

void check_baseline_boxes(const char* what, int64_t per_image) {
  if (per_image < 1 || per_image > kMaxBaselineBoxes)
    throw Error(fmt::format("{}: boxes per image must be in [1, {}], got {}", what, kMaxBaselineBoxes, per_image));
}

}  // namespace

std::vector<CocoResult> box_prior_baseline(const DetectionSplit& train, const DetectionSplit& split, int64_t per_image,
                                           uint64_t seed) {
  check_baseline_boxes("box prior", per_image);
  const auto priors = relative_boxes(train, [&](int64_t c) { return split.coco.category_index(c) >= 0; });
  if (priors.empty())
    throw Error(fmt::format("box prior: '{}' has no annotation of the categories of '{}'", train.ann_file, split.ann_file));
  std::mt19937_64 rng(seed);
  // Scored on the images it draws from: never an image's own boxes (leave one image out).
  return draw_boxes(priors, split, train.ann_file == split.ann_file, per_image, rng,
                    [&](const RelativeBox& q, const CocoImage& im) -> CocoResult {
                      return {im.id, q.category, {q.x * im.width, q.y * im.height, q.w * im.width, q.h * im.height},
                              data::uniform01(rng)};
                    });
}

std::vector<CocoResult> random_box_baseline(const DetectionSplit& train, const DetectionSplit& split,
                                            int64_t per_image, uint64_t seed) {
  check_baseline_boxes("random-box baseline", per_image);
  if (split.coco.categories.empty()) throw Error(fmt::format("random-box baseline: '{}' has no categories", split.ann_file));
  const auto rel = relative_boxes(train, [](int64_t) { return true; });
  if (rel.empty()) throw Error(fmt::format("random-box baseline: '{}' has no annotation", train.ann_file));
  std::mt19937_64 rng(seed);
  const size_t C = split.coco.categories.size();
  return draw_boxes(rel, split, train.ann_file == split.ann_file, per_image, rng,
                    [&](const RelativeBox& b, const CocoImage& im) -> CocoResult {
                      const int64_t cat = split.coco.categories[size_t(data::uniform_int(rng, C))].id;
                      return {im.id, cat, {b.x * im.width, b.y * im.height, b.w * im.width, b.h * im.height},
                              data::uniform01(rng)};
                    });
}

nlohmann::json detection_baseline(const DetectionSplit& train, const DetectionSplit& split, int64_t per_image,
                                  uint64_t seed, BaselineKind kind) {
  CocoEvalParams p;
  p.use_cats = kind != BaselineKind::random_boxes_pooled;
  const auto boxes = kind == BaselineKind::box_prior ? box_prior_baseline(train, split, per_image, seed)
                                                     : random_box_baseline(train, split, per_image, seed);
  std::string name;
  switch (kind) {
    case BaselineKind::box_prior:
      name = fmt::format("box prior ({} '{}' boxes per image, random scores)", per_image, train.name);
      break;
    case BaselineKind::random_boxes_pooled:
      name = fmt::format("random boxes ({} '{}' boxes per image, random scores)", per_image, train.name);
      break;
    case BaselineKind::random_boxes:
      name = fmt::format("random boxes ({} '{}' boxes per image, random category and score)", per_image, train.name);
      break;
  }
  return {{"name", name}, {"metrics", evaluate_bbox(split.coco, boxes, p).to_json(&split.coco)}};
}

bool record_detection_baseline(nlohmann::json& result, const std::function<const DetectionSplit&()>& train,
                               const DetectionSplit& split, int64_t per_image, uint64_t seed, BaselineKind kind) {
  try {
    result["baseline"] = detection_baseline(train(), split, per_image, seed, kind);
    return true;
  } catch (const Error& err) {
    spdlog::warn("detect: no baseline on '{}': {}", split.name, err.what());
    result["baseline_error"] = err.what();
    return false;
  }
}

Detections detect_image(LoadedDetector& d, const std::string& image_path, double min_score, const torch::Device& device) {
  // A one-image split in memory: the image's real size from the decoded file.
  const std::string bytes = core::read_text_file(image_path);
  const cv::Mat rgb = data::decode_rgb(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  DetectionSplit s;
  s.name = "image";
  s.image_dir = fs::path(image_path).parent_path().string();
  s.coco.images.push_back({1, fs::path(image_path).filename().string(), rgb.cols, rgb.rows});
  s.coco.reindex();
  s.image_annotations.assign(1, {});
  const DetectionBatch b = load_detection_batch(s, {0}, d.labels, d.preprocess);
  if (b.stats.images != 1) throw Error(fmt::format("cannot read image '{}'", image_path));
  d.model->eval();
  Detections det = d.model->predict(b.images.to(device), b.sizes)[0];
  const auto [sx, sy] = b.scales[0];
  torch::Tensor keep = det.scores.ge(min_score).nonzero().reshape({-1});
  det.boxes = det.boxes.index_select(0, keep).cpu() /
              torch::tensor({sx, sy, sx, sy}, torch::kDouble).to(torch::kFloat).reshape({1, 4});
  det.scores = det.scores.index_select(0, keep).cpu();
  det.labels = det.labels.index_select(0, keep).cpu();
  return det;
}

void draw_detections(const std::string& image_path, const Detections& dets, const std::vector<std::string>& names,
                     const std::string& out_png) {
  const std::string bytes = core::read_text_file(image_path);
  cv::Mat rgb = data::decode_rgb(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()).clone();
  // Small images are drawn at a readable size (labels need ~100 px of width).
  const double up = rgb.cols < 480 ? std::ceil(480.0 / rgb.cols) : 1.0;
  if (up > 1) cv::resize(rgb, rgb, cv::Size(), up, up, cv::INTER_NEAREST);
  const auto boxes = dets.boxes.to(torch::kCPU, torch::kDouble).contiguous();
  const auto scores = dets.scores.to(torch::kCPU, torch::kDouble).contiguous();
  const auto labels = dets.labels.to(torch::kCPU, torch::kLong).contiguous();
  static const cv::Scalar palette[] = {{230, 25, 75}, {60, 180, 75}, {0, 130, 200}, {245, 130, 48}, {145, 30, 180},
                                       {70, 240, 240}, {240, 50, 230}, {210, 245, 60}, {0, 128, 128}, {170, 110, 40}};
  // Labels best first: above the box, else inside its top edge; one that would cover a better
  // detection's label is left out (its box is still drawn) so that every label shown is readable.
  const int64_t n = boxes.size(0);
  std::vector<cv::Rect> label_at(static_cast<size_t>(n));
  std::vector<std::string> texts(static_cast<size_t>(n));
  std::vector<cv::Rect> placed;
  for (int64_t i = 0; i < n; ++i) {
    const double* b = boxes.data_ptr<double>() + 4 * i;
    const int64_t l = labels[i].item<int64_t>();
    const std::string name = l >= 0 && l < int64_t(names.size()) ? names[size_t(l)] : std::to_string(l);
    texts[size_t(i)] = fmt::format("{} {:.2f}", name, scores[i].item<double>());
    int base = 0;
    const cv::Size ts = cv::getTextSize(texts[size_t(i)], cv::FONT_HERSHEY_SIMPLEX, 0.45, 1, &base);
    const cv::Size box(ts.width + 4, ts.height + 4);
    const int x = int(b[0] * up), y = int(b[1] * up);
    for (const cv::Point at : {cv::Point(x, y - box.height), cv::Point(x, y + 2)}) {
      const cv::Rect r(cv::Point(std::max(0, at.x), std::max(0, at.y)), box);
      if (std::none_of(placed.begin(), placed.end(), [&](const cv::Rect& q) { return (q & r).area() > 0; })) {
        label_at[size_t(i)] = r;
        placed.push_back(r);
        break;
      }
    }
  }
  for (int64_t i = n - 1; i >= 0; --i) {  // best drawn last (on top)
    const double* b = boxes.data_ptr<double>() + 4 * i;
    const cv::Scalar colour = palette[size_t(labels[i].item<int64_t>()) % 10];
    cv::rectangle(rgb, cv::Point(int(b[0] * up), int(b[1] * up)), cv::Point(int(b[2] * up), int(b[3] * up)), colour, 2);
  }
  for (int64_t i = n - 1; i >= 0; --i) {
    const cv::Rect& r = label_at[size_t(i)];
    if (r.area() == 0) continue;
    cv::rectangle(rgb, r, palette[size_t(labels[i].item<int64_t>()) % 10], cv::FILLED);
    cv::putText(rgb, texts[size_t(i)], cv::Point(r.x + 2, r.y + r.height - 3), cv::FONT_HERSHEY_SIMPLEX, 0.45,
                cv::Scalar(255, 255, 255), 1, cv::LINE_AA);
  }
  data::write_rgb_png(out_png, rgb);
}

}  // namespace florence::detect
