#pragma once
// The query side of an image index: a loaded index folder (metadata in memory, FAISS index with
// its tuned search parameter) answering nearest-neighbour queries by embedding, used by
// `florence search` and `florence serve`.
//
// Scores are inner products of the L2-normalised query and image embeddings (cosine, in
// [-1, 1]; approximate indices may miss some of the true top k, see knn.h).
// De-duplication (optional): results are taken in score order and one is dropped when its
// cosine with an already kept result is >= the threshold (near-identical images: the same
// picture in two folders, colour variants); more candidates are fetched so that up to k remain.
#include <torch/types.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "florence/search/knn.h"
#include "florence/search/store.h"

namespace florence::eval {
struct EvalModel;
}

namespace florence::search {

struct SearchHit {
  int64_t id = -1;
  float score = 0;  ///< cosine similarity with the query
};

class SearchIndex {
 public:
  /// Opens the index folder `dir` under `name` (default: the folder's name; characters other than
  /// letters, digits, '.', '_', '-' become '_', as the name is a URL path segment). Throws
  /// florence::Error when it is not a finished index (no FAISS index yet, an unfinished
  /// build/add), or its files are inconsistent (the FAISS index and the manifest disagree on
  /// the row count, metadata rows missing).
  static std::shared_ptr<SearchIndex> open(const std::string& dir, const std::string& name = "");

  const std::string& name() const { return name_; }
  const IndexStore& store() const { return store_; }
  int64_t size() const { return store_.rows(); }
  int64_t dim() const { return store_.dim(); }

  /// Nearest neighbours of each query (q: [nq, dim] row-major, normalised here), best first; at
  /// most k per query (fewer when the index is smaller). dedup in (0, 1]: near-duplicate
  /// threshold (top of file); 0 = off. Thread-safe. Throws florence::Error on k < 1.
  std::vector<std::vector<SearchHit>> search(const float* q, int64_t nq, int64_t k, double dedup = 0) const;

  /// Metadata of row `id`. Throws florence::Error when id is not a row of this index.
  const ImageRow& row(int64_t id) const;
  /// The stored embedding of row `id` ([dim] float32, unit norm). Throws as row().
  std::vector<float> embedding(int64_t id) const;
  /// Thumbnail bytes and MIME type of row `id` from the chunk's .thumbs file; {"", ""} when the
  /// row has none. Throws as row(), or florence::Error when the thumbnail lies outside its file.
  std::pair<std::string, std::string> thumbnail(int64_t id) const;
  /// One result as JSON: {"id", "score", "key", "caption", "source", "width", "height", "meta",
  /// "image"}; "image" is the thumbnail URL path "/images/NAME/ID" (absent without thumbnail).
  nlohmann::json hit_json(const SearchHit& h) const;
  /// {"name", "rows", "dim", "knn": {...}, "model": {...}, "dir"}.
  nlohmann::json describe() const;

 private:
  SearchIndex() = default;
  std::string name_;
  IndexStore store_;
  KnnIndex knn_;
  std::vector<ImageRow> rows_;
};

/// One `florence search` query: exactly one of text, image (a file) or embedding (a file, see
/// read_query_embeddings; every row is a query).
struct QuerySpec {
  std::string text, image, embedding;
  int64_t k = 10;
  double dedup = 0;  ///< near-duplicate threshold, 0 = off (top of file)
};

/// `florence search`: embeds the query (text or image through `model`, which may be null for an
/// embedding file) and searches `index`. Returns {"index", "k", "queries": [{"query": "...",
/// "results": [hit_json...]}]}. Throws florence::Error when not exactly one query kind is given,
/// the model is missing for a text/image query, the image cannot be read, or an embedding has
/// the wrong size.
nlohmann::json run_search(const SearchIndex& index, const QuerySpec& query, eval::EvalModel* model);

/// Reads query embeddings from a file: .npy ([D] or [N, D]), .json (an array of numbers or of
/// arrays), or a .safetensors written by `florence embed` (image_embeds rows, then text_embeds
/// rows). Returns [N, D] float32. Throws florence::Error naming the file when it holds no
/// vector, rows are ragged, or a value is not a finite number.
torch::Tensor read_query_embeddings(const std::string& path);

}  // namespace florence::search
