#pragma once
// Sprite bank: the cut-out art that the adapters' scene sets (detection, VQA, actions) compose.
//
// Sprites come from the real corpora that `florence data build openclipart|emoji` writes
// (WebDataset shards DIR/{train,val,test}/*.tar, see corpus.h); any corpus whose KEY.json carries
// "source" and a folder/category works the same way. Per sample:
//   - category: the sample's group ("openclipart:animals/birds", "emoji:Animals & Nature/animal-bird",
//     see sprite_group) matched against a category table (default_sprite_categories(), or a JSON
//     file); samples of no listed category are not used;
//   - split: split_of(corpus key, train_pct, val_pct) (sample.h: FNV-1a bucket mod 100). With the
//     defaults 70/10 a sprite is in test for buckets 80-99, which contain every sprite of the
//     corpus's own val and test splits (buckets 90-99 of its 90/5/5): a sprite held out of
//     pretraining is never a scene-training sprite. Duplicates (meta "duplicate_of") and emoji
//     skin-tone variants are dropped, so no art reaches two splits under another key;
//   - alpha: the shards hold images flattened onto white, so the matte is recovered:
//       "source": the emoji package's own RGBA PNG (DIR/img/google/64/KEY.png), exact;
//       "keyed":  key_white_background() of the shard image (OpenClipArt, or emoji without the
//                 package): near-white pixels connected to the border are background, their
//                 non-background neighbours get alpha unmixed against white, the rest is opaque.
//                 White regions enclosed by the art stay opaque; a white region that touches the
//                 border through a gap in the outline is lost (a known limitation);
//   - name: a short English name from the sample's text (sprite_name), for questions and captions;
//   - colour: the dominant palette colour of the opaque pixels (dominant_colour).
// Loading is deterministic (sprites sorted by key) and independent of the thread count.
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace florence::data {

/// One category of the scene sets and the corpus groups it takes its sprites from.
struct SpriteCategory {
  std::string name;                   ///< singular, as questions/answers/captions use it ("bird")
  std::string plural;                 ///< "birds" (count questions)
  std::vector<std::string> synonyms;  ///< other words annotators answer with ("birdie")
  /// "SOURCE:PATTERN" (group_matches): "openclipart:animals/birds" (that folder and below),
  /// "openclipart:=people" (that folder only), "emoji:Smileys & Emotion/face-*" (prefix).
  std::vector<std::string> groups;
  bool unseen = false;  ///< held out of detection training (the zero-shot categories)
};

/// The built-in table: 26 categories drawn from OpenClipArt folders and emoji subcategories,
/// 5 of them unseen (bird, fruit, boat, building, clock). Chosen so each has >= ~35 sprites
/// before the split (docs/detection.md, docs/vqa.md and docs/video.md describe the scene sets built from them).
const std::vector<SpriteCategory>& default_sprite_categories();

/// Table from JSON: {"categories": [{"name", "plural"?, "synonyms"?, "groups", "unseen"?}, ...]}
/// (plural defaults to name + "s"). Throws florence::Error naming `origin` and the entry on a
/// missing/empty name or groups, a group without "SOURCE:", or a repeated name.
std::vector<SpriteCategory> sprite_categories_from_json(const nlohmann::json& j, const std::string& origin);
/// The default table for an empty path, else the JSON file. Throws florence::Error (file, entry).
std::vector<SpriteCategory> load_sprite_categories(const std::string& path);
nlohmann::json sprite_categories_to_json(const std::vector<SpriteCategory>& categories);

/// A sample's group path from its meta: openclipart -> "folder" ("animals/birds"; "" for files at
/// the root); others -> "category" + "/" + "subcategory" when both exist, else "folder", else
/// "category".
std::string sprite_group(const nlohmann::json& meta);
/// Whether "SOURCE:PATTERN" covers (source, group); PATTERN rules as in SpriteCategory::groups.
bool group_matches(const std::string& pattern, const std::string& source, const std::string& group);
/// Index of the first category covering (source, group), or -1.
int find_sprite_category(const std::vector<SpriteCategory>& categories, const std::string& source,
                         const std::string& group);

// ---------------------------------------------------------------------------------------------
// Pixels: matte and colour
// ---------------------------------------------------------------------------------------------

/// Recovers an RGBA image (CV_8UC4, R,G,B,A order) from art composited on white (CV_8UC3 RGB):
/// background = pixels with 255 - min(R,G,B) <= tolerance that are 4-connected to the image
/// border through such pixels (alpha 0); fringe = other pixels with a background 4-neighbour:
/// alpha a = max_c (255 - p_c) / 255 (the least alpha that explains p over white) and colour
/// unmixed, f_c = (p_c - 255 (1 - a)) / a (exact for edges of art with a zero channel, e.g. black
/// outlines); everything else is opaque as it is. Throws florence::Error for another type.
cv::Mat key_white_background(const cv::Mat& rgb, int tolerance = 8);

/// Crops an RGBA image to the bounding box of alpha > 0; an empty Mat when no pixel is visible.
cv::Mat crop_to_alpha(const cv::Mat& rgba);

/// The colour names of the palette, in a fixed order:
/// red orange yellow green blue purple pink brown black white gray.
const std::vector<std::string>& colour_palette();
/// Palette name of one 8-bit RGB colour (HSV rules: dark -> black; unsaturated -> white/gray;
/// else by hue: red < 15 <= orange < 45 <= yellow < 70 <= green < 165 <= blue < 255 <= purple <
/// 315 <= pink < 340 <= red, with dark red/orange/yellow -> brown and pale red -> pink).
std::string colour_name(uint8_t r, uint8_t g, uint8_t b);
/// Colours an annotator may confuse with `name` (near misses for VQA answers).
const std::vector<std::string>& similar_colours(const std::string& name);

struct DominantColour {
  std::string name;   ///< most frequent palette name over pixels with alpha >= 128 ("" if none)
  double share = 0;   ///< its fraction of those pixels
};
DominantColour dominant_colour(const cv::Mat& rgba);

/// Short English name (<= 4 words, lower case) for a sprite: emoji -> meta "name"; others ->
/// meta "title" or else the text's first sentence; lower-cased, anything from " by ", " - ",
/// " with ", "(", ":" or "," on dropped, '_'/'-' -> ' ', words without a letter or with a
/// non-ASCII character and filler words ("clipart", "clip", "art",
/// "icon", "vector", "svg", "png", "image", "picture", "drawing", "cartoon", "simple") dropped.
/// Returns "" when nothing is left (the caller falls back to the category name).
std::string sprite_name(const std::string& source, const nlohmann::json& meta, const std::string& text);

// ---------------------------------------------------------------------------------------------
// The bank
// ---------------------------------------------------------------------------------------------

struct Sprite {
  std::string key;         ///< "SOURCE/CORPUS_KEY", unique in the bank
  std::string corpus_key;  ///< the sample key in its corpus
  std::string source;      ///< meta "source" ("openclipart", "emoji", ...)
  std::string group;       ///< sprite_group(meta)
  int category = -1;       ///< index into SpriteBank::categories()
  std::string name;        ///< sprite_name(), else the category name
  std::string text;        ///< the corpus caption
  std::string split;       ///< "train" | "val" | "test"
  std::string alpha;       ///< "source" | "keyed"
  cv::Mat rgba;            ///< CV_8UC4, R,G,B,A, cropped to alpha > 0
  DominantColour colour;
};

struct SpriteBankOptions {
  /// Corpus folders written by `florence data build` (their {train,val,test}/*.tar, or *.tar
  /// directly inside). Sprites are identified by SOURCE/KEY, so two corpora of one source with
  /// the same keys keep the first.
  std::vector<std::string> corpora;
  std::string categories_file;  ///< "" = default_sprite_categories()
  /// Unpacked emoji-datasource-google package for exact emoji alpha; "" = default_emoji_dir().
  /// When missing, emoji are keyed like the others (logged once).
  std::string emoji_dir;
  int train_pct = 70, val_pct = 10;  ///< sprite split (see top)
  /// At most this many sprites per category (0 = all), the ones with the smallest
  /// FNV-1a hash of their key, so the split proportions hold. Bounds memory and the weight
  /// of very large folders (OpenClipArt's 1,378 stars).
  int64_t max_per_category = 400;
  int min_side = 8;  ///< sprites whose opaque box has a side below this (pixels) are dropped
  int threads = 0;   ///< decode/key workers (0 = hardware cores)
  bool progress = true;
};

class SpriteBank {
 public:
  /// Reads the corpora. Per-sample problems are counted in skips() and logged, never thrown:
  /// duplicate, skin_tone_variant, no_category, over_cap, undecodable, empty_alpha, too_small,
  /// duplicate_key, plus the shard readers' own counts (shard_corrupt, ...). Throws
  /// florence::Error when no corpus is given, a folder has no shard, the category table is bad,
  /// or no sprite is left.
  static SpriteBank load(const SpriteBankOptions& options);
  /// A bank from given parts (tests). Sprites are sorted by key. Throws florence::Error when a
  /// sprite's category is out of range or its split is not train/val/test.
  SpriteBank(std::vector<SpriteCategory> categories, std::vector<Sprite> sprites);
  SpriteBank() = default;

  const std::vector<SpriteCategory>& categories() const { return categories_; }
  const std::vector<Sprite>& sprites() const { return sprites_; }
  /// Indices into sprites() of `category` in `split` (empty for an unknown split).
  const std::vector<size_t>& of(int category, const std::string& split) const;
  /// Categories with at least `min_sprites` sprites in every one of `splits`.
  std::vector<int> usable_categories(const std::vector<std::string>& splits, size_t min_sprites) const;
  const std::map<std::string, int64_t>& skips() const { return skips_; }
  /// {sprites, categories{name: {train,val,test}}, sources{..}, alpha{source,keyed}, skips{..}}.
  nlohmann::json summary() const;

 private:
  void index();
  std::vector<SpriteCategory> categories_;
  std::vector<Sprite> sprites_;
  std::map<std::string, int64_t> skips_;
  std::vector<std::map<std::string, std::vector<size_t>>> by_category_;
};

}  // namespace florence::data
