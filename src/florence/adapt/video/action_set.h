#pragma once
// An action set from real art (`florence data build actions`): short clips of one real sprite
// (sprites.h) doing one of eleven actions over a still background (scene.h), each captioned from
// the sprite's name and colour ("a red car moves to the left"), written as real video files so
// that the same decoder (data/video.h) reads them.
//
// Output (OUT = ActionSetOptions::out_dir):
//   OUT/clips/{train,val,test}/NNNNNN.avi   Motion-JPEG in AVI (OpenCV's built-in MJPG writer,
//                                           no FFmpeg encoder needed), frames x size x size, fps
//   OUT/manifest.jsonl   one clip per line: {path (relative to OUT), caption, action, label,
//                        sprite, sprite_name, category, color, split, frames, fps, width, height,
//                        background, distractors}
//   OUT/{train,val,test}.jsonl   the same lines by split
//   OUT/classes.txt      the action names, one per line, in label order
//   OUT/summary.json     counts per split / action / category, sprite and background summaries,
//                        failures
//
// Actions (label order; motion over the whole clip, the sprite's longer side L ~ U(0.3, 0.45) x
// size unless said otherwise):
//   move_left / move_right / move_up / move_down  straight line over U(0.35, 0.6) x size
//   rotate_cw / rotate_ccw   U(120, 300) degrees about a fixed centre, clockwise as seen on screen
//   grow / shrink            scale U(0.45, 0.6) <-> 1 (L up to 0.55 x size)
//   appear / disappear       fades in / out over 2 frames starting at frame U[T/4, T/2]
//   bounce                   |sin| hops (U(1.5, 2.5) of them) off a floor, height U(0.3, 0.5) x size
// A clip never shows the direction in one frame: start positions, angles and the sprite's mirror
// are random, so left vs right (or cw vs ccw, grow vs shrink) needs two frames or more. Optional
// still distractor sprites (another category) sit behind the actor.
// Held-out clips use held-out sprites: train / val / test clips draw sprites (and background
// photos) of their own split only.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "florence/data/scene.h"
#include "florence/data/sprites.h"

namespace florence::video {

struct ActionSetOptions {
  std::string out_dir;
  data::SpriteBankOptions sprites;
  data::BackgroundOptions backgrounds;
  int frame_size = 64;   ///< square frames, pixels
  int frames = 16;       ///< frames per clip (T)
  double fps = 8;        ///< container frame rate
  int jpeg_quality = 90; ///< MJPG quality (OpenCV VIDEOWRITER_PROP_QUALITY)
  int64_t train_clips = 6160, val_clips = 880, test_clips = 1760;  // --clips 8800 (docs/video.md: 2,200 clips did not train reliably)
  std::vector<std::string> actions;  ///< subset of action_names(); empty = all (labels follow this order)
  int max_distractors = 1;           ///< still sprites behind the actor: U[0, max]
  uint64_t seed = 0;
  int threads = 0;
  bool overwrite = false;
  bool progress = true;
};

/// The eleven actions, in label order.
const std::vector<std::string>& action_names();

/// "a red car moves to the left": article + colour (when given and not already a word of the name)
/// + name + the action's phrase. Throws florence::Error on an unknown action.
std::string action_caption(const std::string& action, const std::string& name, const std::string& color);

/// Where the actor is in one frame.
struct ActorPose {
  double cx = 0, cy = 0;  ///< centre, pixels
  double scale = 1;       ///< times the base longer side
  double angle = 0;       ///< degrees, clockwise on screen
  double opacity = 1;     ///< 0..1
};

/// The poses of `action` over `frames` frames in a size x size frame, for an actor whose base box
/// is base_w x base_h pixels. Throws florence::Error on an unknown action or frames < 2.
std::vector<ActorPose> plan_action(const std::string& action, int frames, int size, double base_w, double base_h,
                                   std::mt19937_64& rng);

/// Builds the set; returns summary.json's content. Throws florence::Error when out_dir holds a set
/// and overwrite is false, options are out of range (an unknown action is named), the sprite bank
/// has no category with sprites in every split, or no video writer opens (names the path).
/// A clip that fails to write is counted in summary["failures"] and logged.
nlohmann::json build_action_set(const ActionSetOptions& options);

}  // namespace florence::video
