// Report rows of the transfer results (see report_transfer.h).
#include "florence/eval/report_transfer.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace florence::eval {

namespace {

std::string pct(double v) { return fmt::format("{:.2f}", 100.0 * v); }

void classification_rows(const nlohmann::json& m, const std::string& task, std::vector<ReportRow>& rows) {
  const auto& ch = m.at("chance");
  rows.push_back({task, "top-1 %", pct(m.at("top1").get<double>()), pct(ch.at("top1").get<double>())});
  if (m.contains("top5")) rows.push_back({task, "top-5 %", pct(m.at("top5").get<double>()), pct(ch.at("top5").get<double>())});
  if (m.contains("mean_per_class"))
    rows.push_back({task, "mean per-class %", pct(m.at("mean_per_class").get<double>()),
                    pct(ch.at("mean_per_class").get<double>())});
}

/// R@1/5/10 and median rank of one retrieval direction (eval::RetrievalMetrics JSON with its
/// "chance"), each beside its chance level, titled `title`.
void direction_rows(const nlohmann::json& m, const std::string& title, std::vector<ReportRow>& rows) {
  const auto& ch = m.at("chance");
  for (const char* k : {"R@1", "R@5", "R@10"})
    if (m.contains(k)) rows.push_back({title, std::string(k) + " %", pct(m[k].get<double>()), pct(ch.at(k).get<double>())});
  rows.push_back({title, "median rank", fmt::format("{:g}", m.at("median_rank").get<double>()),
                  fmt::format("{:g}", ch.at("median_rank").get<double>())});
}

/// Text-to-video / video-to-text rows of a caption retrieval (adapt/video/retrieval.h
/// caption_retrieval JSON: "t2v" / "v2t" RetrievalMetrics).
void caption_retrieval_rows(const nlohmann::json& r, const std::string& task, std::vector<ReportRow>& rows) {
  for (const auto& [dir, label] : {std::pair<std::string, std::string>{"t2v", "text→video"}, {"v2t", "video→text"}}) {
    const auto& m = r.at(dir);
    direction_rows(m, fmt::format("{} {} ({} queries, {} items)", task, label, m.at("num_queries").get<int64_t>(),
                                  m.at("num_items").get<int64_t>()),
                   rows);
  }
}

}  // namespace

std::vector<ReportRow> retrieval_report_rows(const nlohmann::json& j, const std::string& prefix) {
  std::vector<ReportRow> rows;
  const std::string n = fmt::format(" ({} images, {} texts)", j.at("num_images").get<int64_t>(), j.at("num_texts").get<int64_t>());
  for (const auto& [dir, label] : {std::pair<std::string, std::string>{"image_to_text", "image→text"}, {"text_to_image", "text→image"}}) {
    direction_rows(j.at(dir), prefix + label + n, rows);
  }
  return rows;
}

std::vector<ReportRow> transfer_report_rows(const nlohmann::json& j) {
  std::vector<ReportRow> rows;
  if (!j.is_object() || !j.contains("task") || !j["task"].is_string()) return rows;
  const std::string task = j["task"].get<std::string>();
  if (task == "linear-probe") {
    const std::string t = fmt::format("linear probe ({} features, {} train / {} test, {} classes, λ {:.3g})",
                                      j.at("features").get<std::string>(), j.at("num_train").get<int64_t>(),
                                      j.at("num_test").get<int64_t>(), j.at("classes").size(),
                                      j.at("final").at("l2").get<double>());
    classification_rows(j.at("metrics"), t, rows);
  } else if (task == "few-shot") {
    const std::string t = fmt::format("few-shot {}-way {}-shot ({} episodes, {} queries/class)", j.at("ways").get<int64_t>(),
                                      j.at("shots").get<int64_t>(), j.at("episodes").get<int64_t>(),
                                      j.at("queries").get<int64_t>());
    for (const auto& [clf, r] : j.at("results").items())
      rows.push_back({t, clf + " accuracy % (± 95% CI)",
                      r.at("ci95").is_null()  // fewer than 2 episodes: no interval
                          ? fmt::format("{:.2f} ± n/a", 100 * r.at("mean").get<double>())
                          : fmt::format("{:.2f} ± {:.2f}", 100 * r.at("mean").get<double>(), 100 * r.at("ci95").get<double>()),
                      pct(j.at("chance").get<double>())});
  } else if (task == "finetune") {
    const std::string t = fmt::format("fine-tuned ({} steps, {} train images, {} classes)", j.at("steps").get<int64_t>(),
                                      j.at("num_train").get<int64_t>(), j.at("classes").size());
    classification_rows(j.at("metrics"), t, rows);
  } else if (task == "detection" || task == "zero-shot detection") {
    // COCO box mAP (detect eval / detect train / detect zero-shot); the chance column holds the
    // result's baseline (box prior or random boxes) where it has one.
    const auto& m = j.at("metrics");
    const nlohmann::json* b = j.contains("baseline") ? &j["baseline"].at("metrics") : nullptr;
    const std::string t =
        fmt::format("{} on '{}' ({} images{})", task, j.at("split").get<std::string>(), j.at("images").get<int64_t>(),
                    b ? ", baseline: " + j["baseline"].value("name", std::string("?")) : std::string());
    for (const char* k : {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR100"}) {
      const double v = m.at(k).get<double>();
      rows.push_back({t, k, v < 0 ? "n/a" : fmt::format("{:.4f}", v),
                      b && b->contains(k) && b->at(k).get<double>() >= 0 ? fmt::format("{:.4f}", b->at(k).get<double>())
                                                                          : "—"});
    }
  } else if (task == "vqa-eval") {
    // Official VQA accuracy (vqa eval / vqa train), overall then per question and answer type; the
    // chance column holds the prior baseline (most frequent answer per question type) where present.
    const auto& m = j.at("model");
    const nlohmann::json* p = j.contains("prior") ? &j["prior"] : nullptr;
    const std::string t = fmt::format("VQA on '{}' ({} questions{})", j.at("split").get<std::string>(),
                                      m.at("questions").get<int64_t>(),
                                      j.value("blind", false) ? ", question only (blind)" : "");
    auto prior_of = [&](const char* group, const std::string& key) -> std::string {
      if (!p) return "—";
      const nlohmann::json& g = group ? p->at(group) : *p;
      return g.contains(key) ? fmt::format("{:.2f}", g.at(key).get<double>()) : "—";
    };
    rows.push_back({t, "VQA accuracy", fmt::format("{:.2f}", m.at("accuracy").get<double>()), prior_of(nullptr, "accuracy")});
    for (const auto& [group, label] : {std::pair<const char*, const char*>{"per_question_type", "question type"},
                                       {"per_answer_type", "answer type"}})
      for (const auto& [k, v] : m.at(group).items())
        rows.push_back({t, fmt::format("VQA accuracy, {} {}", label, k), fmt::format("{:.2f}", v.get<double>()),
                        prior_of(group, k)});
  } else if (task == "video-actions" || task == "video-actions-eval") {
    // Action recognition (video train / video eval): top-1 / top-5 / mean per class with multi-view.
    if (j.contains("metrics")) {
      const auto& v = j.at("views");
      const std::string t = fmt::format(
          "video actions on '{}' ({} clips, {} input, {} x {} views{})",
          j.contains("split") ? j["split"].get<std::string>()
                              : j.value("options", nlohmann::json::object()).value("test_split", std::string("test")),
          j.at("metrics").at("num_samples").get<int64_t>(), j.at("input").get<std::string>(), v.at("clips").get<int>(),
          v.at("crops").get<int>(), task == "video-actions" ? fmt::format(", {} steps", j.at("steps").get<int64_t>()) : "");
      classification_rows(j.at("metrics"), t, rows);
    }
  } else if (task == "video-retrieval") {
    // video retrieval: zero-shot (inflated image tower) or a trained video-text model.
    caption_retrieval_rows(j, fmt::format("video retrieval on '{}', {}", j.at("split").get<std::string>(),
                                          j.value("model", std::string("zero-shot"))),
                           rows);
  } else if (task == "video-text") {
    // video train --task retrieval: the test split's retrieval after training.
    if (j.contains("test"))
      caption_retrieval_rows(j.at("test"),
                             fmt::format("video-text trained ({} steps, {} input)", j.at("steps").get<int64_t>(),
                                         j.at("input").get<std::string>()),
                             rows);
  } else if (task == "finetune-retrieval") {
    if (j.contains("zero_shot")) rows = retrieval_report_rows(j.at("zero_shot"), "before fine-tuning: retrieval ");
    for (auto& r : retrieval_report_rows(j.at("retrieval"), fmt::format("fine-tuned ({} steps) retrieval ",
                                                                       j.at("train").at("steps").get<int64_t>())))
      rows.push_back(std::move(r));
  }
  return rows;
}

}  // namespace florence::eval
