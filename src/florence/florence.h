#pragma once
// florence's public C++ API: the one header a program includes after
//     find_package(florence CONFIG REQUIRED)
//     target_link_libraries(app PRIVATE florence::florence)
// It loads a two-tower Florence model (CoSwin image tower + text transformer, UniCL-trained) from a
// checkpoint, embeds images and texts into the shared space, classifies images zero-shot with
// free-form labels, and queries an image index built by `florence index build`.
//
// Conventions (all functions):
//   - embeddings are float32 CPU tensors [N, D], rows L2-normalised (unit length), D = embed_dim();
//     the cosine similarity of an image and a text is the dot product of their rows;
//   - images are preprocessed as the checkpoint's run trained them (docs/api.md: resize the shorter
//     side, centre crop, per-channel mean/std), resolved as the `florence` CLI resolves them;
//   - every error is a florence::Error (florence/core/error.h) whose message names the bad input;
//     no other exception type leaves these functions for bad input.
// Thread safety: a Model or ImageIndex may be shared by threads; calls on one Model run one at a
// time (a mutex; LibTorch parallelises each call over its intra-op threads). Copies share the
// loaded weights.
#include <torch/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "florence/core/error.h"

namespace cv {
class Mat;
}

namespace florence {

/// The library version (major.minor.patch), as in the installed package's florenceConfigVersion.cmake.
const char* version();

/// Log level of the library's messages ("trace", "debug", "info" (default), "warn", "error",
/// "critical", "off"). They go through spdlog's default logger; when the program has not set one,
/// the library installs a stderr logger named "florence" (at the first Model::load or this call), so
/// stdout stays the program's. Throws florence::Error on an unknown level.
void set_log_level(const std::string& level);

/// How to load a model. Only `checkpoint` is required; the rest is resolved from the run that
/// wrote it (its config.json / checkpoint sidecar: model name, preprocessing, vocabulary).
struct ModelOptions {
  std::string checkpoint;  ///< .pt or .safetensors written by `florence pretrain|finetune|convert`
  std::string model;       ///< a registered name ("florence-nano", "florence-t", ...) or a config JSON; empty = from the run
  std::string vocab;       ///< BPE merges file (CLIP's bpe_simple_vocab_16e6.txt[.gz] or a learnt one); empty = from the run
  std::string device = "cpu";  ///< "cpu", "cuda" or "cuda:N" (a GPU must be present)
  /// LibTorch's intra-op threads, 1..4x the cores; 0 = OMP_NUM_THREADS, else every core. The
  /// setting is process-wide (the last Model::load wins); load also tunes glibc malloc once
  /// (core/threads.h: configure_allocator).
  int threads = 0;
  int64_t batch_size = 64;     ///< images / texts per forward pass
  /// "fp32", "bf16" (bfloat16 weights and activations) or "amp_bf16" (bfloat16 autocast); bfloat16
  /// falls back to fp32 with a logged warning where the CPU lacks avx512_bf16 / amx_bf16.
  /// Embeddings are float32 in every case (speed and accuracy: docs/performance.md).
  std::string precision = "fp32";
};

/// A loaded two-tower model in evaluation mode. Cheap to copy (shared state). A moved-from Model
/// throws florence::Error from every call.
class Model {
 public:
  /// Loads weights, tokenizer and preprocessing. Throws florence::Error when the checkpoint is
  /// missing or does not match the model (names the keys), the model is single-tower, the
  /// vocabulary given in `vocab` cannot be read or is larger than the text tower's, the device is
  /// not "cpu" / an available "cuda[:N]", the precision is not fp32 / bf16 / amp_bf16, or threads /
  /// batch_size are out of range. When no
  /// vocabulary is given and the run's is missing, the model loads without one: has_tokenizer()
  /// is false and embed_texts() throws saying why.
  static Model load(const ModelOptions& options);

  int64_t embed_dim() const;  ///< D, the width of the shared image-text embedding space
  int image_size() const;     ///< S, the side of the square image the tower sees after preprocessing (pixels)
  /// tau = exp(logit_scale) (clamped as in training): the factor on cosines before a softmax.
  double temperature() const;
  /// Whether texts can be embedded (a vocabulary was given or found).
  bool has_tokenizer() const;

  /// Image files (PNG, JPEG, WebP, BMP, TIFF, PNM) -> [N, D], in the order given. Throws
  /// florence::Error naming the first file that is not a regular file of at most 1 GiB, cannot be
  /// read or decoded, or has too many pixels (over 89,478,485 decoded, or after resizing its
  /// shorter side to the model's input: a 100000x1 image); and when `paths` is empty.
  torch::Tensor embed_image_files(const std::vector<std::string>& paths) const;
  /// Encoded image bytes (a file's contents) -> [1, D]. Throws florence::Error when there are none,
  /// more than 1 GiB, they do not decode, or the image has too many pixels (as embed_image_files).
  torch::Tensor embed_image_bytes(const void* data, size_t size) const;
  /// A decoded OpenCV image in OpenCV's channel order (BGR, BGRA or grey; 8-bit, 16-bit or float
  /// in [0, 1], as cv::imread / cv::VideoCapture give) -> [1, D]. Alpha is composited on white.
  /// Throws florence::Error on an empty or non-2-D image, an unsupported type, float pixels outside
  /// [0, 1] or not finite, or too many pixels (as embed_image_files).
  torch::Tensor embed_image(const cv::Mat& image) const;
  /// Raw 8-bit RGB pixels, row-major (R, G, B per pixel), `row_stride` bytes per row (0 = 3 * width)
  /// -> [1, D]. Throws florence::Error on a null pointer, width or height < 1, more than 89,478,485
  /// pixels, a stride < 3 * width, or too many pixels after resizing (as embed_image_files).
  torch::Tensor embed_rgb(const uint8_t* rgb, int width, int height, size_t row_stride = 0) const;
  /// Texts -> [M, D] (CLIP tokenisation; texts longer than the context are cut, keeping EOT).
  /// Throws florence::Error without a tokenizer, on an empty list, or on invalid UTF-8 (naming the
  /// row of `texts`).
  torch::Tensor embed_texts(const std::vector<std::string>& texts) const;

  /// Zero-shot label probabilities for images already embedded ([N, D] from this model; rows are
  /// L2-normalised here):
  /// each label's embedding is the prompt ensemble over `templates` ("{}" = the label; empty = the
  /// default templates of `florence classify`), and p(label | image) = softmax_l(tau * cos).
  /// Returns [N, L] float32, rows sum to 1. Throws florence::Error with fewer than 2 labels, an
  /// empty or repeated label, a label or template that is not valid UTF-8 (naming its position), a
  /// template without "{}", or embeddings that are not a floating [N, D].
  torch::Tensor zero_shot(const torch::Tensor& image_embeds, const std::vector<std::string>& labels,
                          const std::vector<std::string>& templates = {}) const;

 private:
  struct State;
  explicit Model(std::shared_ptr<State> s) : s_(std::move(s)) {}
  std::shared_ptr<State> s_;
};

/// Cosine similarities of unit rows: a [N, D] x b [M, D] -> [N, M] float32 (a b^T). Throws
/// florence::Error when either is not 2-D or the widths differ.
torch::Tensor similarity(const torch::Tensor& a, const torch::Tensor& b);

/// One search result.
struct SearchResult {
  int64_t id = -1;     ///< row of the index
  float score = 0;     ///< cosine similarity with the query
  std::string key;     ///< the image's key (its path for a folder, the sample key for shards)
  std::string caption; ///< the caption stored with the image ("" when none)
  std::string source;  ///< where the image was read from
};

/// An image index folder written by `florence index build` (FAISS index + metadata), opened for
/// queries. Thread-safe; cheap to copy.
class ImageIndex {
 public:
  /// Throws florence::Error when `dir` is not a finished index or its files disagree.
  static ImageIndex open(const std::string& dir);
  int64_t size() const;  ///< images in the index
  int64_t dim() const;   ///< D of its embeddings
  /// The k nearest images (by cosine) to each query row: queries [Q, D] (normalised here) ->
  /// Q lists, best first, at most k each (approximate indices may miss some of the true top k).
  /// Throws florence::Error on k < 1 or a width other than dim().
  std::vector<std::vector<SearchResult>> search(const torch::Tensor& queries, int64_t k) const;

 private:
  struct State;
  explicit ImageIndex(std::shared_ptr<const State> s) : s_(std::move(s)) {}
  std::shared_ptr<const State> s_;
};

}  // namespace florence
