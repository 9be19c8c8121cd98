#pragma once
// `florence index build|add|info|reindex`: embeds image collections into an index folder
// (store.h) and builds its FAISS index (knn.h).
//
// Inputs (each one of):
//   - a folder holding WebDataset shards (*.tar), a shard file or a brace pattern
//     (data/webdataset.h list_shards): key, caption (KEY.txt) and meta (KEY.json) from the shard;
//   - a corpus root (`florence data build` output: split folders train/ val/ test/ ... holding
//     shards): every split's shards, splits in name order;
//   - a manifest (.jsonl / .tsv, data/readers.h ManifestSource): key, caption, meta per line;
//   - image files or folders of images (recursive, eval/embed.h image_inputs): key = the path.
// Work is cut into chunks - one per shard, or `chunk_size` consecutive files / manifest lines -
// each written as a unit (store.h), so an interrupted run (Ctrl-C, SIGTERM, a crash, a killed
// process) resumes with the same command without redoing finished chunks; Ctrl-C finishes the
// running batch, writes every finished chunk and returns with `interrupted` set.
//
// Images are decoded, resized and centre-cropped on the data::Loader's worker threads (eval
// preprocessing of the checkpoint, eval/encode.h) while the model embeds the previous batch.
// Bad images are counted by reason and logged, never fatal.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "florence/eval/encode.h"
#include "florence/search/knn.h"

namespace florence::search {

struct BuildOptions {
  std::vector<std::string> inputs;  ///< see top of file
  int64_t chunk_size = 1000;        ///< files or manifest lines per chunk (a shard is always one chunk)
  int thumb_size = 256;             ///< longer side of stored thumbnails; 0 = store none
  int progress = -1;                ///< progress bar: 1 on, 0 off (log lines), -1 when stderr is a terminal
  KnnBuildOptions knn;              ///< FAISS index choice (build only; add extends the existing index)
  bool handle_signals = true;       ///< SIGINT / SIGTERM stop after the running batch (train::StopSignalScope)
  std::string vocab;                ///< the --vocab given (recorded so that search/serve find it); "" = the checkpoint's
};

struct BuildReport {
  int64_t rows_added = 0;        ///< images embedded by this call
  int64_t rows_total = 0;        ///< rows in the index afterwards
  int64_t chunks_done = 0;       ///< chunks completed by this call
  int64_t chunks_resumed = 0;    ///< chunks found complete from an earlier, interrupted call
  int64_t chunks_planned = 0;    ///< chunks of the inputs
  std::map<std::string, int64_t> skipped;  ///< images dropped, by reason
  double embed_seconds = 0;      ///< wall time of the embedding loop
  double images_per_second = 0;  ///< rows_added / embed_seconds
  bool interrupted = false;      ///< stopped by a signal before the end (rerun to resume)
  nlohmann::json knn;            ///< the manifest's "knn" after the call (null when interrupted)
  nlohmann::json to_json() const;
};

/// Builds the index folder `dir` from options.inputs with model `m` (new folder, or resumes an
/// interrupted build of the same inputs; a finished build of the same inputs only rebuilds a
/// missing FAISS index). Throws florence::Error when `dir` holds an index of other inputs or of
/// another model, when an input does not exist or is empty, or on I/O errors.
BuildReport build_index(eval::EvalModel& m, const std::string& dir, const BuildOptions& options);

/// Appends options.inputs to the existing index `dir` (ids continue after the last row) and adds
/// the new vectors to its FAISS index without retraining; resumes an interrupted add of the same
/// inputs. Throws florence::Error when `dir` is not an index, was embedded by another model, has
/// an unfinished build/add of other inputs, or on the errors of build_index.
BuildReport add_to_index(eval::EvalModel& m, const std::string& dir, const BuildOptions& options);

/// Rebuilds only the FAISS index of `dir` from its stored embeddings (another --index-key or
/// --max-memory). Returns the manifest's new "knn" object.
nlohmann::json reindex(const std::string& dir, const KnnBuildOptions& options);

/// A summary of `dir`: rows, dim, model, chunks (count, skipped by reason), the FAISS index
/// (kind, search parameter, recall, bytes), an unfinished plan, disk usage of each file kind.
nlohmann::json index_info(const std::string& dir);

/// `o` with what it leaves unset taken from the index `dir`: the checkpoint that embedded it (and
/// the vocabulary given at build time, if any), and
/// the preprocessing it was embedded with (image_size, crop_pct, mean, std), so that queries and
/// added images are prepared as the indexed ones were. Throws florence::Error when `dir` is not
/// an index, or records no checkpoint while none is given.
eval::LoadOptions index_load_options(const std::string& dir, eval::LoadOptions o);

/// The identity of a model for an index: {"model", "checkpoint" (absolute), "embed_dim",
/// "preprocess", "temperature"} (EvalModel::describe with the checkpoint made absolute).
nlohmann::json model_identity(const eval::EvalModel& m);

}  // namespace florence::search
