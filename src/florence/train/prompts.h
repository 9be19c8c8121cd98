#pragma once
// Texts and UniCL labels of a training batch (Florence §2.1 two-stage recipe, UniCL §3).
//
//   image-text pair (label < 0 from the data mixture):
//       y = loss::text_label(clean(text))  -> identical cleaned texts are positives;
//       stage 1: a text of 1 or 2 words (after cleaning) is replaced by a random prompt template
//                of itself ("cat" -> "a drawing of a cat."), y unchanged (the original text's);
//       stage 1 with tag sampling p > 0 (our option, not in the Florence paper): a text that is a
//                list (pieces separated by ", " or ". ", e.g. OpenClipArt's "title. kw1, kw2" or
//                Emoji's "name, short name") is, with probability p, replaced by one of its distinct
//                pieces drawn uniformly, and y = loss::text_label(piece): images sharing a tag are
//                positives when they draw it together. A piece of 1-2 words is then templated.
//       stages 2, 3: the original text.
//   classification sample (label >= 0, text = class name, see mixture.h):
//       y = the class label; text = a random prompt template of the class name, in every stage.
// The template of row r of batch b in epoch e is drawn from a generator seeded by
// (seed, epoch, batch, row), so a resumed run (which replays the same batches) draws the same.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace florence::train {

/// The prompt templates, each with one "{}" for the class name / short text. A small CLIP-style
/// set (CLIP's ImageNet prompt-engineering idea, Radford et al. 2021 §3.1.4) with wordings suited
/// to photos as well as the drawings, icons and emoji of our corpora.
const std::vector<std::string>& prompt_templates();

/// The template with "{}" replaced by `name`.
std::string fill_template(std::string_view tmpl, std::string_view name);

/// Number of space-separated words of an already cleaned text (CLIP's clean() collapses white
/// space to single spaces).
int count_words(std::string_view cleaned);

struct BatchTexts {
  std::vector<std::string> texts;  ///< what is tokenized, row order
  std::vector<int64_t> labels;     ///< UniCL labels, row order
  int64_t augmented = 0;           ///< rows whose text became a template (short texts and classes)
  int64_t tagged = 0;              ///< rows whose text became one of its tags (tag sampling)
};

/// The distinct pieces of a cleaned text split at ", " and ". " (first occurrence order; each
/// trimmed of spaces and a final '.'; pieces without a letter or digit dropped, bytes >= 0x80
/// counting as letters). A text without separators is one piece.
std::vector<std::string> text_tags(std::string_view cleaned);

/// Texts and labels of one batch. `raw_texts[i]` / `class_labels[i]` are Batch::texts / labels.
/// `stage` is 1, 2 or 3. `tag_sampling` in [0, 1] is the stage-1 probability of replacing a list
/// text by one of its pieces (above; 0 keeps Florence's recipe, and the draws of a run without it).
/// Throws florence::Error when the sizes differ, a text is not valid UTF-8 or tag_sampling is
/// outside [0, 1].
BatchTexts make_batch_texts(const std::vector<std::string>& raw_texts, const std::vector<int64_t>& class_labels,
                            int stage, uint64_t seed, int64_t epoch, int64_t batch_index, double tag_sampling = 0.0);

}  // namespace florence::train
