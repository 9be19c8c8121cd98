// Zero-shot classification with a prompt ensemble (see zero_shot.h).
#include "florence/eval/zero_shot.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>

#include "florence/core/error.h"
#include "florence/eval/metrics.h"

namespace florence::eval {

const std::vector<std::string>& default_templates() {
  static const std::vector<std::string> t = {
      "{}",
      "a photo of a {}.",
      "a drawing of a {}.",
      "a sketch of a {}.",
      "a cartoon {}.",
      "art of the {}.",
      "a rendering of a {}.",
      "a black and white photo of the {}.",
      "a low resolution photo of the {}.",
      "a photo of the small {}.",
      "a photo of the large {}.",
      "a close-up photo of a {}.",
      "itap of a {}.",
  };
  return t;
}

std::string fill_template(const std::string& tmpl, const std::string& name) {
  if (tmpl.find("{}") == std::string::npos) throw Error("prompt template '" + tmpl + "' has no {} placeholder");
  std::string out;
  size_t pos = 0;
  for (size_t at; (at = tmpl.find("{}", pos)) != std::string::npos; pos = at + 2) out += tmpl.substr(pos, at - pos) + name;
  return out + tmpl.substr(pos);
}

std::vector<std::string> read_templates(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error("cannot read templates file '" + path + "'");
  std::vector<std::string> out;
  std::string line;
  int64_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos || line[0] == '#') continue;
    if (line.find("{}") == std::string::npos)
      throw Error(path + ":" + std::to_string(n) + ": template '" + line + "' has no {} placeholder");
    out.push_back(line);
  }
  if (out.empty()) throw Error("templates file '" + path + "' has no template");
  return out;
}

torch::Tensor ensemble_embeddings(const torch::Tensor& per_template) {
  if (per_template.dim() != 3) throw Error("ensemble_embeddings: expected [classes, templates, dim]");
  if (per_template.size(1) == 0) throw Error("ensemble_embeddings: no templates");
  namespace F = torch::nn::functional;
  torch::Tensor unit = F::normalize(per_template, F::NormalizeFuncOptions().dim(-1));
  return F::normalize(unit.mean(1), F::NormalizeFuncOptions().dim(-1));
}

std::string default_prompt_name(const std::string& class_name) {
  std::string name = class_name;
  std::replace(name.begin(), name.end(), '_', ' ');
  return name;
}

std::string prompt_name(const std::string& class_name, const ClassPrompts& prompts) {
  auto it = prompts.find(class_name);
  return it != prompts.end() ? it->second : default_prompt_name(class_name);
}

ClassPrompts read_class_prompts(const std::string& path) {
  std::error_code ec;
  std::ifstream in(path);
  if (!in || !std::filesystem::is_regular_file(path, ec)) throw Error("cannot read class names file '" + path + "'");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Error("class names file '" + path + "' is not JSON: " + e.what());
  }
  if (!j.is_object()) throw Error("class names file '" + path + "': expected one object {\"class\": \"prompt words\"}");
  ClassPrompts out;
  for (const auto& [cls, words] : j.items()) {
    if (!words.is_string() || words.get<std::string>().find_first_not_of(" \t\r\n") == std::string::npos)
      throw Error("class names file '" + path + "': the value of '" + cls + "' is not a non-empty string");
    out[cls] = words.get<std::string>();
  }
  return out;
}

torch::Tensor class_embeddings(EvalModel& m, const std::vector<std::string>& classes,
                               const std::vector<std::string>& templates, const ClassPrompts& prompts) {
  if (classes.empty()) throw Error("class_embeddings: no classes");
  if (templates.empty()) throw Error("class_embeddings: no templates");
  std::vector<std::string> texts;
  texts.reserve(classes.size() * templates.size());
  for (const auto& c : classes) {
    const std::string name = prompt_name(c, prompts);
    for (const auto& t : templates) texts.push_back(fill_template(t, name));
  }
  torch::Tensor e = encode_texts(m, texts);  // [C*T, D], row c*T + t
  return ensemble_embeddings(e.view({int64_t(classes.size()), int64_t(templates.size()), e.size(1)}));
}

std::string class_of(const nlohmann::json& meta, int64_t label, const std::vector<std::string>& source_classes,
                     const std::string& class_field) {
  if (meta.is_object()) {
    for (const std::string& f : {class_field, std::string("class")}) {
      auto it = meta.find(f);
      if (it != meta.end() && it->is_string() && !it->get<std::string>().empty()) return it->get<std::string>();
    }
  }
  if (label >= 0 && label < int64_t(source_classes.size())) return source_classes[size_t(label)];
  return {};
}

nlohmann::json zero_shot(EvalModel& m, std::shared_ptr<const data::SampleSource> source, const ZeroShotOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  require_tokenizer(m, "zero-shot evaluation");
  const EncodedImages enc = encode_source(m, source, /*require_text=*/false, o.max_samples, /*with_meta=*/true);
  nlohmann::json j = zero_shot_encoded(m, enc, *source, o);
  if (o.max_samples > 0 && int64_t(enc.keys.size()) >= o.max_samples) {
    // Classes come from the images scored: a prefix of a class-ordered corpus is a smaller task.
    spdlog::warn("zero-shot {}: only the first {} images (max samples); the {} classes among them are the ones "
                 "scored, and chance and p refer to those, not to the whole set",
                 o.name, o.max_samples, j["metrics"]["num_classes"].get<int64_t>());
    j["max_samples"] = o.max_samples;
  }
  j["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return j;
}

nlohmann::json zero_shot_encoded(EvalModel& m, const EncodedImages& enc, const data::SampleSource& source,
                                 const ZeroShotOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<std::string> templates = o.templates.empty() ? default_templates() : o.templates;
  require_tokenizer(m, "zero-shot evaluation");
  if (enc.metas.size() != enc.keys.size())
    throw Error("zero-shot: the encoded images carry no metadata (encode_source with with_meta = true)");
  data::SkipCounts skipped = enc.skipped;

  std::vector<std::string> names(enc.keys.size());
  std::map<std::string, int64_t> class_ids;
  std::vector<int64_t> keep;
  for (size_t i = 0; i < enc.keys.size(); ++i) {
    names[i] = class_of(enc.metas[i], enc.labels[i], source.classes(), o.class_field);
    if (names[i].empty()) {
      if (skipped["no_class"]++ < 5) spdlog::warn("zero-shot: sample '{}' has no class, skipped", enc.keys[i]);
      continue;
    }
    class_ids.emplace(names[i], 0);
    keep.push_back(int64_t(i));
  }
  if (keep.empty()) throw Error("zero-shot on " + source.describe() + ": no image with a class");
  if (class_ids.size() < 2)
    throw Error("zero-shot on " + source.describe() + ": needs at least 2 classes, found " + std::to_string(class_ids.size()));
  std::vector<std::string> classes;
  for (auto& [name, id] : class_ids) {  // std::map: sorted byte order
    id = int64_t(classes.size());
    classes.push_back(name);
  }
  torch::Tensor idx = torch::tensor(keep, torch::kLong);
  torch::Tensor labels = torch::empty({int64_t(keep.size())}, torch::kLong);
  for (size_t r = 0; r < keep.size(); ++r) labels[int64_t(r)] = class_ids.at(names[size_t(keep[r])]);
  torch::Tensor img = enc.embeds.index_select(0, idx);        // [N, D]
  torch::Tensor cls = class_embeddings(m, classes, templates, o.class_prompts);  // [C, D]
  torch::Tensor scores = torch::matmul(img, cls.t());           // [N, C] cosines
  ClassificationMetrics cm = classification_metrics(scores, labels, {1, 5});
  nlohmann::json prompt_names = nlohmann::json::object();
  std::map<std::string, std::string> first_with;  // words -> the first class using them
  for (const auto& c : classes) {
    const std::string words = prompt_name(c, o.class_prompts);
    prompt_names[c] = words;
    auto [it, fresh] = first_with.emplace(words, c);
    if (!fresh)
      spdlog::warn("zero-shot {}: classes '{}' and '{}' have the same prompt words '{}': their scores tie", o.name,
                   it->second, c, words);
  }

  nlohmann::json j{{"task", "zero-shot"},
                   {"set", o.name},
                   {"source", source.describe()},
                   {"model", m.describe()},
                   {"templates", templates},
                   {"prompt_names", prompt_names},
                   {"num_images", int64_t(keep.size())},
                   {"read", enc.read},
                   {"skipped", skipped},
                   {"metrics", cm.to_json(classes)}};
  j["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  spdlog::info("zero-shot {}: {} images, {} classes, top1 {:.4f} (chance {:.4f}), top5 {:.4f}", o.name, keep.size(),
               classes.size(), cm.topk.at(1), cm.chance_topk.at(1), cm.topk.at(5));
  return j;
}

}  // namespace florence::eval
