// The on-disk image index folder (see store.h).
#include "florence/search/store.h"

#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <mutex>

#include "florence/core/error.h"
#include "florence/core/files.h"
#include "florence/search/npy.h"
#include "florence/core/json_get.h"

namespace fs = std::filesystem;

namespace florence::search {

struct IndexStore::HeaderCache {
  std::mutex mu;
  std::map<int64_t, NpyHeader> headers;
};

nlohmann::json ImageRow::to_json(int64_t id) const {
  nlohmann::json j{{"id", id}, {"key", key}, {"source", source}, {"caption", caption}, {"width", width}, {"height", height}};
  if (thumb_offset >= 0) j["thumb"] = nlohmann::json::array({thumb_offset, thumb_size, thumb_type});
  if (!meta.is_null() && !meta.empty()) j["meta"] = meta;
  return j;
}

ImageRow ImageRow::from_json(const nlohmann::json& j, const std::string& where) {
  ImageRow r;
  try {
    r.key = j.at("key").get<std::string>();
    r.source = j.at("source").get<std::string>();
    r.caption = j.value("caption", std::string());
    r.width = j.contains("width") ? core::json_get<int>(j.at("width"), "\"width\"") : 0;
    r.height = j.contains("height") ? core::json_get<int>(j.at("height"), "\"height\"") : 0;
    if (j.contains("thumb")) {
      const auto& t = j.at("thumb");
      if (!t.is_array() || t.size() != 3) throw Error("\"thumb\" must be [offset, bytes, mime]");
      r.thumb_offset = core::json_get<int64_t>(t[0], "\"thumb\" offset");
      r.thumb_size = core::json_get<int32_t>(t[1], "\"thumb\" size");
      r.thumb_type = t[2].get<std::string>();
    }
    if (j.contains("meta")) r.meta = j.at("meta");
  } catch (const nlohmann::json::exception& e) {
    throw Error(where + ": bad metadata row: " + e.what());
  } catch (const Error& e) {
    throw Error(where + ": bad metadata row: " + e.what());
  }
  return r;
}

namespace {
// Bounds that no real index reaches and that keep the row arithmetic far from int64 overflow.
constexpr int64_t kMaxDim = 65536, kMaxRows = int64_t(1) << 40;
}  // namespace

bool IndexStore::exists(const std::string& dir) { return fs::is_regular_file(fs::path(dir) / "index.json"); }

IndexStore IndexStore::create(const std::string& dir, int64_t dim, const nlohmann::json& model) {
  if (exists(dir)) throw Error("'" + dir + "' already holds an index (index.json)");
  if (dim < 1) throw Error("index: embedding dimension must be >= 1");
  std::error_code ec;
  fs::create_directories(fs::path(dir) / "chunks", ec);
  if (ec) throw Error("cannot create index folder '" + dir + "': " + ec.message());
  IndexStore s;
  s.dir_ = dir;
  s.dim_ = dim;
  s.headers_ = std::make_shared<HeaderCache>();
  s.manifest_ = {{"format", kIndexFormat},
                 {"version", kIndexVersion},
                 {"dim", dim},
                 {"metric", "inner_product"},
                 {"normalized", true},
                 {"rows", 0},
                 {"model", model},
                 {"chunks", nlohmann::json::array()},
                 {"knn", nullptr},
                 {"pending", nullptr},
                 {"built_from", nullptr},
                 {"added", nlohmann::json::array()}};
  s.save_manifest();
  return s;
}

IndexStore IndexStore::open(const std::string& dir) {
  const fs::path mf = fs::path(dir) / "index.json";
  if (!fs::is_regular_file(mf)) throw Error("'" + dir + "' is not an index folder (no index.json)");
  IndexStore s;
  s.dir_ = dir;
  s.headers_ = std::make_shared<HeaderCache>();
  s.manifest_ = core::read_json_file(mf);
  const std::string where = mf.string();
  try {
    if (!s.manifest_.is_object() || s.manifest_.value("format", std::string()) != kIndexFormat)
      throw Error(where + ": not a florence image index (format is not \"" + std::string(kIndexFormat) + "\")");
    if (s.manifest_.value("version", 0) != kIndexVersion)
      throw Error(where + ": index version " + s.manifest_.value("version", nlohmann::json()).dump() +
                  " is not supported (this build reads version " + std::to_string(kIndexVersion) + ")");
    s.dim_ = core::json_get<int64_t>(s.manifest_.at("dim"), where + ": \"dim\"");
    if (s.dim_ < 1 || s.dim_ > kMaxDim) throw Error(where + ": \"dim\" must be in [1, " + std::to_string(kMaxDim) + "]");
    int64_t first = 0;
    for (const auto& c : s.manifest_.at("chunks")) {
      ChunkInfo ci;
      ci.id = core::json_get<int64_t>(c.at("id"), where + ": chunk \"id\"");
      ci.first_row = core::json_get<int64_t>(c.at("first_row"), where + ": chunk \"first_row\"");
      ci.rows = core::json_get<int64_t>(c.at("rows"), where + ": chunk \"rows\"");
      ci.what = c.value("what", std::string());
      ci.skipped = c.value("skipped", nlohmann::json::object());
      if (ci.id != int64_t(s.chunks_.size()) || ci.first_row != first || ci.rows < 0 || ci.rows > kMaxRows - first)
        throw Error(where + ": chunk list is inconsistent at chunk " + std::to_string(s.chunks_.size()));
      first += ci.rows;
      s.chunks_.push_back(ci);
    }
    s.rows_ = first;
    if (core::json_get<int64_t>(s.manifest_.at("rows"), where + ": \"rows\"") != s.rows_)
      throw Error(where + ": \"rows\" is " + s.manifest_.at("rows").dump() + " but the chunks hold " + std::to_string(s.rows_));
  } catch (const nlohmann::json::exception& e) {
    throw Error(where + ": malformed manifest: " + e.what());
  }
  return s;
}

const nlohmann::json& IndexStore::model() const { return manifest_.at("model"); }
const nlohmann::json& IndexStore::pending() const { return manifest_.at("pending"); }
const nlohmann::json& IndexStore::knn() const { return manifest_.at("knn"); }

void IndexStore::set_pending(const nlohmann::json& plan) {
  manifest_["pending"] = plan;
  save_manifest();
}
void IndexStore::finish_pending() {
  const nlohmann::json p = pending();
  if (p.is_object()) {
    if (p.value("command", std::string()) == "build") manifest_["built_from"] = p.at("inputs");
    else manifest_["added"].push_back(p.at("inputs"));
  }
  set_pending(nullptr);
}
void IndexStore::set_knn(const nlohmann::json& knn) {
  manifest_["knn"] = knn;
  save_manifest();
}

static std::string chunk_file(const std::string& dir, int64_t chunk, const char* ext) {
  char name[32];
  std::snprintf(name, sizeof name, "%06lld.%s", static_cast<long long>(chunk), ext);
  return (fs::path(dir) / "chunks" / name).string();
}

std::string IndexStore::embeddings_path(int64_t chunk) const { return chunk_file(dir_, chunk, "npy"); }
std::string IndexStore::metadata_path(int64_t chunk) const { return chunk_file(dir_, chunk, "jsonl"); }
std::string IndexStore::thumbs_path(int64_t chunk) const { return chunk_file(dir_, chunk, "thumbs"); }
std::string IndexStore::knn_path() const { return (fs::path(dir_) / "knn.index").string(); }

void IndexStore::save_manifest() { core::write_text_atomic(fs::path(dir_) / "index.json", manifest_.dump(1) + "\n"); }

void IndexStore::append_chunk(const torch::Tensor& embeds, const std::vector<ImageRow>& rows, const std::string& thumbs,
                              const std::string& what, const std::map<std::string, int64_t>& skipped) {
  const int64_t n = int64_t(rows.size());
  if (!embeds.defined() || embeds.dim() != 2 || embeds.size(0) != n || (n > 0 && embeds.size(1) != dim_))
    throw Error("index: chunk embeddings must be [" + std::to_string(n) + ", " + std::to_string(dim_) + "]");
  const int64_t id = next_chunk_id();
  write_npy(embeddings_path(id), n > 0 ? embeds : torch::zeros({0, dim_}));
  std::string lines;
  for (int64_t i = 0; i < n; ++i) lines += rows[size_t(i)].to_json(rows_ + i).dump() + "\n";
  core::write_text_atomic(metadata_path(id), lines);
  core::write_text_atomic(thumbs_path(id), thumbs);
  ChunkInfo ci{id, rows_, n, what, nlohmann::json(skipped)};
  manifest_["chunks"].push_back({{"id", id}, {"first_row", rows_}, {"rows", n}, {"what", what}, {"skipped", skipped}});
  rows_ += n;
  manifest_["rows"] = rows_;
  chunks_.push_back(ci);
  save_manifest();
}

int64_t IndexStore::chunk_of(int64_t id) const {
  if (id < 0 || id >= rows_) throw Error("row id " + std::to_string(id) + " is not in the index (0.." + std::to_string(rows_ - 1) + ")");
  auto it = std::upper_bound(chunks_.begin(), chunks_.end(), id, [](int64_t v, const ChunkInfo& c) { return v < c.first_row; });
  // `it` is the first chunk starting after id; empty chunks share first_row, so step back to one holding id.
  --it;
  while (it->rows == 0) --it;
  return it->id;
}

void IndexStore::for_each_chunk_embeddings(int64_t from, const std::function<void(int64_t, const torch::Tensor&)>& fn) const {
  for (const auto& c : chunks_) {
    if (c.rows == 0 || c.first_row + c.rows <= from) continue;
    torch::Tensor e = read_npy(embeddings_path(c.id));
    if (e.dim() != 2 || e.size(0) != c.rows || e.size(1) != dim_)
      throw Error("'" + embeddings_path(c.id) + "': shape does not match the manifest (" + std::to_string(c.rows) + " x " +
                  std::to_string(dim_) + ")");
    const int64_t skip = std::max<int64_t>(0, from - c.first_row);
    fn(c.first_row + skip, skip ? e.slice(0, skip) : e);
  }
}

torch::Tensor IndexStore::load_embeddings(int64_t from) const {
  std::vector<torch::Tensor> parts;
  for_each_chunk_embeddings(from, [&](int64_t, const torch::Tensor& e) { parts.push_back(e); });
  if (parts.empty()) return torch::zeros({0, dim_});
  return torch::cat(parts, 0);
}

std::vector<ImageRow> IndexStore::load_rows() const {
  std::vector<ImageRow> out;
  out.reserve(size_t(rows_));
  for (const auto& c : chunks_) {
    const std::string path = metadata_path(c.id);
    std::ifstream in(path);
    if (!in) throw Error("cannot read '" + path + "'");
    std::string line;
    int64_t n = 0;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      const std::string where = path + ":" + std::to_string(n + 1);
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception& e) {
        throw Error(where + ": not valid JSON (" + e.what() + ")");
      }
      ImageRow r = ImageRow::from_json(j, where);
      r.chunk = int32_t(c.id);
      out.push_back(std::move(r));
      ++n;
    }
    if (n != c.rows)
      throw Error("'" + path + "' holds " + std::to_string(n) + " rows but the manifest says " + std::to_string(c.rows));
  }
  return out;
}

void IndexStore::read_embedding(int64_t id, float* out) const {
  const int64_t c = chunk_of(id);
  NpyHeader h;
  {
    std::lock_guard<std::mutex> lock(headers_->mu);
    auto it = headers_->headers.find(c);
    if (it == headers_->headers.end()) it = headers_->headers.emplace(c, read_npy_header(embeddings_path(c))).first;
    h = it->second;
  }
  read_npy_row(embeddings_path(c), h, id - chunks_[size_t(c)].first_row, out);
}

}  // namespace florence::search
