// `florence curate` end to end through the CLI: a small real corpus (Google emoji) with planted
// duplicates, the printed summary and the files it writes; the same run as two processes under
// `florence launch` (c10d all-gather) gives byte-identical output; bad flags fail with a message.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include "florence/data/webdataset.h"
#include "unit/curate/real_images.h"
#include "support/paths.h"
#include "support/tar.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_curate_cli {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct CliRun {
  int status = -1;
  std::string output;
};

CliRun run(const std::string& args) {
  const std::string cmd = std::string(FLORENCE_CLI) + " " + args + " 2>&1";
  CliRun r;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.output.append(buf.data(), n);
  const int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

fs::path fresh(const std::string& name) {
  const fs::path d = fs::path(FLORENCE_TEST_TMP) / "curate_cli" / name;
  fs::remove_all(d);
  fs::create_directories(d.parent_path());
  return d;
}

/// ROOT/train/000000.tar .. 000002.tar: 9 emoji, 2 exact copies, 3 near copies, 1 small image.
fs::path corpus() {
  static const fs::path root = [] {
    const fs::path r = fresh("corpus");
    florence::data::ShardWriterOptions o;
    o.max_samples_per_shard = 5;
    florence::data::ShardWriter w((r / "train").string(), o);
    const auto& codes = curate_test::emoji_codes();
    auto put = [&](const std::string& key, const std::vector<uint8_t>& img, const std::string& text) {
      florence::data::Sample s;
      s.key = key;
      s.image = img;
      s.image_ext = "png";
      s.text = text;
      w.write(s);
    };
    std::vector<cv::Mat> img;
    for (int i = 0; i < 9; ++i) {
      img.push_back(curate_test::emoji_rgb(codes[size_t(i)]));
      EXPECT_FALSE(img.back().empty()) << "emoji missing: run scripts/setup";
      put("e" + std::to_string(i), curate_test::encode(img.back()), "emoji " + std::to_string(i));
    }
    put("e0_copy", curate_test::encode(img[0]), "copy");
    put("e1_copy", curate_test::encode(img[1]), "copy");
    cv::Mat big, small, tiny;
    cv::resize(img[2], big, cv::Size(80, 80), 0, 0, cv::INTER_CUBIC);
    cv::resize(img[3], small, cv::Size(48, 48), 0, 0, cv::INTER_AREA);
    cv::resize(img[4], tiny, cv::Size(20, 20), 0, 0, cv::INTER_AREA);
    put("e2_big", curate_test::encode(big), "bigger");
    put("e3_small", curate_test::encode(small), "smaller");
    put("e4_jpeg", curate_test::encode(img[4], 60), "jpeg");
    put("e4_tiny", curate_test::encode(tiny), "tiny");
    w.close();
    return r;
  }();
  return root;
}

std::map<std::string, std::string> tree(const fs::path& root) {
  std::map<std::string, std::string> m;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator(); ++it)
    if (it->is_regular_file() && it->path().filename() != "report.json") {
      std::ifstream in(it->path(), std::ios::binary);
      m[fs::relative(it->path(), root).string()] = std::string(std::istreambuf_iterator<char>(in), {});
    }
  return m;
}

json report(const fs::path& out) {
  std::ifstream in(out / "report.json");
  json j = json::parse(in);
  j.erase("performance");
  j.erase("out_dir");
  if (j["near"].is_object()) j["near"]["index"].erase("seconds");
  return j;
}

}  // namespace

TEST(CurateCli, PlantedCorpus) {
  const fs::path out = fresh("one");
  const CliRun r = run("--threads 2 curate " + corpus().string() + " --out " + out.string() + " --montage-tile 32");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("curate: 15 sample(s) in, 9 kept, 6 removed"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("throughput:"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("peak RSS"), std::string::npos) << r.output;
  const json j = report(out);
  EXPECT_EQ(j["counts"]["kept"], 9);
  std::map<std::string, int64_t> removed;
  for (const auto& s : j["stages"]) removed[s["stage"]] = s["removed"];
  EXPECT_EQ(removed["small"], 1);
  EXPECT_EQ(removed["exact"], 2);
  EXPECT_EQ(removed["near"], 3);
  // e2 (64 px) is removed in favour of its 80 px copy.
  std::ifstream in(out / "removed.jsonl");
  std::map<std::string, json> lines;
  std::string line;
  while (std::getline(in, line)) {
    const json l = json::parse(line);
    lines[l["key"]] = l;
  }
  ASSERT_EQ(lines.size(), 6u);
  EXPECT_EQ(lines["e2"]["duplicate_of"], "e2_big");
  EXPECT_EQ(lines["e3_small"]["duplicate_of"], "e3");
  EXPECT_EQ(lines["e4_jpeg"]["duplicate_of"], "e4");
  EXPECT_EQ(lines["e0_copy"]["reason"], "exact_duplicate");
  EXPECT_EQ(lines["e4_tiny"]["reason"], "small_image");
  EXPECT_TRUE(fs::exists(out / "montage.png"));
  EXPECT_TRUE(fs::exists(out / "train" / "000000.tar"));

  // The JSON report on stdout, and --stages switching the near stage off.
  const fs::path out2 = fresh("stages");
  const CliRun r2 = run("curate " + corpus().string() + " --out " + out2.string() + " --stages validate,exact --json");
  ASSERT_EQ(r2.status, 0) << r2.output;
  const json j2 = json::parse(r2.output.substr(r2.output.find('{')));
  EXPECT_EQ(j2["counts"]["kept"], 13);
  EXPECT_TRUE(j2["near"].is_null());
}

TEST(CurateCli, TwoProcessesEqualOne) {
  const fs::path one = fresh("p1"), two = fresh("p2");
  const CliRun a = run("--threads 1 curate " + corpus().string() + " --out " + one.string() + " --montage-tile 32");
  ASSERT_EQ(a.status, 0) << a.output;
  const CliRun b = run("launch --nproc 2 -- --threads 1 curate " + corpus().string() + " --out " + two.string() +
                    " --montage-tile 32 --dist-timeout 120");
  ASSERT_EQ(b.status, 0) << b.output;
  std::ifstream in(two / "report.json");
  const json raw = json::parse(in);
  EXPECT_EQ(raw["performance"]["world_size"], 2);
  EXPECT_EQ(report(two), report(one));
  const auto t1 = tree(one), t2 = tree(two);
  EXPECT_EQ(t1.size(), 5u);  // 3 shards + removed.jsonl + montage.png
  EXPECT_TRUE(t1 == t2);
}

TEST(CurateCli, BadFlags) {
  const fs::path out = fresh("bad");
  CliRun r = run("curate " + corpus().string() + " --out " + out.string() + " --stages validate,bogus");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("unknown stage 'bogus'"), std::string::npos) << r.output;
  r = run("curate " + corpus().string() + " --out " + out.string() + " --relevance-threshold 0.2");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("relevance stage is off"), std::string::npos) << r.output;
  r = run("curate " + corpus().string() + " --out " + out.string() + " --stages relevance --relevance-threshold 0.2");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("needs --checkpoint"), std::string::npos) << r.output;
  r = run("curate " + (out / "missing").string() + " --out " + out.string());
  EXPECT_EQ(r.status, 2);
  // Empty stage lists / items, two relevance cuts, a NaN cut.
  for (const std::string stages : {"\"\"", ",", "validate,,near"}) {
    r = run("curate " + corpus().string() + " --out " + out.string() + " --stages " + stages);
    EXPECT_EQ(r.status, 2) << stages;
    EXPECT_NE(r.output.find("--stages: empty"), std::string::npos) << r.output;
  }
  r = run("curate " + corpus().string() + " --out " + out.string() +
          " --checkpoint x.safetensors --relevance-threshold 0.2 --relevance-percentile 50");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("excludes"), std::string::npos) << r.output;
  r = run("curate " + corpus().string() + " --out " + out.string() +
          " --stages validate,relevance --checkpoint x.safetensors --relevance-threshold nan");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("must be in [-1, 1]"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(out));
}

TEST(CurateCli, UnreadableShards) {
  // Only a garbage .tar: an error (status 2), not an empty success.
  const fs::path in = fresh("garbage_in"), out = fresh("garbage_out");
  fs::create_directories(in);
  std::ofstream(in / "000000.tar", std::ios::binary) << std::string(5000, '\x5a');
  CliRun r = run("curate " + in.string() + " --out " + out.string());
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("could be read"), std::string::npos) << r.output;
  // Next to a good shard: counted, listed and mentioned in the summary.
  fs::copy_file(corpus() / "train" / "000000.tar", in / "000001.tar");
  r = run("curate " + in.string() + " --out " + out.string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("1 unreadable"), std::string::npos) << r.output;
  const json j = report(out);
  EXPECT_EQ(j["counts"]["unreadable_shards"], 1);
  EXPECT_EQ(j["problem_shards"][0]["input"], (in / "000000.tar").string());
}

// Issue 23: a shard member named ../../escape.png made `florence curate` fail the whole run in
// ShardWriter after the scan. Now such samples (and GIF-only ones) are skipped, counted by reason
// and listed in removed.jsonl; the other samples are curated and nothing is written outside --out.
TEST(CurateCli, HostileMemberNamesAreSkippedAndCounted) {
  const fs::path in = fresh("hostile_in"), out = fresh("hostile_out");
  fs::create_directories(in);
  fs::copy_file(corpus() / "train" / "000000.tar", in / "000000.tar");
  const std::vector<uint8_t> png = curate_test::encode(curate_test::emoji_rgb(curate_test::emoji_codes()[5]));
  const std::string img(png.begin(), png.end());
  florence::test::write_tar(in / "000001.tar", {{"../../escape.png", img}, {"../../escape.txt", "escape"},
                                                {"anim.gif", "GIF89a"}, {"anim.txt", "gif"}, {"fine.png", img},
                                                {"fine.txt", "a fine sample"}});

  const CliRun r = run("curate " + in.string() + " --out " + out.string());
  ASSERT_EQ(r.status, 0) << r.output;
  const json j = report(out);
  const json& validate = j["stages"][0];
  ASSERT_EQ(validate["stage"], "validate");
  EXPECT_EQ(validate["reasons"]["unsafe_key"], 1) << validate.dump();
  EXPECT_EQ(validate["reasons"]["unsupported_format"], 1) << validate.dump();
  std::ifstream removed(out / "removed.jsonl");
  std::map<std::string, std::string> reason_of;
  for (std::string line; std::getline(removed, line);) {
    const json x = json::parse(line);
    if (x["key"].is_string()) reason_of[x["key"]] = x["reason"];
  }
  EXPECT_EQ(reason_of["../../escape"], "unsafe_key");
  EXPECT_EQ(reason_of["anim"], "unsupported_format");
  EXPECT_FALSE(fs::exists(out / ".." / ".." / "escape.png"));
  EXPECT_FALSE(fs::exists(fs::path(FLORENCE_TEST_TMP) / "escape.png"));
  int64_t kept_fine = 0;
  for (const auto& [rel, bytes] : tree(out))
    if (bytes.find("a fine sample") != std::string::npos) ++kept_fine;
  EXPECT_EQ(kept_fine, 1) << "the good sample next to the hostile ones was not kept";
}

}  // namespace test_curate_cli
