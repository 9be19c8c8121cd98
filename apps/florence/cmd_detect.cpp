// florence detect train --data SET --out RUN [--detector dyhead-nano] [--checkpoint FLORENCE.safetensors]
//                       [--steps N | --epochs N] [--lr X] [--batch-size B] ... [--resume [RUN]]
// florence detect eval --checkpoint RUN/model.safetensors --data SET [--split test] [--out FILE]
// florence detect predict --checkpoint RUN/model.safetensors --image IN [--out OUT.png] [--min-score S]
// florence detect zero-shot --detector-checkpoint AGNOSTIC_RUN/model.safetensors --checkpoint FLORENCE.safetensors
//                           --data SET [--split test_unseen] [--proposals 100]
// The set is built by `florence data build detection` (or is any COCO-format set in its layout).
// Front end over detect/detect_task.h and detect/detect_eval.h.
#include <torch/torch.h>

#include <filesystem>
#include <iostream>
#include <optional>

#include "command.h"
#include "eval_flags.h"
#include "run_flags.h"
#include "florence/adapt/detect/detect_eval.h"
#include "florence/adapt/detect/detect_task.h"
#include "florence/adapt/detect/zero_shot_detect.h"
#include "florence/eval/zero_shot.h"
#include "florence/core/device.h"
#include "florence/core/error.h"
#include "florence/core/precision.h"
#include "florence/core/files.h"

namespace {

namespace fs = std::filesystem;
using florence::detect::DetectOptions;

void print_eval(const nlohmann::json& e, const florence::detect::CocoEvalResult& m) {
  std::cout << fmt::format("{} split '{}': {} images, {} detections ({:.1f} s)\n", e.value("set", ""),
                           e.value("split", ""), e.value("images", 0), e.value("detections", 0),
                           e.value("seconds", 0.0))
            << m.summary();
}

void print_baseline(const nlohmann::json& b) {
  std::cout << fmt::format("baseline, {}: AP {:.4f}  AP50 {:.4f}\n", b["name"].get<std::string>(),
                           b["metrics"]["AP"].get<double>(), b["metrics"]["AP50"].get<double>());
}

/// Draws the baseline of `kind` from the --baseline-split of --data into e["baseline"] (printed) or
/// e["baseline_error"] (warned): the evaluation is written either way.
template <class Args>
void record_baseline(nlohmann::json& e, const Args& a, const florence::detect::DetectionSplit& split,
                     florence::detect::BaselineKind kind) {
  std::optional<florence::detect::DetectionSplit> train;  // opened inside, so its error is recorded too
  if (florence::detect::record_detection_baseline(
          e,
          [&]() -> const florence::detect::DetectionSplit& {
            return train.emplace(florence::detect::open_detection_split(a.data, a.baseline_split));
          },
          split, a.baseline_boxes, a.seed, kind))
    print_baseline(e["baseline"]);
}

/// The result JSON `out` and the detections file `dets` may be written (command.h check_output):
/// neither is one of `inputs`, the split's annotations, or the other.
void check_outputs(const fs::path& out, const fs::path& dets, florence::cli::NamedPaths inputs, const std::string& data,
                   const std::string& split) {
  inputs.push_back({"the split's annotations", fs::path(data) / "annotations" / ("instances_" + split + ".json")});
  florence::cli::check_output("--out", out, inputs);
  inputs.push_back({"the result file (--out)", out});
  florence::cli::check_output("the detections file", dets, inputs);
}

void setup_detect_train(CLI::App* group) {
  auto* cmd = group->add_subcommand("train", "Train the DyHead/ATSS detector on a COCO-format set (shared run engine)");
  auto o = std::make_shared<DetectOptions>();
  auto resume = std::make_shared<std::string>();
  auto no_progress = std::make_shared<bool>(false);
  florence::cli::add_run_flags(cmd, *o);
  cmd->add_flag("--no-progress", *no_progress, "Log lines instead of a progress bar");
  cmd->add_option("--resume", *resume, "Continue a run: RUN_DIR or checkpoint (without a value: --out)")->expected(0, 1);
  cmd->callback([cmd, o, resume, no_progress] {
    if (*no_progress) o->progress = 0;
    if (cmd->count("--steps") > 0 && o->steps < 1)
      throw florence::Error(fmt::format("--steps must be >= 1, got {}", o->steps));
    if (cmd->count("--epochs") > 0 && o->epochs < 1)
      throw florence::Error(fmt::format("--epochs must be >= 1, got {}", o->epochs));
    if (o->threads == 0) o->threads = florence::cli::requested_threads();
    DetectOptions run = *o;
    if (cmd->count("--resume") > 0) {
      const std::string target = resume->empty() ? o->out_dir : *resume;
      if (target.empty()) throw florence::Error("--resume without a value needs --out RUN_DIR");
      run = florence::cli::resume_merge(cmd, florence::detect::load_detect_options(target), *o);
      run.resume = target;
    }
    const auto r = florence::detect::train_detector(run);
    if (r.interrupted) {
      std::cout << fmt::format("stopped after step {}/{}; resume with: florence detect train --resume {}\n", r.steps_done,
                               r.total_steps, r.run_dir);
      return;
    }
    std::cout << fmt::format("trained {} steps ({:.0f} s); loss {:.4f} -> {:.4f} (mean of first / last 10)\n",
                             r.steps_done, r.seconds, r.first_loss_mean, r.last_loss_mean);
    if (r.result.contains("test")) {
      const auto& t = r.result["test"];
      const auto& m = t["metrics"];
      std::cout << fmt::format("test ({}): AP {:.4f}  AP50 {:.4f}  AP75 {:.4f}  APs {:.4f}  APm {:.4f}  APl {:.4f}\n",
                               t.value("split", ""), m["AP"].get<double>(), m["AP50"].get<double>(),
                               m["AP75"].get<double>(), m["APs"].get<double>(), m["APm"].get<double>(),
                               m["APl"].get<double>());
      if (t.contains("baseline")) print_baseline(t["baseline"]);
      if (t.contains("baseline_error")) std::cout << "no baseline: " << t["baseline_error"].get<std::string>() << "\n";
    }
    std::cout << "weights " << r.final_weights << "\n";
  });
}

void setup_detect_eval(CLI::App* group) {
  auto* cmd = group->add_subcommand("eval", "COCO bbox mAP of a trained detector on a split (pycocotools' numbers)");
  struct Args {
    std::string checkpoint, data, split = "test", out, device = "cpu", precision = "fp32";
    int64_t batch_size = 16, max_images = 0, baseline_boxes = 0;
    std::string baseline_split = "train";
    bool class_agnostic = false;
    uint64_t seed = 0;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--checkpoint", a->checkpoint, "Detector weights (a detect train run's model.safetensors)")->required();
  cmd->add_option("--data", a->data, "Detection set root")->required();
  cmd->add_option("--split", a->split, "Split to evaluate (annotations/instances_SPLIT.json)")->capture_default_str();
  cmd->add_option("--out", a->out, "Result JSON (default: RUN/eval/detection_SPLIT.json beside the checkpoint)");
  cmd->add_option("--device", a->device, "Torch device")->capture_default_str();
  florence::cli::add_adapter_precision(cmd, &a->precision);
  cmd->add_option("--batch-size", a->batch_size, "Images per batch")->capture_default_str()->check(florence::cli::positive());
  cmd->add_option("--max-images", a->max_images, "Only the first N images (0 = all)")->check(florence::cli::non_negative());
  cmd->add_flag("--class-agnostic", a->class_agnostic, "Pool all categories (COCOeval useCats 0)");
  cmd->add_option("--baseline-boxes", a->baseline_boxes,
                  "Also score the box-prior baseline with N training boxes per image (class-agnostic: random boxes; 0 = no)")
      ->check(CLI::Range(int64_t(0), florence::detect::kMaxBaselineBoxes));
  cmd->add_option("--baseline-split", a->baseline_split, "Split whose boxes the baseline draws")->capture_default_str();
  cmd->add_option("--seed", a->seed, "Baseline seed")->capture_default_str();
  cmd->callback([a] {
    const fs::path out = a->out.empty()
                             ? fs::path(a->checkpoint).parent_path() / "eval" / ("detection_" + a->split + ".json")
                             : fs::path(a->out);
    const fs::path dets = out.parent_path() / ("detections_" + a->split + ".json");
    check_outputs(out, dets, florence::cli::checkpoint_files("--checkpoint", a->checkpoint), a->data, a->split);
    const torch::Device device = florence::parse_device(a->device);
    auto d = florence::detect::load_detector(a->checkpoint, device);
    d.model->set_autocast_bf16(florence::adapter_autocast(a->precision, device, "detect eval"));
    const auto split = florence::detect::open_detection_split(a->data, a->split, a->max_images);
    florence::detect::DetectEvalOptions eo;
    eo.batch_size = a->batch_size;
    eo.class_agnostic = a->class_agnostic;
    const auto r = florence::detect::evaluate_detector(d.model, split, d.labels, d.preprocess, eo, device);
    nlohmann::json e = r.to_json(split);
    e["detector"] = d.config.name;
    e["precision"] = d.model->autocast_bf16() ? "amp_bf16" : "fp32";
    e["weights"] = a->checkpoint;
    print_eval(e, r.metrics);
    if (r.dropped > 0)
      std::cout << fmt::format("({} detections of categories the split does not have were left out)\n", r.dropped);
    if (a->baseline_boxes > 0)
      record_baseline(e, *a, split,
                      a->class_agnostic || d.config.class_agnostic ? florence::detect::BaselineKind::random_boxes_pooled
                                                                   : florence::detect::BaselineKind::box_prior);
    if (!out.parent_path().empty()) fs::create_directories(out.parent_path());
    florence::core::write_text_atomic(out, e.dump(2) + "\n");
    florence::detect::write_coco_results(dets.string(), r.results);
    std::cout << "result " << out.string() << "\n";
  });
}

void setup_detect_predict(CLI::App* group) {
  auto* cmd = group->add_subcommand("predict", "Detect objects in one image; print them and draw them on a PNG");
  struct Args {
    std::string checkpoint, image, out, device = "cpu", precision = "fp32";
    double min_score = 0.3;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--checkpoint", a->checkpoint, "Detector weights (a detect train run's model.safetensors)")->required();
  cmd->add_option("--image", a->image, "Input image (PNG, JPEG, ...)")->required();
  cmd->add_option("--out", a->out, "PNG with the labelled boxes drawn (default: none)");
  cmd->add_option("--min-score", a->min_score, "Only detections scoring at least this")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--device", a->device, "Torch device")->capture_default_str();
  florence::cli::add_adapter_precision(cmd, &a->precision);
  cmd->callback([a] {
    const torch::Device device = florence::parse_device(a->device);
    auto d = florence::detect::load_detector(a->checkpoint, device);
    d.model->set_autocast_bf16(florence::adapter_autocast(a->precision, device, "detect predict"));
    const auto det = florence::detect::detect_image(d, a->image, a->min_score, device);
    const std::vector<std::string> names = d.config.class_agnostic ? std::vector<std::string>{"object"} : d.labels.names;
    const auto boxes = det.boxes.to(torch::kDouble).contiguous();
    std::cout << fmt::format("{} detections with score >= {}\n", boxes.size(0), a->min_score);
    for (int64_t i = 0; i < boxes.size(0); ++i) {
      const int64_t l = det.labels[i].item<int64_t>();
      std::cout << fmt::format("{:<16} {:.3f}  [{:.1f}, {:.1f}, {:.1f}, {:.1f}]\n",
                               l >= 0 && l < int64_t(names.size()) ? names[size_t(l)] : std::to_string(l),
                               det.scores[i].item<double>(), boxes[i][0].item<double>(), boxes[i][1].item<double>(),
                               boxes[i][2].item<double>(), boxes[i][3].item<double>());
    }
    if (!a->out.empty()) {
      florence::detect::draw_detections(a->image, det, names, a->out);
      std::cout << "drawn " << a->out << "\n";
    }
  });
}

void setup_detect_zero_shot(CLI::App* group) {
  auto* cmd = group->add_subcommand(
      "zero-shot", "Zero-shot detection: a class-agnostic detector's boxes named by the image-text model (COCO mAP)");
  struct Args {
    std::string detector, data, split = "test_unseen", out, baseline_split = "train", templates;
    int64_t max_images = 0, baseline_boxes = 100, detector_batch = 16;
    uint64_t seed = 0;
    florence::detect::ZeroShotDetectOptions zs;
  };
  auto a = std::make_shared<Args>();
  auto f = std::make_shared<florence::cli::EvalFlags>();
  florence::cli::add_eval_flags(cmd, f);  // --checkpoint: the image-text model
  cmd->add_option("--detector-checkpoint", a->detector,
                  "Proposal detector's weights (a detect train --class-agnostic run; a class detector's labels are ignored)")
      ->required();
  cmd->add_option("--data", a->data, "Detection set root")->required();
  cmd->add_option("--split", a->split, "Split to evaluate: categories never trained as boxes")->capture_default_str();
  cmd->add_option("--out", a->out, "Result JSON (default: beside the detector, eval/zero_shot_SPLIT.json)");
  cmd->add_option("--proposals", a->zs.proposals, "Proposals per image that are named")
      ->capture_default_str()
      ->check(florence::cli::positive());
  cmd->add_option("--context", a->zs.context, "Crop margin on each side, fraction of the box's longer side")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 4.0));
  cmd->add_option("--templates", a->templates, "Prompt templates file, one per line with {} (default: the built-in set)");
  cmd->add_option("--max-images", a->max_images, "Only the first N images (0 = all)")->check(florence::cli::non_negative());
  cmd->add_option("--baseline-boxes", a->baseline_boxes,
                  "Also score the random-box baseline with N training-prior boxes per image (0 = no)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t(0), florence::detect::kMaxBaselineBoxes));
  cmd->add_option("--baseline-split", a->baseline_split, "Split whose boxes the baseline draws")->capture_default_str();
  cmd->add_option("--seed", a->seed, "Baseline seed")->capture_default_str();
  cmd->callback([a, f] {
    // Everything cheap to check (options, templates, the image-text model) before the detector pass.
    florence::detect::ZeroShotDetectOptions zo = a->zs;
    florence::detect::check_zero_shot_options(zo);
    const fs::path out = a->out.empty()
                             ? fs::path(a->detector).parent_path() / "eval" / ("zero_shot_" + a->split + ".json")
                             : fs::path(a->out);
    const fs::path dets = out.parent_path() / ("zero_shot_detections_" + a->split + ".json");
    {
      auto inputs = florence::cli::checkpoint_files("--detector-checkpoint", a->detector);
      for (auto& p : florence::cli::checkpoint_files("--checkpoint", f->load.checkpoint)) inputs.push_back(std::move(p));
      check_outputs(out, dets, inputs, a->data, a->split);
    }
    if (!a->templates.empty()) zo.templates = florence::eval::read_templates(a->templates);
    const florence::eval::LoadOptions lo = f->resolve();
    const torch::Device device = florence::parse_device(lo.device);
    auto clip = florence::eval::load_eval_model(lo);
    florence::eval::require_tokenizer(clip, "detect zero-shot");
    auto d = florence::detect::load_detector(a->detector, device);
    // bf16 (bfloat16 weights) is for the image-text model; the detector then runs under autocast.
    d.model->set_autocast_bf16(
        florence::adapter_autocast(lo.precision == "bf16" ? "amp_bf16" : lo.precision, device, "detect zero-shot"));
    if (!d.config.class_agnostic)
      std::cerr << "warning: '" << a->detector
                << "' is a class detector: its labels are ignored, but if it was trained with boxes of the split's "
                   "categories this is not zero-shot\n";
    const auto split = florence::detect::open_detection_split(a->data, a->split, a->max_images);
    if (split.coco.images.empty()) std::cerr << "warning: split '" << a->split << "' has no image: every metric is -1\n";
    const auto r = florence::detect::zero_shot_detect(d, split, clip, zo, a->detector_batch, device);
    nlohmann::json e = r.to_json(split);
    e["detector"] = {{"name", d.config.name}, {"weights", a->detector}, {"class_agnostic", d.config.class_agnostic}};
    e["image_text_model"] = clip.describe();
    e["proposals"]["per_image"] = zo.proposals;
    e["proposals"]["context"] = zo.context;
    std::cout << fmt::format("proposals: {} on {} images; class-agnostic AP50 {:.4f}  AR@100 {:.4f}\n", r.proposals,
                             split.coco.images.size(), r.proposal_metrics->ap50, r.proposal_metrics->ar100);
    std::cout << fmt::format("zero-shot detection on '{}' ({} categories, {} crops named, {} unreadable images, {:.1f} s)\n",
                             a->split, split.coco.categories.size(), r.crops, r.unreadable, r.seconds)
              << r.metrics.summary();
    // Random training boxes, each given a category of the split at random (categories kept).
    if (a->baseline_boxes > 0) record_baseline(e, *a, split, florence::detect::BaselineKind::random_boxes);
    if (!out.parent_path().empty()) fs::create_directories(out.parent_path());
    florence::core::write_text_atomic(out, e.dump(2) + "\n");
    florence::detect::write_coco_results(dets.string(), r.results);
    std::cout << "result " << out.string() << "\ndetections " << dets.string() << "\n";
  });
}

void setup_detect(CLI::App& root) {
  auto* group = florence::cli::group(root, "detect", "Object detection: DyHead + ATSS on the CoSwin pyramid, COCO mAP");
  setup_detect_train(group);
  setup_detect_eval(group);
  setup_detect_predict(group);
  setup_detect_zero_shot(group);
}

}  // namespace

FLORENCE_COMMAND(setup_detect);
