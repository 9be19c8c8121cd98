// Image search and the model server (issue 21 benchmark; not a test).
//
//   bench_search latency --index DIR [--checkpoint CKPT] [--requests 400] [--clients 1,8]
//   bench_search synthetic --out DIR [--n 1000000] [--dim 128] [--centres 10000] [--index-key KEY]
//                [--max-memory 4G] [--queries 1000] [--requests 2000] [--clients 1,8] [--seed 0]
//   bench_search load --index DIR [--checkpoint CKPT] [--requests 10000] [--clients 16] [--text-share 0.25]
//   bench_search build --out DIR --checkpoint CKPT --inputs A,B,... [--index-key KEY] [--max-memory 4G]
//   bench_search reindex --index DIR --index-key KEY [--target-recall 0.95]
//
// All three start `florence serve`'s Server in this process on a loopback port and drive it with
// keep-alive HTTP clients (cpp-httplib) on other threads of the same process: client and server
// share the machine's cores, as a client on the same host would.
//   latency:   POST /knn by text (captions of the index's own images, each used once: the
//              text tower runs for every request) and by embedding (stored vectors), at each
//              client count; p50 / p99 latency and queries/s.
//   synthetic: N unit vectors from a Gaussian mixture (`centres` random centres, noise 0.7 per
//              coordinate, a stand-in for embeddings of many similar pictures; SYNTHETIC, not model
//              output) written as an index folder, FAISS index chosen and tuned by build_knn;
//              recall@10 of that index against exact search on `queries` held-out vectors of the same
//              mixture, its memory (file, estimate, resident growth), build time, then embedding
//              query latency over HTTP. The model is a random-init florence-nano (embedding
//              queries never call it).
//   build:     `florence index build` (search::build_index, no progress bar) of the inputs into a
//              fresh DIR: images embedded, images/s of the embedding loop, FAISS build time, the
//              index chosen with its recall@10 and size, and the wall time of the whole build.
//   reindex:   `florence index reindex` (search::reindex) with KEY: FAISS build time, the tuned
//              search parameter, its recall@10 against exact search (stored vectors as queries)
//              and the index size; the folder keeps the new FAISS index.
//   load:      `requests` requests (share `text-share` by text, the rest by embedding) from
//              `clients` clients; counts non-200 answers and the resident memory after the first
//              fifth and at the end.
#include <httplib.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <limits>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "florence/core/error.h"
#include "florence/core/threads.h"
#include "florence/eval/encode.h"
#include "florence/search/builder.h"
#include "florence/search/knn.h"
#include "florence/search/metrics.h"
#include "florence/search/searcher.h"
#include "florence/search/server.h"
#include "florence/search/store.h"

using namespace florence;
using namespace florence::search;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

double secs(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::map<std::string, std::string> parse_args(int argc, char** argv, int first) {
  std::map<std::string, std::string> a;
  for (int i = first; i < argc; ++i) {
    std::string k = argv[i];
    if (k.rfind("--", 0) != 0 || i + 1 >= argc) throw Error("bad argument '" + k + "' (expected --name value)");
    a[k.substr(2)] = argv[++i];
  }
  return a;
}

std::vector<int> int_list(const std::string& s) {
  std::vector<int> out;
  size_t at = 0;
  while (at <= s.size()) {
    const size_t comma = s.find(',', at);
    out.push_back(std::stoi(s.substr(at, comma == std::string::npos ? std::string::npos : comma - at)));
    if (comma == std::string::npos) break;
    at = comma + 1;
  }
  return out;
}

struct RunStats {
  std::vector<double> ms;
  int errors = 0;
  double seconds = 0;
  double pct(double p) const {
    if (ms.empty()) return 0;
    std::vector<double> v = ms;
    std::sort(v.begin(), v.end());
    return v[std::min(v.size() - 1, size_t(p / 100.0 * double(v.size())))];
  }
};

/// `clients` keep-alive clients send bodies[0..n) (each once, in order of taking) to POST /knn.
// Sends bodies[from, to) over `clients` keep-alive connections. The bodies are not copied: the
// load mode reads the process's resident memory between two calls.
RunStats drive(int port, const std::vector<std::string>& bodies, int clients, size_t from = 0,
               size_t to = std::numeric_limits<size_t>::max()) {
  to = std::min(to, bodies.size());
  RunStats st;
  std::atomic<size_t> next{from};
  std::mutex mu;
  std::vector<std::thread> th;
  const auto t0 = Clock::now();
  for (int c = 0; c < clients; ++c)
    th.emplace_back([&] {
      httplib::Client cl("127.0.0.1", port);
      cl.set_keep_alive(true);
      cl.set_tcp_nodelay(true);  // as browsers do; httplib's default (Nagle on) adds a delayed-ACK wait
      cl.set_read_timeout(120, 0);
      std::vector<double> mine;
      int err = 0;
      for (size_t i = next++; i < to; i = next++) {
        const auto t = Clock::now();
        auto r = cl.Post("/knn", bodies[i], "application/json");
        mine.push_back(secs(t) * 1000);
        if (!r || r->status != 200) err++;
      }
      std::lock_guard<std::mutex> lock(mu);
      st.ms.insert(st.ms.end(), mine.begin(), mine.end());
      st.errors += err;
    });
  for (auto& t : th) t.join();
  st.seconds = secs(t0);
  return st;
}

void print_row(const std::string& what, int clients, const RunStats& s) {
  std::printf("| %s | %d | %zu | %.2f | %.2f | %.1f | %d |\n", what.c_str(), clients, s.ms.size(), s.pct(50), s.pct(99),
              double(s.ms.size()) / s.seconds, s.errors);
  std::fflush(stdout);
}

void print_header() {
  std::printf("| query | clients | requests | p50 ms | p99 ms | queries/s | errors |\n|---|---|---|---|---|---|---|\n");
}

eval::EvalModel load_model(const std::map<std::string, std::string>& a, const std::string& index_dir) {
  eval::LoadOptions lo;
  if (a.count("checkpoint")) lo.checkpoint = a.at("checkpoint");
  return eval::load_eval_model(index_load_options(index_dir, lo));
}

std::vector<std::string> text_bodies(const SearchIndex& idx, size_t n) {
  std::vector<std::string> out;
  const int64_t rows = idx.size();
  for (int64_t i = 0; int64_t(out.size()) < int64_t(n) && i < rows * 4; ++i) {
    const std::string& c = idx.row((i * 7919) % rows).caption;
    if (c.find_first_not_of(" ") == std::string::npos) continue;
    out.push_back(nlohmann::json{{"text", c + (i >= rows ? " " + std::to_string(i / rows) : "")}, {"k", 10}}.dump());
  }
  return out;
}

std::vector<std::string> embedding_bodies(const SearchIndex& idx, size_t n) {
  std::vector<std::string> out;
  for (size_t i = 0; i < n; ++i)
    out.push_back(nlohmann::json{{"embedding", idx.embedding(int64_t((i * 104729) % size_t(idx.size())))}, {"k", 10}}.dump());
  return out;
}

struct InProcess {
  std::unique_ptr<Server> server;
  std::thread th;
  int port = 0;
  InProcess(eval::EvalModel& m, const std::string& dir, int threads) {
    ServeOptions o;
    o.indices = {dir};
    o.port = 0;
    o.threads = threads;
    server = std::make_unique<Server>(m, o);
    port = server->bind();
    th = std::thread([this] { server->listen(); });
    httplib::Client c("127.0.0.1", port);
    while (!c.Get("/health")) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ~InProcess() {
    server->stop();
    th.join();
  }
};

int latency(const std::map<std::string, std::string>& a) {
  const std::string dir = a.at("index");
  const size_t n = a.count("requests") ? std::stoul(a.at("requests")) : 400;
  const std::vector<int> clients = int_list(a.count("clients") ? a.at("clients") : "1,8");
  eval::EvalModel m = load_model(a, dir);
  auto idx = SearchIndex::open(dir);
  std::printf("index %s: %lld images, %s %s\n", dir.c_str(), (long long)idx->size(), idx->store().knn().value("key", "").c_str(),
              idx->store().knn().value("search_params", "").c_str());
  InProcess srv(m, dir, 32);
  drive(srv.port, text_bodies(*idx, 20), 1);  // warm-up
  print_header();
  for (int c : clients) {
    print_row("text (encode + search)", c, drive(srv.port, text_bodies(*idx, n), c));
    print_row("embedding", c, drive(srv.port, embedding_bodies(*idx, n), c));
  }
  return 0;
}

int load(const std::map<std::string, std::string>& a) {
  const std::string dir = a.at("index");
  const size_t n = a.count("requests") ? std::stoul(a.at("requests")) : 10000;
  const int clients = a.count("clients") ? std::stoi(a.at("clients")) : 16;
  const double text_share = a.count("text-share") ? std::stod(a.at("text-share")) : 0.25;
  eval::EvalModel m = load_model(a, dir);
  auto idx = SearchIndex::open(dir);
  InProcess srv(m, dir, std::max(32, clients + 4));
  const auto texts = text_bodies(*idx, n), embs = embedding_bodies(*idx, n);
  std::vector<std::string> bodies;
  for (size_t i = 0; i < n; ++i)
    bodies.push_back(double(i % 100) < text_share * 100 ? texts[i % texts.size()] : embs[i]);
  const size_t fifth = n / 5;
  const RunStats first = drive(srv.port, bodies, clients, 0, fifth);
  const int64_t rss1 = resident_memory_bytes();
  const RunStats rest = drive(srv.port, bodies, clients, fifth, bodies.size());
  const int64_t rss2 = resident_memory_bytes();
  print_header();
  print_row("first fifth", clients, first);
  print_row("rest", clients, rest);
  std::printf("load: %zu requests, %d clients, %d errors; resident memory after the first fifth %.1f MiB, at the end %.1f MiB "
              "(growth %.1f MiB)\n",
              n, clients, first.errors + rest.errors, double(rss1) / (1 << 20), double(rss2) / (1 << 20),
              double(rss2 - rss1) / (1 << 20));
  return first.errors + rest.errors == 0 ? 0 : 1;
}

int build(const std::map<std::string, std::string>& a) {
  const fs::path dir = a.at("out");
  fs::remove_all(dir);
  BuildOptions bo;
  size_t at = 0;
  const std::string list = a.at("inputs");
  while (at <= list.size()) {
    const size_t comma = list.find(',', at);
    bo.inputs.push_back(list.substr(at, comma == std::string::npos ? std::string::npos : comma - at));
    if (comma == std::string::npos) break;
    at = comma + 1;
  }
  bo.progress = 0;
  if (a.count("index-key")) bo.knn.index_key = a.at("index-key");
  if (a.count("max-memory")) bo.knn.max_memory = parse_bytes(a.at("max-memory"));
  eval::LoadOptions lo;
  lo.checkpoint = a.at("checkpoint");
  eval::EvalModel m = eval::load_eval_model(lo);
  const auto t0 = Clock::now();
  const BuildReport r = build_index(m, dir.string(), bo);
  const double wall = secs(t0);
  int64_t skipped = 0;
  for (const auto& [k, v] : r.skipped) skipped += v;
  std::printf("build: %lld images (%lld skipped) embedded in %.1f s = %.1f images/s; FAISS %s %s built in %.2f s, "
              "recall@10 %.4f, %.1f MiB; whole build %.1f s (threads %d)\n",
              (long long)r.rows_added, (long long)skipped, r.embed_seconds, r.images_per_second,
              r.knn.value("key", std::string()).c_str(), r.knn.value("search_params", std::string()).c_str(),
              r.knn.value("build_seconds", 0.0), r.knn.value("recall_at_10", 0.0),
              double(r.knn.value("bytes", int64_t(0))) / (1 << 20), wall, torch::get_num_threads());
  return 0;
}

int reindex_mode(const std::map<std::string, std::string>& a) {
  KnnBuildOptions ko;
  ko.index_key = a.at("index-key");
  if (a.count("target-recall")) ko.target_recall = std::stod(a.at("target-recall"));
  const auto t0 = Clock::now();
  const nlohmann::json k = reindex(a.at("index"), ko);
  std::printf("reindex %s: %s %s over %lld vectors built and tuned in %.2f s (FAISS build %.2f s); recall@10 %.4f on %lld "
              "stored-vector queries; %.2f MiB\n",
              a.at("index").c_str(), k.value("key", std::string()).c_str(), k.value("search_params", std::string()).c_str(),
              (long long)k.value("rows", int64_t(0)), secs(t0), k.value("build_seconds", 0.0), k.value("recall_at_10", 0.0),
              (long long)k.value("tune_queries", int64_t(0)), double(k.value("bytes", int64_t(0))) / (1 << 20));
  return 0;
}

int synthetic(const std::map<std::string, std::string>& a) {
  const fs::path dir = a.at("out");
  const int64_t n = a.count("n") ? std::stoll(a.at("n")) : 1000000;
  const int64_t d = a.count("dim") ? std::stoll(a.at("dim")) : 128;
  const int64_t centres = a.count("centres") ? std::stoll(a.at("centres")) : 10000;
  const int64_t nq = a.count("queries") ? std::stoll(a.at("queries")) : 1000;
  const size_t requests = a.count("requests") ? std::stoul(a.at("requests")) : 2000;
  const uint64_t seed = a.count("seed") ? std::stoull(a.at("seed")) : 0;
  if (d != 128) throw Error("synthetic: --dim must be 128 (the random florence-nano serving it makes 128-d queries)");
  fs::remove_all(dir);
  torch::manual_seed(int64_t(seed));
  const torch::Tensor c = torch::randn({centres, d});
  auto draw = [&](int64_t m) {
    torch::Tensor x = c.index_select(0, torch::randint(centres, {m}, torch::kLong)) + 0.7 * torch::randn({m, d});
    return torch::nn::functional::normalize(x, torch::nn::functional::NormalizeFuncOptions().dim(1)).contiguous();
  };
  auto t0 = Clock::now();
  IndexStore st = IndexStore::create(dir.string(), d, {{"model", "synthetic (Gaussian mixture)"}});
  const int64_t chunk = 100000;
  for (int64_t i = 0; i < n; i += chunk) {
    const int64_t m = std::min(chunk, n - i);
    std::vector<ImageRow> rows(static_cast<size_t>(m));
    for (int64_t r = 0; r < m; ++r) rows[size_t(r)].key = "v" + std::to_string(i + r);
    st.append_chunk(draw(m), rows, "", "synthetic", {});
  }
  st.set_pending(nullptr);
  std::printf("synthetic: %lld vectors x %lld written in %.1f s\n", (long long)n, (long long)d, secs(t0));
  KnnBuildOptions ko;
  if (a.count("index-key")) ko.index_key = a.at("index-key");
  if (a.count("max-memory")) ko.max_memory = parse_bytes(a.at("max-memory"));
  ko.seed = seed;
  const int64_t rss0 = resident_memory_bytes();
  t0 = Clock::now();
  const nlohmann::json knn = build_knn(st, ko);
  const double build_s = secs(t0);
  // Held-out queries from the same mixture, exact vs the tuned index.
  const torch::Tensor q = draw(nq);
  t0 = Clock::now();
  const std::vector<int64_t> exact = exact_search(st, q.data_ptr<float>(), nq, 10);
  const double exact_s = secs(t0);
  const int64_t rss1 = resident_memory_bytes();
  KnnIndex k = KnnIndex::load(st.knn_path(), knn.value("search_params", ""));
  const int64_t rss2 = resident_memory_bytes();
  std::vector<float> sc(size_t(nq * 10));
  std::vector<int64_t> ids(size_t(nq * 10));
  t0 = Clock::now();
  for (int64_t i = 0; i < nq; ++i) k.search(q.data_ptr<float>() + i * d, 1, 10, sc.data() + i * 10, ids.data() + i * 10);
  const double one_s = secs(t0);
  const double recall = recall_at_k(st, q.data_ptr<float>(), exact, ids, nq, 10);  // tie-aware (knn.h)
  std::printf("index %s (%s), %s: built in %.1f s; file %.1f MiB, estimate %.1f MiB, resident growth on load %.1f MiB\n",
              knn["key"].get<std::string>().c_str(), knn["reason"].get<std::string>().c_str(),
              knn["search_params"].get<std::string>().c_str(), build_s, double(knn["bytes"].get<int64_t>()) / (1 << 20),
              double(knn["estimated_bytes"].get<int64_t>()) / (1 << 20), double(rss2 - rss1) / (1 << 20));
  std::printf("recall@10 on %lld held-out queries: %.4f (tuning sample: %.4f); single-query search %.3f ms in-process; "
              "exact search %.1f ms/query (batched)\n",
              (long long)nq, recall, knn["recall_at_10"].get<double>(), one_s * 1000 / double(nq), exact_s * 1000 / double(nq));
  (void)rss0;
  // Over HTTP.
  torch::manual_seed(1);
  eval::LoadOptions lo;
  lo.model = "florence-nano";
  eval::EvalModel m = eval::load_eval_model(lo);
  InProcess srv(m, dir.string(), 32);
  std::vector<std::string> bodies;
  for (size_t i = 0; i < requests; ++i) {
    const torch::Tensor v = q[int64_t(i % size_t(nq))];
    bodies.push_back(nlohmann::json{{"embedding", std::vector<float>(v.data_ptr<float>(), v.data_ptr<float>() + d)}, {"k", 10}}.dump());
  }
  drive(srv.port, bodies, 1, 0, std::min<size_t>(50, bodies.size()));
  print_header();
  for (int cl : int_list(a.count("clients") ? a.at("clients") : "1,8")) print_row("embedding (synthetic 1M)", cl, drive(srv.port, bodies, cl));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  configure_threads(0);
  spdlog::set_level(spdlog::level::warn);
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_search latency|synthetic|load|build|reindex --name value ... (see the top of bench/bench_search.cpp)\n");
    return 2;
  }
  try {
    const std::string mode = argv[1];
    const auto a = parse_args(argc, argv, 2);
    if (mode == "latency") return latency(a);
    if (mode == "synthetic") return synthetic(a);
    if (mode == "load") return load(a);
    if (mode == "build") return build(a);
    if (mode == "reindex") return reindex_mode(a);
    std::fprintf(stderr, "unknown mode '%s'\n", mode.c_str());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
}
