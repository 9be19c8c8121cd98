#pragma once
// `florence embed` (image / text embeddings to a safetensors file) and `florence classify`
// (probabilities of free-form labels for a few images).
#include <torch/types.h>

#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <vector>

#include "florence/data/readers.h"
#include "florence/eval/encode.h"

namespace florence::eval {

/// Images named on a command line, one part per file:
///   - an image file (png jpg jpeg webp bmp tif tiff ppm pgm pbm, any case): key = the path as given;
///   - a directory without *.tar files: every image below it, recursively, sorted by path; key = path;
///   - a directory with *.tar files, a .tar file or a brace pattern: WebDataset shards
///     (data/webdataset.h list_shards), key = the sample key, in shard / member order.
/// The order of `paths` is kept. Throws florence::Error for a path that does not exist or a
/// directory without any image or shard, or a file named directly whose image format is not
/// decoded (gif, svg, ...: data/sample.h). Unreadable files are skipped at read time (counted
/// "missing_file"), and so are images of such formats found in a directory ("unsupported_format").
std::shared_ptr<data::SampleSource> image_inputs(const std::vector<std::string>& paths);

/// Texts from a file: JSON lines ({"text": "..."}; used when the file ends in .jsonl or its
/// first non-blank line starts with '{') or one text per line. Blank lines are skipped; a JSON
/// line that is not an object with a string "text" throws florence::Error naming the line.
std::vector<std::string> read_texts(const std::string& path);

struct EmbedResult {
  torch::Tensor image_embeds;            ///< [N, D] float32, unit rows (undefined when no images)
  torch::Tensor text_embeds;             ///< [M, D] float32, unit rows (undefined when no texts)
  std::vector<std::string> image_keys;   ///< row order of image_embeds
  std::vector<std::string> texts;        ///< row order of text_embeds
  data::SkipCounts skipped;              ///< images dropped while reading / decoding
};

/// Encodes images and texts (either may be empty, not both). Throws florence::Error when both
/// are empty, or texts are given without a tokenizer.
EmbedResult embed(EvalModel& m, std::shared_ptr<const data::SampleSource> images, const std::vector<std::string>& texts);

/// Writes `r` to a safetensors file: tensors "image_embeds" [N, D] and/or "text_embeds" [M, D];
/// metadata (strings) "florence.embed" = JSON {"format": 1, "model": ..., "image_keys": [...],
/// "texts": [...], "skipped": {...}}, plus "image_keys" and "texts" as JSON arrays on their own.
/// A sidecar OUT.json holds the same JSON. Written atomically. Throws florence::Error on I/O errors.
void save_embeddings(const EmbedResult& r, const nlohmann::json& model_info, const std::string& path);

struct ClassifyResult {
  std::vector<std::string> labels;
  std::vector<std::string> image_keys;  ///< row order
  torch::Tensor cosine;  ///< [N, L] cosine similarity of image and label embeddings
  torch::Tensor probs;   ///< [N, L] softmax over labels of tau * cosine (rows sum to 1)
  double temperature = 0;  ///< tau = exp(logit_scale), clamped (FlorenceModel::temperature)
  data::SkipCounts skipped;
};

/// Zero-shot scores of labels for images already encoded by `m`.
struct LabelScores {
  torch::Tensor cosine;    ///< [N, L] cosine similarity of image and label embeddings
  torch::Tensor probs;     ///< [N, L] softmax over labels of tau * cosine (rows sum to 1)
  double temperature = 0;  ///< tau = exp(logit_scale), clamped (FlorenceModel::temperature)
};

/// The scoring of classify() (below) on image embeddings [N, D] (unit rows, any device). Throws
/// florence::Error as classify() does for the labels, and when the embeddings are not [N, D].
LabelScores score_labels(EvalModel& m, const torch::Tensor& image_embeds, const std::vector<std::string>& labels,
                         const std::vector<std::string>& templates = {});

/// Zero-shot label probabilities: label embeddings are prompt ensembles (zero_shot.h) over
/// `templates` (empty = default_templates(); {"{}"} = the bare labels), and
///     p(label | image) = softmax_l( tau * cos(u, w_l) )
/// with the model's learnt temperature applied BEFORE the softmax (CLIP §2.5 / UniCL logits).
/// Throws florence::Error with fewer than 2 labels, an empty or duplicated label, or no image.
ClassifyResult classify(EvalModel& m, std::shared_ptr<const data::SampleSource> images,
                        const std::vector<std::string>& labels, const std::vector<std::string>& templates = {});

/// "a, b ,c" -> {"a", "b", "c"} (trimmed). A blank `csv` gives {}. Throws florence::Error naming `what`
/// (the flag) and the item's position when an item is blank ("dog,,cat", "dog,cat,"): a doubled or
/// trailing comma is a typo, and dropping the item would silently change the label set.
std::vector<std::string> split_labels(const std::string& csv, const std::string& what = "list");

}  // namespace florence::eval
