#pragma once
// Zero-shot text-to-video retrieval (`florence video eval --task retrieval`): a two-tower Florence
// checkpoint's image tower inflated to Video CoSwin (video_model.h) embeds each clip of an action
// set split; its text tower embeds the clips' captions; cosine similarity ranks them.
//   text -> video: one query per distinct caption; every clip with that exact caption is correct;
//   video -> text: one query per clip; its own caption (among the distinct ones) is correct.
// R@1/5/10, median / mean rank and their chance levels are eval::RetrievalMetrics (eval/metrics.h,
// its tie rule). No video training is involved: the clip embedding is the inflated image tower's
// pooled feature through the checkpoint's image projection.
#include <nlohmann/json.hpp>

#include <string>

#include "florence/adapt/video/embed.h"

namespace florence::video {

struct VideoRetrievalOptions {
  VideoEmbedOptions embed;     ///< checkpoint, video fields, frames, views (embed.h)
  std::string data;            ///< action set root
  std::string split = "test";
  int64_t max_clips = 0;       ///< first N clips of the split (0 = all)
};

/// Returns {"task": "video-retrieval", "set", "split", "checkpoint", "num_clips", "num_captions",
/// "t2v": RetrievalMetrics JSON, "v2t": RetrievalMetrics JSON, "skipped", "sampling", "seconds"}.
/// Unreadable clips are skipped and counted (they are not items). Throws florence::Error for a
/// checkpoint without a text tower or vocabulary, a split without captions, or no readable clip.
nlohmann::json video_retrieval(const VideoRetrievalOptions& options);

}  // namespace florence::video
