// Zero-shot detection: class-agnostic proposals named by the image-text model; see
// zero_shot_detect.h.
#include "florence/adapt/detect/zero_shot_detect.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>

#include "florence/core/error.h"
#include "florence/core/files.h"
#include "florence/data/transforms.h"
#include "florence/eval/zero_shot.h"

namespace florence::detect {

namespace fs = std::filesystem;

namespace {

// The square crop of `box` (xywh, image pixels) with `context` margin, resized to size x size;
// pixels outside the image take `fill` (RGB 0-255).
cv::Mat square_crop(const cv::Mat& rgb, const CocoBox& box, double context, int size, const cv::Scalar& fill) {
  const double side = std::max({box[2], box[3], 1.0}) * (1 + 2 * context);
  const double cx = box[0] + box[2] / 2, cy = box[1] + box[3] / 2;
  const int x0 = int(std::floor(cx - side / 2)), y0 = int(std::floor(cy - side / 2));
  const int s = std::max(1, int(std::ceil(side)));
  cv::Mat canvas(s, s, CV_8UC3, fill);
  const cv::Rect want(x0, y0, s, s), have(0, 0, rgb.cols, rgb.rows);
  const cv::Rect in = want & have;
  if (in.area() > 0) rgb(in).copyTo(canvas(cv::Rect(in.x - x0, in.y - y0, in.width, in.height)));
  cv::Mat out;
  cv::resize(canvas, out, cv::Size(size, size), 0, 0, s > size ? cv::INTER_AREA : cv::INTER_CUBIC);
  return out;
}

}  // namespace

nlohmann::json ZeroShotDetectResult::to_json(const DetectionSplit& split) const {
  nlohmann::json j = {{"task", "zero-shot detection"},
          {"set", fs::path(split.ann_file).parent_path().parent_path().filename().string()},
          {"split", split.name},
          {"annotations", split.ann_file},
          {"categories", split.coco.categories.size()},
          {"images", split.coco.images.size()},
          {"images_with_proposals", images},
          {"crops", crops},
          {"unreadable", unreadable},
          {"detections", results.size()},
          {"metrics", metrics.to_json(&split.coco)},
          {"seconds", seconds}};
  if (proposal_metrics)
    j["proposals"] = {{"boxes", proposals}, {"class_agnostic_metrics", proposal_metrics->to_json(&split.coco)}};
  return j;
}

void check_zero_shot_options(const ZeroShotDetectOptions& o) {
  if (o.proposals < 1) throw Error(fmt::format("zero-shot detection: proposals per image must be >= 1, got {}", o.proposals));
  if (o.max_dets < 1) throw Error(fmt::format("zero-shot detection: max_dets must be >= 1, got {}", o.max_dets));
  if (!(o.context >= 0 && o.context <= 4))
    throw Error(fmt::format("zero-shot detection: context must be in [0, 4], got {}", o.context));
}

namespace {
void check_naming_inputs(const DetectionSplit& split, eval::EvalModel& clip) {
  if (split.coco.categories.empty()) throw Error(fmt::format("zero-shot detection: '{}' has no categories", split.ann_file));
  eval::require_tokenizer(clip, "zero-shot detection");
}
}  // namespace

ZeroShotDetectResult zero_shot_detect(const std::vector<CocoResult>& proposals, const DetectionSplit& split,
                                      eval::EvalModel& clip, const ZeroShotDetectOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  check_zero_shot_options(o);
  check_naming_inputs(split, clip);

  std::vector<std::string> names;
  std::vector<int64_t> ids;
  for (const auto& c : split.coco.categories) names.push_back(c.name), ids.push_back(c.id);
  const auto templates = o.templates.empty() ? eval::default_templates() : o.templates;
  const torch::Tensor text = eval::class_embeddings(clip, names, templates);  // [C, D] unit rows
  const double tau = clip.temperature();
  const int size = clip.preprocess.image_size;
  const auto& mean = *clip.preprocess.mean;
  const auto& stdv = *clip.preprocess.std;
  const cv::Scalar fill(mean[0] * 255, mean[1] * 255, mean[2] * 255);

  // Proposals per image, best first.
  std::map<int64_t, std::vector<const CocoResult*>> by_image;
  for (const auto& p : proposals) by_image[p.image_id].push_back(&p);

  ZeroShotDetectResult r;
  int64_t resized = 0;
  for (const auto& im : split.coco.images) {
    auto it = by_image.find(im.id);
    if (it == by_image.end()) continue;
    auto& props = it->second;
    std::stable_sort(props.begin(), props.end(), [](const CocoResult* a, const CocoResult* b) { return a->score > b->score; });
    if (int64_t(props.size()) > o.proposals) props.resize(size_t(o.proposals));
    cv::Mat rgb;
    const fs::path file = fs::path(split.image_dir) / im.file_name;
    try {
      const std::string bytes = core::read_text_file(file);
      rgb = data::decode_rgb(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    } catch (const std::exception& e) {
      if (r.unreadable++ < 5) spdlog::warn("zero-shot detection: skipping '{}': {}", file.string(), e.what());
      continue;
    }
    // Proposals were made on the image as the annotations size it; crops are taken in its decoded
    // pixels (the same unless the file and the annotation disagree).
    const double sx = double(rgb.cols) / double(im.width), sy = double(rgb.rows) / double(im.height);
    if ((sx != 1 || sy != 1) && resized++ < 5)
      spdlog::warn("zero-shot detection: '{}' is {}x{} pixels but annotated {}x{}: boxes rescaled to the file",
                   file.string(), rgb.cols, rgb.rows, im.width, im.height);
    std::vector<torch::Tensor> crops;
    for (const CocoResult* p : props) {
      const CocoBox b{p->bbox[0] * sx, p->bbox[1] * sy, p->bbox[2] * sx, p->bbox[3] * sy};
      crops.push_back(data::to_normalized_tensor(square_crop(rgb, b, o.context, size, fill), mean, stdv));
    }
    const torch::Tensor emb = torch::nn::functional::normalize(
        eval::encode_image_tensor(clip, torch::stack(crops)), torch::nn::functional::NormalizeFuncOptions().dim(1));
    const torch::Tensor prob = (tau * torch::matmul(emb, text.t())).softmax(1);  // [P, C]
    std::vector<double> objectness;
    for (const CocoResult* p : props) objectness.push_back(p->score);
    const torch::Tensor obj = torch::tensor(objectness, torch::kDouble);
    const torch::Tensor score = (prob.to(torch::kDouble) * obj.unsqueeze(1)).reshape({-1});  // [P * C]
    const int64_t keep = std::min<int64_t>(o.max_dets, score.size(0));
    const auto [top_s, top_i] = score.topk(keep);
    const int64_t C = int64_t(ids.size());
    for (int64_t k = 0; k < keep; ++k) {
      const int64_t flat = top_i[k].item<int64_t>();
      const CocoResult* p = props[size_t(flat / C)];
      r.results.push_back({im.id, ids[size_t(flat % C)], p->bbox, top_s[k].item<double>()});
    }
    r.crops += int64_t(props.size());
    ++r.images;
  }
  if (r.unreadable > 0)
    spdlog::warn("zero-shot detection: {} images of '{}' could not be read (their boxes count as missed)", r.unreadable,
                 split.ann_file);
  r.metrics = evaluate_bbox(split.coco, r.results, CocoEvalParams{});
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

ZeroShotDetectResult zero_shot_detect(LoadedDetector& detector, const DetectionSplit& split, eval::EvalModel& clip,
                                      const ZeroShotDetectOptions& options, int64_t detector_batch,
                                      const torch::Device& device) {
  // Everything the naming pass checks, before the detector pass (the slow part).
  check_zero_shot_options(options);
  check_naming_inputs(split, clip);
  DetectEvalOptions eo;
  eo.batch_size = detector_batch;
  eo.class_agnostic = true;
  const DetectEvalResult props = evaluate_detector(detector.model, split, detector.labels, detector.preprocess, eo, device);
  ZeroShotDetectResult r = zero_shot_detect(props.results, split, clip, options);
  // An image the detector could not read has no proposal, so the naming pass never opens it.
  r.unreadable += props.data.unreadable;
  r.proposal_metrics = props.metrics;
  r.proposals = int64_t(props.results.size());
  r.seconds += props.seconds;
  return r;
}

}  // namespace florence::detect
