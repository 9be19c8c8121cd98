// The installed package from outside the tree: `cmake --install` into a scratch prefix, each
// examples/<name> configured with find_package(florence) against it, built and run on real images
// (emoji PNGs of the npm package scripts/setup unpacks) with a random-init florence-nano. Their
// printed numbers are checked against the CLI on the same images: `florence embed` (nearest text
// and cosine), `florence classify --json` (probabilities) and `florence index build` + `florence
// search --json` (ranking and scores), each to 1e-5.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <map>
#include <sstream>

#include "e2e/search/fixtures.h"
#include "florence/core/checkpoint.h"
#include "florence/data/corpus.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_examples {

using namespace florence;
namespace ts = florence::test::search;
namespace fs = std::filesystem;

namespace {

constexpr double kTol = 1e-5;

struct Env {
  fs::path root, prefix, photos;
  std::string ckpt;
  std::vector<std::string> images;  // the photos, sorted
  std::string problem;              // why the environment could not be set up
};

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string t; std::getline(ss, t, sep);) out.push_back(t);
  return out;
}

// `cmd` with stdout into `out`; the exit status. stderr goes to root/stderr.txt (printed on failure).
int run(const Env& e, const std::string& cmd, std::string& out) {
  const fs::path o = e.root / "stdout.txt", err = e.root / "stderr.txt";
  const int rc = ts::sh(cmd + " > " + o.string() + " 2> " + err.string());
  out = ts::read_file(o);
  if (rc != 0) std::cerr << cmd << " -> " << rc << "\n" << ts::read_file(err) << "\n";
  return rc;
}

const Env& env() {
  static const Env e = [] {
    Env e;
    e.root = ts::scratch("e2e_api_examples");
    e.ckpt = ts::tiny_checkpoint(e.root);
    e.photos = e.root / "photos";
    fs::create_directories(e.photos);
    const fs::path emoji = fs::path(data::default_emoji_dir()) / "img" / "google" / "64";
    if (!fs::is_directory(emoji)) {
      e.problem = "no emoji images at " + emoji.string() + " (scripts/setup unpacks them)";
      return e;
    }
    std::vector<fs::path> all;
    for (const auto& f : fs::directory_iterator(emoji))
      if (f.path().extension() == ".png") all.push_back(f.path());
    std::sort(all.begin(), all.end());
    for (size_t i = 0; i < 6 && i * 97 < all.size(); ++i) fs::copy_file(all[i * 97], e.photos / all[i * 97].filename());
    for (const auto& f : fs::directory_iterator(e.photos)) e.images.push_back(f.path().string());
    std::sort(e.images.begin(), e.images.end());
    // Install the package the examples are built against.
    e.prefix = e.root / "prefix";
    const fs::path build = fs::path(FLORENCE_CLI).parent_path();
    std::string out;
    if (run(e, "cmake --install " + build.string() + " --prefix " + e.prefix.string(), out) != 0)
      e.problem = "cmake --install failed";
    return e;
  }();
  return e;
}

// Configures and builds examples/<name> against the installed package; the executable's path.
std::string build_example(const std::string& name) {
  const Env& e = env();
  const fs::path b = e.root / ("build-" + name);
  std::string out;
  const std::string src = (fs::path(FLORENCE_SOURCE_DIR) / "examples" / name).string();
  EXPECT_EQ(run(e, "cmake -S " + src + " -B " + b.string() + " -DCMAKE_PREFIX_PATH=" + e.prefix.string() +
                       " -DCMAKE_BUILD_TYPE=Release",
                out),
            0);
  EXPECT_EQ(run(e, "cmake --build " + b.string() + " -j2", out), 0);
  return (b / name).string();
}

std::string quoted(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += " '" + x + "'";
  return s;
}

}  // namespace

TEST(ApiExamples, InstalledPackageBuildsAndEachExampleAgreesWithTheCli) {
  const Env& e = env();
  if (!e.problem.empty()) {
    if (e.problem.rfind("no emoji", 0) == 0) GTEST_SKIP() << e.problem;
    FAIL() << e.problem;
  }
  ASSERT_EQ(e.images.size(), 6u);
  ASSERT_TRUE(fs::exists(e.prefix / "include" / "florence" / "florence.h"));
  ASSERT_FALSE(fs::exists(e.prefix / "include" / "florence" / "eval")) << "internal headers are not installed";
  ASSERT_TRUE(fs::exists(e.prefix / "lib" / "cmake" / "florence" / "florenceConfig.cmake"));
  const std::string cli = FLORENCE_CLI;
  std::string out;

  // --- embed_folder: nearest text and its cosine, against `florence embed`.
  const std::vector<std::string> texts = {"a red heart", "a smiling face", "a flag of a country"};
  const std::string embed_folder = build_example("embed_folder");
  ASSERT_EQ(run(e, embed_folder + " " + e.ckpt + " " + e.photos.string() + quoted(texts), out), 0);
  const fs::path emb = e.root / "embed.safetensors";
  std::string o2;
  ASSERT_EQ(run(e, cli + " embed --checkpoint " + e.ckpt + " --images " + e.photos.string() + " --out " + emb.string() +
                       " --text '" + texts[0] + "' --text '" + texts[1] + "' --text '" + texts[2] + "'",
                o2),
            0);
  const auto st = core::load_safetensors(emb.string());
  const torch::Tensor cos = torch::matmul(st.tensors.at("image_embeds"), st.tensors.at("text_embeds").t());  // [6, 3]
  const std::vector<std::string> keys = nlohmann::json::parse(st.metadata.at("image_keys")).get<std::vector<std::string>>();
  ASSERT_EQ(keys, e.images);
  const auto lines = split(out, '\n');
  ASSERT_EQ(lines.size(), e.images.size()) << out;
  for (size_t i = 0; i < lines.size(); ++i) {
    const auto f = split(lines[i], '\t');
    ASSERT_EQ(f.size(), 3u) << lines[i];
    EXPECT_EQ(f[0], e.images[i]);
    const int64_t best = cos[int64_t(i)].argmax().item<int64_t>();
    EXPECT_EQ(f[1], texts[size_t(best)]) << lines[i];
    EXPECT_NEAR(std::stod(f[2]), cos[int64_t(i)][best].item<double>(), kTol) << lines[i];
  }

  // --- zero_shot: probabilities in label order, against `florence classify --json`.
  const std::string labels = "heart,face,flag,animal";
  const std::string zero_shot = build_example("zero_shot");
  ASSERT_EQ(run(e, zero_shot + " " + e.ckpt + " " + labels + quoted(e.images), out), 0);
  ASSERT_EQ(run(e, cli + " classify --checkpoint " + e.ckpt + " --labels " + labels + " --top 4 --json" + quoted(e.images), o2), 0);
  const nlohmann::json ref = nlohmann::json::parse(o2);
  const auto zl = split(out, '\n');
  ASSERT_EQ(zl.size(), e.images.size()) << out;
  const auto names = split(labels, ',');
  for (size_t i = 0; i < zl.size(); ++i) {
    const auto f = split(zl[i], '\t');
    ASSERT_EQ(f.size(), 3u) << zl[i];
    const nlohmann::json& row = ref["results"][i];
    EXPECT_EQ(f[0], row["image"].get<std::string>());
    EXPECT_EQ(f[1], row["top"][0]["label"].get<std::string>());
    std::map<std::string, double> p;
    for (const auto& t : row["top"]) p[t["label"].get<std::string>()] = t["prob"].get<double>();
    const auto probs = split(f[2], ' ');
    ASSERT_EQ(probs.size(), names.size());
    double sum = 0;
    for (size_t l = 0; l < names.size(); ++l) {
      EXPECT_NEAR(std::stod(probs[l]), p.at(names[l]), kTol) << zl[i] << " label " << names[l];
      sum += std::stod(probs[l]);
    }
    EXPECT_NEAR(sum, 1.0, 1e-5);
  }

  // --- photo_search: a folder ranked by a text query (cv::imread + Model::embed_image), and the
  // same query on a Flat index, against `florence search --json` on that index.
  const std::string photo_search = build_example("photo_search");
  const fs::path idx = e.root / "index";
  ASSERT_EQ(run(e, cli + " index build --out " + idx.string() + " --checkpoint " + e.ckpt +
                       " --index-key Flat --progress 0 " + e.photos.string(),
                o2),
            0);
  const std::string q = "a smiling face";
  ASSERT_EQ(run(e, cli + " search --index " + idx.string() + " --text '" + q + "' --top 4 --json", o2), 0);
  const nlohmann::json hits = nlohmann::json::parse(o2)["queries"][0]["results"];
  ASSERT_EQ(hits.size(), 4u);
  for (const bool with_index : {false, true}) {
    const std::string cmd = with_index ? photo_search + " --k 4 --index " + idx.string() + " " + e.ckpt + " '" + q + "'"
                                       : photo_search + " --k 4 " + e.ckpt + " " + e.photos.string() + " '" + q + "'";
    ASSERT_EQ(run(e, cmd, out), 0);
    const auto pl = split(out, '\n');
    ASSERT_EQ(pl.size(), 4u) << out;
    for (size_t r = 0; r < pl.size(); ++r) {
      const auto f = split(pl[r], '\t');
      ASSERT_EQ(f.size(), 3u) << pl[r];
      EXPECT_EQ(f[0], std::to_string(r + 1));
      EXPECT_NEAR(std::stod(f[1]), hits[r]["score"].get<double>(), kTol) << (with_index ? "index " : "folder ") << pl[r];
      EXPECT_EQ(fs::path(f[2]).filename(), fs::path(hits[r]["key"].get<std::string>()).filename()) << pl[r];
    }
  }

  // Bad input reaches the program as florence::Error: a missing checkpoint, exit 1 with a message.
  ASSERT_EQ(run(e, zero_shot + " " + (e.root / "missing.safetensors").string() + " a,b " + e.images[0], out), 1);
  EXPECT_NE(ts::read_file(e.root / "stderr.txt").find("missing.safetensors"), std::string::npos);
}

}  // namespace test_examples
