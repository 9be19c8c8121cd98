// Zero-shot text-to-video retrieval on an action set; see retrieval.h.
#include "florence/adapt/video/retrieval.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <chrono>
#include <filesystem>
#include <map>

#include "florence/adapt/video/action_train.h"
#include "florence/core/error.h"
#include "florence/eval/encode.h"
#include "florence/eval/metrics.h"

namespace florence::video {

nlohmann::json video_retrieval(const VideoRetrievalOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  if (o.data.empty()) throw Error("video retrieval: --data is required");
  const ActionSplit split = read_action_split(o.data, o.split);
  std::vector<ActionClip> clips;
  for (const auto& c : split.clips)
    if (!c.caption.empty()) clips.push_back(c);
  if (clips.empty()) throw Error(fmt::format("video retrieval: split '{}' of '{}' has no captioned clip", o.split, o.data));
  if (o.max_clips > 0 && int64_t(clips.size()) > o.max_clips) clips.resize(size_t(o.max_clips));

  // Text side first: a checkpoint without a text tower or vocabulary fails before any decoding.
  eval::EvalModel m = eval::load_eval_model(o.embed.load);
  eval::require_tokenizer(m, "video eval --task retrieval");
  std::map<std::string, int64_t> caption_id;
  std::vector<std::string> captions;
  for (const auto& c : clips)
    if (caption_id.emplace(c.caption, int64_t(captions.size())).second) captions.push_back(c.caption);
  const torch::Tensor text = eval::encode_texts(m, captions);  // [Q, D]

  std::vector<std::string> paths;
  std::map<std::string, int64_t> id_of_path;
  for (const auto& c : clips) {
    paths.push_back(c.path);
    id_of_path[c.path] = caption_id.at(c.caption);
  }
  const VideoEmbedResult v = embed_videos(paths, o.embed);  // [N, D], unreadable clips skipped
  std::vector<int64_t> video_caption;
  for (const auto& k : v.keys) video_caption.push_back(id_of_path.at(k));
  const torch::Tensor item_groups = torch::tensor(video_caption, torch::kLong);
  const torch::Tensor query_groups = torch::arange(int64_t(captions.size()), torch::kLong);

  const torch::Tensor sim = torch::matmul(text, v.embeds.t());  // [Q, N]
  // Captions whose clips were all unreadable have no correct item: dropped from the t2v queries.
  const torch::Tensor relevant = eval::relevance_from_groups(query_groups, item_groups);
  const torch::Tensor has_item = relevant.any(1);
  const torch::Tensor keep = has_item.nonzero().squeeze(1);
  const eval::RetrievalMetrics t2v = eval::retrieval_metrics(sim.index_select(0, keep), relevant.index_select(0, keep));
  const eval::RetrievalMetrics v2t =
      eval::retrieval_metrics(sim.t().contiguous(), eval::relevance_from_groups(item_groups, query_groups));
  data::SkipCounts skipped = split.skipped;
  for (const auto& [k, n] : v.skipped) skipped[k] += n;
  spdlog::info("video retrieval: {} clips, {} distinct captions: text->video R@1 {:.2f} % (chance {:.2f} %)",
               v.keys.size(), captions.size(), 100 * t2v.recall.at(1), 100 * t2v.chance_recall.at(1));
  return {{"task", "video-retrieval"},
          {"set", std::filesystem::path(o.data).lexically_normal().filename().string()},
          {"split", o.split},
          {"checkpoint", o.embed.load.checkpoint},
          {"video_config", v.config.to_json()},
          {"num_clips", v.keys.size()},
          {"num_captions", captions.size()},
          {"t2v", t2v.to_json()},
          {"v2t", v2t.to_json()},
          {"skipped", skipped},
          {"sampling", {{"frames", o.embed.sampling.frames}, {"clips", o.embed.num_clips}, {"crops", o.embed.num_crops}}},
          {"seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()}};
}

}  // namespace florence::video
