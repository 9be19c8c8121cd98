#pragma once
// Named Video CoSwin configurations and their analytic size / compute.
//
//   video-nano     florence-nano's image tower (3 stages, C = 48, window 4, 64 px) at 8 frames:
//                  tube 2 -> 4 time tokens; windows (2,4,4) (2,4,4) (4,4,4): stage 2's shifted block
//                  shifts time by 1 (temporal mask used), stage 3 attends over the whole clip.
//   video-coswin-h coswin-h (the registry's CoSwin-H, 633M) at 32 frames of 224 px, tube 2 ->
//                  16 time tokens; windows (2,7,7) (4,7,7) (8,7,7) (8,7,7).
// Florence §2.5 gives the three changes (3D tokenizer, 3D-conv patch merging, 3D shifted windows),
// the inflation rules and "small windows early, large windows late"; it does not give the tube,
// the temporal kernel of the merging, the window sizes, the frame count or resolution. Ours follow
// Video Swin's Kinetics recipe where one exists (2x4x4 tubes, 32 frames at 224 px, temporal window
// 8 in the late stages) and keep the image tower's spatial window, which keeps inflation exact.
#include <string>
#include <vector>

#include "florence/model/info.h"
#include "florence/vision/video_swin.h"

namespace florence::video {

/// Registered names, sorted.
std::vector<std::string> video_config_names();

/// A registered name, or the path of a JSON file holding a VideoSwinConfig (video_swin.h keys;
/// "image" may be a registered tower name instead of an object). Throws florence::Error naming
/// the problem (unknown name with the known ones, unreadable file, bad JSON, invalid field).
vision::VideoSwinConfig resolve_video_config(const std::string& name_or_path);

/// The video fields of `video` (tube, merging, temporal windows, frames, classes) on another image
/// tower: what `florence video embed` does with the checkpoint's tower. The spatial windows become
/// the tower's window_size (so inflation stays exact); when the tower's number of stages differs
/// from the windows list, the windows fall back to the default rule (video_swin.h).
vision::VideoSwinConfig with_image_tower(const vision::VideoSwinConfig& video, const vision::SwinConfig& image);

/// Parameters and multiply-accumulates of one clip of T x H x W (model::Counts conventions of
/// model/info.h: matmuls and convs, attention over padded windows; norms, softmax, GELU excluded).
model::Counts count_video(const vision::VideoSwinConfig& c, int frames, int height, int width);

}  // namespace florence::video
