// The curation pipeline's inputs and output folder on the planted emoji corpus
// (pipeline_corpus.h): bad options and inputs, what --overwrite may remove, duplicate keys across
// inputs, symlinked inputs, unreadable and truncated shards, stage lists and the relevance vocabulary.
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


// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_pipeline_inputs {

using namespace curate_pipeline_test;

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

}  // namespace test_pipeline_inputs
