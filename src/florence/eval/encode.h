#pragma once
// Shared machinery of the evaluation commands: a loaded two-tower model with its tokenizer and
// eval preprocessing, data-source resolution, and batched image / text encoding.
//
// Eval preprocessing (data/transforms.h): resize the shorter side to floor(image_size / crop_pct)
// (bicubic), center crop image_size, per-channel mean/std in RGB order. Defaults: image_size from
// the model config, crop_pct 0.875 (timm's default; CLIP uses 1.0), ImageNet mean/std - unless
// the checkpoint's sidecar JSON has a "preprocess" object {image_size, crop_pct, mean, std}, or
// the checkpoint lies in RUN/checkpoints/ of a pretraining run whose RUN/config.json has one
// ("preprocess" + "image_size": what the model was trained with); explicit flags win over all.
// The vocabulary likewise: --vocab, else sidecar "vocab", else RUN/vocab.bpe[.gz], else the
// sidecar's train_state.options.vocab path.
#include <torch/types.h>

#include <nlohmann/json.hpp>

#include <array>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "florence/data/loader.h"
#include "florence/data/readers.h"
#include "florence/eval/load_options.h"
#include "florence/model/florence.h"
#include "florence/model/registry.h"

namespace florence::text {
class Tokenizer;
}

namespace florence::eval {

/// "clip" -> CLIP mean/std, "imagenet" -> ImageNet mean/std (data/transforms.h). Throws
/// florence::Error on other names.
std::pair<std::array<float, 3>, std::array<float, 3>> named_normalization(const std::string& name);

/// Parses "a,b,c" into three floats. Throws florence::Error naming `what` otherwise.
std::array<float, 3> parse_triple(const std::string& text, const std::string& what);

/// A model ready for evaluation: eval mode, on `device`, with its tokenizer and the resolved
/// preprocessing (all optionals filled in).
struct EvalModel {
  model::ModelSpec spec;
  model::FlorenceModel model{nullptr};
  std::shared_ptr<const text::Tokenizer> tokenizer;  ///< null when no vocab was given
  std::string vocab_problem;  ///< why no vocabulary was found (for require_tokenizer's message)
  torch::Device device{torch::kCPU};
  std::string precision = "fp32";  ///< the precision in use (after the CPU check), precision.h's name
  PreprocessOptions preprocess;
  std::string checkpoint;
  int context_length = 77;  ///< the text tower's context length
  int64_t embed_dim() const;
  /// tau = exp(logit_scale) clamped (FlorenceModel::temperature), as a double.
  double temperature() const;
  /// {"model", "checkpoint", "preprocess", "temperature"} for result files.
  nlohmann::json describe() const;
};

/// Loads spec, weights and tokenizer, and puts the model in the requested precision (bf16:
/// bfloat16 weights; amp_bf16: autocast). Throws florence::Error for an unresolvable model, an
/// unloadable checkpoint (strict: names the keys), an unreadable vocabulary, a vocabulary larger
/// than the text tower's, a bad device string or an unknown precision.
EvalModel load_eval_model(const LoadOptions& options);

/// Throws florence::Error("<command> needs --vocab ...") when the model has no tokenizer.
const text::Tokenizer& require_tokenizer(const EvalModel& m, const std::string& command);

/// Opens a data specification as a sample source:
///   - DIR with a `split` sub-folder (a corpus root, data/corpus.h): the shards in DIR/<split>;
///   - DIR holding *.tar, a shard file or brace pattern (data/webdataset.h list_shards);
///   - a .jsonl / .json / .tsv manifest;
///   - otherwise a directory in ImageFolder layout (class sub-folders).
/// Throws florence::Error when nothing usable is found.
std::shared_ptr<data::SampleSource> open_source(const std::string& spec, const std::string& split = "test");

/// Embeddings of a source's images, in source order.
struct EncodedImages {
  torch::Tensor embeds;                 ///< [N, D] float32 CPU, L2-normalised
  std::vector<std::string> keys;        ///< row order
  std::vector<std::string> texts;       ///< raw captions, row order
  std::vector<int64_t> labels;          ///< row order, -1 where none
  std::vector<nlohmann::json> metas;    ///< the sample meta (KEY.json), row order
  data::SkipCounts skipped;             ///< dropped samples by reason
  int64_t read = 0;                     ///< samples the source delivered
};

/// Encodes every image of `source` (deterministic order, eval transform) in batches.
/// require_text: drop samples with an empty caption (counted under "empty_text").
/// max_samples > 0: only the first max_samples good samples in source order.
/// with_meta: also fill `metas` (one extra pass over the source that reads no pixels; the loader's
/// batches do not carry the meta); otherwise `metas` stays empty.
/// Bad samples are counted and logged, never thrown.
EncodedImages encode_source(EvalModel& m, std::shared_ptr<const data::SampleSource> source, bool require_text,
                            int64_t max_samples = 0, bool with_meta = false);

/// Text embeddings [M, D] float32 CPU, L2-normalised, in input order (tokenised with the model's
/// tokenizer at its context length; long texts are truncated with EOT as CLIP does). Throws
/// florence::Error without a tokenizer or on invalid UTF-8 (naming the row).
torch::Tensor encode_texts(EvalModel& m, const std::vector<std::string>& texts);

/// Embeddings [N, D] for already preprocessed images [N, 3, S, S] (any device; batched).
torch::Tensor encode_image_tensor(EvalModel& m, const torch::Tensor& images);

/// Loader options for evaluating `m` over a source in order: its preprocessing (batch size, image
/// size, crop_pct, mean/std, workers), the eval transform (resize + centre crop), no shuffling,
/// no dropped last batch; `require_text` false keeps samples without text (label-only data).
data::LoaderOptions eval_loader_options(const EvalModel& m, bool require_text);

}  // namespace florence::eval
