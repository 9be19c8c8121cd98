// Reading a VQA set (vqa_set.h layout) for training and evaluation; see vqa_data.h.
#include "florence/adapt/vlp/vqa_data.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <unordered_map>

#include "florence/core/error.h"
#include "florence/core/files.h"
#include "florence/data/readers.h"
#include "florence/data/transforms.h"

namespace florence::vlp {

namespace fs = std::filesystem;

std::vector<VqaQuestion> VqaSplit::questions() const {
  std::vector<VqaQuestion> out;
  out.reserve(items.size());
  for (const auto& it : items) out.push_back({it.question_type, it.answer_type, it.answers});
  return out;
}

torch::Tensor load_vqa_image(const std::string& path, const VqaImageOptions& o) {
  const std::vector<uint8_t> bytes = data::read_file_bytes(path);  // a folder or a missing file: Error naming it
  cv::Mat rgb;
  try {
    rgb = data::decode_rgb(bytes);
  } catch (const Error& e) {
    throw Error(fmt::format("image '{}': {}", path, e.what()));
  }
  if (rgb.cols != o.image_size || rgb.rows != o.image_size) rgb = data::resize_bicubic(rgb, o.image_size, o.image_size);
  return data::to_normalized_tensor(rgb, o.mean, o.std);
}

namespace {

const nlohmann::json& member(const nlohmann::json& j, const char* key, const fs::path& file) {
  if (!j.is_object() || !j.contains(key)) throw Error(fmt::format("{}: missing key '{}'", file.string(), key));
  return j.at(key);
}

void skip(data::SkipCounts& s, const std::string& reason, const std::string& what) {
  if (s[reason]++ == 0) spdlog::warn("vqa data: skipping {} ({}; further ones are only counted)", what, reason);
}

}  // namespace

VqaSplit load_vqa_split(const std::string& root, const std::string& split, const VqaImageOptions& o) {
  VqaSplit out;
  out.root = root;
  out.split = split;
  const fs::path qf = fs::path(root) / (split + "_questions.json"), af = fs::path(root) / (split + "_annotations.json");
  for (const auto& f : {qf, af})
    if (!fs::is_regular_file(f))
      throw Error(fmt::format("VQA set '{}' has no {} (build one with: florence data build vqa --out {})", root,
                              f.filename().string(), root));
  const nlohmann::json qj = core::read_json_file(qf), aj = core::read_json_file(af);
  try {
    std::unordered_map<int64_t, const nlohmann::json*> ann_of;
    for (const auto& a : member(aj, "annotations", af)) ann_of[a.at("question_id").get<int64_t>()] = &a;
    std::unordered_map<int64_t, std::string> file_of;
    for (const auto& im : member(qj, "images", qf))
      file_of[im.at("image_id").get<int64_t>()] = im.at("file_name").get<std::string>();
    std::unordered_map<int64_t, int64_t> row_of;  // image_id -> row (-1: unreadable)
    std::vector<torch::Tensor> images;
    for (const auto& q : member(qj, "questions", qf)) {
      VqaItem it;
      it.question_id = q.at("question_id").get<int64_t>();
      it.image_id = q.at("image_id").get<int64_t>();
      it.question = q.at("question").get<std::string>();
      auto a = ann_of.find(it.question_id);
      if (a == ann_of.end()) {
        skip(out.skipped, "question_without_annotation", fmt::format("question {}", it.question_id));
        continue;
      }
      const nlohmann::json& an = *a->second;
      it.question_type = an.at("question_type").get<std::string>();
      it.answer_type = an.at("answer_type").get<std::string>();
      it.multiple_choice_answer = an.value("multiple_choice_answer", "");
      for (const auto& x : an.at("answers")) it.answers.push_back(x.at("answer").get<std::string>());
      if (it.answers.empty()) {
        skip(out.skipped, "no_answers", fmt::format("question {}", it.question_id));
        continue;
      }
      if (o.max_questions > 0 && int64_t(out.items.size()) >= o.max_questions && !row_of.count(it.image_id)) break;
      auto r = row_of.find(it.image_id);
      bool counted = false;
      if (r == row_of.end()) {
        int64_t row = -1;
        auto f = file_of.find(it.image_id);
        if (f == file_of.end()) {
          skip(out.skipped, "image_unreadable", fmt::format("image {} (not listed in images[])", it.image_id));
          counted = true;
        } else {
          try {
            images.push_back(load_vqa_image((fs::path(root) / f->second).string(), o));
            row = int64_t(images.size()) - 1;
            out.image_ids.push_back(it.image_id);
            out.by_image.emplace_back();
          } catch (const Error& e) {
            skip(out.skipped, "image_unreadable", e.what());
            counted = true;
          }
        }
        r = row_of.emplace(it.image_id, row).first;
      }
      if (r->second < 0) {
        if (!counted) ++out.skipped["image_unreadable"];
        continue;
      }
      it.image = r->second;
      out.by_image[size_t(it.image)].push_back(int64_t(out.items.size()));
      out.items.push_back(std::move(it));
    }
    if (out.items.empty()) throw Error(fmt::format("VQA set '{}': split '{}' has no usable question", root, split));
    out.images = torch::stack(images);
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("VQA set '{}' split '{}': bad JSON: {}", root, split, e.what()));
  }
  return out;
}

AnswerVocab answer_vocab_from_list(const std::vector<std::string>& answers, const std::string& origin) {
  if (answers.empty()) throw Error(origin + ": the answer vocabulary is empty");
  AnswerVocab v;
  for (const auto& a : answers) {
    if (normalize_answer(a) != a) throw Error(fmt::format("{}: answer '{}' is not in normal form", origin, a));
    if (!v.index.emplace(a, v.size()).second) throw Error(fmt::format("{}: answer '{}' is repeated", origin, a));
    v.answers.push_back(a);
    v.counts.push_back(0);
  }
  return v;
}

AnswerVocab load_answer_vocab(const std::string& root) {
  const fs::path f = fs::path(root) / "answers.json";
  if (!fs::is_regular_file(f)) throw Error(fmt::format("VQA set '{}' has no answers.json", root));
  const nlohmann::json j = core::read_json_file(f);
  try {
    AnswerVocab v = answer_vocab_from_list(member(j, "answers", f).get<std::vector<std::string>>(), f.string());
    if (j.contains("counts")) {
      const auto c = j["counts"].get<std::vector<int64_t>>();
      if (c.size() == v.counts.size()) v.counts = c;
    }
    return v;
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: bad JSON: {}", f.string(), e.what()));
  }
}

std::string PriorBaseline::predict(const std::string& question_type) const {
  auto it = answer_of_type.find(question_type);
  return it == answer_of_type.end() ? overall : it->second;
}

PriorBaseline prior_baseline(const VqaSplit& train) {
  std::map<std::string, std::map<std::string, int64_t>> counts;
  std::map<std::string, int64_t> all;
  for (const auto& it : train.items) {
    const std::string a = normalize_answer(it.multiple_choice_answer.empty() ? majority_answer(it.answers)
                                                                              : it.multiple_choice_answer);
    ++counts[it.question_type][a];
    ++all[a];
  }
  auto best = [](const std::map<std::string, int64_t>& m) {
    std::string b;
    int64_t n = -1;
    for (const auto& [a, k] : m)  // ordered: the smaller string wins ties
      if (k > n) b = a, n = k;
    return b;
  };
  PriorBaseline p;
  for (const auto& [t, m] : counts) p.answer_of_type[t] = best(m);
  p.overall = best(all);
  return p;
}

}  // namespace florence::vlp
