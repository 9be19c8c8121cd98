// The whole curation pipeline on a small real shard set (Google emoji) with planted exact and near
// duplicates, small images and bad samples: exact counts in report.json, every removal in
// removed.jsonl with its duplicate_of, curated shards holding exactly the survivors byte for byte,
// relevance scores equal to an independent computation, balancing equal to the formula, and the
// 2- and 3-process runs (ranks as threads over an in-process all-gather) equal to the 1-process run.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <xxhash.h>

#include <cmath>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "florence/core/error.h"
#include "florence/curate/balance.h"
#include "florence/curate/pipeline.h"
#include "florence/data/webdataset.h"
#include "florence/eval/encode.h"
#include "florence/model/io.h"
#include "unit/curate/real_images.h"
#include "support/paths.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_pipeline {

namespace fs = std::filesystem;
using namespace florence;
using nlohmann::json;

namespace {

const std::string kVocab = std::string(FLORENCE_SHARED_DIR) + "/data/clip/bpe_simple_vocab_16e6.txt.gz";

fs::path fresh(const std::string& name) {
  const fs::path d = fs::path(FLORENCE_TEST_TMP) / "curate_pipeline" / name;
  fs::remove_all(d);
  fs::create_directories(d.parent_path());
  return d;
}

data::Sample sample(const std::string& key, std::vector<uint8_t> image, const std::string& text, const std::string& ext = "png") {
  data::Sample s;
  s.key = key;
  s.image = std::move(image);
  s.image_ext = ext;
  s.text = text;
  s.meta = {{"source", "test"}};
  return s;
}

cv::Mat resized(const cv::Mat& m, int size) {
  cv::Mat out;
  cv::resize(m, out, cv::Size(size, size), 0, 0, size < m.cols ? cv::INTER_AREA : cv::INTER_CUBIC);
  return out;
}

std::vector<uint8_t> bmp(const cv::Mat& rgb) {
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  std::vector<uint8_t> out;
  cv::imencode(".bmp", bgr, out);
  return out;
}

/// The planted corpus (see the expectations in PlantedDuplicates): ROOT/{train,val}/00000{0,1}.tar.
struct Corpus {
  fs::path root;
  std::map<std::string, data::Sample> by_key;  // last written sample per key
};

const Corpus& corpus() {
  static Corpus c = [] {
    Corpus x;
    x.root = fresh("corpus");
    std::vector<cv::Mat> img;
    for (const auto& code : curate_test::emoji_codes()) {
      img.push_back(curate_test::emoji_rgb(code));
      if (img.back().empty()) throw Error("emoji " + code + " missing: run scripts/setup");
    }
    auto png = [](const cv::Mat& m) { return curate_test::encode(m); };
    auto text = [](int i) { return "emoji number " + std::to_string(i); };
    cv::Mat bright;
    img[6].convertTo(bright, -1, 1.0, 20);
    cv::Mat bgr1;
    cv::cvtColor(img[1], bgr1, cv::COLOR_RGB2BGR);
    std::vector<uint8_t> png9;
    cv::imencode(".png", bgr1, png9, {cv::IMWRITE_PNG_COMPRESSION, 9});
    cv::Mat flipped;
    cv::flip(img[8], flipped, 1);
    const std::string bad_utf8 = std::string("caf") + char(0xE9) + " au lait";  // Latin-1, not UTF-8
    std::vector<std::vector<data::Sample>> shards(4);
    shards[0] = {sample("img_00", png(img[0]), text(0)), sample("img_01", png(img[1]), text(1)),
                 sample("img_02", png(img[2]), text(2)), sample("img_03", png(img[3]), text(3)),
                 sample("img_00_bmp", bmp(img[0]), "a bitmap copy", "bmp"), sample("img_01_png9", png9, "recompressed"),
                 sample("junk_00", {'n', 'o', 't', ' ', 'a', 'n', ' ', 'i', 'm', 'a', 'g', 'e'}, "broken file")};
    shards[1] = {sample("img_04", png(img[4]), text(4)), sample("img_05", png(img[5]), text(5)),
                 sample("img_06", png(img[6]), text(6)), sample("img_03_jpeg", curate_test::encode(img[3], 50), "jpeg copy", "jpg"),
                 sample("img_05_big", png(resized(img[5], 96)), "upscaled copy"), sample("empty_00", png(img[9]), " \t "),
                 sample("badutf8_00", png(img[10]), bad_utf8)};
    shards[2] = {sample("img_07", png(img[7]), text(7)), sample("img_08", png(img[8]), text(8)),
                 sample("img_09", png(img[9]), text(9)), sample("img_04_small", png(resized(img[4], 56)), "smaller copy"),
                 sample("img_06_bright", png(bright), "brighter copy"), sample("long_00", png(img[11]), std::string(300, 'x'))};
    shards[3] = {sample("img_10", png(img[10]), text(10)), sample("img_11", png(img[11]), text(11)),
                 sample("img_02_copy", png(img[2]), "same picture, another shard"),
                 sample("img_07_tiny", png(resized(img[7], 24)), "tiny copy"), sample("img_08", png(flipped), "same key again")};
    const char* dirs[4] = {"train", "train", "val", "val"};
    for (int s = 0; s < 4; ++s) {
      // One writer per shard, renamed into DIR/00000{0,1}.tar (two shards per split).
      const fs::path dir = x.root / dirs[s];
      data::ShardWriter w((x.root / ".tmp" / std::to_string(s)).string());
      for (const auto& smp : shards[size_t(s)]) {
        w.write(smp);
        x.by_key[smp.key] = smp;
      }
      w.close();
      fs::create_directories(dir);
      fs::rename(w.shards().front(), dir / ("00000" + std::to_string(s % 2) + ".tar"));
    }
    fs::remove_all(x.root / ".tmp");
    return x;
  }();
  return c;
}

std::vector<json> read_jsonl(const fs::path& p) {
  std::vector<json> out;
  std::ifstream in(p);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) out.push_back(json::parse(line));
  return out;
}

std::map<std::string, data::Sample> read_output(const fs::path& out) {
  std::map<std::string, data::Sample> m;
  for (auto it = fs::recursive_directory_iterator(out); it != fs::recursive_directory_iterator(); ++it) {
    if (it->path().extension() != ".tar") continue;
    data::ShardReader r(it->path().string());
    data::Sample s;
    while (r.next(s)) m[s.key] = s;
  }
  return m;
}

std::string file_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

/// Every file under a directory (relative path -> bytes), skipping report.json.
std::map<std::string, std::string> tree(const fs::path& root) {
  std::map<std::string, std::string> m;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator(); ++it)
    if (it->is_regular_file() && it->path().filename() != "report.json")
      m[fs::relative(it->path(), root).string()] = file_bytes(it->path());
  return m;
}

/// report.json without what legitimately differs between runs (timings, memory, paths).
json comparable(json r) {
  r.erase("performance");
  r.erase("out_dir");
  if (r["near"].is_object()) {
    r["near"]["index"].erase("seconds");
    // index work counters are per query and equal; the byte count is too
  }
  return r;
}

/// An all-gather between threads of one process: ranks as threads.
class ThreadGroup {
 public:
  explicit ThreadGroup(int n) : n_(n), slots_(size_t(n)) {}
  std::vector<std::string> all_gather(int rank, const std::string& mine) {
    std::unique_lock<std::mutex> lk(mu_);
    const int gen = generation_;
    slots_[size_t(rank)] = mine;
    if (++arrived_ == n_) {
      result_ = slots_;
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
      return result_;
    }
    cv_.wait(lk, [&] { return generation_ != gen; });
    return result_;
  }

 private:
  int n_, arrived_ = 0, generation_ = 0;
  std::vector<std::string> slots_, result_;
  std::mutex mu_;
  std::condition_variable cv_;
};

/// Runs `opt` as `world` ranks (threads) and returns rank 0's report.
json run_ranks(const curate::CurateOptions& opt, int world) {
  ThreadGroup g(world);
  std::vector<json> reports(static_cast<size_t>(world));
  std::vector<std::string> errors(static_cast<size_t>(world));
  std::vector<std::thread> th;
  for (int r = 0; r < world; ++r)
    th.emplace_back([&, r] {
      curate::Collective c;
      c.rank = r;
      c.world_size = world;
      c.all_gather = [&g, r](const std::string& s) { return g.all_gather(r, s); };
      try {
        reports[size_t(r)] = curate::curate(opt, c);
      } catch (const std::exception& e) {
        errors[size_t(r)] = e.what();
      }
    });
  for (auto& t : th) t.join();
  for (int r = 0; r < world; ++r) EXPECT_EQ(errors[size_t(r)], "") << "rank " << r;
  for (int r = 1; r < world; ++r) EXPECT_EQ(comparable(reports[size_t(r)]), comparable(reports[0])) << "rank " << r;
  return reports[0];
}

curate::CurateOptions base_options(const fs::path& out) {
  curate::CurateOptions o;
  o.inputs = {corpus().root.string()};
  o.out_dir = out.string();
  o.max_text_chars = 200;
  o.threads = 2;
  o.progress = false;
  o.montage_tile = 48;
  return o;
}

}  // namespace

TEST(CuratePipeline, PlantedDuplicates) {
  const fs::path out = fresh("planted");
  const json r = curate::curate(base_options(out));

  EXPECT_EQ(r["counts"]["input"], 25);
  EXPECT_EQ(r["counts"]["kept"], 12);
  EXPECT_EQ(r["counts"]["removed"], 13);
  std::map<std::string, json> stage;
  for (const auto& s : r["stages"]) stage[s["stage"]] = s;
  EXPECT_EQ(stage["validate"]["in"], 25);
  EXPECT_EQ(stage["validate"]["removed"], 5);
  EXPECT_EQ(stage["validate"]["reasons"],
            (json{{"undecodable_image", 1}, {"empty_text", 1}, {"text_too_long", 1}, {"invalid_utf8_text", 1}, {"duplicate_key", 1}}));
  EXPECT_EQ(stage["small"]["removed"], 1);
  EXPECT_EQ(stage["exact"]["in"], 19);
  EXPECT_EQ(stage["exact"]["removed"], 3);
  EXPECT_EQ(stage["near"]["removed"], 4);
  EXPECT_EQ(stage["near"]["out"], 12);
  EXPECT_EQ(stage["relevance"]["enabled"], false);
  EXPECT_EQ(stage["relevance"]["removed"], 0);
  EXPECT_EQ(r["exact"]["groups"], 3);
  EXPECT_EQ(r["near"]["clusters"], 4);
  EXPECT_EQ(r["near"]["cluster_sizes"], (json{{"2", 4}}));
  EXPECT_EQ(r["near"]["checked"], 16);
  EXPECT_GT(r["near"]["index"]["bytes_per_image"].get<double>(), 8.0);
  EXPECT_EQ(r["distributions"]["output"]["shorter_side"]["count"], 12);
  EXPECT_EQ(r["distributions"]["output"]["shorter_side"]["max"], 96.0);  // the upscaled copy won
  EXPECT_EQ(r["montage"], "montage.png");

  // removed.jsonl: one line per removed sample with stage, reason and duplicate_of.
  std::map<std::string, json> removed;
  for (const json& j : read_jsonl(out / "removed.jsonl")) {
    ASSERT_TRUE(j["key"].is_string()) << j.dump();
    removed[j["key"].get<std::string>() + "|" + j["reason"].get<std::string>()] = j;
  }
  ASSERT_EQ(removed.size(), 13u);
  auto dup = [&](const std::string& key, const std::string& reason, const std::string& of) {
    const auto it = removed.find(key + "|" + reason);
    ASSERT_NE(it, removed.end()) << key << " " << reason;
    EXPECT_EQ(it->second.value("duplicate_of", ""), of) << key;
  };
  dup("img_00_bmp", "exact_duplicate", "img_00");
  dup("img_01_png9", "exact_duplicate", "img_01");
  dup("img_02_copy", "exact_duplicate", "img_02");
  dup("img_03_jpeg", "near_duplicate", "img_03");   // equal size: "img_03" sorts first
  dup("img_04_small", "near_duplicate", "img_04");
  dup("img_05", "near_duplicate", "img_05_big");    // the larger copy is the representative
  dup("img_06_bright", "near_duplicate", "img_06");
  dup("img_07_tiny", "small_image", "");
  dup("junk_00", "undecodable_image", "");
  dup("empty_00", "empty_text", "");
  dup("long_00", "text_too_long", "");
  dup("badutf8_00", "invalid_utf8_text", "");  // dropped by the shard reader, key from the tar headers
  dup("img_08", "duplicate_key", "img_08");
  for (const auto& [k, j] : removed) {
    EXPECT_EQ(j["stage"], k.find("near_") != std::string::npos       ? "near"
                          : k.find("exact_") != std::string::npos    ? "exact"
                          : k.find("small_image") != std::string::npos ? "small"
                                                                     : "validate")
        << k;
    if (j["stage"] == "near") {
      EXPECT_LE(j["distance"].get<int>(), 10) << k;
    }
  }
  EXPECT_EQ(removed["img_02_copy|exact_duplicate"]["shard"], (corpus().root / "val" / "000001.tar").string());

  // Curated shards: the 12 survivors, same layout, bytes unchanged.
  EXPECT_TRUE(fs::exists(out / "train" / "000000.tar"));
  EXPECT_TRUE(fs::exists(out / "train" / "000001.tar"));
  EXPECT_TRUE(fs::exists(out / "val" / "000000.tar"));
  EXPECT_TRUE(fs::exists(out / "val" / "000001.tar"));
  const auto kept = read_output(out);
  std::set<std::string> keys;
  for (const auto& [k, s] : kept) keys.insert(k);
  EXPECT_EQ(keys, (std::set<std::string>{"img_00", "img_01", "img_02", "img_03", "img_04", "img_05_big", "img_06", "img_07",
                                         "img_08", "img_09", "img_10", "img_11"}));
  for (const auto& [k, s] : kept) {
    const data::Sample& in = k == "img_08" ? corpus().by_key.at("img_08") : corpus().by_key.at(k);
    if (k != "img_08") {
      EXPECT_EQ(s.image, in.image) << k;
    }
    if (k != "img_08") {
      EXPECT_EQ(s.text, in.text) << k;
    }
  }
  // The first img_08 (train? no: val/000000) is the one kept: its text.
  EXPECT_EQ(kept.at("img_08").text, "emoji number 8");

  // Montage: a PNG with 4 rows of 2 tiles.
  const cv::Mat montage = cv::imread((out / "montage.png").string());
  ASSERT_FALSE(montage.empty());
  EXPECT_GT(montage.rows, 4 * 48);

  // Existing output needs --overwrite.
  EXPECT_THROW(curate::curate(base_options(out)), Error);
  auto o = base_options(out);
  o.overwrite = true;
  EXPECT_EQ(comparable(curate::curate(o)), comparable(r));
}

TEST(CuratePipeline, StagesSwitchOff) {
  const fs::path out = fresh("off");
  auto o = base_options(out);
  o.near = false;
  o.small = false;
  o.montage_clusters = 0;
  const json r = curate::curate(o);
  // Without near and small: 25 - 5 (validate) - 3 (exact) = 17 kept; img_07_tiny survives.
  EXPECT_EQ(r["counts"]["kept"], 17);
  EXPECT_TRUE(r["near"].is_null());
  EXPECT_TRUE(read_output(out).count("img_07_tiny"));
  EXPECT_FALSE(fs::exists(out / "montage.png"));

  // dHash with connected components finds the same four clusters here.
  const fs::path out2 = fresh("dhash");
  auto o2 = base_options(out2);
  o2.hash = curate::HashKind::kDHash;
  o2.cluster = curate::ClusterMode::kComponents;
  const json r2 = curate::curate(o2);
  EXPECT_EQ(r2["near"]["hash"], "dhash");
  EXPECT_EQ(r2["counts"]["kept"], 12);
}

TEST(CuratePipeline, MultiProcessEqualsSingleProcess) {
  const fs::path one = fresh("ranks1"), two = fresh("ranks2"), three = fresh("ranks3");
  const json r1 = curate::curate(base_options(one));
  const json r2 = run_ranks(base_options(two), 2);
  const json r3 = run_ranks(base_options(three), 3);
  EXPECT_EQ(comparable(r2), comparable(r1));
  EXPECT_EQ(comparable(r3), comparable(r1));
  EXPECT_EQ(r2["performance"]["world_size"], 2);
  // Byte-identical shards, removed.jsonl and montage.
  const auto t1 = tree(one), t2 = tree(two), t3 = tree(three);
  EXPECT_EQ(t1.size(), 6u);  // 4 shards + removed.jsonl + montage.png
  EXPECT_TRUE(t1 == t2);
  EXPECT_TRUE(t1 == t3);
}

TEST(CuratePipeline, RelevanceAndBalance) {
  // A random-init florence-nano saved once, so every rank loads the same weights.
  const fs::path ckdir = fresh("ckpt");
  fs::create_directories(ckdir);
  const std::string ckpt = (ckdir / "nano.safetensors").string();
  {
    torch::manual_seed(0);
    const model::ModelSpec spec = model::resolve_model("florence-nano");
    model::FlorenceModel m = model::load_florence(spec, "");
    model::save_checkpoint(*m, spec, ckpt, torch::kFloat, {{"vocab", kVocab}});
  }
  const fs::path out = fresh("relevance");
  auto o = base_options(out);
  o.relevance = true;
  o.model.checkpoint = ckpt;
  o.model.preprocess.batch_size = 5;
  o.relevance_percentile = 50;
  const json r = curate::curate(o);
  // 12 pairs reach relevance; the 50th percentile cut keeps the 6 at or above the median.
  std::map<std::string, json> stage;
  for (const auto& s : r["stages"]) stage[s["stage"]] = s;
  EXPECT_EQ(stage["relevance"]["in"], 12);
  EXPECT_EQ(stage["relevance"]["removed"], 6);
  EXPECT_EQ(r["relevance"]["scored"], 12);
  EXPECT_EQ(r["relevance"]["similarity"]["count"], 12);

  // Independent scores: eval preprocessing + the two encoders called directly.
  eval::LoadOptions lo;
  lo.checkpoint = ckpt;
  eval::EvalModel m = eval::load_eval_model(lo);
  std::map<std::string, double> direct;
  {
    torch::NoGradGuard ng;
    data::TransformOptions to;
    to.image_size = m.preprocess.image_size;
    to.crop_pct = *m.preprocess.crop_pct;
    data::ImageTransform tf(to);
    std::mt19937_64 rng(0);
    for (const std::string k : {"img_00", "img_01", "img_02", "img_03", "img_04", "img_05_big", "img_06", "img_07", "img_09",
                                "img_10", "img_11"}) {
      const data::Sample& s = corpus().by_key.at(k);
      torch::Tensor u = m.model->encode_image(tf(s.image, rng).unsqueeze(0));
      torch::Tensor v = eval::encode_texts(m, {s.text});
      direct[k] = (u * v).sum().item<double>();
    }
  }
  std::vector<double> all;
  for (const auto& [k, v] : direct) all.push_back(v);
  int low = 0;
  for (const json& j : read_jsonl(out / "removed.jsonl")) {
    if (j["reason"] != "low_similarity") continue;
    ++low;
    const std::string k = j["key"];
    if (direct.count(k)) {
      EXPECT_NEAR(j["similarity"].get<double>(), direct[k], 2e-5) << k;
    }
    EXPECT_LT(j["similarity"].get<double>(), r["relevance"]["cut"].get<double>());
  }
  EXPECT_EQ(low, 6);
  const auto kept = read_output(out);
  for (const auto& [k, s] : kept)
    if (direct.count(k)) {
      EXPECT_GE(direct[k], r["relevance"]["cut"].get<double>() - 2e-5) << k;
    }

  // Two ranks score their own shards and agree with one process.
  const fs::path out2 = fresh("relevance2");
  auto o2 = o;
  o2.out_dir = out2.string();
  const json r2 = run_ranks(o2, 2);
  EXPECT_EQ(comparable(r2), comparable(r));
  EXPECT_TRUE(tree(out) == tree(out2));

  // Balancing over the exact text with t = 1 after giving every survivor... here each text is
  // unique (c = 1 <= t), so balancing keeps all: the formula's rare-entry case.
  const fs::path out3 = fresh("balance_unique");
  auto o3 = base_options(out3);
  o3.balance = true;
  o3.balance_t = 1;
  const json r3 = curate::curate(o3);
  EXPECT_EQ(r3["counts"]["kept"], 12);
  EXPECT_EQ(r3["balance"]["entries_over_t"], 0);
}

TEST(CuratePipeline, BalanceSelectionEqualsFormula) {
  // 40 distinct pictures share one text ("a cat"), 20 others have unique texts. t = 10:
  // "a cat" pairs are kept iff balance_uniform(seed, key, xxh3(text)) < 10 / 40.
  const fs::path root = fresh("balance_corpus");
  std::vector<cv::Mat> base;
  for (const auto& code : curate_test::emoji_codes()) base.push_back(curate_test::emoji_rgb(code));
  data::ShardWriterOptions wo;
  wo.max_samples_per_shard = 25;
  data::ShardWriter w((root / "train").string(), wo);
  std::vector<std::string> cat_keys;
  for (int i = 0; i < 60; ++i) {
    // distinct pictures: an emoji rotated by i * 6 degrees, so no two are near duplicates
    cv::Mat img;
    const cv::Mat rot = cv::getRotationMatrix2D(cv::Point2f(31.5f, 31.5f), 6.0 * (i / 12) + 37.0 * (i % 12), 1.0);
    cv::warpAffine(base[size_t(i % 12)], img, rot, cv::Size(64, 64), cv::INTER_LINEAR, cv::BORDER_CONSTANT,
                   cv::Scalar(255, 255, 255));
    const std::string key = "s" + std::to_string(100 + i);
    const std::string text = i < 40 ? "a cat" : "unique text " + std::to_string(i);
    if (i < 40) cat_keys.push_back(key);
    w.write(sample(key, curate_test::encode(img), text));
  }
  w.close();
  const fs::path out = fresh("balance");
  curate::CurateOptions o;
  o.inputs = {root.string()};
  o.out_dir = out.string();
  o.exact = o.near = false;  // only balancing decides
  o.balance = true;
  o.balance_t = 10;
  o.seed = 1234;
  o.threads = 2;
  o.progress = false;
  const json r = curate::curate(o);
  const uint64_t tag = XXH3_64bits("a cat", 5);
  std::set<std::string> expect_kept;
  for (const auto& k : cat_keys)
    if (curate::balance_uniform(1234, k, tag) < 10.0 / 40.0) expect_kept.insert(k);
  for (int i = 40; i < 60; ++i) expect_kept.insert("s" + std::to_string(100 + i));
  std::set<std::string> got;
  for (const auto& [k, s] : read_output(out)) got.insert(k);
  EXPECT_EQ(got, expect_kept);
  EXPECT_EQ(r["balance"]["pool"], 60);
  EXPECT_EQ(r["balance"]["entries_matched"], 21);
  EXPECT_EQ(r["balance"]["entries_over_t"], 1);
  EXPECT_DOUBLE_EQ(r["balance"]["expected_kept"].get<double>(), 10.0 + 20.0);
  EXPECT_EQ(r["balance"]["top_entries"][0]["count"], 40);
  EXPECT_EQ(r["balance"]["top_entries"][0]["text"], "a cat");
  // 40 trials at p = 1/4: the realised count lies within 5 sd (2.74) of 10.
  EXPECT_NEAR(double(expect_kept.size() - 20), 10.0, 5 * 2.74);
  for (const json& j : read_jsonl(out / "removed.jsonl")) EXPECT_EQ(j["reason"], "balance_sampled_out");

  // An entry list: "cat" matches the 40 cat pairs; the 20 others match nothing and are dropped.
  std::ofstream(root / "entries.txt") << "cat\nzebra\n";
  const fs::path out2 = fresh("balance_entries");
  o.out_dir = out2.string();
  o.balance_entries = (root / "entries.txt").string();
  const json r2 = curate::curate(o);
  const uint64_t cat_tag = XXH3_64bits("cat", 3);
  int64_t expect = 0;
  for (const auto& k : cat_keys) expect += curate::balance_uniform(1234, k, cat_tag) < 0.25;
  EXPECT_EQ(r2["counts"]["kept"], expect);
  std::map<std::string, json> stage;
  for (const auto& s : r2["stages"]) stage[s["stage"]] = s;
  EXPECT_EQ(stage["balance"]["reasons"]["no_entry_match"], 20);
  EXPECT_EQ(r2["balance"]["top_entries"][0]["entry"], "cat");
}

TEST(CuratePipeline, BadOptionsAndInputs) {
  const fs::path out = fresh("bad");
  auto o = base_options(out);
  o.near_dup_threshold = 65;
  EXPECT_THROW(curate::curate(o), Error);
  o = base_options(out);
  o.relevance_threshold = 0.2;  // relevance stage off
  EXPECT_THROW(curate::curate(o), Error);
  o = base_options(out);
  o.balance = true;  // t missing
  EXPECT_THROW(curate::curate(o), Error);
  o = base_options(out);
  o.inputs = {(out / "nowhere").string()};
  EXPECT_THROW(curate::curate(o), Error);
  o = base_options(corpus().root / "train" / "sub");  // output inside the input
  EXPECT_THROW(curate::curate(o), Error);
  // Two inputs keep their folder names; the same input twice would collide.
  EXPECT_THROW(curate::resolve_inputs({corpus().root.string(), corpus().root.string()}), Error);
  const auto both = curate::resolve_inputs({(corpus().root / "train").string(), (corpus().root / "val").string()});
  ASSERT_EQ(both.size(), 4u);
  EXPECT_EQ(both[0].out_rel, "train/000000.tar");
  EXPECT_EQ(both[3].out_rel, "val/000001.tar");
  const auto root = curate::resolve_inputs({corpus().root.string()});
  EXPECT_EQ(root[2].out_rel, "val/000000.tar");
  // Inputs with the same folder name (two corpora's train splits) keep their paths below the
  // common folder, so they do not collide.
  const fs::path twin = fs::path(::testing::TempDir()) / "curate_twin_inputs";
  fs::remove_all(twin);
  fs::create_directories(twin / "a" / "train");
  fs::create_directories(twin / "b" / "train");
  fs::copy_file(corpus().root / "train" / "000000.tar", twin / "a" / "train" / "000000.tar");
  fs::copy_file(corpus().root / "train" / "000000.tar", twin / "b" / "train" / "000000.tar");
  const auto twins = curate::resolve_inputs({(twin / "a" / "train").string(), (twin / "b" / "train").string()});
  ASSERT_EQ(twins.size(), 2u);
  EXPECT_EQ(twins[0].out_rel, "a/train/000000.tar");
  EXPECT_EQ(twins[1].out_rel, "b/train/000000.tar");
  EXPECT_EQ(twins[1].input, 1u);
}

namespace {

/// One shard DIR/NAME with `n` emoji (starting at emoji `first`) under keys PREFIX0, PREFIX1, ...
void write_shard(const fs::path& dir, int first, int n, const std::string& name = "000000.tar",
                 const std::string& prefix = "k") {
  const fs::path tmp = dir / ".tmp";
  data::ShardWriter w(tmp.string());
  for (int i = 0; i < n; ++i)
    w.write(sample(prefix + std::to_string(i), curate_test::encode(curate_test::emoji_rgb(curate_test::emoji_codes()[size_t(first + i)])),
                   "emoji " + std::to_string(first + i)));
  w.close();
  fs::rename(w.shards().front(), dir / name);
  fs::remove_all(tmp);
}

std::string error_of(const curate::CurateOptions& o) {
  try {
    curate::curate(o);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(CuratePipeline, OverwriteRemovesOnlyCurateOutput) {
  // A folder with another corpus (a .tar, no report.json) is refused, with and without overwrite.
  const fs::path foreign = fresh("foreign_out");
  fs::create_directories(foreign / "train");
  const std::string other = "not ours: another corpus";
  std::ofstream(foreign / "train" / "000000.tar", std::ios::binary) << other;
  auto o = base_options(foreign);
  o.overwrite = true;
  std::string err = error_of(o);
  EXPECT_NE(err.find("no curate report.json"), std::string::npos) << err;
  EXPECT_NE(err.find("would destroy it"), std::string::npos) << err;
  EXPECT_EQ(file_bytes(foreign / "train" / "000000.tar"), other);
  o.overwrite = false;
  EXPECT_NE(error_of(o).find("no curate report.json"), std::string::npos);
  EXPECT_EQ(file_bytes(foreign / "train" / "000000.tar"), other);
  // A report.json that is not curate's does not make the folder ours either.
  std::ofstream(foreign / "report.json") << R"({"top1": 0.5})";
  o.overwrite = true;
  EXPECT_NE(error_of(o).find("is not a curate report"), std::string::npos);
  EXPECT_EQ(file_bytes(foreign / "train" / "000000.tar"), other);

  // A previous curate output survives runs that fail on their options or inputs, even with overwrite.
  const fs::path out = fresh("keep_previous");
  auto good = base_options(out);
  good.near = false;
  good.montage_clusters = 0;
  curate::curate(good);
  const auto before = tree(out);
  const std::string report_before = file_bytes(out / "report.json");
  ASSERT_EQ(before.size(), 5u);  // 4 shards + removed.jsonl
  const fs::path empty_entries = out.parent_path() / "keep_previous_entries.txt";
  std::ofstream(empty_entries) << "\n  \n";
  auto bad = good;
  bad.overwrite = true;
  bad.balance = true;
  bad.balance_t = 2;
  bad.balance_entries = empty_entries.string();
  EXPECT_NE(error_of(bad).find("has no entry with a word"), std::string::npos);
  EXPECT_TRUE(tree(out) == before);
  EXPECT_EQ(file_bytes(out / "report.json"), report_before);
  bad = good;
  bad.overwrite = true;
  bad.relevance = true;
  bad.relevance_threshold = 0.1;
  bad.model.checkpoint = (out.parent_path() / "no_such_model.safetensors").string();
  EXPECT_NE(error_of(bad), "");
  EXPECT_TRUE(tree(out) == before);
  // Every input shard unreadable: an error, and the previous output stays.
  const fs::path junk = fresh("junk_only");
  fs::create_directories(junk);
  std::ofstream(junk / "000000.tar", std::ios::binary) << std::string(3000, 'x');
  bad = good;
  bad.overwrite = true;
  bad.inputs = {junk.string()};
  EXPECT_NE(error_of(bad).find("none of the 1 input shard(s) could be read"), std::string::npos) << error_of(bad);
  EXPECT_TRUE(tree(out) == before);
  // A .tar the previous report does not list is not removed: refused.
  std::ofstream(out / "stray.tar", std::ios::binary) << other;
  auto again = good;
  again.overwrite = true;
  EXPECT_NE(error_of(again).find("does not list"), std::string::npos);
  EXPECT_EQ(file_bytes(out / "stray.tar"), other);
  fs::remove(out / "stray.tar");
  // With only curate's files there, overwrite replaces them.
  const json first = json::parse(report_before);
  EXPECT_EQ(curate::curate(again)["counts"]["kept"], first["counts"]["kept"]);
  EXPECT_TRUE(tree(out) == before);
}

TEST(CuratePipeline, DuplicateKeysAreScopedByInput) {
  // Two inputs with the same keys k0..k2 but different pictures: nothing is a duplicate key;
  // within one input a repeated key still is (PlantedDuplicates).
  const fs::path a = fresh("cx1"), b = fresh("cx2");
  fs::create_directories(a);
  fs::create_directories(b);
  write_shard(a, 0, 3);
  write_shard(b, 3, 3);
  const fs::path out = fresh("cx_out");
  curate::CurateOptions o;
  o.inputs = {a.string(), b.string()};
  o.out_dir = out.string();
  o.small = o.exact = o.near = false;
  o.threads = 2;
  o.progress = false;
  const json r = curate::curate(o);
  EXPECT_EQ(r["counts"]["input"], 6);
  EXPECT_EQ(r["counts"]["kept"], 6);
  EXPECT_EQ(r["stages"][0]["removed"], 0);
  EXPECT_TRUE(fs::exists(out / "cx1" / "000000.tar"));
  EXPECT_TRUE(fs::exists(out / "cx2" / "000000.tar"));
  const auto in = curate::resolve_inputs(o.inputs);
  ASSERT_EQ(in.size(), 2u);
  EXPECT_EQ(in[0].input, 0u);
  EXPECT_EQ(in[1].input, 1u);
}

TEST(CuratePipeline, InputsKeepTheirNamesThroughSymlinks) {
  // data/emoji -> elsewhere/emoji (a symlink) beside a real data/openclipart: the outputs are named
  // from the paths as given (emoji/..., openclipart/...), not from where the link points.
  const fs::path real = fresh("sym_real"), data = fresh("sym_data");
  fs::create_directories(real / "emoji" / "train");
  fs::create_directories(data / "openclipart" / "train");
  write_shard(real / "emoji" / "train", 0, 3);
  write_shard(data / "openclipart" / "train", 3, 3);
  fs::create_directory_symlink(real / "emoji", data / "emoji");
  const auto in = curate::resolve_inputs({(data / "openclipart" / "train").string(), (data / "emoji" / "train").string()});
  ASSERT_EQ(in.size(), 2u);
  EXPECT_EQ(in[0].out_rel, "openclipart/train/000000.tar");
  EXPECT_EQ(in[1].out_rel, "emoji/train/000000.tar");
  // A "." and a trailing separator in a spelling change nothing.
  const auto dotted = curate::resolve_inputs({(data / "." / "openclipart" / "train").string() + "/", (data / "emoji" / "train").string()});
  ASSERT_EQ(dotted.size(), 2u);
  EXPECT_EQ(dotted[0].out_rel, "openclipart/train/000000.tar");
  EXPECT_EQ(dotted[1].out_rel, "emoji/train/000000.tar");
  // ".." after a link goes where the system goes (the link target's parent), and is named so.
  fs::create_directories(real / "openclipart" / "train");
  write_shard(real / "openclipart" / "train", 6, 2);
  const auto up = curate::resolve_inputs({(data / "emoji" / ".." / "openclipart" / "train").string(), (data / "emoji" / "train").string()});
  ASSERT_EQ(up.size(), 2u);
  EXPECT_EQ(up[0].out_rel, "sym_real/openclipart/train/000000.tar");
  EXPECT_EQ(up[1].out_rel, "sym_data/emoji/train/000000.tar");
  // A hard link to a shard is the same file too.
  const fs::path hard = fresh("sym_hard");
  fs::create_directories(hard);
  fs::create_hard_link(real / "emoji" / "train" / "000000.tar", hard / "000000.tar");
  EXPECT_THROW(curate::resolve_inputs({(real / "emoji" / "train").string(), hard.string()}), Error);
  // A folder with shards of its own and split folders with shards: an error rather than reading one kind.
  const fs::path mixed = fresh("sym_mixed");
  fs::create_directories(mixed / "val");
  write_shard(mixed, 8, 2);
  write_shard(mixed / "val", 10, 2);
  try {
    curate::resolve_inputs({mixed.string()});
    ADD_FAILURE() << "no error for shards beside split folders";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("split folders"), std::string::npos) << e.what();
  }
  // A bare shard name in the current folder, output elsewhere: curated (the input's folder is ".").
  {
    const fs::path here = fs::current_path();
    fs::current_path(real / "emoji" / "train");
    curate::CurateOptions o;
    o.inputs = {"000000.tar"};
    o.out_dir = fresh("sym_bare_out").string();
    o.small = o.exact = o.near = false;
    o.threads = 1;
    o.progress = false;
    json r;
    EXPECT_NO_THROW(r = curate::curate(o));
    fs::current_path(here);
    EXPECT_EQ(r["counts"]["input"], 3);
    // And an output inside the current folder is still refused.
    fs::current_path(real / "emoji" / "train");
    o.out_dir = "inside";
    EXPECT_THROW(curate::curate(o), Error);
    fs::current_path(here);
  }

  // The linked folder and the folder it points to are the same shards: an error, not a double read.
  try {
    curate::resolve_inputs({(data / "emoji" / "train").string(), (real / "emoji" / "train").string()});
    ADD_FAILURE() << "no error for the same shards twice";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("are the same file"), std::string::npos) << e.what();
  }
}

TEST(CuratePipeline, UnreadableAndTruncatedShards) {
  const fs::path in = fresh("problem_shards");
  fs::create_directories(in);
  write_shard(in, 0, 3, "000000.tar");  // good
  std::string random_bytes(4096, '\0');
  std::mt19937 rng(7);
  for (auto& c : random_bytes) c = char(rng() & 0xFF);
  std::ofstream(in / "000001.tar", std::ios::binary) << random_bytes;  // not a tar
  std::ofstream(in / "000002.tar", std::ios::binary);                   // 0 bytes
  write_shard(in, 3, 3, "000003.tar", "t");
  const std::string whole = file_bytes(in / "000003.tar");
  std::ofstream(in / "000003.tar", std::ios::binary | std::ios::trunc) << whole.substr(0, whole.size() * 6 / 10);  // cut
  const fs::path out = fresh("problem_out");
  curate::CurateOptions o;
  o.inputs = {in.string()};
  o.out_dir = out.string();
  o.threads = 2;
  o.progress = false;
  const json r = curate::curate(o);
  EXPECT_EQ(r["counts"]["input_shards"], 4);
  EXPECT_EQ(r["counts"]["unreadable_shards"], 2);
  EXPECT_EQ(r["counts"]["truncated_shards"], 1);
  ASSERT_EQ(r["problem_shards"].size(), 3u);
  EXPECT_EQ(r["problem_shards"][0]["input"], (in / "000001.tar").string());
  EXPECT_EQ(r["problem_shards"][0]["problem"], "unreadable");
  EXPECT_EQ(r["problem_shards"][1]["problem"], "unreadable");
  EXPECT_NE(r["problem_shards"][1]["reason"].get<std::string>().find("0 bytes"), std::string::npos);
  EXPECT_EQ(r["problem_shards"][2]["problem"], "truncated");
  EXPECT_EQ(r["shards"][3]["truncated"], true);
  const int64_t read_truncated = r["problem_shards"][2]["samples_read"];
  EXPECT_LT(read_truncated, 3);
  // The good shard and what the truncated one gave before its error (+ its cut sample, removed).
  EXPECT_EQ(r["counts"]["kept"], 3 + read_truncated);
  int unreadable_lines = 0;
  for (const json& j : read_jsonl(out / "removed.jsonl"))
    if (j["reason"] == "unreadable_shard") {
      ++unreadable_lines;
      EXPECT_TRUE(j["key"].is_null());
      EXPECT_TRUE(j["error"].is_string());
    }
  EXPECT_EQ(unreadable_lines, 2);
  const std::string summary = curate::format_curate_summary(r);
  EXPECT_NE(summary.find("2 unreadable"), std::string::npos) << summary;
  EXPECT_NE(summary.find("1 truncated"), std::string::npos) << summary;

  // No image left for the near stage: per-image index figures are n/a, not a division by zero.
  const fs::path junk_in = fresh("junk_images");
  {
    data::ShardWriter w(junk_in.string());
    w.write(sample("j0", {'n', 'o', 't', ' ', 'a', 'n', ' ', 'i', 'm', 'a', 'g', 'e'}, "broken"));
  }
  auto o2 = o;
  o2.inputs = {junk_in.string()};
  o2.out_dir = fresh("junk_images_out").string();
  const json r2 = curate::curate(o2);
  EXPECT_EQ(r2["counts"]["kept"], 0);
  EXPECT_TRUE(r2["near"]["index"]["bytes_per_image"].is_null());
  EXPECT_NE(curate::format_curate_summary(r2).find("n/a bytes/image (hash index)"), std::string::npos)
      << curate::format_curate_summary(r2);
}

TEST(CuratePipeline, StageListsAndRelevanceCuts) {
  curate::CurateOptions o;
  EXPECT_THROW(o.set_stages(""), Error);
  EXPECT_THROW(o.set_stages(","), Error);
  EXPECT_THROW(o.set_stages("validate,,near"), Error);
  EXPECT_THROW(o.set_stages("validate,"), Error);
  EXPECT_THROW(o.set_stages("validate,bogus"), Error);
  o.set_stages("near,validate");
  EXPECT_TRUE(o.validate && o.near);
  EXPECT_FALSE(o.small || o.exact || o.relevance || o.balance);

  auto r = base_options(fresh("cuts"));
  r.relevance = true;
  r.model.checkpoint = "x.safetensors";
  r.relevance_threshold = 0.2;
  r.relevance_percentile = 50;
  EXPECT_THROW(r.validate_options(), Error);  // mutually exclusive
  r.relevance_percentile.reset();
  EXPECT_NO_THROW(r.validate_options());
  r.relevance_threshold = std::nan("");
  EXPECT_THROW(r.validate_options(), Error);
  r.relevance_threshold.reset();
  r.relevance_percentile = std::nan("");
  EXPECT_THROW(r.validate_options(), Error);
}

TEST(CuratePipeline, RelevanceVocabularyBesideTheCheckpoint) {
  // A sidecar whose vocab path is relative to the folder training ran in (missing from here):
  // RUN/vocab.bpe beside the checkpoint is used instead.
  const fs::path run = fresh("vocab_run");
  fs::create_directories(run / "checkpoints");
  std::ofstream(run / "model.safetensors") << "weights";
  std::ofstream(run / "checkpoints" / "step_1.safetensors") << "weights";
  const json side{{"vocab", "elsewhere/vocab.bpe"}, {"train_state", {{"options", {{"vocab", "elsewhere/vocab.bpe"}}}}}};
  std::ofstream(run / "model.json") << side.dump();
  std::ofstream(run / "checkpoints" / "step_1.json") << side.dump();
  std::ofstream(run / "vocab.bpe") << "#version: 0.2\n";
  eval::LoadOptions lo;
  lo.checkpoint = (run / "model.safetensors").string();
  EXPECT_EQ(curate::resolve_relevance_vocab(lo), fs::absolute(run / "vocab.bpe").string());
  lo.checkpoint = (run / "checkpoints" / "step_1.safetensors").string();
  EXPECT_EQ(curate::resolve_relevance_vocab(lo), fs::absolute(run / "vocab.bpe").string());
  // A sidecar path relative to the sidecar's folder.
  fs::create_directories(run / "checkpoints" / "elsewhere");
  std::ofstream(run / "checkpoints" / "elsewhere" / "vocab.bpe") << "#version: 0.2\n";
  EXPECT_EQ(curate::resolve_relevance_vocab(lo), fs::absolute(run / "checkpoints" / "elsewhere" / "vocab.bpe").string());
  fs::remove_all(run / "checkpoints" / "elsewhere");
  // Nothing exists: the error names the sidecar's missing path, it does not claim there is none.
  fs::remove(run / "vocab.bpe");
  try {
    curate::resolve_relevance_vocab(lo);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("elsewhere/vocab.bpe"), std::string::npos) << m;
    EXPECT_NE(m.find("does not exist"), std::string::npos) << m;
  }
  // --vocab given but missing.
  lo.vocab = (run / "missing.bpe").string();
  EXPECT_THROW(curate::resolve_relevance_vocab(lo), Error);
}

}  // namespace test_pipeline
