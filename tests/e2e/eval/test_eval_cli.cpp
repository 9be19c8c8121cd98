// End to end through the `florence` binary with a random-init florence-nano checkpoint:
// embed (file round trip: shapes, unit norms, input order), classify (probabilities), and
// eval zero-shot / retrieval on small synthetic shards (counts, classes and exact chance levels).
#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <torch/torch.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "florence/core/checkpoint.h"
#include "florence/core/error.h"
#include "florence/data/readers.h"
#include "florence/data/webdataset.h"
#include "florence/eval/encode.h"
#include "florence/model/io.h"
#include "florence/model/registry.h"
#include "support/cli.h"
#include "support/paths.h"
#include "support/vocab.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_eval_cli {

using namespace florence;
namespace fs = std::filesystem;

namespace {

const std::string kVocab = ::test::clip_vocab();

fs::path root() {
  static const fs::path d = florence::test::fresh_scratch("e2e_eval_cli");
  return d;
}

std::string checkpoint() {
  static std::string path = [] {
    torch::manual_seed(1);
    model::ModelSpec spec = model::resolve_model("florence-nano");
    model::FlorenceModel m(*spec.florence);
    const std::string p = (root() / "ckpt" / "model.safetensors").string();
    fs::create_directories(root() / "ckpt");
    model::save_checkpoint(*m, spec, p);
    return p;
  }();
  return path;
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// Runs the CLI; returns its exit status, stdout in `out`.
int run(const std::string& args, std::string& out) {
  const fs::path o = root() / "stdout.txt", e = root() / "stderr.txt";
  const std::string cmd = std::string(FLORENCE_CLI) + " " + args + " > " + o.string() + " 2> " + e.string();
  const int rc = std::system(cmd.c_str());
  out = read_file(o);
  if (rc != 0) std::cerr << "command failed: " << cmd << "\n" << read_file(e) << "\n";
  return rc;
}

std::vector<uint8_t> png(int seed, int w = 40, int h = 40) {
  cv::Mat img(h, w, CV_8UC3);
  cv::RNG rng(uint64_t(seed) + 1);
  rng.fill(img, cv::RNG::UNIFORM, 0, 255);
  std::vector<uint8_t> buf;
  cv::imencode(".png", img, buf);
  return buf;
}

double norm_err(const torch::Tensor& t) { return (t.norm(2, 1) - 1).abs().max().item<double>(); }

}  // namespace

TEST(EvalCli, EmbedRoundTrip) {
  fs::path d = root() / "embed";
  fs::create_directories(d / "folder" / "sub");
  auto write = [](const fs::path& p, int seed) {
    auto b = png(seed);
    std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
  };
  write(d / "folder" / "b.png", 1);
  write(d / "folder" / "sub" / "a.png", 2);
  write(d / "single.png", 3);
  std::ofstream(d / "texts.txt") << "a red square\nnoise\n";
  const std::string out_path = (d / "embeds.safetensors").string();
  std::string out;
  ASSERT_EQ(run("embed --checkpoint " + checkpoint() + " --vocab " + kVocab + " --images " + (d / "folder").string() + " " +
                    (d / "single.png").string() + " --texts " + (d / "texts.txt").string() +
                    " --text 'a green dog' --out " + out_path,
                out),
            0);
  core::SafetensorsFile f = core::load_safetensors(out_path);
  ASSERT_TRUE(f.tensors.count("image_embeds"));
  ASSERT_TRUE(f.tensors.count("text_embeds"));
  const torch::Tensor img = f.tensors["image_embeds"], txt = f.tensors["text_embeds"];
  EXPECT_EQ(img.sizes(), (std::vector<int64_t>{3, 128}));
  EXPECT_EQ(txt.sizes(), (std::vector<int64_t>{3, 128}));
  EXPECT_EQ(img.scalar_type(), torch::kFloat);
  EXPECT_LT(norm_err(img), 1e-5);
  EXPECT_LT(norm_err(txt), 1e-5);
  // Order: folder files sorted by path (recursive), then the single file; texts file, then --text.
  auto keys = nlohmann::json::parse(f.metadata.at("image_keys")).get<std::vector<std::string>>();
  EXPECT_EQ(keys, (std::vector<std::string>{(d / "folder" / "b.png").string(), (d / "folder" / "sub" / "a.png").string(),
                                            (d / "single.png").string()}));
  auto texts = nlohmann::json::parse(f.metadata.at("texts")).get<std::vector<std::string>>();
  EXPECT_EQ(texts, (std::vector<std::string>{"a red square", "noise", "a green dog"}));
  auto side = nlohmann::json::parse(read_file(d / "embeds.json"));
  EXPECT_EQ(side["texts"], nlohmann::json(texts));
  // Rows match the library's own encoding of the same inputs (order really is the stored one).
  eval::LoadOptions lo;
  lo.checkpoint = checkpoint();
  lo.vocab = kVocab;
  eval::EvalModel m = eval::load_eval_model(lo);
  torch::Tensor t = eval::encode_texts(m, {"a green dog", "a red square"});
  EXPECT_TRUE(t[0].allclose(txt[2], 1e-4, 1e-5));
  EXPECT_TRUE(t[1].allclose(txt[0], 1e-4, 1e-5));
  eval::EncodedImages e = eval::encode_source(m, std::make_shared<data::ImageFolderSource>((d / "folder").string()), false);
  // ImageFolder keys are "<class>/<stem>": here class folder "sub" holds a.png.
  ASSERT_EQ(e.keys.size(), 1u);
  EXPECT_TRUE(e.embeds[0].allclose(img[1], 1e-4, 1e-5));
  // Metadata is joined by key: a key repeated with different metadata (here the same image under
  // two categories) is refused instead of silently labelling both rows alike.
  {
    std::ofstream mf(d / "dup.jsonl");
    mf << R"({"image": "single.png", "text": "x", "category": "cats"})" << "\n";
    mf << R"({"image": "single.png", "text": "x", "category": "dogs"})" << "\n";
  }
  auto dup = std::make_shared<data::ManifestSource>((d / "dup.jsonl").string());
  EXPECT_THROW(eval::encode_source(m, dup, false, 0, true), Error);
  EXPECT_EQ(eval::encode_source(m, dup, false, 0, false).keys.size(), 2u);  // without metadata both rows count
}

TEST(EvalCli, ClassifyPrintsNormalisedProbabilities) {
  fs::path d = root() / "classify";
  fs::create_directories(d);
  auto b = png(5, 50, 30);
  std::ofstream(d / "x.png", std::ios::binary).write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
  std::string out;
  ASSERT_EQ(run("classify --checkpoint " + checkpoint() + " --vocab " + kVocab +
                    " --labels 'cat, dog,red car,tree' --top 10 --json " + (d / "x.png").string(),
                out),
            0);
  auto j = nlohmann::json::parse(out);
  ASSERT_EQ(j["results"].size(), 1u);
  const auto& top = j["results"][0]["top"];
  ASSERT_EQ(top.size(), 4u);
  double sum = 0, prev = 2;
  for (const auto& t : top) {
    sum += t["prob"].get<double>();
    EXPECT_LE(t["prob"].get<double>(), prev);  // sorted, highest first
    prev = t["prob"].get<double>();
  }
  EXPECT_NEAR(sum, 1.0, 1e-5);
  // Initial logit scale log(1/0.07) -> tau = 1/0.07.
  EXPECT_NEAR(j["temperature"].get<double>(), 1.0 / 0.07, 1e-3);
}

TEST(EvalCli, ZeroShotAndRetrievalOnSyntheticShards) {
  fs::path d = root() / "corpus";
  {
    data::ShardWriter w((d / "test").string());
    const std::vector<std::pair<std::string, std::string>> rows = {
        {"animals", "cat"},      {"animals", "cat"},   {"animals", "dog"},  {"animals", "bird"},
        {"animals", "fish"},     {"food", "apple"},    {"food", "Apple"},   {"food", "bread"},
        {"food", "cheese"},      {"zeta", "z one"},    {"zeta", "z two"},   {"zeta", "z two"}};
    for (size_t i = 0; i < rows.size(); ++i) {
      data::Sample s;
      s.key = "s" + std::to_string(i);
      s.image = png(int(i) + 10);
      s.image_ext = "png";
      s.text = rows[i].second;
      s.meta = {{"category", rows[i].first}};
      w.write(s);
    }
    w.close();
  }
  std::string out;
  const fs::path zs = root() / "out" / "zs.json";
  ASSERT_EQ(run("eval zero-shot --checkpoint " + checkpoint() + " --vocab " + kVocab + " --data " + d.string() +
                    " --out " + zs.string(),
                out),
            0);
  auto z = nlohmann::json::parse(read_file(zs));
  EXPECT_EQ(z["task"], "zero-shot");
  EXPECT_EQ(z["set"], "corpus");
  EXPECT_EQ(z["num_images"], 12);
  const auto& m = z["metrics"];
  EXPECT_EQ(m["classes"], nlohmann::json({"animals", "food", "zeta"}));
  EXPECT_EQ(m["support"]["animals"], 5);
  EXPECT_NEAR(m["chance"]["top1"].get<double>(), 1.0 / 3.0, 1e-12);
  EXPECT_NEAR(m["chance"]["top5"].get<double>(), 1.0, 1e-12);
  int64_t total = 0, diag = 0;
  for (size_t t = 0; t < 3; ++t)
    for (size_t p = 0; p < 3; ++p) {
      total += m["confusion"][t][p].get<int64_t>();
      if (t == p) diag += m["confusion"][t][p].get<int64_t>();
    }
  EXPECT_EQ(total, 12);
  EXPECT_NEAR(m["top1"].get<double>(), double(diag) / 12.0, 1e-12);
  // p-value of top-1: P(Binomial(12, 1/3) >= diag), summed here term by term; top-5 of 3 classes is certain.
  double tail = 0;
  for (int64_t i = diag; i <= 12; ++i) {
    double c = 1;
    for (int64_t j = 0; j < i; ++j) c = c * double(12 - j) / double(j + 1);
    tail += c * std::pow(1.0 / 3.0, double(i)) * std::pow(2.0 / 3.0, double(12 - i));
  }
  EXPECT_NEAR(m["p_value"]["top1"].get<double>(), tail, 1e-12);
  EXPECT_DOUBLE_EQ(m["p_value"]["top5"].get<double>(), 1.0);
  EXPECT_GT(m["p_value"]["mean_per_class"].get<double>(), 0.0);
  EXPECT_LE(m["p_value"]["mean_per_class"].get<double>(), 1.0);
  EXPECT_NE(out.find("top-1 %"), std::string::npos);
  EXPECT_NE(out.find("chance        p"), std::string::npos) << out;  // the summary's p column
  EXPECT_EQ(z["prompt_names"], nlohmann::json({{"animals", "animals"}, {"food", "food"}, {"zeta", "zeta"}}));

  // --class-names: the table's words go into the prompts (recorded per class), an entry naming no
  // class of the set is warned about, and a malformed table is a clear error before any work.
  {
    std::ofstream(root() / "out" / "names.json") << R"({"animals": "animal", "Zeta": "z"})";
    std::ofstream(root() / "out" / "bad_names.json") << R"({"animals": ["animal"]})";
    const fs::path zn = root() / "out" / "zs_names.json";
    ASSERT_EQ(run("eval zero-shot --checkpoint " + checkpoint() + " --vocab " + kVocab + " --data " + d.string() +
                      " --class-names " + (root() / "out" / "names.json").string() + " --out " + zn.string(),
                  out),
              0);
    auto zz = nlohmann::json::parse(read_file(zn));
    EXPECT_EQ(zz["prompt_names"], nlohmann::json({{"animals", "animal"}, {"food", "food"}, {"zeta", "zeta"}}));
    const std::string warned = read_file(root() / "stderr.txt");
    EXPECT_NE(warned.find("'Zeta' matches no class"), std::string::npos) << warned;
    EXPECT_NE(run("eval zero-shot --checkpoint " + checkpoint() + " --vocab " + kVocab + " --data " + d.string() +
                      " --class-names " + (root() / "out" / "bad_names.json").string(),
                  out),
              0);
    const std::string error = read_file(root() / "stderr.txt");
    EXPECT_NE(error.find("the value of 'animals' is not a non-empty string"), std::string::npos) << error;
  }

  const fs::path rt = root() / "out" / "ret.json";
  ASSERT_EQ(run("eval retrieval --checkpoint " + checkpoint() + " --vocab " + kVocab + " --data " + (d / "test").string() +
                    " --examples 3 --out " + rt.string(),
                out),
            0);
  auto r = nlohmann::json::parse(read_file(rt));
  EXPECT_EQ(r["num_images"], 12);
  // "apple"/"Apple" clean to one text: 9 distinct texts.
  EXPECT_EQ(r["num_texts"], 9);
  // text->image: correct images per text 2,1,1,1,2,1,1,1,2 of 12 -> chance R@1 = mean(m/12) = 1/9.
  EXPECT_NEAR(r["text_to_image"]["chance"]["R@1"].get<double>(), 1.0 / 9.0, 1e-12);
  EXPECT_NEAR(r["text_to_image"]["mean_relevant"].get<double>(), 12.0 / 9.0, 1e-12);
  // image->text: one correct text of 9 -> chance R@K = K/9.
  EXPECT_NEAR(r["image_to_text"]["chance"]["R@5"].get<double>(), 5.0 / 9.0, 1e-12);
  EXPECT_NEAR(r["image_to_text"]["chance"]["R@10"].get<double>(), 1.0, 1e-12);
  EXPECT_NEAR(r["image_to_text"]["chance"]["mean_rank"].get<double>(), 5.0, 1e-12);
  ASSERT_EQ(r["examples"].size(), 3u);
  for (const auto& ex : r["examples"]) {
    ASSERT_EQ(ex["top"].size(), 5u);
    for (const auto& t : ex["top"]) {
      const fs::path img = rt.parent_path() / t["image"].get<std::string>();
      EXPECT_FALSE(cv::imread(img.string()).empty()) << img;
    }
  }
  // A missing data folder is a clear error (exit status 2).
  EXPECT_EQ(run("eval retrieval --checkpoint " + checkpoint() + " --vocab " + kVocab + " --data " + (d / "nope").string(), out) >> 8, 2);
  // The checkpoint's JSON sidecar given as the checkpoint: an error that names the weights file.
  const std::string sidecar = (fs::path(checkpoint()).parent_path() / "model.json").string();
  ASSERT_TRUE(fs::exists(sidecar));
  EXPECT_EQ(run("eval retrieval --checkpoint " + sidecar + " --vocab " + kVocab + " --data " + d.string(), out) >> 8, 2);
  const std::string err = read_file(root() / "stderr.txt");
  EXPECT_NE(err.find("is a JSON file, not model weights; pass the weights file '" + checkpoint() + "'"),
            std::string::npos)
      << err;
  // Any JSON (whatever it holds, any case of the extension) and a checkpoint's optimizer state are
  // refused by name before anything parses them.
  std::ofstream(root() / "OBJ.JSON") << "{}";
  std::ofstream(root() / "broken.json") << "not json";
  for (const std::string name : {"OBJ.JSON", "broken.json"}) {
    EXPECT_EQ(run("embed --checkpoint " + (root() / name).string() + " --text hi --out " + (root() / "x.safetensors").string(), out) >> 8, 2);
    EXPECT_NE(read_file(root() / "stderr.txt").find("is a JSON file, not model weights"), std::string::npos) << name;
  }
  const fs::path optim = root() / "ckpt" / "step_0000002.optim.safetensors";
  fs::copy_file(checkpoint(), optim, fs::copy_options::overwrite_existing);
  EXPECT_EQ(run("embed --checkpoint " + optim.string() + " --text hi --out " + (root() / "x.safetensors").string(), out) >> 8, 2);
  EXPECT_NE(read_file(root() / "stderr.txt")
                .find("is a checkpoint's optimizer state, not model weights; pass '" +
                      (root() / "ckpt" / "step_0000002.safetensors").string() + "'"),
            std::string::npos)
      << read_file(root() / "stderr.txt");
}

// `eval all`: zero-shot prompts are chosen on the val split among the set's prompt settings (the
// one with the highest val top-1, the first on a tie) and then used on test; without a val split,
// or with --prompt-selection none, the first setting (ensemble + class-name table) is used;
// choosing on the reported split, or on a split no selected corpus has, is refused.
TEST(EvalCli, EvalAllChoosesPromptsOnValidation) {
  const fs::path data = root() / "data_root";
  auto write_split = [&](const std::string& set, const std::string& split, int seed) {
    data::ShardWriter w((data / set / split).string());
    const std::vector<std::pair<std::string, std::string>> rows = {
        {"animals", "cat. animal"}, {"animals", "dog. animal"}, {"animals", "owl. bird, animal"},
        {"shapes", "square. shape"}, {"shapes", "circle. shape"}, {"shapes", "arrow. shape"},
        {"food", "apple. fruit, food"}, {"food", "bread. food"}};
    for (size_t i = 0; i < rows.size(); ++i) {
      data::Sample s;
      s.key = split + std::to_string(i);
      s.image = png(seed + int(i));
      s.image_ext = "png";
      s.text = rows[i].second;
      s.meta = {{"category", rows[i].first}};
      w.write(s);
    }
    w.close();
  };
  write_split("openclipart", "test", 100);
  write_split("openclipart", "val", 200);
  write_split("emoji", "test", 300);
  {  // emoji's val split has one class only: selection is impossible, the first setting is used
    data::ShardWriter w((data / "emoji" / "val").string());
    for (int i = 0; i < 3; ++i) {
      data::Sample s;
      s.key = "v" + std::to_string(i);
      s.image = png(400 + i);
      s.image_ext = "png";
      s.text = "flag";
      s.meta = {{"category", "Flags"}};
      w.write(s);
    }
    w.close();
  }

  std::string out;
  const fs::path res = root() / "all_out";
  ASSERT_EQ(run("eval all --checkpoint " + checkpoint() + " --vocab " + kVocab + " --data-root " + data.string() +
                    " --sets openclipart,emoji --out-dir " + res.string(),
                out),
            0);
  auto z = nlohmann::json::parse(read_file(res / "openclipart_zero_shot.json"));
  const auto& sel = z["prompt_selection"];
  EXPECT_EQ(sel["split"], "val");
  EXPECT_EQ(sel["num_images"], 8);
  ASSERT_EQ(sel["candidates"].size(), 4u);
  const std::vector<std::string> names{"ensemble+table", "bare+table", "ensemble+names", "bare+names"};
  size_t best = 0;
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(sel["candidates"][i]["name"], names[i]);
    if (sel["candidates"][i]["top1"].get<double>() > sel["candidates"][best]["top1"].get<double>()) best = i;
  }
  EXPECT_EQ(sel["candidates"][0]["prompt_names"]["shapes"], "shape");  // the openclipart table
  EXPECT_EQ(sel["candidates"][2]["prompt_names"]["shapes"], "shapes");
  EXPECT_EQ(sel["candidates"][1]["templates"], nlohmann::json({"{}"}));
  EXPECT_EQ(sel["chosen"], names[best]);
  EXPECT_EQ(z["prompt_setting"], names[best]);
  EXPECT_EQ(z["templates"], sel["candidates"][best]["templates"]);
  EXPECT_EQ(z["prompt_names"], sel["candidates"][best]["prompt_names"]);

  auto e = nlohmann::json::parse(read_file(res / "emoji_zero_shot.json"));
  EXPECT_NE(e["prompt_selection"]["error"].get<std::string>().find("needs at least 2 classes"), std::string::npos);
  EXPECT_EQ(e["prompt_setting"], "ensemble+table");

  // A split one corpus lacks (emoji has a dev split, openclipart none): warned, recorded as missing
  // for that corpus, the first setting used there; chosen on the split where it exists.
  write_split("emoji", "dev", 500);
  ASSERT_EQ(run("eval all --checkpoint " + checkpoint() + " --vocab " + kVocab + " --data-root " + data.string() +
                    " --sets openclipart,emoji --prompt-selection dev --out-dir " + (root() / "all_dev").string(),
                out),
            0);
  auto t = nlohmann::json::parse(read_file(root() / "all_dev" / "openclipart_zero_shot.json"));
  EXPECT_EQ(t["prompt_selection"]["missing"], true);
  EXPECT_EQ(t["prompt_setting"], "ensemble+table");
  auto td = nlohmann::json::parse(read_file(root() / "all_dev" / "emoji_zero_shot.json"));
  EXPECT_EQ(td["prompt_selection"]["split"], "dev");
  EXPECT_EQ(td["prompt_selection"]["num_images"], 8);
  // A split no selected corpus has is a typo: refused, naming the split folders that exist.
  EXPECT_NE(run("eval all --checkpoint " + checkpoint() + " --vocab " + kVocab + " --data-root " + data.string() +
                    " --sets openclipart --prompt-selection vall",
                out),
            0);
  const std::string typo = read_file(root() / "stderr.txt");
  EXPECT_NE(typo.find("none of the selected corpora under"), std::string::npos) << typo;
  EXPECT_NE(typo.find("test, val"), std::string::npos) << typo;

  // Reporting val: the default selection split is the reported one, so nothing is chosen.
  ASSERT_EQ(run("eval all --checkpoint " + checkpoint() + " --vocab " + kVocab + " --data-root " + data.string() +
                    " --sets openclipart --split val --out-dir " + (root() / "all_val").string(),
                out),
            0);
  auto v = nlohmann::json::parse(read_file(root() / "all_val" / "openclipart_zero_shot.json"));
  EXPECT_FALSE(v.contains("prompt_selection"));

  ASSERT_EQ(run("eval all --checkpoint " + checkpoint() + " --vocab " + kVocab + " --data-root " + data.string() +
                    " --sets openclipart --prompt-selection none --out-dir " + (root() / "all_none").string(),
                out),
            0);
  auto n = nlohmann::json::parse(read_file(root() / "all_none" / "openclipart_zero_shot.json"));
  EXPECT_FALSE(n.contains("prompt_selection"));
  EXPECT_EQ(n["prompt_setting"], "ensemble+table");

  EXPECT_NE(run("eval all --checkpoint " + checkpoint() + " --vocab " + kVocab + " --data-root " + data.string() +
                    " --prompt-selection ''",
                out),
            0);
  EXPECT_NE(read_file(root() / "stderr.txt").find("--prompt-selection is empty"), std::string::npos);

  // One set failing (emoji's test split: one class, one caption) does not stop the others: openclipart is
  // written, emoji's earlier result files are removed rather than left beside the new ones, the
  // failure is in summary.json, and the exit status is 2.
  {
    const fs::path one = root() / "data_one";
    fs::create_directories(one / "emoji");
    fs::copy(data / "openclipart", one / "openclipart", fs::copy_options::recursive);
    fs::copy(data / "emoji" / "val", one / "emoji" / "test", fs::copy_options::recursive);  // Flags only
    const fs::path o1 = root() / "all_out";  // holds the emoji results of the first run above
    ASSERT_TRUE(fs::exists(o1 / "emoji_zero_shot.json"));
    std::ofstream(o1 / "stale_marker.txt") << "x";
    EXPECT_EQ(run("eval all --checkpoint " + checkpoint() + " --vocab " + kVocab + " --data-root " + one.string() +
                      " --sets openclipart,emoji --out-dir " + o1.string(),
                  out) >> 8,
              2);
    EXPECT_TRUE(fs::exists(o1 / "openclipart_zero_shot.json"));
    EXPECT_FALSE(fs::exists(o1 / "emoji_zero_shot.json"));
    EXPECT_FALSE(fs::exists(o1 / "emoji_retrieval.json"));  // its captions are all "flag": fails too
    EXPECT_TRUE(fs::exists(o1 / "stale_marker.txt"));  // not ours: left alone
    auto sum = nlohmann::json::parse(read_file(o1 / "summary.json"));
    ASSERT_EQ(sum["failed"].size(), 2u);
    EXPECT_EQ(sum["failed"][0]["set"], "emoji");
    EXPECT_EQ(sum["failed"][0]["task"], "zero-shot");
    EXPECT_NE(sum["failed"][0]["error"].get<std::string>().find("needs at least 2 classes"), std::string::npos);
    EXPECT_EQ(sum["failed"][1]["task"], "retrieval");
    EXPECT_NE(sum["failed"][1]["error"].get<std::string>().find("all captions are the same text"), std::string::npos);
    EXPECT_EQ(sum["results"].size(), 2u);  // openclipart zero-shot + retrieval
    EXPECT_NE(out.find("openclipart"), std::string::npos);
    EXPECT_NE(read_file(root() / "stderr.txt").find("failed: emoji zero-shot"), std::string::npos);
  }

  EXPECT_NE(run("eval all --checkpoint " + checkpoint() + " --vocab " + kVocab + " --data-root " + data.string() +
                    " --prompt-selection test",
                out),
            0);
  EXPECT_NE(read_file(root() / "stderr.txt").find("is the split being reported"), std::string::npos);
  for (const std::string bad : {"test/", "../emoji/test", "."}) {  // a path could point at the reported images
    EXPECT_NE(run("eval all --checkpoint " + checkpoint() + " --vocab " + kVocab + " --data-root " + data.string() +
                      " --prompt-selection " + bad,
                  out),
              0)
        << bad;
    EXPECT_NE(read_file(root() / "stderr.txt").find("not a path"), std::string::npos) << bad;
  }
}

// Issue 25: `eval zero-shot` on a standard corpus makes the prompt choice `eval all` makes (the
// built-in class-name table among the candidates, chosen on val), so both report the same numbers on
// the same test split; it prints and records the setting and the words used. Also: the retrieval
// examples are a seeded sample of hits and misses, each retrieved image with its caption.
TEST(EvalCli, ZeroShotMakesEvalAllsPromptChoice) {
  const fs::path data = root() / "data_same";
  auto write_split = [&](const std::string& split, int seed) {
    data::ShardWriter w((data / "emoji" / split).string());
    const std::vector<std::pair<std::string, std::string>> rows = {
        {"Smileys & Emotion", "grinning face"}, {"Smileys & Emotion", "winking face"}, {"Flags", "flag: France"},
        {"Flags", "flag: Japan"},               {"Flags", "chequered flag"},         {"Food & Drink", "red apple"},
        {"Food & Drink", "bread"},              {"Food & Drink", "hot pepper"},      {"Animals & Nature", "dog face"}};
    for (size_t i = 0; i < rows.size(); ++i) {
      data::Sample s;
      s.key = split + "-1f6" + std::to_string(i);
      s.image = png(seed + int(i));
      s.image_ext = "png";
      s.text = rows[i].second;
      s.meta = {{"category", rows[i].first}};
      w.write(s);
    }
    w.close();
  };
  write_split("test", 600);
  write_split("val", 700);
  std::string out;
  const fs::path all = root() / "same_all";
  ASSERT_EQ(run("eval all --checkpoint " + checkpoint() + " --vocab " + kVocab + " --data-root " + data.string() +
                    " --sets emoji --examples 4 --out-dir " + all.string(),
                out),
            0);
  EXPECT_NE(out.find("prompts "), std::string::npos) << out;  // the table names the setting
  const fs::path zs = root() / "same_zs.json";
  ASSERT_EQ(run("eval zero-shot --checkpoint " + checkpoint() + " --vocab " + kVocab + " --data " + (data / "emoji").string() +
                    " --out " + zs.string(),
                out),
            0);
  auto a = nlohmann::json::parse(read_file(all / "emoji_zero_shot.json"));
  auto z = nlohmann::json::parse(read_file(zs));
  EXPECT_EQ(z["set"], "emoji");
  EXPECT_EQ(z["metrics"]["top1"], a["metrics"]["top1"]);
  EXPECT_EQ(z["metrics"]["confusion"], a["metrics"]["confusion"]);
  EXPECT_EQ(z["prompt_setting"], a["prompt_setting"]);
  EXPECT_EQ(z["prompt_names"], a["prompt_names"]);
  EXPECT_EQ(z["prompt_selection"]["candidates"], a["prompt_selection"]["candidates"]);
  EXPECT_EQ(z["prompt_selection"]["split"], "val");
  EXPECT_EQ(z["class_names"], "built-in table of emoji");
  EXPECT_EQ(a["class_names"], "built-in table of emoji");
  EXPECT_EQ(z["labels_seen_in_pretraining"], false);
  // The built-in table is among the candidates (the old `eval zero-shot` used the raw names only).
  EXPECT_EQ(z["prompt_selection"]["candidates"][0]["name"], "ensemble+table");
  EXPECT_EQ(z["prompt_selection"]["candidates"][0]["prompt_names"]["Flags"], "flag");
  // Printed: the setting and how it was chosen, then the words per class.
  const std::string setting = z["prompt_setting"].get<std::string>();
  EXPECT_NE(out.find("prompts " + setting + ", chosen on val (top-1 "), std::string::npos) << out;
  EXPECT_NE(out.find("class words: built-in table of emoji"), std::string::npos) << out;
  const std::string flag_words = z["prompt_names"]["Flags"].get<std::string>();
  EXPECT_NE(out.find("  Flags" + (flag_words == "Flags" ? std::string("\n") : " -> " + flag_words + "\n")), std::string::npos)
      << out;

  // Without selection: the first setting, the ensemble with the built-in table, and the reason recorded
  // when --data is no corpus root (a split folder given directly).
  ASSERT_EQ(run("eval zero-shot --checkpoint " + checkpoint() + " --vocab " + kVocab + " --data " + (data / "emoji").string() +
                    " --prompt-selection none --json",
                out),
            0);
  auto n = nlohmann::json::parse(out);
  EXPECT_EQ(n["prompt_setting"], "ensemble+table");
  EXPECT_EQ(n["prompt_names"]["Smileys & Emotion"], "smiley face");
  EXPECT_FALSE(n.contains("prompt_selection"));
  ASSERT_EQ(run("eval zero-shot --checkpoint " + checkpoint() + " --vocab " + kVocab + " --data " +
                    (data / "emoji" / "test").string() + " --name emoji --json",
                out),
            0);
  auto d = nlohmann::json::parse(out);
  EXPECT_EQ(d["prompt_setting"], "ensemble+table");
  EXPECT_NE(d["prompt_selection"]["unavailable"].get<std::string>().find("not a corpus root"), std::string::npos);
  // fashion-mnist's labels are pretraining targets: recorded and marked in the table.
  ASSERT_EQ(run("eval zero-shot --checkpoint " + checkpoint() + " --vocab " + kVocab + " --data " + (data / "emoji").string() +
                    " --name fashion-mnist --prompt-selection none",
                out),
            0);
  EXPECT_NE(out.find("zero-shot [seen]"), std::string::npos) << out;
  EXPECT_NE(out.find("class words: none: the class names as they are"), std::string::npos) << out;
  // --prompt-selection on the reported split is refused as in eval all.
  EXPECT_NE(run("eval zero-shot --checkpoint " + checkpoint() + " --vocab " + kVocab + " --data " + (data / "emoji").string() +
                    " --prompt-selection test",
                out),
            0);
  EXPECT_NE(read_file(root() / "stderr.txt").find("is the split being reported"), std::string::npos);

  // Retrieval examples (9 distinct texts, --examples 4): half hits (rank 1), half misses, as far as
  // each kind exists; each example marked; each retrieved image with its own caption.
  auto r = nlohmann::json::parse(read_file(all / "emoji_retrieval.json"));
  const auto& sel = r["example_selection"];
  const int64_t hits = sel["hits"].get<int64_t>(), misses = sel["misses"].get<int64_t>();
  EXPECT_EQ(sel["queries"], 9);
  EXPECT_EQ(hits + misses, 9);
  const int64_t want_hits = std::min<int64_t>(hits, std::max<int64_t>(2, 4 - misses));
  EXPECT_EQ(sel["shown_hits"], want_hits);
  EXPECT_EQ(sel["shown_misses"], 4 - want_hits);
  ASSERT_EQ(r["examples"].size(), 4u);
  int64_t shown_hits = 0;
  std::map<std::string, std::string> caption_of;
  {
    auto src = data::ShardSource::from_spec((data / "emoji" / "test").string());
    data::SkipCounts skips;
    for (size_t p = 0; p < src->num_parts(); ++p)
      src->read_part(p, [&](data::Sample& s) { caption_of[s.key] = s.text; return true; }, skips);
  }
  for (const auto& ex : r["examples"]) {
    EXPECT_EQ(ex["hit"].get<bool>(), ex["rank"].get<int64_t>() == 1);
    shown_hits += ex["hit"].get<bool>();
    for (const auto& t : ex["top"]) EXPECT_EQ(t["text"], caption_of.at(t["key"].get<std::string>()));
  }
  EXPECT_EQ(shown_hits, want_hits);
}

TEST(EvalCli, ClassifyRefusesAnEmptyLabel) {
  fs::path d = root() / "classify_empty";
  fs::create_directories(d);
  auto b = png(9);
  std::ofstream(d / "x.png", std::ios::binary).write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
  std::string out;
  for (const std::string labels : {"dog,,cat", "dog,cat,", " ,dog,cat"}) {
    EXPECT_EQ(run("classify --checkpoint " + checkpoint() + " --vocab " + kVocab + " --labels '" + labels + "' " +
                      (d / "x.png").string(),
                  out) >> 8,
              2)
        << labels;
    EXPECT_NE(read_file(root() / "stderr.txt").find("classify: --labels '" + labels + "': item "), std::string::npos)
        << read_file(root() / "stderr.txt");
  }
  EXPECT_NE(read_file(root() / "stderr.txt").find("item 1 is empty"), std::string::npos);
}

// scripts/demo prints the pretraining's peak memory from /usr/bin/time's log, whose "kbytes" are KiB.
TEST(EvalCli, DemoPeakMemoryInKiBAndGiB) {
  const fs::path log = root() / "time.txt";
  std::ofstream(log) << "\tCommand being timed: \"florence pretrain\"\n\tMaximum resident set size (kbytes): 1110444\n";
  const fs::path o = root() / "peak.txt";
  ASSERT_EQ(std::system(("bash " + std::string(FLORENCE_SOURCE_DIR) + "/scripts/demo --peak-memory " + log.string() + " > " +
                         o.string())
                            .c_str()),
            0);
  EXPECT_EQ(read_file(o), "peak resident memory: 1,110,444 KiB = 1.06 GiB\n");  // 1110444 / 2^20 = 1.0590
}

}  // namespace test_eval_cli
