#pragma once
// Image <-> text retrieval on held-out image-caption pairs.
//
// Texts are the captions, deduplicated by their cleaned form (text::Tokenizer::clean: the text
// the tokenizer actually sees, so identical token sequences are one text): M unique texts for N
// images. Correctness is a relation, not the diagonal:
//   text -> image: a text query's correct images are ALL images whose caption is that text
//                  (e.g. the skin-tone variants of an emoji, duplicated clip art);
//   image -> text: an image query's correct text is its caption's entry.
// This is the same as scoring by text identity (UniCL's label = hash of the exact text), and it
// never punishes the model for ranking an identically-captioned image first. Ranks, ties
// (pessimistic) and chance levels follow metrics.h.
#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <vector>

#include "florence/eval/encode.h"

namespace florence::eval {

struct RetrievalOptions {
  std::string name;                 ///< set name for the result
  std::vector<int64_t> ks{1, 5, 10};
  int64_t max_samples = 0;          ///< 0 = all images
  /// Text->image examples kept in the result: a seeded sample of the text queries, half of them
  /// (rounded up) hits (first image correct) and the rest misses, fewer of one kind when the set has
  /// fewer, then listed in query order.
  int64_t num_examples = 8;
  uint64_t example_seed = 0;        ///< seed of that sample (std::mt19937_64, so the same on every platform)
  int64_t example_top = 5;          ///< images per example
  /// Where example images are written as PNG (created); empty = keys only, no files.
  std::string examples_dir;
  /// Example image paths in the JSON are made relative to this folder (usually the result
  /// file's); empty = absolute paths.
  std::string relative_to;
};

/// Groups captions by cleaned text. Returns the unique texts (first occurrence order; the raw
/// text of the first occurrence) and, per caption, its index into them.
struct TextGroups {
  std::vector<std::string> texts;  ///< unique texts, raw form of the first occurrence
  std::vector<int64_t> group;      ///< per input caption: index into `texts`
};
TextGroups group_texts(const std::vector<std::string>& captions);

/// Runs retrieval in both directions. Result JSON:
///   {"task": "retrieval", "set", "source", "model", "num_images", "num_texts", "read",
///    "skipped", "text_dedup", "image_to_text": RetrievalMetrics::to_json(),
///    "text_to_image": RetrievalMetrics::to_json(),
///    "examples": [{"query", "rank", "hit", "relevant": [keys],
///                  "top": [{"key", "text" (its caption), "score", "correct", "image"}]}],
///    "example_selection": {"method", "seed", "queries", "hits", "misses", "shown_hits", "shown_misses"},
///    "seconds"}
/// Samples with empty captions are counted as skipped. Throws florence::Error when fewer than two
/// images or two distinct texts remain.
nlohmann::json retrieval(EvalModel& m, std::shared_ptr<const data::SampleSource> source, const RetrievalOptions& options);

/// Writes the images of `keys` (read from `source`, decoded and re-encoded as RGB PNG) into
/// `dir` as img_<i>.png in the order of `keys`; returns the written paths ("" where a key was
/// not found or did not decode, counted and logged).
std::vector<std::string> write_key_images(const data::SampleSource& source, const std::vector<std::string>& keys,
                                          const std::string& dir);

}  // namespace florence::eval
