// `florence data build all` through the binary (build, skip, refuse, exit codes) and the larger mixture
// of corpora in a short pretraining run. Needs what scripts/setup installs (Debian packages and the
// pinned npm packages of docs/data.md).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>

#include "support/cli.h"
#include "support/vocab.h"

namespace test_data_cli {

namespace fs = std::filesystem;
using florence::test::fresh_scratch;
using florence::test::run_cli;

TEST(DataCli, BuildAllBuildsSkipsAndReportsFailures) {
  const fs::path dir = fresh_scratch("data_cli_all");
  const std::string all = "--threads 2 data build all --out " + (dir / "data").string() +
                          " --sources tuxpaint,openmoji,tabler --limit 60 --size 32";
  std::string out, err;
  ASSERT_EQ(run_cli(dir, all, out), 0);
  for (const char* s : {"tuxpaint", "openmoji", "tabler"}) {
    EXPECT_NE(out.find(std::string(s) + " "), std::string::npos) << out;
    const auto summary = nlohmann::json::parse(std::ifstream(dir / "data" / s / "summary.json"));
    EXPECT_EQ(summary["considered"], 60) << s;
    EXPECT_GT(summary["samples"].get<int>(), 50) << s;
    EXPECT_FALSE(summary["license"].get<std::string>().empty()) << s;
  }
  EXPECT_EQ(out.find("up to date"), std::string::npos) << out;
  // Again: nothing to do.
  ASSERT_EQ(run_cli(dir, all, out), 0);
  EXPECT_EQ(out.find("built "), std::string::npos) << out;
  EXPECT_NE(out.find("up to date"), std::string::npos) << out;
  // Other options without --overwrite: that source fails (exit 2), the corpus is kept.
  EXPECT_EQ(run_cli(dir, "--threads 2 data build all --out " + (dir / "data").string() + " --sources tabler --limit 61 --size 32",
                    out, &err),
            2 << 8);
  EXPECT_NE(out.find("--overwrite"), std::string::npos) << out;
  EXPECT_NE(err.find("1 source(s) failed"), std::string::npos) << err;
  EXPECT_EQ(nlohmann::json::parse(std::ifstream(dir / "data" / "tabler" / "summary.json"))["considered"], 60);
  // Bad arguments: exit 2 with a message, nothing built.
  for (const std::string bad : {"data build all --out X --fields title", "data build all --out X --sources imagenet",
                                "data build mdi --out X --fields title", "data build mdi --out X --sources mdi",
                                "data build emoji --out X --fields name"}) {
    EXPECT_EQ(run_cli(dir, bad, out, &err), 2 << 8) << bad;
    EXPECT_NE(err.find("error"), std::string::npos) << bad << ": " << err;
    EXPECT_FALSE(fs::exists(dir / "X" / "summary.json")) << bad;
  }
}

// Four of the new corpora with OpenClipArt-free pairs mixed with Fashion-MNIST labels: the run reads
// every source, takes its steps and ends with a finite loss.
TEST(DataCli, PretrainOnTheLargerMixture) {
  const fs::path dir = fresh_scratch("data_cli_mixture");
  std::string out;
  ASSERT_EQ(run_cli(dir, "--threads 2 data build all --out " + (dir / "data").string() +
                             " --sources twemoji,tuxpaint,openmoji,mdi,flags,fashion-mnist --limit 120 --size 48",
                    out),
            0);
  std::string shards;
  for (const char* s : {"twemoji", "tuxpaint", "openmoji", "mdi", "flags"})
    shards += " --shards " + (dir / "data" / s / "train").string() + ":1";
  const fs::path run = dir / "run";
  ASSERT_EQ(run_cli(dir, "--threads 2 pretrain --model florence-nano --vocab " + ::test::clip_vocab() + shards +
                             " --labelled " + (dir / "data" / "fashion-mnist" / "train").string() +
                             ":1 --batch-size 16 --steps 6 --workers 1 --augment none --no-progress --out " + run.string(),
                    out),
            0);
  ASSERT_TRUE(fs::exists(run / "model.safetensors"));
  int steps = 0;
  std::ifstream metrics(run / "metrics.jsonl");
  for (std::string line; std::getline(metrics, line);) {
    const auto j = nlohmann::json::parse(line);
    if (!j.contains("loss")) continue;
    ++steps;
    EXPECT_TRUE(std::isfinite(j["loss"].get<double>())) << line;
    EXPECT_GT(j["loss"].get<double>(), 0.0) << line;
  }
  EXPECT_EQ(steps, 6);
}

}  // namespace test_data_cli
