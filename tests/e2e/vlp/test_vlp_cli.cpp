// End to end through the `florence` binary on the real sprite fixtures (tests/support/sprite_corpora.h):
// `vlp pretrain` (ITM + MLM) on the fixture corpora, `vqa train` from its weights on a tiny VQA set
// built from the same sprites, `vqa eval` of the result (the same numbers; the accuracy recomputed
// here from the predictions file with the official per-question rule), resume after an
// interruption (the same final weights), `vqa ask`, a blind model (answers independent of the
// image) and bad input (a checkpoint of another kind is a clear error).
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>

#include "florence/adapt/vlp/vqa_metric.h"
#include "florence/adapt/vlp/vqa_set.h"
#include "florence/core/checkpoint.h"
#include "florence/core/files.h"
#include "support/cli.h"
#include "support/files.h"
#include "support/paths.h"
#include "support/sprite_corpora.h"
#include "support/vocab.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_vlp_cli {

using namespace florence;
namespace fs = std::filesystem;

namespace {

using ::test::clip_vocab;

fs::path root() {
  static const fs::path d = florence::test::fresh_scratch("e2e_vlp_cli");
  return d;
}

/// Runs the CLI in root(); see florence::test::run_cli.
int run(const std::string& args, std::string& out, std::string* err = nullptr) {
  return florence::test::run_cli(root(), args, out, err);
}

/// 24 train / 4 val / 8 test scenes of 64 px from the fixture sprites.
const std::string& vqa_set() {
  static const std::string dir = [] {
    const fs::path out = root() / "vqa";
    vlp::VqaSetOptions o;
    o.out_dir = out.string();
    o.sprites = florence::test::test_sprite_options();
    o.train_images = 24, o.val_images = 4, o.test_images = 8;
    o.image_size = 64;
    o.min_answer_count = 2;
    o.seed = 3;
    o.overwrite = true;
    o.progress = false;
    vlp::build_vqa_set(o);
    return out.string();
  }();
  return dir;
}

std::vector<nlohmann::json> metrics_lines(const fs::path& run_dir) {
  std::vector<nlohmann::json> v;
  std::stringstream ss(florence::test::read_text(run_dir / "metrics.jsonl"));
  std::string line;
  while (std::getline(ss, line))
    if (!line.empty()) v.push_back(nlohmann::json::parse(line));
  return v;
}

std::string vqa_args(const std::string& init, const fs::path& out, int steps) {
  return "vqa train --checkpoint " + init + " --data " + vqa_set() + " --out " + out.string() + " --steps " +
         std::to_string(steps) + " --batch-size 8 --lr 2e-4 --lr-mult-head 25 --threads 1 --workers 1 --seed 5";
}

}  // namespace

TEST(VlpCli, PretrainVqaTrainEvalAskResume) {
  if (!florence::test::sprite_sources_available())
    GTEST_SKIP() << "needs openclipart-svg, librsvg2-bin and emoji-datasource-google (scripts/setup)";
  const auto& corpora = florence::test::sprite_corpora();
  std::string out, err;

  // ITM + MLM from random towers with CLIP's vocabulary (49,408 ids).
  const fs::path vlp = root() / "vlp";
  ASSERT_EQ(run("vlp pretrain --random-init --vocab " + clip_vocab() + " --data " + corpora.openclipart + "," +
                    corpora.emoji + " --out " + vlp.string() +
                    " --steps 4 --batch-size 8 --max-eval-samples 24 --threads 1 --workers 1 --seed 3",
                out),
            0);
  EXPECT_NE(out.find("ITM accuracy"), std::string::npos) << out;
  const auto pm = metrics_lines(vlp);
  ASSERT_EQ(pm.size(), 4u);
  // Fresh heads (N(0, 0.02) weights, zero biases) give near-uniform logits: MLM loss ~ ln 49408 =
  // 10.81, ITM loss ~ ln 2 = 0.693, and the step loss is their sum.
  EXPECT_NEAR(pm[0]["mlm_loss"].get<double>(), std::log(49408.0), 0.5);
  EXPECT_NEAR(pm[0]["itm_loss"].get<double>(), std::log(2.0), 0.1);
  EXPECT_NEAR(pm[0]["loss"].get<double>(), pm[0]["mlm_loss"].get<double>() + pm[0]["itm_loss"].get<double>(), 1e-4);
  const auto pr = core::read_json_file(vlp / "result.json");
  // Up to 24 held-out pairs in full batches of 8 (the fixture's test splits hold fewer than 24).
  EXPECT_GE(pr["eval"]["pairs"].get<int64_t>(), 8);
  EXPECT_LE(pr["eval"]["pairs"].get<int64_t>(), 24);
  EXPECT_GT(pr["eval"]["mlm_predicted"].get<int64_t>(), 24);  // >= 1 per text
  EXPECT_GE(pr["eval"]["itm_accuracy"].get<double>(), 0.0);
  EXPECT_LE(pr["eval"]["itm_accuracy"].get<double>(), 1.0);
  const auto side = core::read_json_file(vlp / "model.json");
  EXPECT_EQ(side["kind"], "vlp-pretrain");

  // VQA from the pretrained fusion: a fresh head gives BCE ln 2 per answer, summed over answers.
  const std::string init = (vlp / "model.safetensors").string();
  const fs::path vqa = root() / "vqa_run";
  ASSERT_EQ(run(vqa_args(init, vqa, 6), out), 0);
  EXPECT_NE(out.find("prior baseline"), std::string::npos) << out;
  const auto answers = core::read_json_file(fs::path(vqa_set()) / "answers.json")["answers"];
  const double A = double(answers.size());
  const auto vm = metrics_lines(vqa);
  ASSERT_EQ(vm.size(), 6u);
  EXPECT_NEAR(vm[0]["loss"].get<double>(), A * std::log(2.0), 0.1 * A);
  EXPECT_LT(vm.back()["loss"].get<double>(), vm[0]["loss"].get<double>());
  const auto vr = core::read_json_file(vqa / "result.json");
  EXPECT_EQ(vr["init"], init);
  EXPECT_EQ(vr["answers"].get<int64_t>(), int64_t(A));

  // The test numbers also where `florence report` reads them; the report shows them beside the prior.
  const auto rec = core::read_json_file(vqa / "eval" / "vqa_test.json");
  EXPECT_EQ(rec["task"], "vqa-eval");
  EXPECT_EQ(rec["split"], "test");
  EXPECT_NEAR(rec["model"]["accuracy"].get<double>(), vr["test"]["accuracy"].get<double>(), 1e-9);
  EXPECT_NEAR(rec["prior"]["accuracy"].get<double>(), vr["prior"]["accuracy"].get<double>(), 1e-9);
  ASSERT_EQ(run("report " + vqa.string(), out), 0);
  const std::string html = core::read_text_file((vqa / "report.html").string());
  EXPECT_NE(html.find("VQA on &#39;test&#39;"), std::string::npos) << html;
  EXPECT_NE(html.find(fmt::format("<td>VQA accuracy</td><td class=num>{:.2f}</td><td class=num>{:.2f}</td>",
                                  vr["test"]["accuracy"].get<double>(), vr["prior"]["accuracy"].get<double>())),
            std::string::npos);
  EXPECT_NE(html.find("VQA accuracy, question type count"), std::string::npos);
  // vqa eval writes there by default, and says when it replaces a different evaluation.
  {
    std::string err;
    ASSERT_EQ(run("vqa eval --checkpoint " + (vqa / "model.safetensors").string() + " --data " + vqa_set() +
                      " --max-questions 3 --train-split ''",
                  out, &err),
              0);
    EXPECT_NE(err.find("warning: replacing"), std::string::npos) << err;
    EXPECT_NE(out.find("result " + (vqa / "eval" / "vqa_test.json").string()), std::string::npos) << out;
    EXPECT_FALSE(core::read_json_file(vqa / "eval" / "vqa_test.json").contains("prior"));
  }

  // An output that is an input (here the model's sidecar) is refused before any work.
  {
    std::string err;
    EXPECT_EQ(run("vqa eval --checkpoint " + (vqa / "model.safetensors").string() + " --data " + vqa_set() +
                      " --result " + (vqa / "model.json").string(),
                  out, &err),
              2 << 8);  // std::system's status: exit code 2
    EXPECT_NE(err.find("is --checkpoint's sidecar"), std::string::npos) << err;
    EXPECT_EQ(core::read_json_file(vqa / "model.json")["kind"], "vqa");
  }

  // vqa eval: the run's numbers again, and the accuracy recomputed from the predictions file.
  const fs::path preds = root() / "preds.json", res = root() / "eval.json";
  ASSERT_EQ(run("vqa eval --checkpoint " + (vqa / "model.safetensors").string() + " --data " + vqa_set() +
                    " --predictions " + preds.string() + " --result " + res.string(),
                out),
            0);
  const auto ev = core::read_json_file(res);
  EXPECT_NEAR(ev["model"]["accuracy"].get<double>(), vr["test"]["accuracy"].get<double>(), 1e-9);
  EXPECT_NEAR(ev["prior"]["accuracy"].get<double>(), vr["prior"]["accuracy"].get<double>(), 1e-9);
  const auto ann = core::read_json_file(fs::path(vqa_set()) / "test_annotations.json")["annotations"];
  std::map<int64_t, std::vector<std::string>> gt;
  for (const auto& a : ann)
    for (const auto& x : a["answers"]) gt[a["question_id"].get<int64_t>()].push_back(x["answer"].get<std::string>());
  const auto p = core::read_json_file(preds);
  ASSERT_EQ(p.size(), ann.size());
  double sum = 0;
  for (const auto& x : p) sum += vlp::vqa_accuracy(x["answer"].get<std::string>(), gt.at(x["question_id"].get<int64_t>()));
  EXPECT_NEAR(100.0 * sum / double(p.size()), ev["model"]["accuracy"].get<double>(), 1e-9);

  // Resume: stop after 3 of 6 steps, continue: the same final weights as the uninterrupted run.
  const fs::path part = root() / "vqa_part";
  ASSERT_EQ(run(vqa_args(init, part, 6) + " --stop-after-steps 3", out), 0);
  EXPECT_NE(out.find("stopped after step 3/6"), std::string::npos) << out;
  ASSERT_EQ(run("vqa train --resume " + part.string() + " --threads 1", out), 0);
  const auto a = core::load_safetensors((vqa / "model.safetensors").string()).tensors;
  const auto b = core::load_safetensors((part / "model.safetensors").string()).tensors;
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [k, t] : a) EXPECT_TRUE(torch::allclose(t, b.at(k), 1e-5, 1e-6)) << k;

  // vqa ask: top-k answers of the vocabulary, sigmoid scores, best first.
  const auto qs = core::read_json_file(fs::path(vqa_set()) / "test_questions.json");
  const std::string img0 = (fs::path(vqa_set()) / qs["images"][0]["file_name"].get<std::string>()).string();
  const std::string img1 = (fs::path(vqa_set()) / qs["images"][1]["file_name"].get<std::string>()).string();
  const std::string q = qs["questions"][0]["question"];
  ASSERT_EQ(run("vqa ask --checkpoint " + (vqa / "model.safetensors").string() + " --top-k 3 " + img0 + " \"" + q + "\"",
                out),
            0);
  std::stringstream ss(out);
  std::string line;
  double prev = 2;
  int n = 0;
  while (std::getline(ss, line)) {
    const double s = std::stod(line.substr(0, line.find(' ')));
    const std::string ans = line.substr(line.find("  ") + 2);
    EXPECT_GT(s, 0.0);
    EXPECT_LT(s, 1.0);
    EXPECT_LE(s, prev);
    EXPECT_NE(std::find(answers.begin(), answers.end(), ans), answers.end()) << ans;
    prev = s;
    ++n;
  }
  EXPECT_EQ(n, 3);

  // Blind baseline: the answer scores do not depend on the image.
  const fs::path blind = root() / "vqa_blind";
  ASSERT_EQ(run(vqa_args(init, blind, 2) + " --blind --test-split '' --val-split ''", out), 0);
  std::string o0, o1;
  ASSERT_EQ(run("vqa ask --checkpoint " + (blind / "model.safetensors").string() + " " + img0 + " \"" + q + "\"", o0), 0);
  ASSERT_EQ(run("vqa ask --checkpoint " + (blind / "model.safetensors").string() + " " + img1 + " \"" + q + "\"", o1), 0);
  EXPECT_EQ(o0, o1);
  EXPECT_EQ(core::read_json_file(blind / "model.json")["blind"], true);
  // The blind run never uses the image tower (no gradient, so AdamW leaves it alone): its weights are
  // exactly the pretraining run's, which shows the towers were loaded from that checkpoint.
  const auto w0 = core::load_safetensors(init).tensors;
  const auto wb = core::load_safetensors((blind / "model.safetensors").string()).tensors;
  for (const std::string key : {"vit_model.patch_embed.proj.weight", "vit_model.norm.weight"}) {
    ASSERT_TRUE(w0.count(key)) << key;
    EXPECT_TRUE(wb.at(key).equal(w0.at(key))) << key;
  }

  // Bad input: a pretraining checkpoint is not a VQA model.
  EXPECT_NE(run("vqa eval --checkpoint " + init + " --data " + vqa_set(), out, &err), 0);
  EXPECT_NE(err.find("is not a `florence vqa train` model"), std::string::npos) << err;
}

}  // namespace test_vlp_cli
