// The query side of an image index (see searcher.h).
#include "florence/search/searcher.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>

#include "florence/core/checkpoint.h"
#include "florence/core/error.h"
#include "florence/core/files.h"
#include "florence/data/readers.h"
#include "florence/data/transforms.h"
#include "florence/eval/encode.h"
#include "florence/search/npy.h"
#include "florence/search/query.h"

namespace fs = std::filesystem;

namespace florence::search {

std::shared_ptr<SearchIndex> SearchIndex::open(const std::string& dir, const std::string& name) {
  std::shared_ptr<SearchIndex> s(new SearchIndex());
  s->store_ = IndexStore::open(dir);
  const fs::path abs = fs::absolute(dir).lexically_normal();
  s->name_ = !name.empty() ? name : !abs.filename().empty() ? abs.filename().string() : abs.parent_path().filename().string();
  for (char& c : s->name_)  // the name is a URL path segment (/images/NAME/ID)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') c = '_';
  if (s->name_.empty() || s->name_ == "." || s->name_ == "..") s->name_ = "index";
  if (!s->store_.pending().is_null())
    throw Error("index '" + dir + "' has an unfinished `index " + s->store_.pending().value("command", std::string()) +
                "`; rerun it to finish before searching");
  const nlohmann::json& knn = s->store_.knn();
  if (knn.is_null()) throw Error("index '" + dir + "' has no vector index yet (run `florence index build`)");
  s->knn_ = KnnIndex::load(s->store_.knn_path(), knn.value("search_params", std::string()));
  if (s->knn_.ntotal() != s->store_.rows() || s->knn_.dim() != s->store_.dim())
    throw Error("'" + s->store_.knn_path() + "' holds " + std::to_string(s->knn_.ntotal()) + " vectors of dimension " +
                std::to_string(s->knn_.dim()) + " but index.json lists " + std::to_string(s->store_.rows()) + " of dimension " +
                std::to_string(s->store_.dim()) + "; rerun the last `florence index build|add`, or `florence index reindex`");
  s->rows_ = s->store_.load_rows();
  return s;
}

const ImageRow& SearchIndex::row(int64_t id) const {
  if (id < 0 || id >= int64_t(rows_.size()))
    throw Error("image " + std::to_string(id) + " is not in index '" + name_ + "' (ids 0.." + std::to_string(rows_.size() - 1) + ")");
  return rows_[size_t(id)];
}

std::vector<float> SearchIndex::embedding(int64_t id) const {
  row(id);
  std::vector<float> v(static_cast<size_t>(dim()));
  store_.read_embedding(id, v.data());
  return v;
}

std::pair<std::string, std::string> SearchIndex::thumbnail(int64_t id) const {
  const ImageRow& r = row(id);
  if (r.thumb_offset < 0 || r.thumb_size <= 0) return {"", ""};
  const std::string path = store_.thumbs_path(r.chunk);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error("cannot open '" + path + "'");
  // Checked against the file before allocating: a forged row ("thumb": [0, 2147483647, ...]) must
  // not make each request allocate 2 GiB.
  struct stat st {};
  if (::fstat(fd, &st) != 0 || r.thumb_offset > int64_t(st.st_size) || int64_t(r.thumb_size) > int64_t(st.st_size) - r.thumb_offset) {
    ::close(fd);
    throw Error("'" + path + "': thumbnail of image " + std::to_string(id) + " lies outside the file");
  }
  std::string bytes(size_t(r.thumb_size), '\0');
  const ssize_t got = ::pread(fd, bytes.data(), bytes.size(), off_t(r.thumb_offset));
  ::close(fd);
  if (got != ssize_t(bytes.size()))
    throw Error("'" + path + "': thumbnail of image " + std::to_string(id) + " lies outside the file");
  return {std::move(bytes), r.thumb_type};
}

std::vector<std::vector<SearchHit>> SearchIndex::search(const float* q, int64_t nq, int64_t k, double dedup) const {
  if (k < 1) throw Error("k must be >= 1");
  const int64_t d = dim(), n = size();
  std::vector<std::vector<SearchHit>> out(static_cast<size_t>(nq));
  if (nq == 0 || n == 0) return out;
  std::vector<float> qn(q, q + nq * d);
  for (int64_t i = 0; i < nq; ++i) {
    double s = 0;
    for (int64_t j = 0; j < d; ++j) s += double(qn[size_t(i * d + j)]) * qn[size_t(i * d + j)];
    const float inv = s > 0 ? float(1.0 / std::sqrt(s)) : 0.f;
    for (int64_t j = 0; j < d; ++j) qn[size_t(i * d + j)] *= inv;
  }
  const bool dd = dedup > 0;
  const int64_t kk = std::min(n, dd ? k * 4 + 16 : k);
  std::vector<float> scores(size_t(nq * kk));
  std::vector<int64_t> ids(size_t(nq * kk));
  knn_.search(qn.data(), nq, kk, scores.data(), ids.data());
  for (int64_t i = 0; i < nq; ++i) {
    std::vector<std::vector<float>> kept_vecs;
    for (int64_t j = 0; j < kk && int64_t(out[size_t(i)].size()) < k; ++j) {
      const int64_t id = ids[size_t(i * kk + j)];
      if (id < 0) break;
      if (dd) {
        std::vector<float> v = embedding(id);
        bool dup = false;
        for (const auto& w : kept_vecs) {
          double c = 0;
          for (int64_t t = 0; t < d; ++t) c += double(v[size_t(t)]) * w[size_t(t)];
          if (c >= dedup) {
            dup = true;
            break;
          }
        }
        if (dup) continue;
        kept_vecs.push_back(std::move(v));
      }
      out[size_t(i)].push_back({id, scores[size_t(i * kk + j)]});
    }
  }
  return out;
}

nlohmann::json SearchIndex::hit_json(const SearchHit& h) const {
  const ImageRow& r = row(h.id);
  nlohmann::json j{{"id", h.id},         {"score", h.score},         {"key", r.key},          {"caption", r.caption},
                   {"source", r.source}, {"width", r.width},         {"height", r.height}};
  if (!r.meta.is_null()) j["meta"] = r.meta;
  if (r.thumb_offset >= 0) j["image"] = "/images/" + name_ + "/" + std::to_string(h.id);
  return j;
}

nlohmann::json SearchIndex::describe() const {
  return {{"name", name_}, {"rows", size()}, {"dim", dim()}, {"knn", store_.knn()}, {"model", store_.model()}, {"dir", store_.dir()}};
}

nlohmann::json run_search(const SearchIndex& index, const QuerySpec& q, eval::EvalModel* model) {
  const int kinds = int(!q.text.empty()) + int(!q.image.empty()) + int(!q.embedding.empty());
  if (kinds != 1) throw Error("search: give exactly one of --text, --image, --embedding");
  if (q.k < 1) throw Error("search: --top must be >= 1");
  torch::Tensor queries;
  std::vector<std::string> labels;
  if (!q.embedding.empty()) {
    queries = read_query_embeddings(q.embedding);
    for (int64_t i = 0; i < queries.size(0); ++i) labels.push_back(q.embedding + (queries.size(0) > 1 ? "[" + std::to_string(i) + "]" : ""));
  } else {
    if (!model) throw Error("search: text and image queries need the model (--checkpoint)");
    if (!q.text.empty()) {
      queries = eval::encode_texts(*model, {q.text});
      labels.push_back(q.text);
    } else {
      const torch::Tensor x = preprocess_image(*model, data::read_file_bytes(q.image), data::kDefaultMaxPixels);
      queries = eval::encode_image_tensor(*model, x);
      labels.push_back(q.image);
    }
  }
  if (queries.size(1) != index.dim())
    throw Error("search: the query has " + std::to_string(queries.size(1)) + " dimensions but index '" + index.name() + "' has " +
                std::to_string(index.dim()));
  queries = queries.to(torch::kFloat).contiguous();
  const auto hits = index.search(queries.data_ptr<float>(), queries.size(0), q.k, q.dedup);
  nlohmann::json out{{"index", index.name()}, {"k", q.k}, {"queries", nlohmann::json::array()}};
  for (size_t i = 0; i < hits.size(); ++i) {
    nlohmann::json results = nlohmann::json::array();
    for (const auto& h : hits[i]) results.push_back(index.hit_json(h));
    out["queries"].push_back({{"query", labels[i]}, {"results", results}});
  }
  return out;
}

torch::Tensor read_query_embeddings(const std::string& path) {
  const std::string ext = fs::path(path).extension().string();
  torch::Tensor t;
  if (ext == ".npy") {
    t = read_npy(path);
  } else if (ext == ".safetensors") {
    core::SafetensorsFile f = core::load_safetensors(path);
    std::vector<torch::Tensor> parts;
    for (const char* name : {"image_embeds", "text_embeds"})
      if (f.tensors.count(name)) parts.push_back(f.tensors.at(name).to(torch::kFloat));
    if (parts.empty()) throw Error("'" + path + "' holds neither image_embeds nor text_embeds (write it with `florence embed`)");
    t = torch::cat(parts, 0);
  } else if (ext == ".json") {
    const nlohmann::json j = core::read_json_file(path);
    std::vector<std::vector<float>> rows;
    auto row_of = [&](const nlohmann::json& a) {
      std::vector<float> r;
      if (!a.is_array()) throw Error("'" + path + "': expected an array of numbers or an array of such arrays");
      for (const auto& v : a) {
        if (!v.is_number()) throw Error("'" + path + "': " + v.dump() + " is not a number");
        r.push_back(v.get<float>());
      }
      return r;
    };
    if (j.is_array() && !j.empty() && j[0].is_array()) {
      for (const auto& a : j) rows.push_back(row_of(a));
    } else {
      rows.push_back(row_of(j));
    }
    for (const auto& r : rows)
      if (r.size() != rows[0].size()) throw Error("'" + path + "': rows of different lengths");
    t = torch::empty({int64_t(rows.size()), int64_t(rows[0].size())});
    for (size_t i = 0; i < rows.size(); ++i)
      for (size_t j2 = 0; j2 < rows[i].size(); ++j2) t[int64_t(i)][int64_t(j2)] = rows[i][j2];
  } else {
    throw Error("'" + path + "': embeddings must be .npy, .json or .safetensors");
  }
  if (t.dim() == 1) t = t.unsqueeze(0);
  if (t.dim() != 2 || t.size(0) == 0 || t.size(1) == 0) throw Error("'" + path + "' holds no embedding vector");
  if (!torch::isfinite(t).all().item<bool>()) throw Error("'" + path + "' holds a value that is not a finite number");
  return t.contiguous();
}

}  // namespace florence::search
