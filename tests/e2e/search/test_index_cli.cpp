// `florence index build|add|info|reindex` and `florence search` through the binary, with a
// random-init florence-nano checkpoint: the stored embeddings equal `florence embed`'s, search
// scores equal the dot products of stored and query embeddings, `add` appends and extends the
// FAISS index, near-duplicates are dropped on request, and a build killed with SIGKILL resumes
// without redoing its finished chunks and ends with the embeddings of an uninterrupted build.
#include <gtest/gtest.h>
#include <signal.h>
#include <torch/torch.h>

#include <chrono>
#include <thread>

#include "e2e/search/fixtures.h"
#include "florence/core/checkpoint.h"
#include "florence/core/files.h"
#include "florence/search/npy.h"
#include "florence/search/store.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_index_cli {

using namespace florence;
namespace ts = florence::test::search;
namespace fs = std::filesystem;

namespace {

fs::path root() {
  static fs::path r = [] {
    fs::path p = ts::scratch("e2e_search_cli");
    ts::tiny_checkpoint(p);
    ts::write_shards(p / "corpus" / "train", 20, 10, 0);
    ts::write_shards(p / "corpus" / "test", 10, 10, 20);
    fs::create_directories(p / "photos" / "more");
    for (int i = 0; i < 11; ++i) cv::imwrite((p / "photos" / (i < 6 ? "" : "more") / ("p" + std::to_string(i) + ".png")).string(),
                                             ts::picture(100 + i));
    fs::copy_file(p / "photos" / "p1.png", p / "photos" / "p1_copy.png");  // an exact duplicate
    core::write_text_atomic(p / "photos" / "broken.png", "this is not a png");
    core::write_text_atomic(p / "photos" / "notes.txt", "not an image by extension");
    return p;
  }();
  return r;
}

std::string ckpt() { return (root() / "model.safetensors").string(); }

/// Runs `florence ARGS`; stdout in `out`; returns the exit status.
int run(const std::string& args, std::string& out) {
  const fs::path o = root() / "stdout.txt", e = root() / "stderr.txt";
  const int rc = ts::sh(std::string(FLORENCE_CLI) + " " + args + " > " + o.string() + " 2> " + e.string());
  out = ts::read_file(o);
  if (rc != 0) std::cerr << "florence " << args << " -> " << rc << "\n" << ts::read_file(e) << "\n";
  return rc;
}

nlohmann::json run_json(const std::string& args) {
  std::string out;
  EXPECT_EQ(run(args, out), 0) << args;
  try {
    return nlohmann::json::parse(out);
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not JSON from " << args << ": " << out;
    return {};
  }
}

torch::Tensor embed_texts(const std::string& text) {
  const fs::path out = root() / "text_embed.safetensors";
  std::string o;
  EXPECT_EQ(run("embed --checkpoint " + ckpt() + " --text \"" + text + "\" --out " + out.string(), o), 0);
  return core::load_safetensors(out.string()).tensors.at("text_embeds");
}

}  // namespace

TEST(IndexCli, BuildSearchAddReindexInfo) {
  const fs::path idx = root() / "idx";
  nlohmann::json rep = run_json("index build --out " + idx.string() + " --checkpoint " + ckpt() + " --progress 0 --json " +
                                (root() / "corpus").string());
  EXPECT_EQ(rep["rows_total"], 30);
  EXPECT_EQ(rep["chunks_done"], 3);  // one chunk per shard: test/000000, train/000000, train/000001
  EXPECT_EQ(rep["knn"]["key"], "Flat");
  EXPECT_EQ(rep["interrupted"], false);

  // Stored embeddings = `florence embed` of the same shards (same eval preprocessing), row for row;
  // the split folders come in name order (test before train).
  search::IndexStore st = search::IndexStore::open(idx.string());
  const torch::Tensor stored = st.load_embeddings();
  std::string o;
  ASSERT_EQ(run("embed --checkpoint " + ckpt() + " --images " + (root() / "corpus" / "test").string() + " " +
                    (root() / "corpus" / "train").string() + " --out " + (root() / "ref.safetensors").string(),
                o),
            0);
  const torch::Tensor ref = core::load_safetensors((root() / "ref.safetensors").string()).tensors.at("image_embeds");
  ASSERT_EQ(ref.sizes(), stored.sizes());
  EXPECT_LT((ref - stored).abs().max().item<double>(), 1e-5);
  const auto rows = st.load_rows();
  EXPECT_EQ(rows[0].key, "img0020");
  EXPECT_EQ(rows[0].caption, "picture number 20, a square");
  EXPECT_EQ(rows[0].meta["category"], "square");
  EXPECT_EQ(rows[0].width, 48);
  EXPECT_EQ(rows[0].height, 40);
  EXPECT_EQ(rows[0].source, (root() / "corpus" / "test" / "000000.tar").string());
  // numpy reads the chunk files.
  EXPECT_EQ(ts::sh(std::string(FLORENCE_PYTHON) + " -c \"import numpy as np, glob; a = np.concatenate([np.load(f) for f in sorted(glob.glob('" +
                   (idx / "chunks").string() + "/*.npy'))]); assert a.shape == (30, 128), a.shape; "
                   "assert abs(np.linalg.norm(a, axis=1) - 1).max() < 1e-5\""),
            0);

  // search --text: scores are the dot products with the text embedding, best first.
  const torch::Tensor t = embed_texts("a red disc");
  nlohmann::json s = run_json("search --index " + idx.string() + " --text \"a red disc\" --top 5 --json");
  ASSERT_EQ(s["queries"][0]["results"].size(), 5u);
  const torch::Tensor exact = torch::matmul(stored, t[0]);
  const auto top = std::get<1>(torch::topk(exact, 5));
  for (int i = 0; i < 5; ++i) {
    const auto& h = s["queries"][0]["results"][size_t(i)];
    EXPECT_EQ(h["id"].get<int64_t>(), top[i].item<int64_t>());
    EXPECT_NEAR(h["score"].get<double>(), exact[h["id"].get<int64_t>()].item<double>(), 1e-4);
  }
  // search --embedding with a stored row (.npy): that row first, cosine 1; plain output names it.
  search::write_npy((root() / "row7.npy").string(), stored[7]);
  s = run_json("search --index " + idx.string() + " --embedding " + (root() / "row7.npy").string() + " --top 3 --json");
  EXPECT_EQ(s["queries"][0]["results"][0]["id"], 7);
  EXPECT_NEAR(s["queries"][0]["results"][0]["score"].get<double>(), 1.0, 1e-5);
  ASSERT_EQ(run("search --index " + idx.string() + " --embedding " + (root() / "row7.npy").string() + " --top 1", o), 0);
  EXPECT_NE(o.find(rows[7].key), std::string::npos) << o;

  // add: 12 readable photos (one broken file skipped), in 3 chunks of 5 files; ids continue at 30.
  rep = run_json("index add " + idx.string() + " " + (root() / "photos").string() + " --chunk-size 5 --progress 0 --json");
  EXPECT_EQ(rep["rows_added"], 12);
  EXPECT_EQ(rep["rows_total"], 42);
  EXPECT_EQ(rep["chunks_done"], 3);
  EXPECT_EQ(rep["knn"]["rows"], 42);
  int64_t skipped = 0;
  for (const auto& [k, v] : rep["skipped"].items()) skipped += v.get<int64_t>();
  EXPECT_EQ(skipped, 1) << rep["skipped"];
  // The same add again has nothing to do.
  rep = run_json("index add " + idx.string() + " " + (root() / "photos").string() + " --chunk-size 5 --progress 0 --json");
  EXPECT_EQ(rep["rows_added"], 0);
  EXPECT_EQ(rep["rows_total"], 42);
  // search --image finds the added photo itself; its exact copy scores the same...
  s = run_json("search --index " + idx.string() + " --image " + (root() / "photos" / "p1.png").string() + " --top 3 --json");
  const auto& r0 = s["queries"][0]["results"];
  EXPECT_NEAR(r0[0]["score"].get<double>(), 1.0, 1e-4);
  EXPECT_NEAR(r0[1]["score"].get<double>(), 1.0, 1e-4);
  std::set<std::string> two{r0[0]["key"].get<std::string>(), r0[1]["key"].get<std::string>()};
  EXPECT_EQ(two, (std::set<std::string>{(root() / "photos" / "p1.png").string(), (root() / "photos" / "p1_copy.png").string()}));
  // ... and --dedup drops it.
  s = run_json("search --index " + idx.string() + " --image " + (root() / "photos" / "p1.png").string() +
               " --top 3 --dedup 0.999 --json");
  EXPECT_EQ(s["queries"][0]["results"].size(), 3u);
  EXPECT_LT(s["queries"][0]["results"][1]["score"].get<double>(), 0.999);

  // build again: the same inputs have nothing to do; other inputs are refused.
  rep = run_json("index build --out " + idx.string() + " --checkpoint " + ckpt() + " --progress 0 --json " +
                 (root() / "corpus").string());
  EXPECT_EQ(rep["rows_added"], 0);
  EXPECT_EQ(run("index build --out " + idx.string() + " --checkpoint " + ckpt() + " " + (root() / "photos").string(), o), 2);
  // reindex with a factory string: HNSW reaches the target on 42 vectors; search still answers.
  nlohmann::json knn = run_json("index reindex " + idx.string() + " --index-key HNSW8");
  EXPECT_EQ(knn["key"], "HNSW8");
  EXPECT_GE(knn["recall_at_10"].get<double>(), 0.95);
  s = run_json("search --index " + idx.string() + " --embedding " + (root() / "row7.npy").string() + " --top 1 --json");
  EXPECT_EQ(s["queries"][0]["results"][0]["id"], 7);
  nlohmann::json info = run_json("index info " + idx.string() + " --json");
  EXPECT_EQ(info["rows"], 42);
  EXPECT_EQ(info["chunks"], 6);
  EXPECT_EQ(info["knn"]["key"], "HNSW8");
  EXPECT_GT(info["disk_bytes"]["thumbs"].get<int64_t>(), 0);
  EXPECT_FALSE(info.contains("unfinished"));

  // Errors name what is wrong and exit 2.
  EXPECT_EQ(run("search --index " + (root() / "nowhere").string() + " --text x", o), 2);
  EXPECT_EQ(run("search --index " + idx.string() + " --text x --image y.png", o), 2);
  EXPECT_EQ(run("index build --out " + (root() / "idx2").string() + " --checkpoint " + ckpt() + " " +
                    (root() / "missing").string(), o),
            2);
  EXPECT_EQ(run("index build --out " + (root() / "idx3").string() + " --checkpoint " + ckpt() + " --max-memory lots " +
                    (root() / "photos").string(), o),
            2);
}

TEST(IndexCli, KilledBuildResumesWithoutRedoingFinishedChunks) {
  const fs::path many = root() / "many";
  fs::create_directories(many);
  for (int i = 0; i < 400; ++i) cv::imwrite((many / ("m" + std::to_string(1000 + i) + ".png")).string(), ts::picture(i));
  const std::string args = " --checkpoint " + ckpt() + " --chunk-size 10 --batch-size 8 --workers 1 --progress 0 --json " +
                           many.string();
  // Reference: one uninterrupted build.
  const nlohmann::json clean = run_json("index build --out " + (root() / "clean").string() + args);
  ASSERT_EQ(clean["rows_total"], 400);

  // The same build, killed (SIGKILL: no chance to clean up) once two chunks are listed.
  const fs::path idx = root() / "killed", pidf = root() / "pid.txt";
  ASSERT_EQ(ts::sh(std::string(FLORENCE_CLI) + " index build --out " + idx.string() + args + " > /dev/null 2>&1 & echo $! > " +
                   pidf.string()),
            0);
  const pid_t pid = pid_t(std::stol(ts::read_file(pidf)));
  int64_t seen = 0;
  for (int i = 0; i < 6000 && seen < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    try {
      if (search::IndexStore::exists(idx.string())) seen = int64_t(search::IndexStore::open(idx.string()).chunks().size());
    } catch (const std::exception&) {
    }
  }
  ::kill(pid, SIGKILL);
  for (int i = 0; i < 200 && ::kill(pid, 0) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_GE(seen, 2);
  const search::IndexStore half = search::IndexStore::open(idx.string());
  const int64_t done = int64_t(half.chunks().size());
  ASSERT_LT(done, 40) << "the build finished before it could be killed; make the input larger";
  EXPECT_FALSE(half.pending().is_null());
  std::string o;
  EXPECT_EQ(run("index info " + idx.string(), o), 0);
  EXPECT_NE(o.find("UNFINISHED"), std::string::npos) << o;
  EXPECT_EQ(run("search --index " + idx.string() + " --text x", o), 2);  // not searchable yet

  // Rerun: the finished chunks are not redone, and the result equals the uninterrupted build.
  const nlohmann::json rep = run_json("index build --out " + idx.string() + args);
  EXPECT_EQ(rep["chunks_resumed"], done);
  EXPECT_EQ(rep["chunks_done"], 40 - done);
  EXPECT_EQ(rep["rows_added"], 400 - 10 * done);
  EXPECT_EQ(rep["rows_total"], 400);
  const search::IndexStore a = search::IndexStore::open(idx.string()), b = search::IndexStore::open((root() / "clean").string());
  // Equal up to float rounding (the resumed run's batches start at another image).
  EXPECT_LT((a.load_embeddings() - b.load_embeddings()).abs().max().item<double>(), 1e-5);
  const auto ra = a.load_rows(), rb = b.load_rows();
  ASSERT_EQ(ra.size(), rb.size());
  for (size_t i = 0; i < ra.size(); ++i) EXPECT_EQ(ra[i].key, rb[i].key);
  EXPECT_TRUE(a.pending().is_null());
}

}  // namespace test_index_cli
