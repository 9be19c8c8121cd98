#pragma once
// The on-disk image index: one folder holding embeddings, metadata, thumbnails and the FAISS
// index. Layout (docs/search.md has the user-facing copy):
//
//   DIR/index.json            manifest: format, model (checkpoint, config, preprocessing), dim,
//                             rows, completed chunks, the FAISS index built, a pending plan
//   DIR/chunks/NNNNNN.npy     embeddings of chunk N: [rows, dim] float32, L2-normalised (numpy)
//   DIR/chunks/NNNNNN.jsonl   one JSON object per row, same order: id, key, source, caption,
//                             width, height, thumb [offset, bytes, mime], meta
//   DIR/chunks/NNNNNN.thumbs  the chunk's thumbnails, concatenated (offsets in the .jsonl)
//   DIR/knn.index             FAISS index (faiss::write_index) over rows 0 .. knn.rows-1
//
// A row's id is its position over all chunks in order (chunk 0's rows first). A chunk is one
// unit of work (a shard, or a group of image files): its three files are written atomically
// and only then is it listed in index.json (also written atomically), so a crash leaves either
// the whole chunk or none of it; `index build|add` resumes from the chunks not yet listed.
#include <torch/types.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace florence::search {

inline constexpr const char* kIndexFormat = "florence-image-index";
inline constexpr int kIndexVersion = 1;

/// Metadata of one indexed image.
struct ImageRow {
  std::string key;        ///< the sample key (file path as given, or the WebDataset key)
  std::string source;     ///< the image file, or the shard it came from
  std::string caption;    ///< the sample's text ("" when none)
  int32_t width = 0, height = 0;  ///< original size in pixels (0 = unknown)
  int64_t thumb_offset = -1;      ///< byte offset of the thumbnail in the chunk's .thumbs (-1: none)
  int32_t thumb_size = 0;         ///< thumbnail bytes
  std::string thumb_type;         ///< its MIME type ("image/png", "image/jpeg", ...)
  nlohmann::json meta;            ///< the sample meta (category, ...); null when none
  int32_t chunk = -1;             ///< chunk holding the row (filled by IndexStore)

  nlohmann::json to_json(int64_t id) const;
  /// Throws florence::Error naming `where` when `j` lacks a field or has a wrong type.
  static ImageRow from_json(const nlohmann::json& j, const std::string& where);
};

/// A completed chunk as listed in index.json.
struct ChunkInfo {
  int64_t id = 0;
  int64_t first_row = 0, rows = 0;
  std::string what;             ///< "shard data/emoji/train/000003.tar", "files 0..999 of photos/"
  nlohmann::json skipped = nlohmann::json::object();  ///< reason -> count of dropped images
};

class IndexStore {
 public:
  IndexStore() = default;  ///< an unopened store (use create / open)
  /// Creates DIR (and DIR/chunks) with an empty manifest for `dim`-dimensional embeddings of
  /// `model` (EvalModel::describe()). Throws florence::Error when DIR already holds an
  /// index.json, or cannot be created.
  static IndexStore create(const std::string& dir, int64_t dim, const nlohmann::json& model);
  /// Opens an existing index folder. Throws florence::Error naming the file when index.json is
  /// missing, not JSON, of another format/version, or inconsistent (chunk rows that do not add up).
  static IndexStore open(const std::string& dir);
  /// Whether DIR holds an index.json.
  static bool exists(const std::string& dir);

  const std::string& dir() const { return dir_; }
  int64_t dim() const { return dim_; }
  int64_t rows() const { return rows_; }
  const std::vector<ChunkInfo>& chunks() const { return chunks_; }
  /// The whole manifest (read-only view; change it through the methods below).
  const nlohmann::json& manifest() const { return manifest_; }
  /// The manifest's "model" object (EvalModel::describe() of the model that embedded the rows).
  const nlohmann::json& model() const;
  /// Next free chunk id (ids are consecutive).
  int64_t next_chunk_id() const { return int64_t(chunks_.size()); }

  std::string embeddings_path(int64_t chunk) const;
  std::string metadata_path(int64_t chunk) const;
  std::string thumbs_path(int64_t chunk) const;
  std::string knn_path() const;

  /// Appends chunk `next_chunk_id()`: embeds [n, dim] float32 (unit rows), rows (n entries,
  /// thumb offsets relative to `thumbs`), the thumbnail bytes, a description and its skip counts.
  /// Writes the three chunk files, then the manifest. Throws florence::Error on a shape mismatch
  /// or an I/O error.
  void append_chunk(const torch::Tensor& embeds, const std::vector<ImageRow>& rows, const std::string& thumbs,
                    const std::string& what, const std::map<std::string, int64_t>& skipped);

  /// The manifest's "pending" plan of an interrupted `index build|add` (null when none).
  const nlohmann::json& pending() const;
  void set_pending(const nlohmann::json& plan);  ///< writes the manifest
  /// Records the pending plan's inputs as done - "built_from" (command "build") or appended to
  /// "added" (command "add") - and clears it; writes the manifest.
  void finish_pending();
  /// The manifest's "knn" object (null before the first FAISS build).
  const nlohmann::json& knn() const;
  void set_knn(const nlohmann::json& knn);       ///< writes the manifest

  /// Embeddings of rows [from, rows()) as one [n, dim] float32 tensor (reads the chunk files).
  torch::Tensor load_embeddings(int64_t from = 0) const;
  /// Calls fn(first_row, embeds) for each chunk that holds rows >= from, in order (embeds is that
  /// chunk's part at or after `from`): bounded memory for large indices.
  void for_each_chunk_embeddings(int64_t from, const std::function<void(int64_t, const torch::Tensor&)>& fn) const;
  /// Metadata of all rows, in id order (reads every .jsonl). Throws florence::Error naming the
  /// file and line on a malformed row or a row count that differs from the manifest.
  std::vector<ImageRow> load_rows() const;
  /// Embedding of row `id` (one positioned read from its chunk's .npy) into out[dim].
  void read_embedding(int64_t id, float* out) const;
  /// The chunk holding row `id`. Throws florence::Error when id is outside [0, rows()).
  int64_t chunk_of(int64_t id) const;

 private:
  void save_manifest();
  std::string dir_;
  nlohmann::json manifest_;
  int64_t dim_ = 0, rows_ = 0;
  std::vector<ChunkInfo> chunks_;
  struct HeaderCache;  // .npy headers per chunk, read once (read_embedding)
  std::shared_ptr<HeaderCache> headers_;
};

}  // namespace florence::search
