// FAISS index choice, build, tuning and search (see knn.h).
#include "florence/search/knn.h"

#include <faiss/AutoTune.h>
#include <faiss/Index.h>
#include <faiss/impl/FaissException.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numeric>
#include <filesystem>
#include <random>
#include <regex>
#include <set>

#include "florence/core/error.h"
#include "florence/core/files.h"
#include "florence/search/store.h"

namespace fs = std::filesystem;

namespace florence::search {

namespace {

constexpr int64_t kFlatMaxFloats = int64_t(1) << 24;  // n * d up to which Flat is chosen
constexpr int64_t kHnswMaxRows = 500000;              // HNSW build time grows past this (knn.h)
constexpr int kHnswM = 32;

int64_t nlist_for(int64_t n) {
  const double target = 4.0 * std::sqrt(double(std::max<int64_t>(n, 1)));
  int64_t p = int64_t(1) << int64_t(std::llround(std::log2(std::max(target, 1.0))));
  return std::clamp<int64_t>(p, 16, 65536);
}

int64_t key_int(const std::string& key, const char* pattern) {
  std::smatch m;
  if (std::regex_search(key, m, std::regex(pattern))) return std::stoll(m[1]);
  return 0;
}

std::string human_bytes(int64_t b) {
  char buf[32];
  if (b >= (int64_t(1) << 30)) std::snprintf(buf, sizeof buf, "%.2f GiB", double(b) / double(int64_t(1) << 30));
  else std::snprintf(buf, sizeof buf, "%.1f MiB", double(b) / double(1 << 20));
  return buf;
}

}  // namespace

int64_t estimate_index_bytes(const std::string& key, int64_t n, int64_t d) {
  const int64_t nlist = key_int(key, R"(IVF(\d+))");
  const int64_t centroids = nlist * d * 4;
  if (const int64_t m = key_int(key, R"(PQ(\d+))"); m > 0) return n * (m + 8) + centroids + 256 * d * 4;
  if (const int64_t M = key_int(key, R"(HNSW(\d+))"); M > 0 && nlist == 0)
    return n * (4 * d + int64_t(std::ceil(8.0 * double(M) * 1.05)));
  if (nlist > 0) return n * (4 * d + 8) + centroids;
  return n * 4 * d;
}

KnnPlan choose_index(int64_t n, int64_t d, int64_t max_memory) {
  if (n < 0 || d < 1 || max_memory < 1) throw Error("choose_index: need n >= 0, d >= 1, max_memory >= 1");
  KnnPlan p;
  auto fits = [&](const std::string& key) { return estimate_index_bytes(key, n, d) <= max_memory; };
  if (n * d <= kFlatMaxFloats && fits("Flat")) {
    p.key = "Flat";
    p.reason = "exact search: n * d = " + std::to_string(n * d) + " <= 2^24, a query scans all vectors in milliseconds";
  } else if (n <= kHnswMaxRows && fits("HNSW" + std::to_string(kHnswM))) {
    p.key = "HNSW" + std::to_string(kHnswM);
    p.reason = "graph index: " + std::to_string(n) + " vectors <= 500,000 and its memory fits the budget";
  } else if (const std::string ivf = "IVF" + std::to_string(nlist_for(n)) + ",Flat"; fits(ivf)) {
    p.key = ivf;
    p.reason = "inverted lists over the raw vectors: too many vectors for Flat/HNSW, and they fit the budget";
  } else {
    const std::string ivf_prefix = "IVF" + std::to_string(nlist_for(n)) + ",PQ";
    for (int64_t m = std::min<int64_t>(64, d / 2); m >= 4; --m) {
      if (d % m != 0) continue;
      const std::string key = ivf_prefix + std::to_string(m) + "x8";
      if (fits(key)) {
        p.key = key;
        p.reason = "product quantization to " + std::to_string(m) + " bytes per vector: the raw vectors (" +
                   human_bytes(n * d * 4) + ") exceed the memory budget";
        break;
      }
    }
    if (p.key.empty())
      throw Error("--max-memory " + human_bytes(max_memory) + " is too small for " + std::to_string(n) + " vectors; at least " +
                  human_bytes(estimate_index_bytes(ivf_prefix + "4x8", n, d)) + " are needed");
  }
  p.estimated_bytes = estimate_index_bytes(p.key, n, d);
  return p;
}

int64_t parse_bytes(const std::string& text) {
  std::smatch m;
  static const std::regex re(R"(^\s*([0-9]+(?:\.[0-9]+)?)\s*([kKmMgGtT]?)(?:i?[bB])?\s*$)");
  if (!std::regex_match(text, m, re)) throw Error("'" + text + "' is not a size (examples: 4G, 512M, 1.5GB, 1000000)");
  double v = std::stod(m[1]);
  const std::string unit = m[2];
  const std::string units = "kmgt";
  if (!unit.empty()) v *= std::pow(1024.0, double(units.find(char(std::tolower(unit[0]))) + 1));
  if (v < 1 || v > 9.0e18) throw Error("size '" + text + "' is out of range");
  return int64_t(v);
}

// ---------------------------------------------------------------------------------------------

KnnIndex::KnnIndex() = default;
KnnIndex::~KnnIndex() = default;
KnnIndex::KnnIndex(KnnIndex&&) noexcept = default;
KnnIndex& KnnIndex::operator=(KnnIndex&&) noexcept = default;

KnnIndex KnnIndex::load(const std::string& path, const std::string& search_params) {
  KnnIndex k;
  try {
    k.index_.reset(faiss::read_index(path.c_str()));
  } catch (const faiss::FaissException& e) {
    throw Error("cannot read FAISS index '" + path + "': " + e.msg);
  }
  if (k.index_->metric_type != faiss::METRIC_INNER_PRODUCT)
    throw Error("FAISS index '" + path + "' does not use inner product");
  k.set_search_params(search_params);
  return k;
}

KnnIndex KnnIndex::create(const std::string& key, int64_t d) {
  KnnIndex k;
  try {
    k.index_.reset(faiss::index_factory(int(d), key.c_str(), faiss::METRIC_INNER_PRODUCT));
  } catch (const faiss::FaissException& e) {
    throw Error("FAISS rejects index key '" + key + "': " + e.msg);
  }
  return k;
}

void KnnIndex::set_search_params(const std::string& params) {
  if (params.empty()) return;
  try {
    faiss::ParameterSpace().set_index_parameters(index_.get(), params.c_str());
  } catch (const faiss::FaissException& e) {
    throw Error("search parameter '" + params + "' does not apply to this FAISS index: " + e.msg);
  }
}

void KnnIndex::search(const float* q, int64_t nq, int64_t k, float* scores, int64_t* ids) const {
  static_assert(sizeof(faiss::Index::idx_t) == sizeof(int64_t), "FAISS ids are 64-bit");
  index_->search(nq, q, k, scores, reinterpret_cast<faiss::Index::idx_t*>(ids));
}

void KnnIndex::train(const float* x, int64_t n) { index_->train(n, x); }
void KnnIndex::add(const float* x, int64_t n) { index_->add(n, x); }
bool KnnIndex::is_trained() const { return index_->is_trained; }
int64_t KnnIndex::ntotal() const { return index_ ? int64_t(index_->ntotal) : 0; }
int64_t KnnIndex::dim() const { return index_ ? int64_t(index_->d) : 0; }

void KnnIndex::save(const std::string& path) const {
  // Streamed into core::write_file_atomic_with's temporary: a full disk leaves the old index (or
  // none) in place, never a cut one, and the index is not copied in memory first.
  core::write_file_atomic_with(path, [&](int fd) {
    const int copy = ::dup(fd);  // fclose below closes the copy; the writer closes fd
    std::FILE* f = copy >= 0 ? ::fdopen(copy, "wb") : nullptr;
    if (!f) {
      if (copy >= 0) ::close(copy);
      return false;
    }
    int err = 0;
    errno = 0;
    try {
      faiss::write_index(index_.get(), f);
      if (std::fflush(f) != 0) err = errno;
    } catch (const faiss::FaissException&) {
      err = errno ? errno : EIO;  // FAISS's write check throws after the short fwrite that set errno
    }
    std::fclose(f);
    errno = err;
    return err == 0;
  });
}

// ---------------------------------------------------------------------------------------------

std::vector<int64_t> exact_search(const IndexStore& store, const float* q, int64_t nq, int64_t k) {
  torch::NoGradGuard ng;
  const torch::Tensor qt = torch::from_blob(const_cast<float*>(q), {nq, store.dim()}, torch::kFloat);
  torch::Tensor best_s = torch::full({nq, 0}, -INFINITY), best_i = torch::zeros({nq, 0}, torch::kLong);
  store.for_each_chunk_embeddings(0, [&](int64_t first, const torch::Tensor& e) {
    torch::Tensor s = torch::cat({best_s, torch::matmul(qt, e.t())}, 1);
    torch::Tensor ids = torch::cat({best_i, (torch::arange(e.size(0), torch::kLong) + first).expand({nq, e.size(0)})}, 1);
    auto [ts, ti] = torch::topk(s, std::min<int64_t>(k, s.size(1)), 1);
    best_s = ts;
    best_i = ids.gather(1, ti);
  });
  std::vector<int64_t> out(size_t(nq * k), -1);
  const int64_t got = best_i.size(1);
  auto acc = best_i.accessor<int64_t, 2>();
  for (int64_t i = 0; i < nq; ++i)
    for (int64_t j = 0; j < got; ++j) out[size_t(i * k + j)] = acc[i][j];
  return out;
}

double recall_at_k(const std::vector<int64_t>& exact, const std::vector<int64_t>& approx, int64_t nq, int64_t k) {
  if (nq == 0) return 1.0;
  double sum = 0;
  for (int64_t i = 0; i < nq; ++i) {
    std::set<int64_t> truth;
    for (int64_t j = 0; j < k; ++j)
      if (exact[size_t(i * k + j)] >= 0) truth.insert(exact[size_t(i * k + j)]);
    if (truth.empty()) {
      sum += 1;
      continue;
    }
    int64_t hit = 0;
    for (int64_t j = 0; j < k; ++j) hit += truth.count(approx[size_t(i * k + j)]) ? 1 : 0;
    sum += double(hit) / double(truth.size());
  }
  return sum / double(nq);
}

double recall_at_k(const IndexStore& store, const float* q, const std::vector<int64_t>& exact,
                   const std::vector<int64_t>& approx, int64_t nq, int64_t k) {
  if (nq == 0) return 1.0;
  const int64_t d = store.dim();
  std::vector<float> x(static_cast<size_t>(d));
  auto score = [&](int64_t qi, int64_t id) {
    store.read_embedding(id, x.data());
    double s = 0;
    for (int64_t c = 0; c < d; ++c) s += double(q[qi * d + c]) * x[size_t(c)];
    return s;
  };
  double sum = 0;
  for (int64_t i = 0; i < nq; ++i) {
    int64_t n_true = 0;
    double kth = std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < k; ++j)
      if (const int64_t id = exact[size_t(i * k + j)]; id >= 0) {
        ++n_true;
        kth = std::min(kth, score(i, id));
      }
    if (n_true == 0) {
      sum += 1;
      continue;
    }
    std::set<int64_t> seen;
    int64_t hit = 0;
    for (int64_t j = 0; j < k; ++j) {
      const int64_t id = approx[size_t(i * k + j)];
      if (id >= 0 && seen.insert(id).second && score(i, id) >= kth - 1e-5) ++hit;
    }
    sum += double(std::min(hit, n_true)) / double(n_true);
  }
  return sum / double(nq);
}

namespace {

/// Seeded sample of about `want` rows (each row kept with probability want / n), as [m, d].
torch::Tensor sample_rows(const IndexStore& store, int64_t want, uint64_t seed) {
  const int64_t n = store.rows();
  if (want >= n) return store.load_embeddings();
  std::mt19937_64 rng(seed);
  std::vector<torch::Tensor> parts;
  store.for_each_chunk_embeddings(0, [&](int64_t, const torch::Tensor& e) {
    std::vector<int64_t> keep;
    for (int64_t i = 0; i < e.size(0); ++i)
      if (double(rng() >> 11) * 0x1.0p-53 * double(n) < double(want)) keep.push_back(i);
    if (!keep.empty()) parts.push_back(e.index_select(0, torch::tensor(keep, torch::kLong)));
  });
  return torch::cat(parts, 0).contiguous();
}

/// Tunes the search parameter of `idx` on sample queries; returns {params, recall}.
std::pair<std::string, double> tune(KnnIndex& idx, const std::string& key, const IndexStore& store, const KnnBuildOptions& o,
                                    int64_t* queries_used) {
  const int64_t n = store.rows(), d = store.dim(), k = 10;
  const int64_t nq = std::min(o.tune_queries, n);
  *queries_used = nq;
  std::mt19937_64 rng(o.seed + 1);
  std::vector<int64_t> ids(static_cast<size_t>(n));
  std::iota(ids.begin(), ids.end(), 0);
  for (int64_t i = 0; i < nq; ++i) std::swap(ids[size_t(i)], ids[size_t(i + int64_t(rng() % uint64_t(n - i)))]);
  std::vector<float> q(size_t(nq * d));
  for (int64_t i = 0; i < nq; ++i) store.read_embedding(ids[size_t(i)], q.data() + i * d);
  const std::vector<int64_t> exact = exact_search(store, q.data(), nq, k);
  std::vector<float> s(size_t(nq * k));
  std::vector<int64_t> got(size_t(nq * k));
  auto measure = [&] {
    idx.search(q.data(), nq, k, s.data(), got.data());
    return recall_at_k(store, q.data(), exact, got, nq, k);
  };
  std::vector<std::string> ladder;
  if (key.find("HNSW") != std::string::npos && key.find("IVF") == std::string::npos) {
    for (int ef : {16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512}) ladder.push_back("efSearch=" + std::to_string(ef));
  } else if (const int64_t nlist = key_int(key, R"(IVF(\d+))"); nlist > 0) {
    for (int64_t p = 1; p <= nlist; p *= 2) ladder.push_back("nprobe=" + std::to_string(p));
  }
  if (ladder.empty()) return {"", measure()};
  double r = 0;
  for (const auto& params : ladder) {
    idx.set_search_params(params);
    r = measure();
    spdlog::info("knn: {} -> recall@10 {:.4f} on {} sample queries", params, r, nq);
    if (r >= o.target_recall) return {params, r};
  }
  spdlog::warn("knn: {} reaches recall@10 {:.4f} at most, below the target {}", key, r, o.target_recall);
  return {ladder.back(), r};
}

}  // namespace

nlohmann::json build_knn(IndexStore& store, const KnnBuildOptions& o) {
  const int64_t n = store.rows(), d = store.dim();
  if (n == 0) throw Error("index '" + store.dir() + "' holds no embeddings: nothing to build a vector index from");
  const auto t0 = std::chrono::steady_clock::now();
  KnnPlan plan;
  if (o.index_key.empty()) {
    plan = choose_index(n, d, o.max_memory);
  } else {
    plan.key = o.index_key;
    plan.reason = "--index-key";
    plan.estimated_bytes = estimate_index_bytes(plan.key, n, d);
  }
  spdlog::info("knn: {} over {} vectors (d = {}): {}; estimated memory {}", plan.key, n, d, plan.reason,
               human_bytes(plan.estimated_bytes));
  KnnIndex idx = KnnIndex::create(plan.key, d);
  if (!idx.is_trained()) {
    const int64_t nlist = key_int(plan.key, R"(IVF(\d+))");
    const int64_t want = std::min<int64_t>(n, std::max<int64_t>(64 * nlist, 20000));
    torch::Tensor sample = sample_rows(store, want, o.seed);
    spdlog::info("knn: training on {} sampled vectors", sample.size(0));
    try {
      idx.train(sample.data_ptr<float>(), sample.size(0));
    } catch (const faiss::FaissException& e) {
      throw Error("FAISS could not train '" + plan.key + "' on " + std::to_string(sample.size(0)) + " vectors: " + e.msg);
    }
  }
  int64_t added = 0, next_log = n / 10;
  store.for_each_chunk_embeddings(0, [&](int64_t, const torch::Tensor& e) {
    torch::Tensor c = e.contiguous();
    idx.add(c.data_ptr<float>(), c.size(0));
    added += c.size(0);
    if (added >= next_log && added < n) {
      spdlog::info("knn: added {}/{} vectors", added, n);
      next_log += n / 10;
    }
  });
  int64_t queries = 0;
  auto [params, recall] = tune(idx, plan.key, store, o, &queries);
  idx.set_search_params(params);
  idx.save(store.knn_path());
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  nlohmann::json knn{{"key", plan.key},
                     {"reason", plan.reason},
                     {"rows", idx.ntotal()},
                     {"search_params", params},
                     {"recall_at_10", recall},
                     {"target_recall", o.target_recall},
                     {"tune_queries", queries},
                     {"bytes", int64_t(fs::file_size(store.knn_path()))},
                     {"estimated_bytes", plan.estimated_bytes},
                     {"build_seconds", secs}};
  store.set_knn(knn);
  spdlog::info("knn: wrote {} ({}, {}; recall@10 {:.4f}) in {:.1f} s", store.knn_path(), plan.key,
               params.empty() ? "exact" : params, recall, secs);
  return knn;
}

nlohmann::json extend_knn(IndexStore& store) {
  nlohmann::json knn = store.knn();
  if (knn.is_null()) throw Error("index '" + store.dir() + "' has no vector index yet (run `florence index build`)");
  const int64_t have = knn.at("rows").get<int64_t>();
  KnnIndex idx = KnnIndex::load(store.knn_path(), knn.value("search_params", std::string()));
  if (idx.ntotal() != have)
    throw Error("'" + store.knn_path() + "' holds " + std::to_string(idx.ntotal()) + " vectors but index.json says " +
                std::to_string(have) + "; rebuild it with `florence index reindex`");
  if (have == store.rows()) return knn;
  store.for_each_chunk_embeddings(have, [&](int64_t, const torch::Tensor& e) {
    torch::Tensor c = e.contiguous();
    idx.add(c.data_ptr<float>(), c.size(0));
  });
  idx.save(store.knn_path());
  knn["rows"] = idx.ntotal();
  knn["bytes"] = int64_t(fs::file_size(store.knn_path()));
  knn["estimated_bytes"] = estimate_index_bytes(knn.at("key").get<std::string>(), idx.ntotal(), store.dim());
  store.set_knn(knn);
  spdlog::info("knn: added {} vectors to {} (now {}; not retrained)", idx.ntotal() - have, store.knn_path(), idx.ntotal());
  if (knn.at("key") == "Flat" && idx.ntotal() * store.dim() > kFlatMaxFloats)
    spdlog::warn("knn: the exact (Flat) index now holds {} vectors; `florence index reindex {}` would choose an approximate "
                 "kind with faster queries", idx.ntotal(), store.dir());
  return knn;
}

}  // namespace florence::search
