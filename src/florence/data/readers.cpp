// Sample sources over shards, manifests, ImageFolder trees and vectors; see readers.h.
#include "florence/data/readers.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>

#include "florence/core/error.h"
#include "florence/core/strings.h"
#include "florence/data/webdataset.h"

namespace fs = std::filesystem;

namespace florence::data {

namespace {

// How many bad manifest lines are logged individually before only the count is reported.
constexpr int kMaxLoggedBadLines = 10;


std::string extension_of(const fs::path& p) {
  std::string e = p.extension().string();
  if (!e.empty() && e[0] == '.') e.erase(0, 1);
  return core::ascii_lower(e);
}

void check_part(size_t part, size_t n, const std::string& what) {
  if (part >= n) {
    throw Error(what + ": part " + std::to_string(part) + " out of range (" + std::to_string(n) +
                " parts)");
  }
}

// Parses a whole string as a base-10 int64; false when it is not exactly one integer.
bool parse_int64(const std::string& s, int64_t& out) {
  if (s.empty()) return false;
  size_t pos = 0;
  try {
    const long long v = std::stoll(s, &pos, 10);
    if (pos != s.size()) return false;
    out = v;
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

std::vector<std::string> split_tabs(const std::string& line) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    const size_t tab = line.find('\t', start);
    out.push_back(line.substr(start, tab == std::string::npos ? std::string::npos : tab - start));
    if (tab == std::string::npos) break;
    start = tab + 1;
  }
  return out;
}

}  // namespace

std::vector<uint8_t> read_file_bytes(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw Error("'" + path + "' is a folder, not a file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open file '" + path + "'");
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  if (size < 0) throw Error("cannot read file '" + path + "'");
  in.seekg(0, std::ios::beg);
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  if (size > 0 && !in.read(reinterpret_cast<char*>(bytes.data()), size)) {
    throw Error("cannot read file '" + path + "'");
  }
  return bytes;
}

// ------------------------------------------------------------------------------------------
// ShardSource
// ------------------------------------------------------------------------------------------

ShardSource::ShardSource(std::vector<std::string> shards) : shards_(std::move(shards)) {
  if (shards_.empty()) throw Error("ShardSource: no shards given");
}

std::shared_ptr<ShardSource> ShardSource::from_spec(const std::string& spec) {
  return std::make_shared<ShardSource>(list_shards(spec));
}

void ShardSource::read_part(size_t part, const std::function<bool(Sample&)>& emit,
                            SkipCounts& skips) const {
  check_part(part, shards_.size(), "ShardSource");
  const std::string& path = shards_[part];
  std::unique_ptr<ShardReader> reader;
  try {
    reader = std::make_unique<ShardReader>(path);
  } catch (const Error& e) {
    spdlog::warn("skipping unreadable shard {}: {}", path, e.what());
    ++skips["unreadable_shard"];
    return;
  }
  Sample s;
  while (reader->next(s)) {
    if (!emit(s)) break;
    s = Sample{};
  }
  const ShardStats& st = reader->stats();
  if (st.corrupt > 0) skips["shard_corrupt"] += st.corrupt;
  if (st.missing_image > 0) skips["shard_missing_image"] += st.missing_image;
  if (st.bad_text > 0) skips["shard_bad_text"] += st.bad_text;
  if (st.unsafe_key > 0) skips["shard_unsafe_key"] += st.unsafe_key;
  if (st.unsupported_format > 0) skips["unsupported_format"] += st.unsupported_format;
}

std::string ShardSource::describe() const {
  return std::to_string(shards_.size()) + " shard(s) starting with " + shards_.front();
}

// ------------------------------------------------------------------------------------------
// ManifestSource
// ------------------------------------------------------------------------------------------

ManifestSource::ManifestSource(const std::string& path, ManifestFormat format) : path_(path) {
  std::ifstream in(path);
  if (!in) throw Error("ManifestSource: cannot open manifest '" + path + "'");
  if (format == ManifestFormat::kAuto) {
    const std::string ext = extension_of(path);
    if (ext == "jsonl" || ext == "json") {
      format = ManifestFormat::kJsonl;
    } else if (ext == "tsv") {
      format = ManifestFormat::kTsv;
    } else {
      throw Error("ManifestSource: cannot infer the format of '" + path +
                  "' from its extension (expected .jsonl, .json or .tsv)");
    }
  }
  const fs::path base = fs::path(path).parent_path();

  int64_t bad = 0;
  auto bad_line = [&](int64_t line_no, const std::string& why) {
    if (bad < kMaxLoggedBadLines) spdlog::warn("manifest {} line {}: {} (skipped)", path, line_no, why);
    ++bad;
  };

  // Labels: integers are ids; strings are class names mapped after all lines are read.
  std::vector<std::string> label_names;  // parallel to entries_, "" = integer or none
  bool any_int_label = false, any_name_label = false;

  auto add_entry = [&](int64_t line_no, const std::string& image, std::string text, std::string key,
                       const nlohmann::json* label, nlohmann::json meta) -> bool {
    if (image.empty()) {
      bad_line(line_no, "empty image path");
      return false;
    }
    Entry e;
    fs::path p(image);
    e.image_path = p.is_absolute() ? p.string() : (base / p).string();
    e.key = key.empty() ? image : std::move(key);
    e.text = std::move(text);
    e.meta = std::move(meta);
    e.line = line_no;
    std::string name;
    if (label != nullptr && !label->is_null()) {
      if (label->is_number_integer()) {
        e.label = label->get<int64_t>();
        if (e.label < 0) {
          bad_line(line_no, "negative label");
          return false;
        }
        any_int_label = true;
      } else if (label->is_string() && !label->get<std::string>().empty()) {
        name = label->get<std::string>();
        any_name_label = true;
      } else {
        bad_line(line_no, "label must be a non-negative integer or a class name");
        return false;
      }
    }
    entries_.push_back(std::move(e));
    label_names.push_back(std::move(name));
    return true;
  };

  std::string line;
  int64_t line_no = 0;
  if (format == ManifestFormat::kJsonl) {
    while (std::getline(in, line)) {
      ++line_no;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.find_first_not_of(" \t") == std::string::npos) continue;
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception& e) {
        bad_line(line_no, std::string("invalid JSON: ") + e.what());
        continue;
      }
      if (!j.is_object()) {
        bad_line(line_no, "not a JSON object");
        continue;
      }
      if (!j.contains("image") || !j["image"].is_string()) {
        bad_line(line_no, "missing or non-string \"image\"");
        continue;
      }
      if (j.contains("text") && !j["text"].is_string()) {
        bad_line(line_no, "non-string \"text\"");
        continue;
      }
      if (j.contains("key") && !j["key"].is_string()) {
        bad_line(line_no, "non-string \"key\"");
        continue;
      }
      const std::string image = j["image"].get<std::string>();
      std::string text = j.value("text", std::string());
      std::string key = j.value("key", std::string());
      nlohmann::json label = j.contains("label") ? j["label"] : nlohmann::json();
      nlohmann::json meta = j;
      for (const char* f : {"image", "text", "key", "label"}) meta.erase(f);
      add_entry(line_no, image, std::move(text), std::move(key), &label, std::move(meta));
    }
  } else {
    int col_image = -1, col_text = -1, col_label = -1, col_key = -1;
    size_t ncols = 0;
    while (std::getline(in, line)) {
      ++line_no;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.empty()) continue;
      if (ncols == 0) {  // header
        const auto cols = split_tabs(line);
        ncols = cols.size();
        for (size_t i = 0; i < cols.size(); ++i) {
          const std::string c = core::ascii_lower(cols[i]);
          if (c == "image") col_image = int(i);
          if (c == "text") col_text = int(i);
          if (c == "label") col_label = int(i);
          if (c == "key") col_key = int(i);
        }
        if (col_image < 0) {
          throw Error("ManifestSource: TSV header of '" + path +
                      "' has no \"image\" column (columns: image, text, label, key)");
        }
        continue;
      }
      const auto f = split_tabs(line);
      if (f.size() != ncols) {
        bad_line(line_no, "expected " + std::to_string(ncols) + " tab-separated fields, got " +
                              std::to_string(f.size()));
        continue;
      }
      nlohmann::json label;
      if (col_label >= 0 && !f[col_label].empty()) {
        int64_t v = 0;
        label = parse_int64(f[col_label], v) ? nlohmann::json(v) : nlohmann::json(f[col_label]);
      }
      add_entry(line_no, f[col_image], col_text >= 0 ? f[col_text] : std::string(),
                col_key >= 0 ? f[col_key] : std::string(), &label, nlohmann::json::object());
    }
    if (ncols == 0) throw Error("ManifestSource: TSV manifest '" + path + "' has no header line");
  }

  if (any_int_label && any_name_label) {
    throw Error("ManifestSource: '" + path +
                "' mixes integer labels and class-name labels; use one kind");
  }
  if (any_name_label) {
    std::set<std::string> names;
    for (const auto& n : label_names) {
      if (!n.empty()) names.insert(n);
    }
    classes_.assign(names.begin(), names.end());
    for (size_t i = 0; i < entries_.size(); ++i) {
      if (label_names[i].empty()) continue;
      entries_[i].label =
          std::lower_bound(classes_.begin(), classes_.end(), label_names[i]) - classes_.begin();
    }
  }
  if (bad > 0) {
    load_skips_["bad_manifest_line"] = bad;
    spdlog::warn("manifest {}: {} bad line(s) skipped", path, bad);
  }
}

void ManifestSource::read_part(size_t part, const std::function<bool(Sample&)>& emit,
                               SkipCounts& skips) const {
  check_part(part, entries_.size(), "ManifestSource");
  const Entry& e = entries_[part];
  Sample s;
  try {
    s.image = read_file_bytes(e.image_path);
  } catch (const Error& err) {
    spdlog::warn("manifest {} line {}: {} (skipped)", path_, e.line, err.what());
    ++skips["missing_file"];
    return;
  }
  s.key = e.key;
  s.image_ext = extension_of(e.image_path);
  s.text = e.text;
  s.label = e.label;
  s.meta = e.meta;
  s.origin = path_ + ":" + std::to_string(e.line);
  emit(s);
}

std::string ManifestSource::describe() const {
  return "manifest " + path_ + " (" + std::to_string(entries_.size()) + " entries)";
}

// ------------------------------------------------------------------------------------------
// ImageFolderSource
// ------------------------------------------------------------------------------------------

ImageFolderSource::ImageFolderSource(const std::string& root) : root_(root) {
  std::error_code ec;
  if (!fs::is_directory(root, ec)) {
    throw Error("ImageFolderSource: '" + root + "' is not a directory");
  }
  std::vector<std::string> class_dirs;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    if (entry.is_directory()) class_dirs.push_back(entry.path().filename().string());
  }
  if (ec) throw Error("ImageFolderSource: cannot list '" + root + "': " + ec.message());
  std::sort(class_dirs.begin(), class_dirs.end());
  int64_t others = 0, unsupported = 0;
  for (size_t label = 0; label < class_dirs.size(); ++label) {
    const fs::path dir = fs::path(root) / class_dirs[label];
    std::vector<fs::path> files;
    for (auto it = fs::recursive_directory_iterator(dir, fs::directory_options::follow_directory_symlink, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (!it->is_regular_file()) continue;
      if (is_image_extension(extension_of(it->path()))) {
        files.push_back(it->path());
      } else if (is_unsupported_image_extension(extension_of(it->path()))) {
        ++unsupported;
      } else {
        ++others;
      }
    }
    if (ec) throw Error("ImageFolderSource: cannot list '" + dir.string() + "': " + ec.message());
    std::sort(files.begin(), files.end());
    if (files.empty()) spdlog::warn("ImageFolderSource: class folder {} has no images", dir.string());
    for (const auto& p : files) {
      File f;
      f.path = p.string();
      f.ext = extension_of(p);
      fs::path rel = p.lexically_relative(root);
      rel.replace_extension();
      f.key = rel.generic_string();
      f.label = int64_t(label);
      files_.push_back(std::move(f));
    }
  }
  classes_ = class_dirs;
  if (files_.empty()) {
    throw Error("ImageFolderSource: no images under '" + root +
                "' (expected root/<class>/<image>, extensions png jpg jpeg webp bmp tif tiff ppm pgm pbm)");
  }
  if (unsupported > 0) {
    load_skips_["unsupported_format"] = unsupported;
    spdlog::warn("ImageFolderSource {}: skipped {} image(s) in a format that is not decoded (gif, svg, heic, ...)",
                 root, unsupported);
  }
  if (others > 0) {
    load_skips_["not_an_image"] = others;
    spdlog::info("ImageFolderSource {}: ignored {} non-image file(s)", root, others);
  }
}

void ImageFolderSource::read_part(size_t part, const std::function<bool(Sample&)>& emit,
                                  SkipCounts& skips) const {
  check_part(part, files_.size(), "ImageFolderSource");
  const File& f = files_[part];
  Sample s;
  try {
    s.image = read_file_bytes(f.path);
  } catch (const Error& err) {
    spdlog::warn("ImageFolderSource: {} (skipped)", err.what());
    ++skips["missing_file"];
    return;
  }
  const std::string& name = classes_[size_t(f.label)];
  s.key = f.key;
  s.image_ext = f.ext;
  s.text = name;
  std::replace(s.text.begin(), s.text.end(), '_', ' ');
  s.label = f.label;
  s.meta = nlohmann::json{{"class", name}};
  s.origin = f.path;
  emit(s);
}

std::string ImageFolderSource::describe() const {
  return "image folder " + root_ + " (" + std::to_string(classes_.size()) + " classes, " +
         std::to_string(files_.size()) + " images)";
}

// ------------------------------------------------------------------------------------------
// VectorSource
// ------------------------------------------------------------------------------------------

VectorSource::VectorSource(std::vector<Sample> samples) : samples_(std::move(samples)) {}

void VectorSource::read_part(size_t part, const std::function<bool(Sample&)>& emit,
                             SkipCounts& skips) const {
  check_part(part, samples_.size(), "VectorSource");
  Sample s = samples_[part];
  emit(s);
}

std::string VectorSource::describe() const {
  return "in-memory source (" + std::to_string(samples_.size()) + " samples)";
}

}  // namespace florence::data
