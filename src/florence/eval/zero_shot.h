#pragma once
// Zero-shot classification with a prompt ensemble (CLIP, Radford et al. 2021 §3.1.4; UniCL).
//
// Each class's prompt words (its name, or its entry in a ClassPrompts table) are put into every
// template; the template texts are encoded, each embedding is L2-normalised, the T embeddings of a
// class are averaged and the mean is L2-normalised again:
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

#include <map>
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

/// Class name -> the words put into the templates for it. CLIP does the same for ImageNet: its
/// prompt-engineering notebook (openai/CLIP, notebooks/Prompt_Engineering_for_ImageNet.ipynb)
/// replaces WordNet labels by clearer words (e.g. "crane" -> "construction crane"). A class
/// without an entry uses default_prompt_name(). Entries match class names exactly (bytes).
using ClassPrompts = std::map<std::string, std::string>;

/// The words for a class without an entry in ClassPrompts: the name with '_' read as a space
/// ("signs_and_symbols" -> "signs and symbols"), as ImageFolderSource does for its texts.
std::string default_prompt_name(const std::string& class_name);

/// The words for `class_name`: prompts[class_name] when present, else default_prompt_name().
std::string prompt_name(const std::string& class_name, const ClassPrompts& prompts);

/// Reads a ClassPrompts table from a JSON file holding one object {"class name": "prompt words"}
/// (a key given twice keeps its last value, as JSON parsers do). Throws florence::Error when the
/// file is unreadable, not JSON, not an object, or a value is not a string with a non-blank
/// character.
ClassPrompts read_class_prompts(const std::string& path);

/// Class embeddings for `classes` with the model's text tower: [C, D] float32 CPU (unit rows),
/// row c from the templates filled with prompt_name(classes[c], prompts).
torch::Tensor class_embeddings(EvalModel& m, const std::vector<std::string>& classes,
                               const std::vector<std::string>& templates, const ClassPrompts& prompts = {});

struct ZeroShotOptions {
  std::string name;                    ///< set name for the result ("fashion-mnist", ...)
  std::vector<std::string> templates;  ///< empty = default_templates()
  std::string class_field = "category";
  ClassPrompts class_prompts;          ///< words per class in the prompts; none = default_prompt_name
  int64_t max_samples = 0;             ///< 0 = all
};

/// The class name of a sample by the rule at the top of this file; empty when it has none.
std::string class_of(const nlohmann::json& meta, int64_t label, const std::vector<std::string>& source_classes,
                     const std::string& class_field);

/// Runs zero-shot classification over a source. Result JSON:
///   {"task": "zero-shot", "set", "source", "model": EvalModel::describe(), "templates",
///    "prompt_names": {class: words in the templates}, "num_images", "skipped": {reason: n},
///    "metrics": ClassificationMetrics::to_json(classes),
///    "seconds"}
/// Samples without a class are counted under skipped["no_class"]. Throws florence::Error when the
/// set has fewer than 2 classes or no images.
nlohmann::json zero_shot(EvalModel& m, std::shared_ptr<const data::SampleSource> source, const ZeroShotOptions& options);

/// zero_shot() on images already encoded from `source` (encode_source with with_meta = true), so
/// several prompt settings can be scored on one encoding; options.max_samples is not applied
/// again. "seconds" covers the scoring only. Throws as zero_shot(), and florence::Error when
/// `enc` has no metadata.
nlohmann::json zero_shot_encoded(EvalModel& m, const EncodedImages& enc, const data::SampleSource& source,
                                 const ZeroShotOptions& options);

}  // namespace florence::eval
