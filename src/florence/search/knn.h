#pragma once
// The vector index of an image index folder: FAISS (Debian libfaiss-dev 1.7.3), inner product
// on L2-normalised embeddings (= cosine similarity).
//
// Choosing the index (autofaiss's idea - pick the kind from the collection size and a memory
// budget, then tune its search parameter to a target recall; the rule and thresholds are ours,
// measured in docs/search.md):
//   - Flat (exact) while n * d <= 2^24 floats (131,072 vectors at d = 128): a query then costs at
//     most 16.8M multiply-adds, a few ms on 2 cores, and exact needs no training or tuning;
//   - HNSW32 (graph, no training) up to 500,000 vectors when its memory fits: the best latency
//     at high recall, but its build slows with n (measured: ~3,000 vectors/s on 2 cores);
//   - IVF{nlist},Flat when the raw vectors fit the budget: nlist = the power of two nearest
//     4 sqrt(n) (FAISS wiki "Guidelines to choose an index": 4..16 sqrt(n)), cheap to build;
//   - IVF{nlist},PQ{m}x8 otherwise, with the largest m (bytes per vector, a divisor of d, <= 64)
//     whose codes fit the budget.
// Memory estimates per vector: Flat 4d; HNSW{M} 4d + 8M * 1.05 (links, upper levels); IVF-Flat
// 4d + 8 (id); IVF-PQ m + 8; plus centroids (nlist * 4d, PQ 256 * 4d).
// The search parameter (HNSW efSearch, IVF nprobe) is the smallest of a fixed ladder whose
// recall@10 against exact search reaches the target on sample queries (stored vectors used as
// queries, as "search by this image" does).
#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace faiss {
struct Index;
}

namespace florence::search {

class IndexStore;

/// The index kind chosen for a collection.
struct KnnPlan {
  std::string key;              ///< FAISS factory string ("Flat", "HNSW32", "IVF4096,Flat", "IVF4096,PQ32x8")
  int64_t estimated_bytes = 0;  ///< memory of the index by the estimates above
  std::string reason;           ///< one sentence: why this kind
};

/// Chooses the index for n vectors of dimension d within max_memory bytes (rule at the top).
/// Throws florence::Error when even the smallest PQ code does not fit the budget (naming the
/// memory it would need), or on n < 0, d < 1, max_memory < 1.
KnnPlan choose_index(int64_t n, int64_t d, int64_t max_memory);

/// Estimated memory in bytes of a FAISS index built from `key` over n vectors of dimension d
/// (the estimates above; unknown kinds count as Flat).
int64_t estimate_index_bytes(const std::string& key, int64_t n, int64_t d);

/// "4G", "512M", "1.5GB", "800k", "1000000" -> bytes (powers of 1024). Throws florence::Error on
/// anything else or a value <= 0.
int64_t parse_bytes(const std::string& text);

struct KnnBuildOptions {
  std::string index_key;             ///< FAISS factory string; empty = choose_index()
  int64_t max_memory = int64_t(4) << 30;  ///< budget for choose_index (bytes)
  double target_recall = 0.95;       ///< recall@10 the search parameter is tuned to
  int64_t tune_queries = 500;        ///< sample queries for tuning (fewer when the index is smaller)
  uint64_t seed = 0;                 ///< training / query sample
};

/// A loaded FAISS index with its search parameter applied. search() may be called from several
/// threads at once (FAISS searches of Flat / IVF / HNSW indices are const).
class KnnIndex {
 public:
  KnnIndex();
  ~KnnIndex();
  KnnIndex(KnnIndex&&) noexcept;
  KnnIndex& operator=(KnnIndex&&) noexcept;

  /// Reads `path` (faiss::read_index) and applies `search_params` ("nprobe=16", "efSearch=64",
  /// "" = none). Throws florence::Error naming the file when it cannot be read, or the parameter
  /// does not apply to the index.
  static KnnIndex load(const std::string& path, const std::string& search_params = "");
  /// Creates an empty index from a factory string for d-dimensional vectors (inner product).
  /// Throws florence::Error naming the key when FAISS rejects it.
  static KnnIndex create(const std::string& key, int64_t d);

  /// q: [nq, d] row-major. scores/ids: [nq, k]; ids are row ids, -1 (score -inf) where fewer
  /// than k results exist.
  void search(const float* q, int64_t nq, int64_t k, float* scores, int64_t* ids) const;
  void train(const float* x, int64_t n);
  void add(const float* x, int64_t n);
  bool is_trained() const;
  void set_search_params(const std::string& params);
  int64_t ntotal() const;
  int64_t dim() const;
  /// Writes the index atomically (temporary file, then rename). Throws florence::Error on I/O errors.
  void save(const std::string& path) const;

 private:
  std::unique_ptr<faiss::Index> index_;
};

/// Exact top-k by inner product of queries [nq, d] against every row of the store (chunk by
/// chunk, bounded memory); ids [nq, k] row-major (-1 where the store has fewer than k rows).
std::vector<int64_t> exact_search(const IndexStore& store, const float* q, int64_t nq, int64_t k);

/// Mean over queries of |approx top-k ∩ exact top-k| / k. ids are [nq, k] row-major.
double recall_at_k(const std::vector<int64_t>& exact, const std::vector<int64_t>& approx, int64_t nq, int64_t k);

/// Tie-aware recall@k (the convention of ann-benchmarks: a result counts when its distance is
/// within the true k-th one): an approximate result counts as found when its true score q . x
/// (recomputed from the store) is >= the exact k-th score - 1e-5. Identical images have identical
/// embeddings, and with id sets a tie at the k-th place makes exact search itself score below 1
/// (measured: 82% of queries on the demo checkpoint's emoji + OpenClipArt index tie there).
/// q: [nq, d] row-major; exact, approx: ids [nq, k] row-major (-1 = none). At most k per query count.
double recall_at_k(const IndexStore& store, const float* q, const std::vector<int64_t>& exact,
                   const std::vector<int64_t>& approx, int64_t nq, int64_t k);

/// Builds a new FAISS index over all rows of `store` (trains on a seeded sample when the kind
/// needs training, adds chunk by chunk), tunes its search parameter to the target recall, writes
/// DIR/knn.index atomically and records "knn" in the manifest: {"key", "reason", "rows",
/// "search_params", "recall_at_10", "tune_queries", "bytes", "estimated_bytes", "build_seconds"}.
/// Returns that object. Throws florence::Error on an empty store or a bad key.
nlohmann::json build_knn(IndexStore& store, const KnnBuildOptions& options);

/// Adds the rows not yet in DIR/knn.index (knn.rows .. rows-1) to it without retraining, and
/// rewrites it and the manifest. Returns the new "knn" object. Throws florence::Error when the
/// store has no knn yet or the file holds a different number of vectors than the manifest says.
nlohmann::json extend_knn(IndexStore& store);

}  // namespace florence::search
