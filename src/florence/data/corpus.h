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
//   twemoji       npm `emoji-datasource-twitter`: the emoji builder on img/twitter/64 (Twitter's art
//                 of the same emoji.json; same keys and splits as emoji, so one emoji's two arts stay
//                 in one split).
//   tuxpaint      Debian `tuxpaint-stamps-default`: each stamp NAME.txt (first line: the English
//                 caption) with NAME.svg, else NAME.png; category = top folder (animals, food, ...).
//   openmoji      npm `openmoji`: data/openmoji.json, color/svg/HEXCODE.svg; fields annotation, tags
//                 (tags + openmoji_tags); category = group, subcategory = subgroups.
//   mdi           npm `@mdi/svg`: meta.json, svg/NAME.svg; fields name, aliases, tags; category =
//                 first tag.
//   tabler        npm `@tabler/icons`: icons.json, icons/{outline,filled}/NAME.svg; fields name, tags;
//                 category = category.
//   fontawesome   npm `@fortawesome/fontawesome-free`: metadata/icon-families.json, svgs/STYLE/NAME.svg
//                 (the free classic styles); fields label, terms; category = style.
//   flags         Debian `iso-flags-svg` country-4x3/*.svg, names from `iso-codes` iso_3166-1.json;
//                 fields name, official; category "country" (ISO 3166-1) or "region" (the rest).
// The line-art sets (mdi, tabler, fontawesome) use currentColor / default fill: rendered black on
// white. Every SVG is rendered by rsvg-convert as openclipart's are.
//
// Splits: all but fashion-mnist use split_of(split key) 90/5/5 where the split key is the sample
// key, except that duplicates and variants stay with their original (openclipart: the symlink's
// target; emoji, twemoji, openmoji: the base emoji of a skin-tone variant; tabler, fontawesome: the
// icon name shared by its styles), so near-identical images never straddle train and test.
// Output order is deterministic (source order), independent of the thread count.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace florence::data {

/// Pinned npm version of emoji-datasource-google (scripts/setup fetches exactly this one).
inline constexpr const char* kEmojiVersion = "16.0.0";

/// One corpus source `florence data build` knows (corpus_sources() lists them in build order).
struct CorpusSourceInfo {
  std::string name;                         ///< the `data build` argument
  std::string default_input;                ///< where setup puts it (a folder)
  std::string provided_by;                  ///< the Debian package or npm package@version
  std::string license;                      ///< as the source's own license file states it
  std::vector<std::string> fields;          ///< text fields the source has (empty: fixed text)
  std::vector<std::string> default_fields;  ///< used when CorpusOptions::fields is empty
  std::string class_field;                  ///< what meta "category" holds ("" = no class field)
};
/// The sources, in the order `data build all` builds them (npm folders under $FLORENCE_CACHE as set now).
std::vector<CorpusSourceInfo> corpus_sources();
/// corpus_sources() entry of `name`; throws florence::Error naming the known ones.
CorpusSourceInfo corpus_source(const std::string& name);

struct CorpusOptions {
  std::string source;            ///< a corpus_sources() name: "openclipart", "emoji", "fashion-mnist", "twemoji",
                                 ///< "tuxpaint", "openmoji", "mdi", "tabler", "fontawesome", "flags"
  std::string out_dir;           ///< output root (created)
  std::string input;             ///< source location override; empty = the default for the source
  int size = 96;                 ///< render size in pixels (square canvas) of the SVG / stamp sources
  int64_t limit = 0;             ///< 0 = all; else the first N source items: openclipart SVG files (sorted
                                 ///< by relative path), emoji base entries (emoji.json order, each with its
                                 ///< skin variants), fashion-mnist images per original split
  int threads = 0;               ///< worker threads (0 = all hardware cores)
  int64_t shard_size = 1000;     ///< max samples per shard
  std::vector<std::string> fields;  ///< text fields (CorpusSourceInfo::fields); empty = the source's default;
                                    ///< ignored by sources without fields (emoji, twemoji, fashion-mnist)
  bool short_names = false;      ///< emoji, twemoji: append short names to the text
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

/// The options as summary.json records them (resolved: the source's default fields filled in), so
/// two builds with equal JSON wrote the same corpus. Throws florence::Error on an unknown source or field.
nlohmann::json corpus_options_json(const CorpusOptions& options);

/// `florence data build all`: every corpus source (or the chosen ones) into OUT/NAME.
struct BuildAllOptions {
  std::string out_dir;               ///< each source goes to OUT_DIR/NAME
  std::vector<std::string> sources;  ///< empty = every corpus_sources() entry
  CorpusOptions base;                ///< size, limit, threads (shared by all), shard size, timeout, overwrite
  int parallel = 2;                  ///< sources built at once (threads are split between them)
};
/// Builds each source with the demo's text options (openclipart title + keywords; emoji and twemoji
/// with short names; the rest their defaults). A source whose OUT/NAME/summary.json records the same
/// options (corpus_options_json) is skipped as up to date; shards without a summary (an interrupted
/// build) are replaced; a corpus built with other options is kept and reported as failed, or rebuilt
/// with base.overwrite. One source failing (e.g. its package missing) does not stop the others.
/// Returns {"out_dir", "sources": [{name, status: built|up to date|failed, error?, summary?}],
/// "failed": n, "seconds"}. Throws florence::Error only for bad options (unknown source, parallel < 1).
nlohmann::json build_all_corpora(const BuildAllOptions& options);
/// The options `build_all_corpora` uses for `source` (the demo's text options on top of `base`).
CorpusOptions all_corpora_options(const BuildAllOptions& options, const std::string& source);
/// The table of build_all_corpora()'s JSON, one line per source.
std::string format_build_all_summary(const nlohmann::json& result);

/// Human-readable multi-line summary of build_corpus()'s JSON.
std::string format_corpus_summary(const nlohmann::json& summary);

/// $FLORENCE_CACHE, else $HOME/.cache/florence (where scripts/setup unpacks npm packages).
std::string florence_cache_dir();
/// florence_cache_dir() + "/emoji-datasource-google-<kEmojiVersion>/package".
std::string default_emoji_dir();
/// "/usr/share/openclipart/svg".
std::string default_openclipart_dir();
/// florence_cache_dir() + "/NAME-VERSION/package": where scripts/setup unpacks a pinned npm package
/// (NAME without its npm scope, as `npm pack` names the file).
std::string npm_package_dir(const std::string& name, const std::string& version);

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
