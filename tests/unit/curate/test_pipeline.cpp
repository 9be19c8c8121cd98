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
#include "unit/curate/pipeline_corpus.h"
#include "unit/curate/real_images.h"
#include "support/paths.h"
#include "support/vocab.h"


// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_pipeline {

using namespace curate_pipeline_test;

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
    model::save_checkpoint(*m, spec, ckpt, torch::kFloat, {{"vocab", ::test::clip_vocab()}});
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

}  // namespace test_pipeline
