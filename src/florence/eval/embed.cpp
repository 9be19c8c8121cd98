// florence embed / florence classify (see embed.h).
#include "florence/eval/embed.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <set>

#include "florence/core/checkpoint.h"
#include "florence/core/error.h"
#include "florence/core/files.h"
#include "florence/data/webdataset.h"
#include "florence/eval/zero_shot.h"

namespace fs = std::filesystem;

namespace florence::eval {

namespace {

std::string lower_ext(const fs::path& p) {
  std::string e = p.extension().string();
  if (!e.empty() && e[0] == '.') e.erase(0, 1);
  std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return e;
}

bool is_image_ext(const std::string& e) { return data::is_image_extension(e); }

/// One part per image file; the key is the path as listed.
class FileListSource : public data::SampleSource {
 public:
  explicit FileListSource(std::vector<std::string> files) : files_(std::move(files)) {}
  size_t num_parts() const override { return files_.size(); }
  void read_part(size_t part, const std::function<bool(data::Sample&)>& emit, data::SkipCounts& skips) const override {
    if (part >= files_.size()) throw Error("image list: part " + std::to_string(part) + " out of range");
    data::Sample s;
    s.key = files_[part];
    s.origin = files_[part];
    s.image_ext = lower_ext(files_[part]);
    if (data::is_unsupported_image_extension(s.image_ext)) {  // listed from a folder: counted, not silent
      skips["unsupported_format"]++;
      spdlog::warn("image '{}' skipped: .{} is not a supported image format (decodable: png, jpg, webp, bmp, "
                   "pnm, tiff)", files_[part], s.image_ext);
      return;
    }
    try {
      s.image = data::read_file_bytes(files_[part]);
    } catch (const Error& e) {
      skips["missing_file"]++;
      spdlog::warn("image '{}' skipped: {}", files_[part], e.what());
      return;
    }
    emit(s);
  }
  int64_t size_hint() const override { return int64_t(files_.size()); }
  std::string describe() const override { return std::to_string(files_.size()) + " image files"; }

 private:
  std::vector<std::string> files_;
};

/// The parts of several sources, one after the other.
class ConcatSource : public data::SampleSource {
 public:
  explicit ConcatSource(std::vector<std::shared_ptr<data::SampleSource>> parts) : srcs_(std::move(parts)) {
    for (size_t i = 0; i < srcs_.size(); ++i)
      for (size_t p = 0; p < srcs_[i]->num_parts(); ++p) index_.emplace_back(i, p);
  }
  size_t num_parts() const override { return index_.size(); }
  void read_part(size_t part, const std::function<bool(data::Sample&)>& emit, data::SkipCounts& skips) const override {
    if (part >= index_.size()) throw Error("inputs: part " + std::to_string(part) + " out of range");
    srcs_[index_[part].first]->read_part(index_[part].second, emit, skips);
  }
  std::string describe() const override {
    std::string d;
    for (const auto& s : srcs_) d += (d.empty() ? "" : " + ") + s->describe();
    return d;
  }

 private:
  std::vector<std::shared_ptr<data::SampleSource>> srcs_;
  std::vector<std::pair<size_t, size_t>> index_;
};

}  // namespace

std::shared_ptr<data::SampleSource> image_inputs(const std::vector<std::string>& paths) {
  std::vector<std::shared_ptr<data::SampleSource>> srcs;
  std::vector<std::string> pending;  // consecutive plain files form one FileListSource
  auto flush = [&] {
    if (!pending.empty()) srcs.push_back(std::make_shared<FileListSource>(std::move(pending)));
    pending.clear();
  };
  for (const auto& p : paths) {
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      bool has_tar = false;
      for (const auto& e : fs::directory_iterator(p, ec))
        if (e.is_regular_file() && e.path().extension() == ".tar") has_tar = true;
      if (has_tar) {
        flush();
        srcs.push_back(data::ShardSource::from_spec(p));
        continue;
      }
      std::vector<std::string> found;
      for (const auto& e : fs::recursive_directory_iterator(p, fs::directory_options::follow_directory_symlink, ec))
        if (e.is_regular_file() && (is_image_ext(lower_ext(e.path())) ||
                                    data::is_unsupported_image_extension(lower_ext(e.path()))))
          found.push_back(e.path().string());
      if (found.empty()) throw Error("'" + p + "': no image files or shards in this directory");
      std::sort(found.begin(), found.end());
      pending.insert(pending.end(), found.begin(), found.end());
    } else if (fs::is_regular_file(p, ec) && lower_ext(p) != "tar") {
      if (data::is_unsupported_image_extension(lower_ext(p)))
        throw Error("'" + p + "': ." + lower_ext(p) + " is not a supported image format (decodable: png, jpg, "
                    "webp, bmp, pnm, tiff)");
      if (!is_image_ext(lower_ext(p))) throw Error("'" + p + "' is not an image file (by extension) nor a shard");
      pending.push_back(p);
    } else if (fs::is_regular_file(p, ec) || p.find('{') != std::string::npos || p.find("::") != std::string::npos) {
      flush();
      srcs.push_back(data::ShardSource::from_spec(p));
    } else {
      throw Error("image input '" + p + "' does not exist");
    }
  }
  flush();
  if (srcs.empty()) throw Error("no image inputs");
  if (srcs.size() == 1) return srcs[0];
  return std::make_shared<ConcatSource>(std::move(srcs));
}

std::vector<std::string> read_texts(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error("cannot read texts file '" + path + "'");
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(line);
  }
  auto blank = [](const std::string& s) { return s.find_first_not_of(" \t") == std::string::npos; };
  bool jsonl = lower_ext(path) == "jsonl";
  if (!jsonl)
    for (const auto& l : lines)
      if (!blank(l)) {
        jsonl = l[l.find_first_not_of(" \t")] == '{';
        break;
      }
  std::vector<std::string> out;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (blank(lines[i])) continue;
    if (!jsonl) {
      out.push_back(lines[i]);
      continue;
    }
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(lines[i]);
    } catch (const nlohmann::json::exception& e) {
      throw Error(path + ":" + std::to_string(i + 1) + ": not valid JSON (" + e.what() + ")");
    }
    if (!j.is_object() || !j.contains("text") || !j["text"].is_string())
      throw Error(path + ":" + std::to_string(i + 1) + ": expected an object with a string \"text\"");
    out.push_back(j["text"].get<std::string>());
  }
  return out;
}

EmbedResult embed(EvalModel& m, std::shared_ptr<const data::SampleSource> images, const std::vector<std::string>& texts) {
  if (!images && texts.empty()) throw Error("embed: give images and/or texts");
  EmbedResult r;
  if (images) {
    EncodedImages enc = encode_source(m, images, /*require_text=*/false);
    if (enc.keys.empty()) throw Error("embed: none of the images could be read (" + images->describe() + ")");
    r.image_embeds = enc.embeds;
    r.image_keys = enc.keys;
    r.skipped = enc.skipped;
  }
  if (!texts.empty()) {
    r.text_embeds = encode_texts(m, texts);
    r.texts = texts;
  }
  return r;
}

void save_embeddings(const EmbedResult& r, const nlohmann::json& model_info, const std::string& path) {
  core::TensorMap t;
  if (r.image_embeds.defined()) t["image_embeds"] = r.image_embeds.to(torch::kFloat).contiguous();
  if (r.text_embeds.defined()) t["text_embeds"] = r.text_embeds.to(torch::kFloat).contiguous();
  if (t.empty()) throw Error("save_embeddings: nothing to write");
  nlohmann::json info{{"format", 1},          {"model", model_info},   {"image_keys", r.image_keys},
                      {"texts", r.texts},     {"skipped", r.skipped},  {"normalized", "L2, unit rows"}};
  if (fs::path(path).has_parent_path()) fs::create_directories(fs::path(path).parent_path());
  core::save_safetensors(path, t,
                         {{"florence.embed", info.dump()},
                          {"image_keys", nlohmann::json(r.image_keys).dump()},
                          {"texts", nlohmann::json(r.texts).dump()}});
  const std::string side = fs::path(path).replace_extension(".json").string();
  core::write_text_atomic(side, info.dump(2) + "\n");
}

std::vector<std::string> split_labels(const std::string& csv, const std::string& what) {
  std::vector<std::string> out;
  if (csv.find_first_not_of(" \t") == std::string::npos) return out;
  std::string cur;
  auto push = [&] {
    const size_t b = cur.find_first_not_of(" \t"), e = cur.find_last_not_of(" \t");
    if (b == std::string::npos)
      throw Error(what + " '" + csv + "': item " + std::to_string(out.size() + 1) +
                  " is empty (a doubled, leading or trailing comma?)");
    out.push_back(cur.substr(b, e - b + 1));
    cur.clear();
  };
  for (char c : csv) {
    if (c == ',') push();
    else cur.push_back(c);
  }
  push();
  return out;
}

namespace {

void check_labels(const std::vector<std::string>& labels) {
  if (labels.size() < 2) throw Error("classify: give at least 2 labels");
  std::set<std::string> seen;
  for (const auto& l : labels) {
    if (l.empty()) throw Error("classify: empty label");
    if (!seen.insert(l).second) throw Error("classify: label '" + l + "' given twice");
  }
}

}  // namespace

LabelScores score_labels(EvalModel& m, const torch::Tensor& image_embeds, const std::vector<std::string>& labels,
                         const std::vector<std::string>& templates) {
  check_labels(labels);
  if (!image_embeds.defined() || image_embeds.dim() != 2 || image_embeds.size(1) != m.embed_dim())
    throw Error("classify: image embeddings must be [N, " + std::to_string(m.embed_dim()) + "], got " +
                (image_embeds.defined() ? fmt::format("[{}]", fmt::join(image_embeds.sizes(), ", ")) : "none"));
  LabelScores r;
  torch::Tensor w = class_embeddings(m, labels, templates.empty() ? default_templates() : templates);  // [L, D]
  r.cosine = torch::matmul(image_embeds.to(torch::kCPU, torch::kFloat), w.t());  // [N, L]
  r.temperature = m.temperature();
  r.probs = torch::softmax(r.cosine.to(torch::kDouble) * r.temperature, 1).to(torch::kFloat);
  return r;
}

ClassifyResult classify(EvalModel& m, std::shared_ptr<const data::SampleSource> images,
                        const std::vector<std::string>& labels, const std::vector<std::string>& templates) {
  if (!images) throw Error("classify: no images");
  ClassifyResult r;
  r.labels = labels;
  check_labels(labels);  // before reading any image
  EncodedImages enc = encode_source(m, images, /*require_text=*/false);
  if (enc.keys.empty()) throw Error("classify: none of the images could be read");
  r.image_keys = enc.keys;
  r.skipped = enc.skipped;
  LabelScores s = score_labels(m, enc.embeds, labels, templates);
  r.cosine = s.cosine;
  r.probs = s.probs;
  r.temperature = s.temperature;
  return r;
}

}  // namespace florence::eval
