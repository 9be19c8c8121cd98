#pragma once
// Scene compositor shared by the adapters' data sets (detection_set, vqa_set, action_set):
// backgrounds, sprite transforms, alpha compositing with an owner map (who is visible where),
// per-item seeding and a small parallel loop.
//
// Images are 8-bit RGB (CV_8UC3, R,G,B order) and sprites 8-bit RGBA (CV_8UC4), as in
// transforms.h / sprites.h. Randomness is drawn from std::mt19937_64 through uniform01 /
// uniform_int (transforms.h), never std::*_distribution, so a seed gives the same set on every
// platform; each item (scene, clip) has its own generator seeded by item_seed(), so the output is
// the same for any thread count.
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "florence/data/sprites.h"

namespace florence::data {

/// pycocotools COCOeval Params.setDetParams areaRng: small < 32^2 <= medium < 96^2 <= large
/// (pixels of the annotation's "area").
inline constexpr double kCocoSmallMaxArea = 32.0 * 32.0;
inline constexpr double kCocoMediumMaxArea = 96.0 * 96.0;
/// "small" | "medium" | "large" by the ranges above.
std::string coco_area_class(double area);

/// Seed of item `index` of stream `stream` ("detection/train", ...) under the run's `seed`:
/// splitmix64 over seed, FNV-1a(stream) and index.
uint64_t item_seed(uint64_t seed, const std::string& stream, uint64_t index);

/// Runs fn(0..n-1) on `threads` workers (0 = hardware cores; at most n). The first exception
/// thrown by fn stops the loop (items not started are skipped) and is rethrown here.
void parallel_for_index(size_t n, int threads, const std::function<void(size_t)>& fn);

/// Uniform double in [lo, hi).
double uniform_range(std::mt19937_64& rng, double lo, double hi);
/// Index drawn with probability proportional to weights[i] (weights >= 0, sum > 0).
size_t weighted_choice(std::mt19937_64& rng, const std::vector<double>& weights);

// ---------------------------------------------------------------------------------------------
// Backgrounds
// ---------------------------------------------------------------------------------------------

struct BackgroundOptions {
  /// Folder of real photos (any OpenCV-readable images, not recursive). Default: the example
  /// images of Debian's opencv-doc (photos of rooms, fruit, a baboon, buildings, paintings, ...).
  /// Missing or empty: no photo backgrounds (their share goes to the generated kinds; logged).
  std::string photos_dir = "/usr/share/doc/opencv-doc/examples/data";
  /// Kind probabilities: a blurred random crop of a photo, a two-colour linear gradient,
  /// smooth colour noise (a random 3x3..8x8 colour grid upscaled bicubically, plus pixel noise),
  /// a plain colour with pixel noise. Normalised; must not all be 0.
  double p_photo = 0.45, p_gradient = 0.2, p_noise = 0.2, p_plain = 0.15;
  double max_blur_sigma = 1.5;  ///< photo crops: Gaussian blur sigma ~ U(0, max)
  int min_photo_side = 128;     ///< smaller photos are not used (counted)
  int train_pct = 70, val_pct = 10;  ///< photos are split by split_of(file name) like sprites
};

/// Photo store + background generator. Immutable after construction; make() is thread-safe.
class BackgroundBank {
 public:
  /// Decodes the photos (each shrunk to <= 512 px on its longer side). Unreadable or small files
  /// are counted in summary()["skipped"]. Throws florence::Error on bad probabilities.
  explicit BackgroundBank(const BackgroundOptions& options = {});
  /// A width x height RGB background for a scene of `split`. Photos are taken from the split's
  /// photos (all photos when the split has none). `kind` (optional) receives the kind's name.
  cv::Mat make(int width, int height, const std::string& split, std::mt19937_64& rng, std::string* kind = nullptr) const;
  /// {photos_dir, photos{train,val,test}, skipped, probabilities}.
  nlohmann::json summary() const;
  size_t photo_count() const { return photos_.size(); }

 private:
  BackgroundOptions opt_;
  std::vector<cv::Mat> photos_;
  std::map<std::string, std::vector<size_t>> by_split_;
  int64_t skipped_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Sprites on a canvas
// ---------------------------------------------------------------------------------------------

/// Resizes an RGBA sprite to width x height with premultiplied alpha (no dark fringes):
/// INTER_AREA when shrinking, INTER_LINEAR when enlarging. Throws florence::Error on size < 1.
cv::Mat resize_sprite(const cv::Mat& rgba, int width, int height);
/// Rotates an RGBA sprite by `degrees` CLOCKWISE on screen about its centre, on a canvas grown
/// to hold the whole rotated sprite (premultiplied, bilinear, transparent outside).
cv::Mat rotate_sprite(const cv::Mat& rgba, double degrees);
/// Horizontal mirror.
cv::Mat flip_sprite(const cv::Mat& rgba);

/// An RGB canvas that remembers, per pixel, which pasted object is visible there: the last one
/// pasted whose alpha at that pixel is >= 128 (after the opacity factor). Objects are numbered
/// 0, 1, ... in paste order.
class SceneCanvas {
 public:
  /// Takes a CV_8UC3 RGB background (copied). Throws florence::Error for another type.
  explicit SceneCanvas(const cv::Mat& background);
  /// Composites `rgba` (CV_8UC4) with its top-left corner at (x, y); parts outside the canvas are
  /// clipped. opacity in [0, 1] scales the sprite's alpha. Returns the object's id.
  int paste(const cv::Mat& rgba, int x, int y, double opacity = 1.0);
  /// Pixels of object `id` that would stay visible if `rgba` were pasted at (x, y) now, divided
  /// by the pixels it covered when pasted (1 when it covered none): occlusions accumulate.
  double visible_fraction_after(int id, const cv::Mat& rgba, int x, int y) const;

  struct Visible {
    int64_t pixels = 0;  ///< visible (owned) pixels
    cv::Rect box;        ///< their bounding box (empty when pixels == 0), pixels [x, x+width)
  };
  Visible visible(int id) const;
  /// Pixels each object covered when it was pasted (alpha >= 128, inside the canvas).
  int64_t pasted_pixels(int id) const { return pasted_.at(size_t(id)); }
  int objects() const { return int(pasted_.size()); }
  const cv::Mat& image() const { return image_; }
  const cv::Mat& owners() const { return owner_; }  ///< CV_32SC1, -1 = background

 private:
  cv::Mat image_, owner_;
  std::vector<int64_t> pasted_, visible_;
};

/// `rgba` scaled so its longer side is `longer_side` pixels (>= 1; aspect kept), mirrored when
/// `flip`.
cv::Mat scaled_sprite(const cv::Mat& rgba, double longer_side, bool flip);

/// Pastes `rgba` at the first of up to `tries` uniformly drawn positions that lie inside the
/// canvas and keep every earlier object at >= min_visible of its visible pixels. Returns the
/// object id, or -1 (nothing pasted) when no position works or the sprite is larger than the
/// canvas.
int place_sprite(SceneCanvas& canvas, const cv::Mat& rgba, double min_visible, int tries, std::mt19937_64& rng);

/// A uniformly drawn sprite index of `category` in `split`. Throws florence::Error when there is
/// none.
size_t draw_sprite(const SpriteBank& bank, int category, const std::string& split, std::mt19937_64& rng);

/// A still scene of several sprites (detection and VQA sets).
struct ComposeOptions {
  int width = 160, height = 160;
  int min_objects = 2, max_objects = 6;  ///< drawn uniformly in [min, max]
  double p_repeat_category = 0.0;        ///< a further sprite takes a category already placed
  double min_visible = 0.5;              ///< see place_sprite
  int tries = 30;                        ///< positions tried per sprite
  double p_flip = 0.5;                   ///< horizontal mirror
};

struct ComposedScene {
  struct Object {
    size_t sprite = 0;     ///< index into the bank's sprites()
    int category = -1;
    cv::Rect box;          ///< visible box (owner map), pixels
    int64_t area = 0;      ///< visible pixels
    int64_t full_area = 0; ///< pixels covered when pasted
  };
  cv::Mat image;           ///< RGB
  std::string background;  ///< kind (BackgroundBank::make)
  std::vector<Object> objects;      ///< paste order
  int64_t placement_failures = 0;   ///< sprites drawn but not placed (no position kept the rest visible)
};

/// Draws the object count, then per object a category (uniform over `categories`, or with
/// p_repeat_category one already placed), a sprite of it in `split`, its longer side from
/// `longer_side(rng, sprite)`, a flip, and a position (place_sprite). Throws florence::Error when
/// `categories` is empty or a category has no sprite in `split`.
ComposedScene compose_scene(const SpriteBank& bank, const BackgroundBank& backgrounds, const std::string& split,
                            const std::vector<int>& categories, const ComposeOptions& options,
                            const std::function<double(std::mt19937_64&, const Sprite&)>& longer_side,
                            std::mt19937_64& rng);

/// Encodes an RGB image as PNG and writes it (parent folder must exist; temporary name, then
/// rename). Throws florence::Error naming the path on failure.
void write_rgb_png(const std::string& path, const cv::Mat& rgb);

/// Throws florence::Error when `out_dir` is empty or not a folder, or when it holds one of the set's
/// files/folders `owned` (relative to out_dir) and `overwrite` is false (naming the entry and
/// --overwrite). Touches nothing: builders call it first, before any work.
void check_set_dir(const std::string& out_dir, const std::vector<std::string>& owned, bool overwrite,
                   const std::string& what);
/// check_set_dir, then creates `out_dir` and removes the owned entries that exist (builders call it
/// only once every input and option has been checked, so a failing rebuild leaves the old set).
/// Other files in out_dir are left alone.
void prepare_set_dir(const std::string& out_dir, const std::vector<std::string>& owned, bool overwrite,
                     const std::string& what);

/// Human-readable lines of a scene set's summary.json (detection, vqa, actions): per split the
/// images/clips and boxes/questions, unseen categories, failures, seconds.
std::string format_scene_set_summary(const nlohmann::json& summary);

/// "a" or "an" for the word that follows (by its first letter: a e i o u -> "an").
std::string indefinite_article(const std::string& word);

}  // namespace florence::data
