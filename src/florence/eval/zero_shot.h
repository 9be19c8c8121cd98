#pragma once
// Zero-shot classification with a prompt ensemble (CLIP, Radford et al. 2021 §3.1.4; UniCL).
//
// Each class name is put into every template; the template texts are encoded, each embedding is
// L2-normalised, the T embeddings of a class are averaged and the mean is L2-normalised again:
//     w_c = normalize( (1/T) sum_t normalize(f_text(template_t(class_c))) )
// An image u (normalised) is scored against every class by the cosine u . w_c (the temperature
// does not change the ranking, so it is not applied here; `florence classify` applies it before
// its softmax).
//
// The classes of a set come from its data: the distinct values of the sample meta field
// "category" (all three corpora of data/corpus.h write it), else meta "class" (ImageFolder),
// else the source's label names; sorted by byte order, so class ids are stable.
#include <torch/types.h>

#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <vector>

#include "florence/eval/encode.h"

namespace florence::eval {

/// The default prompt templates ("{}" is replaced by the class name): 12 of the 80 ImageNet
/// templates of CLIP's prompt-engineering notebook (openai/CLIP,
/// notebooks/Prompt_Engineering_for_ImageNet.ipynb), chosen for drawings, renders and small
/// grey images (photo / drawing / sketch / cartoon / art / rendering / black-and-white / low
/// resolution), plus the bare class name "{}" (our addition: short texts are what the model sees
/// for labelled data in pretraining stage 2).
const std::vector<std::string>& default_templates();

/// Replaces every "{}" in `tmpl` with `name`. Throws florence::Error when `tmpl` has no "{}".
std::string fill_template(const std::string& tmpl, const std::string& name);

/// Reads templates from a file, one per line (blank lines and lines starting with '#' ignored).
/// Throws florence::Error when unreadable, empty, or a line lacks "{}".
std::vector<std::string> read_templates(const std::string& path);

/// The prompt ensemble: per_template [C, T, D] (any float dtype) -> [C, D] float, each row
/// normalize(mean_t normalize(per_template[c, t])). Throws florence::Error on a non-3-D input or
/// T == 0.
torch::Tensor ensemble_embeddings(const torch::Tensor& per_template);

/// Class embeddings for `classes` with the model's text tower: [C, D] float32 CPU (unit rows).
/// In the prompt texts '_' in a class name becomes a space ("signs_and_symbols" -> "signs and
/// symbols"), as ImageFolderSource does for its texts.
torch::Tensor class_embeddings(EvalModel& m, const std::vector<std::string>& classes,
                               const std::vector<std::string>& templates);

struct ZeroShotOptions {
  std::string name;                    ///< set name for the result ("fashion-mnist", ...)
  std::vector<std::string> templates;  ///< empty = default_templates()
  std::string class_field = "category";
  int64_t max_samples = 0;             ///< 0 = all
};

/// The class name of a sample by the rule at the top of this file; empty when it has none.
std::string class_of(const nlohmann::json& meta, int64_t label, const std::vector<std::string>& source_classes,
                     const std::string& class_field);

/// Runs zero-shot classification over a source. Result JSON:
///   {"task": "zero-shot", "set", "source", "model": EvalModel::describe(), "templates",
///    "num_images", "skipped": {reason: n}, "metrics": ClassificationMetrics::to_json(classes),
///    "seconds"}
/// Samples without a class are counted under skipped["no_class"]. Throws florence::Error when the
/// set has fewer than 2 classes or no images.
nlohmann::json zero_shot(EvalModel& m, std::shared_ptr<const data::SampleSource> source, const ZeroShotOptions& options);

}  // namespace florence::eval
