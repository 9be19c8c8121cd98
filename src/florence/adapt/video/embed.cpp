// `florence video embed`; see embed.h.
#include "florence/adapt/video/embed.h"

#include "florence/adapt/video/configs.h"
#include "florence/adapt/video/video_model.h"
#include "florence/core/checkpoint.h"
#include "florence/core/error.h"
#include "florence/core/files.h"
#include "florence/core/precision.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <filesystem>

namespace florence::video {

namespace fs = std::filesystem;

namespace {

nlohmann::json info_json(const data::VideoInfo& i) {
  return {{"frames", i.frames},  {"container_frames", i.container_frames}, {"fps", i.fps},
          {"width", i.width},    {"height", i.height},                    {"counted", i.counted}};
}

nlohmann::json sampling_json(const VideoEmbedOptions& o) {
  return {{"frames", o.sampling.frames},
          {"mode", o.sampling.mode == data::SampleMode::kUniform ? "uniform" : "stride"},
          {"stride", o.sampling.stride},
          {"num_clips", o.num_clips},
          {"num_crops", o.num_crops}};
}

}  // namespace

VideoEmbedResult embed_videos(const std::vector<std::string>& paths, const VideoEmbedOptions& o) {
  if (paths.empty()) throw Error("video embed: no video given");
  eval::EvalModel m = eval::load_eval_model(o.load);
  const vision::VideoSwinConfig fields = resolve_video_config(o.video_config.empty() ? "video-nano" : o.video_config);
  vision::VideoSwinConfig cfg = fields;
  cfg.num_frames = o.sampling.frames;
  VideoEncoder enc = inflate_encoder(m.model, cfg);

  VideoEmbedResult r;
  r.config = enc->image_encoder->config();
  r.model_info = m.describe();
  r.model_info["video_config"] = r.config.to_json();

  data::ViewOptions views;
  views.sampling = o.sampling;
  views.num_clips = o.num_clips;
  views.num_crops = o.num_crops;
  views.transform.image_size = m.preprocess.image_size;
  r.image_size = m.preprocess.image_size;
  views.transform.crop_pct = m.preprocess.crop_pct.value_or(0.875);
  views.transform.mean = m.preprocess.mean.value_or(data::kImageNetMean);
  views.transform.std = m.preprocess.std.value_or(data::kImageNetStd);

  const auto start = std::chrono::steady_clock::now();
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> rows;
  const auto encode = [&](const torch::Tensor& clips) {
    AutocastGuard amp(m.model->autocast_bf16(), m.device);  // --precision amp_bf16
    return enc(clips.to(m.device)).to(torch::kCPU, torch::kFloat);
  };
  for (const auto& path : paths) {
    try {
      data::Views v = data::read_views(path, views, o.read);
      torch::Tensor mean = average_views(encode, to_model_layout(v.views), m.preprocess.batch_size);
      rows.push_back(torch::nn::functional::normalize(mean.unsqueeze(0),
                                                      torch::nn::functional::NormalizeFuncOptions().dim(-1)));
      r.keys.push_back(path);
      r.infos.push_back(v.info);
    } catch (const data::VideoError& e) {
      ++r.skipped[e.reason()];
      r.skipped_paths.push_back(path);
      spdlog::warn("video embed: skipping {} ({})", path, e.what());
    }
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (rows.empty()) throw Error(fmt::format("video embed: none of the {} videos could be read (see the log)", paths.size()));
  r.embeds = torch::cat(rows, 0).to(torch::kFloat32).contiguous();
  return r;
}

void save_video_embeddings(const VideoEmbedResult& r, const VideoEmbedOptions& o, const std::string& path) {
  if (!r.embeds.defined() || r.embeds.size(0) == 0) throw Error("save_video_embeddings: nothing to write");
  nlohmann::json videos = nlohmann::json::array();
  for (const auto& i : r.infos) videos.push_back(info_json(i));
  const nlohmann::json info{{"format", 1},
                            {"model", r.model_info},
                            {"video_config", r.config.to_json()},
                            {"keys", r.keys},
                            {"videos", videos},
                            {"skipped", r.skipped},
                            {"skipped_paths", r.skipped_paths},
                            {"sampling", sampling_json(o)},
                            {"normalized", "L2, unit rows"}};
  if (fs::path(path).has_parent_path()) fs::create_directories(fs::path(path).parent_path());
  core::save_safetensors(path, {{"video_embeds", r.embeds}},
                         {{"florence.video_embed", info.dump()}, {"keys", nlohmann::json(r.keys).dump()}});
  core::write_text_atomic(fs::path(path).replace_extension(".json"), info.dump(2) + "\n");
}

}  // namespace florence::video
