// florence video embed --checkpoint CKPT VIDEO... [--frames 8] [--mode uniform|stride] [--stride 2]
//                      [--clips 1] [--crops 1] [--video-config NAME|JSON] [--out E.safetensors]
// florence video info [CONFIG] [--frames T] [--size S]
// florence video train --data ACTIONS --out RUN (--checkpoint CKPT | --model NAME) [--input video|single-frame]
//                      [--frames 8] [--freeze-tower] [--epochs N | --steps N] [--resume [RUN]] [--result FILE]
// florence video train --task retrieval --data ACTIONS --out RUN --checkpoint FLORENCE_CKPT [--video-init ACTION_CKPT]
// florence video eval --checkpoint RUN/model.safetensors --data ACTIONS [--split test] [--clips 2] [--crops 1]
// florence video retrieval --checkpoint FLORENCE_CKPT|VIDEO_TEXT_CKPT --data ACTIONS [--split test] [--frames 8] [--clips 1]
#include <fmt/format.h>

#include <iostream>

#include "command.h"
#include "eval_flags.h"
#include "run_flags.h"
#include "florence/adapt/video/configs.h"
#include "florence/adapt/video/action_train.h"
#include "florence/adapt/video/embed.h"
#include "florence/adapt/video/retrieval.h"
#include "florence/adapt/video/video_text.h"
#include "florence/eval/metrics.h"
#include "florence/eval/standard.h"
#include "florence/model/info.h"

namespace {

using namespace florence;

void setup_video_embed(CLI::App& root) {
  auto* grp = cli::group(root, "video", "Video CoSwin: a Florence image tower inflated to video");
  auto* cmd = grp->add_subcommand("embed", "L2-normalised clip embeddings in a two-tower checkpoint's joint space");
  auto f = std::make_shared<cli::EvalFlags>();
  auto o = std::make_shared<video::VideoEmbedOptions>();
  auto mode = std::make_shared<std::string>("uniform");
  auto videos = std::make_shared<std::vector<std::string>>();
  auto out = std::make_shared<std::string>();
  cli::add_eval_flags(cmd, f);
  std::string names;
  for (const auto& n : video::video_config_names()) names += (names.empty() ? "" : ", ") + n;
  cmd->add_option("--video-config", o->video_config,
                  "Video fields (tube, merging, temporal windows): " + names + " or a JSON file (default: video-nano's)");
  cmd->add_option("--frames", o->sampling.frames, "Frames per clip")->capture_default_str()->check(cli::positive());
  cmd->add_option("--mode", *mode, "Frame sampling: uniform (spread over the video) | stride (consecutive)")
      ->capture_default_str()
      ->check(CLI::IsMember({"uniform", "stride"}));
  cmd->add_option("--stride", o->sampling.stride, "Frame step in stride mode")->capture_default_str()->check(cli::positive());
  cmd->add_option("--clips", o->num_clips, "Temporal clips averaged per video")->capture_default_str()->check(cli::positive());
  cmd->add_option("--crops", o->num_crops, "Spatial crops averaged per video (3 = left/centre/right)")
      ->capture_default_str()
      ->check(cli::positive());
  cmd->add_flag("--count-frames", o->read.count_frames, "Decode every video once to count its frames (exact)");
  cmd->add_option("--out", *out, "Output .safetensors (video_embeds [N, D]; keys and video info in metadata + OUT.json)");
  cmd->add_option("videos", *videos, "Video files (anything FFmpeg decodes)")->required();
  cmd->callback([=] {
    video::VideoEmbedOptions opts = *o;
    opts.load = f->resolve();
    opts.sampling.mode = data::parse_sample_mode(*mode);
    video::VideoEmbedResult r = video::embed_videos(*videos, opts);
    for (size_t i = 0; i < r.keys.size(); ++i) {
      const auto& v = r.infos[i];
      std::cout << fmt::format("{}: {}x{}, {} frames{} at {:.3g} fps\n", r.keys[i], v.width, v.height, v.frames,
                               v.counted ? fmt::format(" (decoded; the container says {})", v.container_frames) : "",
                               v.fps);
    }
    for (const auto& p : r.skipped_paths) std::cout << p << ": skipped (see the log)\n";
    if (r.keys.size() > 1) {
      std::cout << "cosine similarity of the clip embeddings:\n";
      torch::Tensor sim = torch::matmul(r.embeds, r.embeds.t());
      for (int64_t i = 0; i < sim.size(0); ++i) {
        std::cout << " ";
        for (int64_t j = 0; j < sim.size(1); ++j) std::cout << fmt::format(" {:6.3f}", sim[i][j].item<double>());
        std::cout << "\n";
      }
    }
    if (!out->empty()) video::save_video_embeddings(r, opts, *out);
    const double gflops = video::count_video(r.config, opts.sampling.frames, r.image_size, r.image_size).gflops();
    std::cout << fmt::format("{} clip embeddings, D = {}, {} x {} frames of {} px per video ({:.2f} GFLOPs per view), "
                             "{:.1f} s{}{}\n",
                             r.keys.size(), r.embeds.size(1), opts.num_clips * opts.num_crops, opts.sampling.frames,
                             r.image_size, gflops, r.seconds,
                             r.skipped_paths.empty() ? "" : fmt::format(", {} skipped", r.skipped_paths.size()),
                             out->empty() ? "" : ", wrote " + *out);
  });
}

void setup_video_info(CLI::App& root) {
  auto* grp = cli::group(root, "video", "Video CoSwin: a Florence image tower inflated to video");
  auto* cmd = grp->add_subcommand("info", "Parameters and compute of a Video CoSwin config for one clip");
  auto name = std::make_shared<std::string>("video-nano");
  auto frames = std::make_shared<int>(0);
  auto size = std::make_shared<int>(0);
  cmd->add_option("config", *name, "Registered video config or JSON file")->capture_default_str();
  cmd->add_option("--frames", *frames, "Frames per clip (default: the config's num_frames)")->check(cli::non_negative());
  cmd->add_option("--size", *size, "Frame size in pixels (default: the image tower's image_size)")
      ->check(cli::non_negative());
  cmd->callback([=] {
    const vision::VideoSwinConfig c = video::resolve_video_config(*name);
    const int t = *frames > 0 ? *frames : c.num_frames, s = *size > 0 ? *size : c.image.image_size;
    const model::Counts v = video::count_video(c, t, s, s);
    const model::Counts i = model::count_vision(c.image, s, s);
    std::string windows;
    for (int k = 0; k < c.image.num_stages(); ++k) {
      const auto w = c.window(k);
      windows += fmt::format("{}({},{},{})", k ? " " : "", w[0], w[1], w[2]);
    }
    std::cout << fmt::format("{}: {} frames of {} px, tube {}, merging kernel/stride/padding {}/{}/{} in time, "
                             "windows {}\n",
                             *name, t, s, c.tube, c.merge.kernel, c.merge.stride, c.merge.padding, windows);
    std::cout << fmt::format("  video tower: {:.2f}M parameters, {:.2f} GFLOPs per clip\n", v.params / 1e6, v.gflops());
    std::cout << fmt::format("  image tower: {:.2f}M parameters, {:.2f} GFLOPs per frame ({:.2f} GFLOPs for {} frames)\n",
                             i.params / 1e6, i.gflops(), i.gflops() * t, t);
  });
}

/// "top-1 81.23 %  top-5 99.10 %  mean per-class 81.00 %  (440 clips, 2 x 1 views, chance 9.09 %)"
std::string metrics_line(const nlohmann::json& r) {
  const auto& m = r["metrics"];
  const auto& v = r["views"];
  return fmt::format("top-1 {:.2f} %  top-5 {:.2f} %  mean per-class {:.2f} %  ({} clips, {} x {} views, chance {:.2f} %, "
                     "p {})",
                     100 * m["top1"].get<double>(), 100 * m["top5"].get<double>(), 100 * m["mean_per_class"].get<double>(),
                     m["num_samples"].get<int64_t>(), v["clips"].get<int>(), v["crops"].get<int>(),
                     100 * m["chance"]["top1"].get<double>(), eval::format_p_value(m["p_value"]["top1"].get<double>()));
}

/// The t2v and v2t lines of a caption_retrieval result (retrieval.h).
void print_retrieval(const nlohmann::json& r) {
  for (const char* dir : {"t2v", "v2t"}) {
    const auto& m = r[dir];
    std::cout << fmt::format("{}: R@1 {:.2f} %  R@5 {:.2f} %  R@10 {:.2f} %  median rank {}  ({} queries, {} items; "
                             "chance R@1 {:.2f} %)\n",
                             std::string(dir) == "t2v" ? "text -> video" : "video -> text", 100 * m["R@1"].get<double>(),
                             100 * m["R@5"].get<double>(), 100 * m["R@10"].get<double>(), m["median_rank"].dump(),
                             m["num_queries"].get<int64_t>(), m["num_items"].get<int64_t>(),
                             100 * m["chance"]["R@1"].get<double>());
  }
}

void setup_video_train(CLI::App& root) {
  auto* grp = cli::group(root, "video", "Video CoSwin: a Florence image tower inflated to video");
  auto* cmd = grp->add_subcommand(
      "train",
      "Train on an action set: --task actions (the inflated tower + a linear head) or --task retrieval (video-text "
      "contrastive on the captions)");
  auto o = std::make_shared<video::VideoTrainOptions>();
  auto resume = std::make_shared<std::string>();
  auto result = std::make_shared<std::string>();
  cli::add_run_flags(cmd, *o);
  cmd->add_option("--resume", *resume, "Continue a run: RUN_DIR or checkpoint (without a value: --out)")->expected(0, 1);
  cmd->add_option("--result", *result, "Also write the result JSON here (e.g. RUN/eval/video.json for florence report)");
  cmd->callback([cmd, o, resume, result] {
    if (cmd->count("--steps") > 0 && o->steps < 1) throw Error(fmt::format("--steps must be >= 1, got {}", o->steps));
    if (cmd->count("--epochs") > 0 && o->epochs < 1) throw Error(fmt::format("--epochs must be >= 1, got {}", o->epochs));
    if (o->threads == 0) o->threads = cli::requested_threads();
    video::VideoTrainOptions run = *o;
    if (cmd->count("--resume") > 0) {
      const std::string target = resume->empty() ? o->out_dir : *resume;
      if (target.empty()) throw Error("--resume without a value needs --out RUN_DIR");
      run = cli::resume_merge(cmd, video::load_video_train_options(target), *o);
      run.resume = target;
    }
    if (run.task != "actions" && run.task != "retrieval")
      throw Error(fmt::format("--task must be actions or retrieval, got '{}'", run.task));
    const auto r = run.task == "retrieval" ? video::train_video_text(run) : video::train_actions(run);
    if (r.interrupted) {
      std::cout << fmt::format("stopped after step {}/{}; resume with: florence video train --resume {}\n", r.steps_done,
                               r.total_steps, r.run_dir);
      return;
    }
    if (!result->empty()) eval::write_json_file(*result, r.result);
    std::cout << fmt::format("trained {} steps ({:.0f} s); loss {:.4f} -> {:.4f} (mean of first / last 10)\n",
                             r.steps_done, r.seconds, r.first_loss_mean, r.last_loss_mean);
    if (r.result.contains("val_top1"))
      std::cout << fmt::format("val top-1 {:.2f} % (1 view)\n", 100 * r.result["val_top1"].get<double>());
    if (r.result.contains("metrics")) std::cout << "test " << metrics_line(r.result) << "\n";
    if (r.result.contains("val_t2v_r1"))
      std::cout << fmt::format("val text -> video R@1 {:.2f} % (1 view)\n", 100 * r.result["val_t2v_r1"].get<double>());
    if (r.result.contains("test")) print_retrieval(r.result["test"]);
    std::cout << "weights " << r.final_weights << "\n";
  });
}

void setup_video_eval(CLI::App& root) {
  auto* grp = cli::group(root, "video", "Video CoSwin: a Florence image tower inflated to video");
  auto* cmd = grp->add_subcommand("eval", "Top-1 / top-5 of a `video train` model on an action set split (multi-view)");
  auto o = std::make_shared<video::VideoEvalOptions>();
  auto result = std::make_shared<std::string>();
  cmd->add_option("--checkpoint", o->checkpoint, "Weights of `florence video train` (RUN/model.safetensors)")->required();
  cmd->add_option("--data", o->data, "Action set root")->required();
  cmd->add_option("--split", o->split, "Split")->capture_default_str();
  cmd->add_option("--clips", o->clips, "Temporal views averaged per clip")->capture_default_str()->check(cli::positive());
  cmd->add_option("--crops", o->crops, "Spatial views averaged per clip")->capture_default_str()->check(cli::positive());
  cmd->add_option("--max-clips", o->max_clips, "First N clips of the split (0 = all)")->check(cli::non_negative());
  cmd->add_option("--device", o->device, "Torch device")->capture_default_str();
  cli::add_adapter_precision(cmd, &o->precision);
  cmd->add_option("--result", *result, "Write the result JSON here");
  cmd->callback([o, result] {
    const nlohmann::json r = video::evaluate_actions(*o);
    if (!result->empty()) eval::write_json_file(*result, r);
    std::cout << fmt::format("{} {} ({} input, {} frames): ", r["set"].get<std::string>(), o->split,
                             r["input"].get<std::string>(), r["frames"].get<int>())
              << metrics_line(r) << fmt::format(", {:.1f} s\n", r["seconds"].get<double>());
  });
}

void setup_video_retrieval(CLI::App& root) {
  auto* grp = cli::group(root, "video", "Video CoSwin: a Florence image tower inflated to video");
  auto* cmd = grp->add_subcommand("retrieval",
                                  "Text-to-video retrieval (R@1/5/10) on an action set's captions: zero-shot from a two-tower checkpoint, or a `video train --task retrieval` model");
  auto f = std::make_shared<cli::EvalFlags>();
  auto o = std::make_shared<video::VideoRetrievalOptions>();
  auto result = std::make_shared<std::string>();
  cli::add_eval_flags(cmd, f, true);
  cmd->add_option("--data", o->data, "Action set root (florence data build actions)")->required();
  cmd->add_option("--split", o->split, "Split")->capture_default_str();
  cmd->add_option("--video-config", o->embed.video_config, "Video fields (default: video-nano's)");
  cmd->add_option("--frames", o->embed.sampling.frames, "Frames per clip")->capture_default_str()->check(cli::positive());
  cmd->add_option("--clips", o->embed.num_clips, "Temporal views averaged per clip")->capture_default_str()->check(cli::positive());
  cmd->add_option("--crops", o->embed.num_crops, "Spatial views averaged per clip")->capture_default_str()->check(cli::positive());
  cmd->add_option("--max-clips", o->max_clips, "First N clips of the split (0 = all)")->check(cli::non_negative());
  cmd->add_option("--result", *result, "Write the result JSON here");
  cmd->callback([f, o, result] {
    video::VideoRetrievalOptions opts = *o;
    opts.embed.load = f->resolve();
    // Action clips: the whole frame (actors move up to its edges) unless --crop-pct is given.
    if (!opts.embed.load.preprocess.crop_pct) opts.embed.load.preprocess.crop_pct = 1.0;
    const nlohmann::json r = video::video_retrieval(opts);
    if (!result->empty()) eval::write_json_file(*result, r);
    print_retrieval(r);
  });
}

}  // namespace

FLORENCE_COMMAND(setup_video_embed);
FLORENCE_COMMAND(setup_video_info);
FLORENCE_COMMAND(setup_video_train);
FLORENCE_COMMAND(setup_video_eval);
FLORENCE_COMMAND(setup_video_retrieval);
