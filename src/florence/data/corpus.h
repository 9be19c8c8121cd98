#pragma once
// Corpus builders: turn the real data sets available on a Debian machine into WebDataset shards
//   OUT/{train,val,test}/000000.tar ...   (see webdataset.h for the member layout)
//   OUT/summary.json                       (counts per split / category, failures by reason, time)
//
// Sources (DESIGN.md, "Real data available here"):
//   openclipart   Debian `openclipart-svg`: /usr/share/openclipart/svg/**.svg (8,121 paths, 663 of them
//                 symlinked duplicates). Each SVG is rendered by `rsvg-convert` (Debian librsvg2-bin) to
//                 fit `size` x `size` keeping its aspect ratio, then alpha-composited centred on a white
//                 size x size RGB canvas (OpenCV). Text from the RDF / Dublin Core metadata of the
//                 cc:Work (dc:title, dc:description, dc:subject keywords; libxml2 XPath).
//                 meta: category (top folder), folder, path, title, description, keywords, duplicate_of.
//   emoji         npm `emoji-datasource-google` (unpacked package dir, see default_emoji_dir()):
//                 emoji.json + img/google/64/*.png composited on white (64x64 RGB PNG).
//                 text = lower-cased `name` (+ short names with --short-names); skin-tone variants are
//                 separate samples with their base emoji's text. meta: category, subcategory, unified,
//                 name, short_names, base, skin_tone.
//   fashion-mnist Debian `dataset-fashion-mnist` IDX files: 28x28 grey PNGs, label = class id,
//                 text = class name; original train/test split, val carved out of train (5%).
//
// Splits: openclipart / emoji use split_of(split key) 90/5/5 where the split key is the sample
// key, except that duplicates stay with their original (openclipart: the symlink's target; emoji:
// the base emoji of a skin-tone variant), so near-identical images never straddle train and test.
// Output order is deterministic (source order), independent of the thread count.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace florence::data {

/// Pinned npm version of emoji-datasource-google (scripts/setup fetches exactly this one).
inline constexpr const char* kEmojiVersion = "16.0.0";

struct CorpusOptions {
  std::string source;            ///< "openclipart" | "emoji" | "fashion-mnist"
  std::string out_dir;           ///< output root (created)
  std::string input;             ///< source location override; empty = the default for the source
  int size = 96;                 ///< openclipart render size in pixels (square canvas)
  int64_t limit = 0;             ///< 0 = all; else the first N source items: openclipart SVG files (sorted
                                 ///< by relative path), emoji base entries (emoji.json order, each with its
                                 ///< skin variants), fashion-mnist images per original split
  int threads = 0;               ///< worker threads (0 = all hardware cores)
  int64_t shard_size = 1000;     ///< max samples per shard
  std::vector<std::string> fields{"title"};  ///< openclipart text fields: title, description, keywords
  bool short_names = false;      ///< emoji: append short names to the text
  double render_timeout_s = 60;  ///< openclipart: a rsvg-convert run longer than this is killed
  bool overwrite = false;        ///< remove existing shards / summary.json in out_dir first
  bool progress = true;          ///< log progress lines
};

/// Builds the corpus and writes OUT/summary.json; returns the same JSON:
/// {source, out_dir, options, considered, samples, splits{train,val,test}, shards{...},
///  categories{name: n}, categories_by_split{split: {name: n}}, failures{reason: n}, seconds}.
/// Throws florence::Error for an unknown source, a missing source location (naming the package
/// or setup step that provides it), bad options, or when out_dir already holds shards and
/// `overwrite` is false. Per-item problems (render failure/timeout, no usable text, missing or
/// undecodable image) are counted in failures{} and logged, never thrown.
nlohmann::json build_corpus(const CorpusOptions& options);

/// Human-readable multi-line summary of build_corpus()'s JSON.
std::string format_corpus_summary(const nlohmann::json& summary);

/// $FLORENCE_CACHE, else $HOME/.cache/florence (where scripts/setup unpacks npm packages).
std::string florence_cache_dir();
/// florence_cache_dir() + "/emoji-datasource-google-<kEmojiVersion>/package".
std::string default_emoji_dir();
/// "/usr/share/openclipart/svg".
std::string default_openclipart_dir();

// Building blocks, exposed for tests -------------------------------------------------------------

/// Dublin Core metadata of an OpenClipArt SVG (from rdf:RDF/cc:Work; whitespace collapsed).
struct SvgMetadata {
  std::string title, description;
  std::vector<std::string> keywords;
};
/// Parses `path` with libxml2 (no network, no entity expansion). Returns false (and sets `error`)
/// when the file is not well-formed XML.
bool read_svg_metadata(const std::string& path, SvgMetadata& out, std::string& error);

/// Text built from the chosen fields, non-empty parts joined by ". " (keywords joined by ", ").
/// Throws florence::Error on an unknown field name.
std::string svg_text(const SvgMetadata& m, const std::vector<std::string>& fields);

/// Stable key from a relative path: extension dropped, every byte outside [A-Za-z0-9_/-] -> '_'.
std::string key_from_relative_path(const std::string& rel);

/// Decodes `encoded` (any OpenCV format; 1, 3 or 4 channels, 8 or 16 bit), alpha-composites it
/// centred on a white `size` x `size` canvas (size <= 0: a square canvas of the image's larger
/// side; an image larger than the canvas is shrunk to fit first, INTER_AREA) and returns the
/// canvas as a 3-channel PNG. Returns an empty vector when the bytes do not decode (or OpenCV
/// fails on them). Throws ImageTooLarge (transforms.h) when the image has more than
/// kDefaultMaxPixels pixels (read from the header before decoding where the format allows).
std::vector<uint8_t> composite_on_white_png(const std::vector<uint8_t>& encoded, int size);

}  // namespace florence::data
