#pragma once
// Text-to-video retrieval (`florence video retrieval`) on an action set's captions. Zero-shot: a
// two-tower Florence checkpoint's image tower inflated to Video CoSwin (video_model.h) embeds each
// clip of a split; its text tower embeds the clips' captions; cosine similarity ranks them. A
// checkpoint of `video train --task retrieval` (video_text.h) ranks with its trained towers instead.
//   text -> video: one query per distinct caption; every clip with that exact caption is correct;
//   video -> text: one query per clip; its own caption (among the distinct ones) is correct.
// R@1/5/10, median / mean rank and their chance levels are eval::RetrievalMetrics (eval/metrics.h,
// its tie rule). Zero-shot, no video training is involved: the clip embedding is the inflated image
// tower's pooled feature through the checkpoint's image projection.
#include <torch/types.h>

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "florence/adapt/video/embed.h"

namespace florence::video {

struct VideoRetrievalOptions {
  VideoEmbedOptions embed;     ///< checkpoint, video fields, frames, views (embed.h)
  std::string data;            ///< action set root
  std::string split = "test";
  int64_t max_clips = 0;       ///< first N clips of the split (0 = all)
};

/// The distinct strings of `clip_captions` in order of first appearance (the caption queries of
/// caption_retrieval: the captions of the clips that were read).
std::vector<std::string> distinct_captions(const std::vector<std::string>& clip_captions);

/// Ranks clips against their distinct captions. video: [N, D] unit rows, row i a clip whose caption
/// is clip_captions[i]; text: [Q, D] unit rows, row q the embedding of captions[q] (distinct, and
/// every clip caption among them). Text -> video: each caption with at least one clip is a query,
/// its clips the correct items; video -> text: each clip is a query, its caption the correct item.
/// Returns {"num_clips", "num_captions", "t2v", "v2t"} (eval::RetrievalMetrics JSON). Throws
/// florence::Error when the shapes disagree or a clip caption is not in `captions`.
nlohmann::json caption_retrieval(const torch::Tensor& video, const std::vector<std::string>& clip_captions,
                                 const torch::Tensor& text, const std::vector<std::string>& captions);

/// Returns {"task": "video-retrieval", "set", "split", "checkpoint", "num_clips", "num_captions",
/// "t2v": RetrievalMetrics JSON, "v2t": RetrievalMetrics JSON, "skipped", "sampling", "seconds"}.
/// Unreadable clips are skipped and counted (they are not items). Throws florence::Error for a
/// checkpoint without a text tower or vocabulary, a split without captions, or no readable clip.
nlohmann::json video_retrieval(const VideoRetrievalOptions& options);

}  // namespace florence::video
