// The FAISS layer: the index-kind rule (hand-computed budgets), exact search against a brute-force
// reference, tuning an approximate index to the target recall, extending it, saving/loading.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "florence/core/error.h"
#include "florence/search/knn.h"
#include "florence/search/store.h"
#include "support/paths.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_knn {

using namespace florence;
using namespace florence::search;
namespace fs = std::filesystem;

namespace {

fs::path tmp(const std::string& name) {
  const fs::path p = fs::path(FLORENCE_TEST_TMP) / "unit_search_knn" / name;
  fs::remove_all(p);
  fs::create_directories(p.parent_path());
  return p;
}

/// n unit vectors around `centres` Gaussian centres (a mixture, like embeddings of similar images).
torch::Tensor clustered(int64_t n, int64_t d, int64_t centres, uint64_t seed) {
  torch::manual_seed(seed);
  torch::Tensor c = torch::randn({centres, d});
  torch::Tensor x = c.index_select(0, torch::randint(centres, {n}, torch::kLong)) + 0.5 * torch::randn({n, d});
  return torch::nn::functional::normalize(x, torch::nn::functional::NormalizeFuncOptions().dim(1));
}

IndexStore store_with(const fs::path& dir, const torch::Tensor& x, int64_t chunk) {
  IndexStore s = IndexStore::create(dir.string(), x.size(1), {{"model", "synthetic"}});
  for (int64_t i = 0; i < x.size(0); i += chunk) {
    const int64_t e = std::min(x.size(0), i + chunk);
    std::vector<ImageRow> rows(size_t(e - i));
    for (int64_t r = i; r < e; ++r) rows[size_t(r - i)].key = std::to_string(r);
    s.append_chunk(x.slice(0, i, e), rows, "", "chunk", {});
  }
  return s;
}

}  // namespace

TEST(ChooseIndex, FollowsTheSizeAndMemoryRule) {
  const int64_t G = int64_t(1) << 30, M = int64_t(1) << 20;
  EXPECT_EQ(choose_index(1000, 128, 4 * G).key, "Flat");
  EXPECT_EQ(choose_index(131072, 128, 4 * G).key, "Flat");  // n * d = 2^24 exactly
  EXPECT_EQ(choose_index(131073, 128, 4 * G).key, "HNSW32");
  EXPECT_EQ(choose_index(500000, 128, 4 * G).key, "HNSW32");
  // 1M vectors: nlist = 2^round(log2(4 * 1000)) = 4096; IVF-Flat needs 1M * (512 + 8) + 4096 * 512 bytes.
  EXPECT_EQ(choose_index(1000000, 128, 4 * G).key, "IVF4096,Flat");
  EXPECT_EQ(estimate_index_bytes("IVF4096,Flat", 1000000, 128), 1000000LL * 520 + 4096 * 512);
  // 100 MiB: m <= (104,857,600 - 4096 * 512 - 256 * 512) / 1e6 - 8 = 94.6, capped at 64 (a divisor of 128).
  EXPECT_EQ(choose_index(1000000, 128, 100 * M).key, "IVF4096,PQ64x8");
  // 20 MiB: m <= 10.7 -> the largest divisor of 128 below it is 8.
  EXPECT_EQ(choose_index(1000000, 128, 20 * M).key, "IVF4096,PQ8x8");
  // A Flat-sized collection over its budget goes to PQ as well: 10,000 x 128 floats = 4.9 MiB > 2 MiB.
  EXPECT_NE(choose_index(10000, 128, 2 * M).key.find(",PQ"), std::string::npos);
  try {
    choose_index(1000000, 128, 5 * M);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("too small"), std::string::npos) << e.what();
  }
  EXPECT_EQ(parse_bytes("4G"), 4 * G);
  EXPECT_EQ(parse_bytes("512MiB"), 512 * M);
  EXPECT_EQ(parse_bytes("1.5GB"), 3 * G / 2);
  EXPECT_EQ(parse_bytes("1000"), 1000);
  for (const char* bad : {"", "4X", "-1G", "G", "0"}) EXPECT_THROW(parse_bytes(bad), Error) << bad;
}

TEST(Knn, ExactSearchMatchesBruteForceAcrossChunks) {
  const torch::Tensor x = clustered(700, 16, 10, 1);
  IndexStore s = store_with(tmp("exact"), x, 128);
  const torch::Tensor q = clustered(20, 16, 10, 2);
  const std::vector<int64_t> got = exact_search(s, q.data_ptr<float>(), 20, 5);
  const torch::Tensor ref = std::get<1>(torch::topk(torch::matmul(q, x.t()), 5, 1));
  for (int64_t i = 0; i < 20; ++i)
    for (int64_t j = 0; j < 5; ++j) EXPECT_EQ(got[size_t(i * 5 + j)], ref[i][j].item<int64_t>()) << i << "," << j;
  EXPECT_DOUBLE_EQ(recall_at_k(got, got, 20, 5), 1.0);
  std::vector<int64_t> half = got;
  for (int64_t i = 0; i < 20; ++i) half[size_t(i * 5)] = -1;  // one of five wrong per query
  EXPECT_DOUBLE_EQ(recall_at_k(got, half, 20, 5), 0.8);

  // Flat through build_knn: exact, recall 1, same ids as the brute force.
  KnnBuildOptions o;
  const nlohmann::json knn = build_knn(s, o);
  EXPECT_EQ(knn["key"], "Flat");
  EXPECT_EQ(knn["rows"], 700);
  EXPECT_DOUBLE_EQ(knn["recall_at_10"].get<double>(), 1.0);
  KnnIndex k = KnnIndex::load(s.knn_path(), "");
  std::vector<float> sc(20 * 5);
  std::vector<int64_t> ids(20 * 5);
  k.search(q.data_ptr<float>(), 20, 5, sc.data(), ids.data());
  EXPECT_EQ(ids, got);
}

TEST(Knn, TieAwareRecallCountsDuplicatesOfTheKthResult) {
  // Rows: e1, e1 (a duplicate image), e2, (e1 + e2) / sqrt(2). Query e1.
  const float r = float(1.0 / std::sqrt(2.0));
  const torch::Tensor x = torch::tensor({1.f, 0.f, 1.f, 0.f, 0.f, 1.f, r, r}).view({4, 2});
  IndexStore s = store_with(tmp("ties"), x, 2);
  const float q[2] = {1.f, 0.f};
  // k = 1: exact says row 0; row 1 ties with it (score 1), row 2 scores 0, row 3 0.707.
  EXPECT_DOUBLE_EQ(recall_at_k(s, q, {0}, {1}, 1, 1), 1.0);
  EXPECT_DOUBLE_EQ(recall_at_k({0}, {1}, 1, 1), 0.0);  // the id-set recall calls the tie a miss
  EXPECT_DOUBLE_EQ(recall_at_k(s, q, {0}, {2}, 1, 1), 0.0);
  EXPECT_DOUBLE_EQ(recall_at_k(s, q, {0}, {-1}, 1, 1), 0.0);
  // k = 2: exact {0, 1}; {1, 3} finds one of two; {1, 1} counts row 1 once; {3, 0} finds one.
  EXPECT_DOUBLE_EQ(recall_at_k(s, q, {0, 1}, {1, 3}, 1, 2), 0.5);
  EXPECT_DOUBLE_EQ(recall_at_k(s, q, {0, 1}, {1, 1}, 1, 2), 0.5);
  EXPECT_DOUBLE_EQ(recall_at_k(s, q, {0, 1}, {3, 0}, 1, 2), 0.5);
  // k = 3: exact {0, 1, 3} (k-th score 0.707); {1, 0, 2} finds two of three.
  EXPECT_NEAR(recall_at_k(s, q, {0, 1, 3}, {1, 0, 2}, 1, 3), 2.0 / 3.0, 1e-12);
}

TEST(Knn, ApproximateIndicesAreTunedToTheTargetRecallAndExtendWithoutRetraining) {
  const torch::Tensor x = clustered(6000, 32, 40, 3);
  for (const std::string key : {"HNSW16", "IVF64,Flat"}) {
    const fs::path dir = tmp("approx_" + std::string(key == "HNSW16" ? "hnsw" : "ivf"));
    IndexStore s = store_with(dir, x.slice(0, 0, 5000), 1000);
    KnnBuildOptions o;
    o.index_key = key;
    o.target_recall = 0.95;
    o.tune_queries = 200;
    const nlohmann::json knn = build_knn(s, o);
    EXPECT_EQ(knn["key"], key);
    EXPECT_GE(knn["recall_at_10"].get<double>(), 0.95) << knn.dump();
    EXPECT_FALSE(knn["search_params"].get<std::string>().empty());
    // Independent check on held-out queries with the stored parameter.
    KnnIndex k = KnnIndex::load(s.knn_path(), knn["search_params"]);
    const torch::Tensor q = x.slice(0, 5000, 5200).contiguous();
    std::vector<float> sc(200 * 10);
    std::vector<int64_t> ids(200 * 10);
    k.search(q.data_ptr<float>(), 200, 10, sc.data(), ids.data());
    EXPECT_GE(recall_at_k(exact_search(s, q.data_ptr<float>(), 200, 10), ids, 200, 10), 0.9) << key;

    // add: 1000 more rows appended to the FAISS index; the new rows are found by themselves.
    std::vector<ImageRow> rows(1000);
    s.append_chunk(x.slice(0, 5000, 6000), rows, "", "more", {});
    const nlohmann::json ext = extend_knn(s);
    EXPECT_EQ(ext["rows"], 6000);
    KnnIndex k2 = KnnIndex::load(s.knn_path(), ext["search_params"]);
    EXPECT_EQ(k2.ntotal(), 6000);
    const torch::Tensor q2 = x.slice(0, 5500, 5510).contiguous();
    std::vector<float> sc2(10);
    std::vector<int64_t> ids2(10);
    for (int64_t i = 0; i < 10; ++i) {
      k2.search(q2[i].data_ptr<float>(), 1, 1, sc2.data(), ids2.data());
      EXPECT_EQ(ids2[0], 5500 + i) << key;
      EXPECT_NEAR(sc2[0], 1.0, 1e-4);
    }
  }
}

TEST(Knn, RejectsBadKeysAndMismatchedFiles) {
  EXPECT_THROW(KnnIndex::create("NotAnIndex42", 8), Error);
  const torch::Tensor x = clustered(100, 8, 4, 5);
  IndexStore s = store_with(tmp("bad"), x, 50);
  KnnBuildOptions o;
  o.index_key = "IVF8,Flat";
  build_knn(s, o);
  EXPECT_THROW(KnnIndex::load(s.knn_path(), "efSearch=10"), Error);  // not an HNSW parameter
  EXPECT_THROW(KnnIndex::load((tmp("none") / "knn.index").string(), ""), Error);
  // The manifest says more rows than the file holds: extend refuses instead of adding twice.
  nlohmann::json knn = s.knn();
  knn["rows"] = 90;
  s.set_knn(knn);
  EXPECT_THROW(extend_knn(s), Error);
  IndexStore empty = IndexStore::create(tmp("empty").string(), 8, {});
  EXPECT_THROW(build_knn(empty, {}), Error);
}

}  // namespace test_knn
