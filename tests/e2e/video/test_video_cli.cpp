// End to end through the `florence` binary on a tiny action set built from the real sprite
// fixtures (tests/support/sprite_corpora.h): `video train` (run folder, metrics, test metrics with
// multi-view), `video eval` of its weights (the same numbers), resume after an interruption (the
// same final weights as the uninterrupted run), and bad input (a corrupt clip and bad manifest
// lines are counted skips, a training split where half the clips are garbage trains and resumes
// exactly; a checkpoint that is not a video model is a clear error); and the
// retrieval side: zero-shot `video retrieval` of a two-tower checkpoint, `video train --task
// retrieval` (video-text contrastive) and `video retrieval` of its weights (the same numbers).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "florence/adapt/video/action_set.h"
#include "florence/core/checkpoint.h"
#include "florence/core/precision.h"
#include "florence/model/florence.h"
#include "florence/model/io.h"
#include "florence/model/registry.h"
#include "support/cli.h"
#include "support/files.h"
#include "support/paths.h"
#include "support/sprite_corpora.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_video_cli {

using namespace florence;
namespace fs = std::filesystem;

namespace {

fs::path root() {
  static const fs::path d = test::fresh_scratch("e2e_video_cli");
  return d;
}

/// Runs the CLI in root(); see test::run_cli.
int run(const std::string& args, std::string& out, std::string* err = nullptr) {
  return test::run_cli(root(), args, out, err);
}

/// 11 actions x (2 train, 1 val, 1 test) clips of 8 frames, 48 px.
const std::string& action_set() {
  static const std::string dir = [] {
    const fs::path out = root() / "actions";
    video::ActionSetOptions o;
    o.out_dir = out.string();
    o.sprites = test::test_sprite_options();
    o.train_clips = 22, o.val_clips = 11, o.test_clips = 11;
    o.frames = 8, o.frame_size = 48;
    o.seed = 5;
    o.overwrite = true;
    o.progress = false;
    video::build_action_set(o);
    return out.string();
  }();
  return dir;
}

// Small and fast: random-init florence-nano, 4 frames (2 time tokens), batch 4.
std::string train_args(const fs::path& out) {
  return "video train --data " + action_set() + " --out " + out.string() +
         " --model florence-nano --frames 4 --batch-size 4 --steps 3 --lr 1e-3 --test-clips 2 --threads 1 --seed 7";
}

torch::Tensor weights_of(const fs::path& path, const std::string& key) {
  return core::load_safetensors(path.string()).tensors.at(key);
}

}  // namespace

TEST(VideoCli, TrainEvalResumeAndBadInput) {
  if (!test::sprite_sources_available()) GTEST_SKIP() << "needs openclipart-svg, librsvg2-bin and emoji-datasource-google (scripts/setup)";
  std::string out, err;
  const fs::path run_dir = root() / "run";
  ASSERT_EQ(run(train_args(run_dir), out), 0);
  EXPECT_NE(out.find("trained 3 steps"), std::string::npos) << out;
  EXPECT_NE(out.find("test top-1"), std::string::npos) << out;

  // The run folder: 3 finite losses, the final weights with the video entry, the test metrics.
  const auto metrics = test::read_jsonl(run_dir / "metrics.jsonl");
  ASSERT_EQ(metrics.size(), 3u);
  for (const auto& m : metrics) EXPECT_TRUE(std::isfinite(m["loss"].get<double>())) << m;
  EXPECT_TRUE(metrics.back().contains("val_top1"));  // the last step ends the run: validation
  const nlohmann::json side = nlohmann::json::parse(test::read_text(run_dir / "model.json"));
  ASSERT_TRUE(side.contains("video"));
  EXPECT_EQ(side["video"]["frames"], 4);
  EXPECT_EQ(side["video"]["classes"].size(), 11u);
  EXPECT_EQ(side["video"]["config"]["num_classes"], 11);
  const nlohmann::json res = nlohmann::json::parse(test::read_text(run_dir / "result.json"));
  EXPECT_EQ(res["task"], "video-actions");
  EXPECT_EQ(res["num_train"], 22);
  EXPECT_EQ(res["metrics"]["num_samples"], 11);
  EXPECT_EQ(res["metrics"]["num_classes"], 11);
  EXPECT_NEAR(res["metrics"]["chance"]["top1"].get<double>(), 1.0 / 11, 1e-12);
  EXPECT_GE(res["metrics"]["top5"].get<double>(), res["metrics"]["top1"].get<double>());
  EXPECT_EQ(res["views"]["clips"], 2);
  const auto head = weights_of(run_dir / "model.safetensors", "head.weight");
  EXPECT_EQ(head.sizes(), (std::vector<int64_t>{11, 192}));
  // Inflated stem: [C, 3, tube, 7, 7].
  EXPECT_EQ(weights_of(run_dir / "model.safetensors", "patch_embed.proj.weight").sizes(),
            (std::vector<int64_t>{48, 3, 2, 7, 7}));

  // --precision amp_bf16 (bfloat16 autocast, float32 loss; float32 where the CPU lacks bfloat16):
  // the same first batch and init give a loss within 2% of float32's, and every loss is finite.
  const fs::path run_amp = root() / "run_amp";
  ASSERT_EQ(run(train_args(run_amp) + " --precision amp_bf16", out), 0);
  const auto amp_metrics = test::read_jsonl(run_amp / "metrics.jsonl");
  ASSERT_EQ(amp_metrics.size(), 3u);
  for (const auto& m : amp_metrics) EXPECT_TRUE(std::isfinite(m["loss"].get<double>())) << m;
  const double l32 = metrics.front()["loss"].get<double>(), l16 = amp_metrics.front()["loss"].get<double>();
  EXPECT_NEAR(l16, l32, 0.02 * l32);
  // What ran is recorded; where it is bfloat16, the weights move differently from float32's.
  const nlohmann::json amp_res = nlohmann::json::parse(test::read_text(run_amp / "result.json"));
  EXPECT_EQ(res["precision"], "fp32");
  if (florence::resolve_precision(florence::Precision::kAmpBf16, torch::kCPU, "test") == florence::Precision::kAmpBf16) {
    EXPECT_EQ(amp_res["precision"], "amp_bf16");
    const double moved = (weights_of(run_amp / "model.safetensors", "head.weight") -
                          weights_of(run_dir / "model.safetensors", "head.weight"))
                             .abs()
                             .max()
                             .item<double>();
    EXPECT_GT(moved, 0.0);
  } else {
    EXPECT_EQ(amp_res["precision"], "fp32");  // the CPU check fell back (core/precision.h)
  }

  // `video eval` of the final weights with the same views: the same confusion matrix.
  const fs::path eval_json = root() / "eval.json";
  ASSERT_EQ(run("video eval --checkpoint " + (run_dir / "model.safetensors").string() + " --data " + action_set() +
                    " --clips 2 --result " + eval_json.string(),
                out),
            0);
  const nlohmann::json ev = nlohmann::json::parse(test::read_text(eval_json));
  EXPECT_EQ(ev["metrics"]["confusion"], res["metrics"]["confusion"]);
  EXPECT_DOUBLE_EQ(ev["metrics"]["top1"].get<double>(), res["metrics"]["top1"].get<double>());
  EXPECT_NE(out.find("top-1"), std::string::npos) << out;

  // Interrupted after 2 steps, then resumed: the uninterrupted run's final weights.
  const fs::path run2 = root() / "run_resumed";
  ASSERT_EQ(run(train_args(run2) + " --stop-after-steps 2", out), 0);
  EXPECT_NE(out.find("stopped after step 2/3"), std::string::npos) << out;
  ASSERT_EQ(run("video train --resume " + run2.string() + " --threads 1", out), 0);
  for (const char* key : {"head.weight", "patch_embed.proj.weight", "layers.0.blocks.0.attn.qkv.weight"}) {
    const double diff =
        (weights_of(run2 / "model.safetensors", key) - weights_of(run_dir / "model.safetensors", key)).abs().max().item<double>();
    EXPECT_LE(diff, 1e-6) << key;
  }
  // The loss summary covers the whole run (the steps before the resume too), as uninterrupted;
  // resuming the finished run again changes nothing in it.
  const auto summary = [](const fs::path& dir) {
    return nlohmann::json::parse(test::read_text(dir / "result.json"))["train_loss"];
  };
  EXPECT_NEAR(summary(run2)["first10"].get<double>(), summary(run_dir)["first10"].get<double>(), 1e-6);
  EXPECT_NEAR(summary(run2)["last10"].get<double>(), summary(run_dir)["last10"].get<double>(), 1e-6);
  ASSERT_EQ(run("video train --resume " + run2.string() + " --threads 1", out), 0);
  EXPECT_NEAR(summary(run2)["first10"].get<double>(), summary(run_dir)["first10"].get<double>(), 1e-6);
  EXPECT_GT(summary(run2)["first10"].get<double>(), 0.0);

  // Bad input: a garbage clip and two bad manifest lines are counted skips, the rest is scored.
  {
    std::ofstream(fs::path(action_set()) / "clips" / "garbage.avi") << "this is not a video";
    std::string lines = test::read_text(fs::path(action_set()) / "test.jsonl");
    const size_t first_end = lines.find('\n');
    nlohmann::json first = nlohmann::json::parse(lines.substr(0, first_end));
    first["path"] = "clips/garbage.avi";
    lines = first.dump() + "\n" + lines.substr(first_end + 1) + "{not json\n" +
            R"({"path": "clips/test/000000.avi", "label": 99})" + "\n";
    std::ofstream(fs::path(action_set()) / "broken.jsonl") << lines;
  }
  ASSERT_EQ(run("video eval --checkpoint " + (run_dir / "model.safetensors").string() + " --data " + action_set() +
                    " --split broken --clips 1 --result " + eval_json.string(),
                out),
            0);
  const nlohmann::json broken = nlohmann::json::parse(test::read_text(eval_json));
  EXPECT_EQ(broken["metrics"]["num_samples"], 10);
  EXPECT_EQ(broken["skipped"]["not_a_video"], 1) << broken["skipped"];
  EXPECT_EQ(broken["skipped"]["bad_json"], 1) << broken["skipped"];
  EXPECT_EQ(broken["skipped"]["bad_label"], 1) << broken["skipped"];

  // Training over a split where half the clips are garbage: each unreadable clip is counted and
  // the next clip takes its place (every batch full, no job lost); a pass over the 22 readable
  // clips is 5 batches of 4, so 7 steps cross into a second epoch, and validation runs at the end
  // of the first pass although the plan's epoch is 11 batches. A run interrupted at the pass's
  // last batch resumes at the clip where the reader stood (the checkpoint's data_cursor), ending
  // with the uninterrupted run's weights and skip count.
  {
    std::string lines = test::read_text(fs::path(action_set()) / "train.jsonl"), mixed;
    for (size_t at = 0, end; (end = lines.find('\n', at)) != std::string::npos; at = end + 1) {
      nlohmann::json line = nlohmann::json::parse(lines.substr(at, end - at));
      mixed += line.dump() + "\n";
      line["path"] = "clips/garbage.avi";
      mixed += line.dump() + "\n";
    }
    std::ofstream(fs::path(action_set()) / "halfbad.jsonl") << mixed;
  }
  const auto halfbad_args = [&](const fs::path& out_dir) {
    return "video train --data " + action_set() + " --out " + out_dir.string() +
           " --model florence-nano --frames 4 --batch-size 4 --steps 7 --lr 1e-3 --threads 1 --seed 7"
           " --train-split halfbad --test-split ''";
  };
  const fs::path bad_full = root() / "run_halfbad", bad_resumed = root() / "run_halfbad_resumed";
  ASSERT_EQ(run(halfbad_args(bad_full), out), 0) << out;
  const auto bad_metrics = test::read_jsonl(bad_full / "metrics.jsonl");
  ASSERT_EQ(bad_metrics.size(), 7u);
  for (const auto& m : bad_metrics) EXPECT_TRUE(std::isfinite(m["loss"].get<double>())) << m;
  EXPECT_EQ(bad_metrics[4]["epoch"], 0);
  EXPECT_TRUE(bad_metrics[4].contains("val_top1")) << bad_metrics[4];  // the end of the first pass
  EXPECT_FALSE(bad_metrics[3].contains("val_top1")) << bad_metrics[3];
  EXPECT_EQ(bad_metrics[5]["epoch"], 1);
  EXPECT_TRUE(bad_metrics[6].contains("val_top1"));  // the run's end
  const nlohmann::json bad_res = nlohmann::json::parse(test::read_text(bad_full / "result.json"));
  const int64_t bad_skips = bad_res["train_unreadable"].get<int64_t>();
  EXPECT_GT(bad_skips, 0) << bad_res;
  ASSERT_EQ(run(halfbad_args(bad_resumed) + " --stop-after-steps 5", out), 0) << out;
  const nlohmann::json cursor = nlohmann::json::parse(test::read_text(
      bad_resumed / "checkpoints" / "step_0000005.json"))["train_state"]["data_cursor"];
  // 5 full batches of 4 readable clips were returned, then the tail (2 readable clips, too few
  // for a batch, and the garbage among them) was passed: its lines are read only while they could
  // still fill a batch, so 20-22 readable clips and all but the last few lines are behind the cursor.
  EXPECT_EQ(cursor["epoch"], 0) << cursor;
  const int64_t readable_passed = cursor["item"].get<int64_t>() - cursor["skipped"].get<int64_t>();
  EXPECT_TRUE(readable_passed >= 20 && readable_passed <= 22) << cursor;
  EXPECT_GE(cursor["item"].get<int64_t>(), 40) << cursor;
  EXPECT_GT(cursor["skipped"].get<int64_t>(), 0) << cursor;
  ASSERT_EQ(run("video train --resume " + bad_resumed.string() + " --threads 1", out), 0) << out;
  for (const char* key : {"head.weight", "patch_embed.proj.weight"}) {
    const double diff = (weights_of(bad_resumed / "model.safetensors", key) - weights_of(bad_full / "model.safetensors", key))
                            .abs()
                            .max()
                            .item<double>();
    EXPECT_LE(diff, 1e-6) << key;
  }
  EXPECT_EQ(nlohmann::json::parse(test::read_text(bad_resumed / "result.json"))["train_unreadable"], bad_skips);

  // A two-tower checkpoint is not a video action model: a clear error, exit status 1.
  const fs::path two_tower = root() / "nano" / "model.safetensors";
  fs::create_directories(two_tower.parent_path());
  {
    const model::ModelSpec spec = model::resolve_model("florence-nano");
    model::FlorenceModel m(*spec.florence);
    model::save_checkpoint(*m, spec, two_tower.string());
  }
  EXPECT_NE(run("video eval --checkpoint " + two_tower.string() + " --data " + action_set(), out, &err), 0);
  EXPECT_NE(err.find("not a video action checkpoint"), std::string::npos) << err;
  // A missing data folder names the problem.
  EXPECT_NE(run("video train --data " + (root() / "nothing").string() + " --out " + (root() / "run_bad").string() +
                    " --model florence-nano --steps 1",
                out, &err),
            0);
  EXPECT_NE(err.find("classes.txt"), std::string::npos) << err;
}

TEST(VideoCli, RetrievalZeroShotTrainAndRank) {
  if (!test::sprite_sources_available()) GTEST_SKIP() << "needs openclipart-svg, librsvg2-bin and emoji-datasource-google (scripts/setup)";
  std::string out, err;
  // A random two-tower florence-nano checkpoint whose sidecar names the CLIP vocabulary.
  const fs::path two_tower = root() / "nano_vocab" / "model.safetensors";
  fs::create_directories(two_tower.parent_path());
  {
    torch::manual_seed(3);
    const model::ModelSpec spec = model::resolve_model("florence-nano");
    model::FlorenceModel m(*spec.florence);
    model::save_checkpoint(*m, spec, two_tower.string(), torch::kFloat, {{"vocab", std::string(FLORENCE_SHARED_DIR) + "/data/clip/bpe_simple_vocab_16e6.txt.gz"}});
  }
  // The test split: 11 clips, each with its own caption (distinct sprites and actions).
  std::set<std::string> captions;
  for (const auto& j : test::read_jsonl(fs::path(action_set()) / "test.jsonl")) captions.insert(j["caption"].get<std::string>());

  // Zero-shot: the inflated image tower against the text tower.
  const fs::path zs = root() / "zero_shot.json";
  ASSERT_EQ(run("video retrieval --checkpoint " + two_tower.string() + " --data " + action_set() + " --frames 4 --result " +
                    zs.string(),
                out, &err),
            0)
      << err;
  const nlohmann::json z = nlohmann::json::parse(test::read_text(zs));
  EXPECT_EQ(z["num_clips"], 11);
  EXPECT_EQ(z["num_captions"], captions.size());
  EXPECT_EQ(z["t2v"]["num_queries"], captions.size());
  EXPECT_EQ(z["v2t"]["num_queries"], 11);
  EXPECT_EQ(z["model"], "zero-shot (inflated image tower)");

  // Video-text contrastive training: 4 steps of batch 4 from the inflated towers.
  const fs::path run_dir = root() / "run_vt";
  const std::string args = "video train --task retrieval --data " + action_set() + " --checkpoint " + two_tower.string() +
                           " --out " + run_dir.string() +
                           " --frames 4 --batch-size 4 --steps 4 --lr 1e-3 --test-clips 2 --threads 1 --seed 7";
  ASSERT_EQ(run(args, out, &err), 0) << err;
  EXPECT_NE(out.find("text -> video: R@1"), std::string::npos) << out;
  const auto metrics = test::read_jsonl(run_dir / "metrics.jsonl");
  ASSERT_EQ(metrics.size(), 4u);
  for (const auto& m : metrics) {
    EXPECT_TRUE(std::isfinite(m["loss"].get<double>())) << m;
    EXPECT_GT(m["tau"].get<double>(), 0.0) << m;
  }
  EXPECT_TRUE(metrics.back().contains("val_t2v_r1"));
  const nlohmann::json res = nlohmann::json::parse(test::read_text(run_dir / "result.json"));
  EXPECT_EQ(res["task"], "video-text");
  EXPECT_EQ(res["num_train"], 22);
  EXPECT_EQ(res["test"]["num_clips"], 11);
  EXPECT_EQ(res["test"]["t2v"]["num_queries"], captions.size());
  EXPECT_NEAR(res["test"]["t2v"]["chance"]["R@1"].get<double>(), 1.0 / 11, 1e-9);
  EXPECT_TRUE(fs::exists(run_dir / "vocab.bpe.gz"));  // the run folder carries its vocabulary (gzip as given)
  const nlohmann::json side = nlohmann::json::parse(test::read_text(run_dir / "model.json"));
  EXPECT_EQ(side["video_text"], true);
  EXPECT_EQ(side["video"]["frames"], 4);
  // The saved tower is the 3D one ([C, 3, tube, 7, 7] stem); training moved both towers.
  const auto trained = core::load_safetensors((run_dir / "model.safetensors").string()).tensors;
  const auto init = core::load_safetensors(two_tower.string()).tensors;
  EXPECT_EQ(trained.at("image_encoder.patch_embed.proj.weight").sizes(), (std::vector<int64_t>{48, 3, 2, 7, 7}));
  EXPECT_GT((trained.at("text_projection") - init.at("text_projection")).abs().max().item<double>(), 1e-6);
  EXPECT_GT((trained.at("image_projection") - init.at("image_projection")).abs().max().item<double>(), 1e-6);

  // `video retrieval` of the trained weights with the same views: the same ranks as the run's test.
  const fs::path again = root() / "trained_retrieval.json";
  ASSERT_EQ(run("video retrieval --checkpoint " + (run_dir / "model.safetensors").string() + " --data " + action_set() +
                    " --clips 2 --result " + again.string(),
                out, &err),
            0)
      << err;
  const nlohmann::json a = nlohmann::json::parse(test::read_text(again));
  EXPECT_EQ(a["model"], "video-text (trained)");
  EXPECT_EQ(a["sampling"]["frames"], 4);  // the checkpoint's own, not --frames' default
  for (const char* dir : {"t2v", "v2t"}) {
    EXPECT_NEAR(a[dir]["R@1"].get<double>(), res["test"][dir]["R@1"].get<double>(), 1e-12) << dir;
    EXPECT_NEAR(a[dir]["mean_rank"].get<double>(), res["test"][dir]["mean_rank"].get<double>(), 1e-9) << dir;
  }

  // Bad input: clear errors, exit status 1.
  const std::string base = "video train --data " + action_set() + " --frames 4 --batch-size 4 --steps 1 --threads 1 --out ";
  EXPECT_NE(run(base + (root() / "bad1").string() + " --task ranking --checkpoint " + two_tower.string(), out, &err), 0);
  EXPECT_NE(err.find("--task must be actions or retrieval"), std::string::npos) << err;
  EXPECT_NE(run(base + (root() / "bad2").string() + " --task retrieval --model florence-nano", out, &err), 0);
  EXPECT_NE(err.find("--checkpoint (a two-tower Florence checkpoint"), std::string::npos) << err;
  EXPECT_NE(run(base + (root() / "bad3").string() + " --task retrieval --checkpoint " + two_tower.string() +
                    " --video-init " + two_tower.string(),
                out, &err),
            0);
  EXPECT_NE(err.find("is not a `video train` action checkpoint"), std::string::npos) << err;
  EXPECT_NE(run(base + (root() / "bad4").string() + " --task retrieval --checkpoint " + two_tower.string() +
                    " --freeze-tower",
                out, &err),
            0);
  EXPECT_NE(err.find("--freeze-tower is for --task actions"), std::string::npos) << err;
  EXPECT_NE(run("video train --data " + action_set() + " --frames 4 --batch-size 1 --steps 1 --threads 1 --out " +
                    (root() / "bad5").string() + " --task retrieval --checkpoint " + two_tower.string(),
                out, &err),
            0);
  EXPECT_NE(err.find("--batch-size >= 2"), std::string::npos) << err;
  // A video-text model is not an action model for `video eval`, nor a two-tower init.
  EXPECT_NE(run("video eval --checkpoint " + (run_dir / "model.safetensors").string() + " --data " + action_set(), out,
                &err),
            0);
  EXPECT_NE(err.find("is a video-text model"), std::string::npos) << err;
  EXPECT_NE(run(base + (root() / "bad6").string() + " --task retrieval --checkpoint " +
                    (run_dir / "model.safetensors").string(),
                out, &err),
            0);
  EXPECT_NE(err.find("is a video-text model already"), std::string::npos) << err;
  // Resuming with another input is refused (the checkpoint's frames are not silently replaced).
  EXPECT_NE(run("video train --resume " + run_dir.string() + " --steps 6 --frames 8", out, &err), 0);
  EXPECT_NE(err.find("was trained with --input video --frames 4"), std::string::npos) << err;
  // An action model's weights are not a video-text checkpoint for `video retrieval`: its sidecar
  // has no text tower (a clear error, not a crash).
  const fs::path two_tower_novocab = root() / "nano" / "model.safetensors";
  if (fs::exists(two_tower_novocab)) {
    EXPECT_NE(run("video retrieval --checkpoint " + two_tower_novocab.string() + " --data " + action_set(), out, &err), 0);
    EXPECT_NE(err.find("vocab"), std::string::npos) << err;
  }
}

}  // namespace test_video_cli
