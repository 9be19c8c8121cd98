// Text-to-video retrieval on an action set; see retrieval.h.
#include "florence/adapt/video/retrieval.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <set>

#include "florence/adapt/video/action_train.h"
#include "florence/adapt/video/video_text.h"
#include "florence/core/device.h"
#include "florence/core/error.h"
#include "florence/eval/encode.h"
#include "florence/eval/metrics.h"
#include "florence/text/tokenizer.h"

namespace florence::video {

std::vector<std::string> distinct_captions(const std::vector<std::string>& clip_captions) {
  std::vector<std::string> out;
  std::set<std::string> seen;
  for (const auto& c : clip_captions)
    if (seen.insert(c).second) out.push_back(c);
  return out;
}

nlohmann::json caption_retrieval(const torch::Tensor& video, const std::vector<std::string>& clip_captions,
                                 const torch::Tensor& text, const std::vector<std::string>& captions) {
  if (video.dim() != 2 || text.dim() != 2 || video.size(1) != text.size(1) || video.size(0) != int64_t(clip_captions.size()) ||
      text.size(0) != int64_t(captions.size()) || captions.empty() || clip_captions.empty())
    throw Error(fmt::format("caption_retrieval: video [{}] for {} clips and text [{}] for {} captions do not fit",
                            fmt::join(video.sizes(), ", "), clip_captions.size(), fmt::join(text.sizes(), ", "),
                            captions.size()));
  std::map<std::string, int64_t> caption_id;
  for (size_t q = 0; q < captions.size(); ++q) caption_id.emplace(captions[q], int64_t(q));
  std::vector<int64_t> item;
  for (const auto& c : clip_captions) {
    const auto it = caption_id.find(c);
    if (it == caption_id.end()) throw Error(fmt::format("caption_retrieval: clip caption '{}' is not a query", c));
    item.push_back(it->second);
  }
  const torch::Tensor item_groups = torch::tensor(item, torch::kLong);
  const torch::Tensor query_groups = torch::arange(int64_t(captions.size()), torch::kLong);
  const torch::Tensor sim = torch::matmul(text.to(torch::kFloat), video.to(torch::kFloat).t());  // [Q, N]
  // Captions whose clips were all unreadable have no correct item: dropped from the t2v queries.
  const torch::Tensor relevant = eval::relevance_from_groups(query_groups, item_groups);
  const torch::Tensor keep = relevant.any(1).nonzero().squeeze(1);
  const eval::RetrievalMetrics t2v = eval::retrieval_metrics(sim.index_select(0, keep), relevant.index_select(0, keep));
  const eval::RetrievalMetrics v2t =
      eval::retrieval_metrics(sim.t().contiguous(), eval::relevance_from_groups(item_groups, query_groups));
  return {{"num_clips", clip_captions.size()},
          {"num_captions", captions.size()},
          {"t2v", t2v.to_json()},
          {"v2t", v2t.to_json()}};
}

namespace {

/// A `video train --task retrieval` checkpoint: its own video and text towers and input spec.
nlohmann::json trained_retrieval(const VideoRetrievalOptions& o, const std::vector<ActionClip>& clips,
                                 data::SkipCounts& skipped) {
  const torch::Device device = parse_device(o.embed.load.device);
  LoadedVideoText m = load_video_text(o.embed.load.checkpoint, device, o.embed.load.vocab);
  spdlog::info("video retrieval: '{}' is a trained video-text model: it samples as it was trained ({} input, {} "
               "frames of {} px, its own video config); --frames, --video-config, --model and the preprocessing "
               "flags do not apply",
               o.embed.load.checkpoint, m.input.input, m.input.frames, m.input.image_size);
  if (o.embed.load.precision != "fp32")
    spdlog::warn("video retrieval: a trained video-text model runs in fp32 (--precision {} ignored)",
                 o.embed.load.precision);
  nlohmann::json r = rank_clips(m.model, *m.tokenizer, clips, m.input, o.embed.num_clips, o.embed.num_crops,
                                device, skipped);
  r["video_config"] = m.model->video_config().to_json();
  r["input"] = m.input.to_json();
  r["model"] = "video-text (trained)";
  return r;
}

}  // namespace

nlohmann::json video_retrieval(const VideoRetrievalOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  if (o.data.empty()) throw Error("video retrieval: --data is required");
  ActionSplit split = read_action_split(o.data, o.split);
  data::SkipCounts skipped = split.skipped;
  std::vector<ActionClip> clips = captioned_clips(std::move(split.clips), skipped, "video retrieval");
  if (clips.empty()) throw Error(fmt::format("video retrieval: split '{}' of '{}' has no captioned clip", o.split, o.data));
  if (o.max_clips > 0 && int64_t(clips.size()) > o.max_clips) clips.resize(size_t(o.max_clips));

  nlohmann::json r;
  if (is_video_text_checkpoint(o.embed.load.checkpoint)) {
    r = trained_retrieval(o, clips, skipped);
  } else {
    // Zero-shot. The text tower and vocabulary are checked before any decoding; the captions
    // ranked are those of the clips that were read (as the trained path's rank_clips).
    eval::EvalModel m = eval::load_eval_model(o.embed.load);
    eval::require_tokenizer(m, "video retrieval");
    std::vector<std::string> paths;
    std::map<std::string, std::string> caption_of;
    for (const auto& c : clips) {
      paths.push_back(c.path);
      caption_of[c.path] = c.caption;
    }
    const VideoEmbedResult v = embed_videos(paths, o.embed);  // [N, D], unreadable clips skipped
    std::vector<std::string> row_captions;
    for (const auto& k : v.keys) row_captions.push_back(caption_of.at(k));
    const std::vector<std::string> captions = distinct_captions(row_captions);
    const torch::Tensor text = eval::encode_texts(m, captions);  // [Q, D]
    r = caption_retrieval(v.embeds, row_captions, text, captions);
    r["video_config"] = v.config.to_json();
    r["model"] = "zero-shot (inflated image tower)";
    for (const auto& [k, n] : v.skipped) skipped[k] += n;
  }
  spdlog::info("video retrieval: {} clips, {} distinct captions: text->video R@1 {:.2f} % (chance {:.2f} %)",
               r["num_clips"].get<int64_t>(), r["num_captions"].get<int64_t>(), 100 * r["t2v"]["R@1"].get<double>(),
               100 * r["t2v"]["chance"]["R@1"].get<double>());
  r["task"] = "video-retrieval";
  r["set"] = std::filesystem::path(o.data).lexically_normal().filename().string();
  r["split"] = o.split;
  r["checkpoint"] = o.embed.load.checkpoint;
  r["skipped"] = skipped;
  // A trained checkpoint samples as it was trained (its "input"); zero-shot as --frames says.
  const int frames = r.contains("input") ? r["input"]["frames"].get<int>() : o.embed.sampling.frames;
  r["sampling"] = {{"frames", frames}, {"clips", o.embed.num_clips}, {"crops", o.embed.num_crops}};
  r["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace florence::video
