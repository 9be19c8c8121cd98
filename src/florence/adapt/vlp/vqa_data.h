#pragma once
// Reading a VQA set in the layout vqa_set.h writes (VQA v2's question / annotation JSON plus our
// images[] list and answers.json), for training, evaluation and the baselines:
//   * load_vqa_split: the questions of one split with their ten answers, question type and answer
//     type, and the scene images decoded once into one tensor (no augmentation: a crop could cut
//     an object out of a count, a flip would swap "left of" and "right of");
//   * load_answer_vocab: answers.json (the METER-rule vocabulary the set's builder wrote);
//   * prior_baseline: the most frequent answer per question type of a training split (the
//     "prior" baseline of VQA v2, Goyal et al. 2017 §5: "per Q-type prior").
#include <torch/types.h>

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "florence/adapt/vlp/vqa_metric.h"
#include "florence/data/readers.h"

namespace florence::vlp {

/// One question with its ground truth.
struct VqaItem {
  int64_t question_id = 0, image_id = 0;
  int64_t image = -1;  ///< row of VqaSplit::images
  std::string question, question_type, answer_type, multiple_choice_answer;
  std::vector<std::string> answers;  ///< the annotators' answers (10 in VQA v2)
};

struct VqaSplit {
  std::string root, split;
  std::vector<VqaItem> items;
  std::vector<int64_t> image_ids;         ///< row -> image_id
  torch::Tensor images;                   ///< [N, 3, S, S] float32, normalised (CPU)
  std::vector<std::vector<int64_t>> by_image;  ///< row -> indices into items
  data::SkipCounts skipped;               ///< "image_unreadable", "question_without_annotation", "no_answers"

  /// VqaQuestion list for evaluate_vqa (items order).
  std::vector<VqaQuestion> questions() const;
};

struct VqaImageOptions {
  int image_size = 64;  ///< scenes are resized (bicubic, antialiased) to image_size x image_size
  std::array<float, 3> mean{0.485f, 0.456f, 0.406f}, std{0.229f, 0.224f, 0.225f};
  int64_t max_questions = 0;  ///< > 0: keep only the questions of the first images up to this many (tests, quick runs)
};

/// Reads ROOT/{split}_questions.json, ROOT/{split}_annotations.json and the images they list.
/// Questions whose image cannot be read, or without an annotation or answers, are skipped and
/// counted (logged once per reason). Throws florence::Error when a file is missing or not the
/// expected JSON (naming the file and key), or when no question is left.
VqaSplit load_vqa_split(const std::string& root, const std::string& split, const VqaImageOptions& options);

/// An image file as the model's input: [3, S, S] float32 normalised (VqaImageOptions). Throws
/// florence::Error naming the path when it cannot be read or decoded.
torch::Tensor load_vqa_image(const std::string& path, const VqaImageOptions& options);

/// ROOT/answers.json -> AnswerVocab (labels in file order). Throws florence::Error when missing,
/// malformed, empty, or an entry is not in normal form (normalize_answer) or repeated.
AnswerVocab load_answer_vocab(const std::string& root);

/// The answer vocabulary as vqa_set.h's answers.json order gives it, from a list (a checkpoint's
/// sidecar). Same checks as load_answer_vocab.
AnswerVocab answer_vocab_from_list(const std::vector<std::string>& answers, const std::string& origin);

/// "Per question-type prior": for every question type of `train`, its most frequent
/// multiple_choice_answer after normalize_answer (ties: the smaller string); types unseen in train
/// get the most frequent answer overall.
struct PriorBaseline {
  std::map<std::string, std::string> answer_of_type;
  std::string overall;
  std::string predict(const std::string& question_type) const;
};
PriorBaseline prior_baseline(const VqaSplit& train);

}  // namespace florence::vlp
