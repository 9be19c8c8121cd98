#pragma once
// The VQA accuracy metric exactly as the official evaluation computes it (GT-Vision-Lab/VQA
// PythonEvaluationTools/vqaEvaluation/vqaEval.py, VQAEval.evaluate), and the soft-score
// training targets and answer vocabulary of METER (meter/utils/write_vqa.py).
//
// Per question, with its ground-truth answers (10 in VQA v2) and one predicted answer:
//   1. every answer: '\n' and '\t' -> ' ', then surrounding whitespace stripped;
//   2. ONLY IF the ground-truth answers are not all identical: the answers and the prediction
//      are normalised (punctuation, then digits/articles/contractions; below). When all ten
//      agree the comparison is on the stripped strings as they are - the official quirk,
//      kept: "Yes" against ten "yes" scores 0;
//   3. accuracy = mean over i of min(1, #{j != i : gt_j == prediction} / 3) (leave-one-out over
//      the ground-truth answers): with 10 answers, k matches give 1 for k >= 4, 0.9 for k = 3
//      ((7 * 1 + 3 * 2/3) / 10), 0.6 for k = 2, 0.3 for k = 1.
// Overall, per question type and per answer type accuracies are means over questions (the
// official tool prints them x100 rounded to 2 decimals; we return unrounded percentages).
//
// Normalisation (vqaEval.py processPunctuation / processDigitArticle):
//   punctuation: each mark of   ; / [ ] " { } ( ) = + \ _ - > < @ ` , ? !   is deleted if the
//     ORIGINAL text has that mark followed or preceded by a space, or has a comma between two
//     digits anywhere ("1,000"); else it is replaced by a space. Then every '.' not followed by a
//     digit is deleted (the regex "(?!<=\d)(\.)(?!\d)": its "(?!<=\d)" is a lookahead that never
//     fails, so "3.5" keeps its period and "5." loses it), at most 32 of them (re.sub receives
//     re.UNICODE = 32 as its count argument).
//   words: lowercase (Unicode, like Python), split on whitespace, number words none/zero..ten ->
//     0..10, articles a/an/the dropped, then the official contractions map ("dont" -> "don't",
//     ...), joined with single spaces.
// Digits and whitespace are ASCII ([0-9]; space, \t, \n, \v, \f, \r), as Python 2's re and
// str.split on the official tool's inputs.
#include <torch/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace florence::vlp {

/// processPunctuation of vqaEval.py (above). Input: UTF-8.
std::string vqa_process_punctuation(std::string_view text);
/// processDigitArticle of vqaEval.py (above). Input: UTF-8; throws florence::Error if invalid.
std::string vqa_process_digit_article(std::string_view text);
/// The full normal form used for training targets and the answer vocabulary: '\n'/'\t' -> ' ',
/// strip, punctuation, digits/articles/contractions (applied always).
std::string normalize_answer(std::string_view text);

/// Official accuracy in [0, 1] of `prediction` for one question (steps 1-3 above).
/// Throws florence::Error if `gt_answers` is empty.
double vqa_accuracy(std::string_view prediction, const std::vector<std::string>& gt_answers);

/// One evaluated question.
struct VqaQuestion {
  std::string question_type;            ///< e.g. "what color is" (VQA) or our template name
  std::string answer_type;              ///< "yes/no", "number" or "other"
  std::vector<std::string> answers;     ///< the ground-truth answers (10 in VQA v2)
};

struct VqaResult {
  double overall = 0;                                 ///< percent, mean over questions
  std::map<std::string, double> per_question_type;    ///< percent
  std::map<std::string, double> per_answer_type;      ///< percent
  std::map<std::string, int64_t> question_type_counts, answer_type_counts;
  std::vector<double> per_question;                   ///< accuracy in [0, 1], input order
};

/// Official evaluation of predictions[i] against questions[i]. Throws florence::Error if the
/// sizes differ, the list is empty, or a question has no answers (naming its index).
VqaResult evaluate_vqa(const std::vector<VqaQuestion>& questions, const std::vector<std::string>& predictions);

// ---------------------------------------------------------------------------------------------
// Training targets (METER write_vqa.py)
// ---------------------------------------------------------------------------------------------

/// METER's soft score of an answer given by `count` annotators: 0, 0.3, 0.6, 0.9, then 1 from
/// four on (get_score; the min(1, 0.3 count) rule). Throws florence::Error if count < 0.
double vqa_soft_score(int64_t count);

/// The most frequent normalised answer of a question (ties: the one seen first), "" if none.
std::string majority_answer(const std::vector<std::string>& answers);

struct AnswerVocab {
  std::vector<std::string> answers;                   ///< label -> normalised answer
  std::unordered_map<std::string, int64_t> index;     ///< normalised answer -> label
  std::vector<int64_t> counts;                        ///< questions whose majority answer it is
  int64_t size() const { return static_cast<int64_t>(answers.size()); }
  /// The label of a (raw) answer after normalize_answer, or -1 if not in the vocabulary.
  int64_t find(std::string_view answer) const;
};

/// METER's answer vocabulary: the majority answers of the training questions (their
/// multiple_choice_answer), normalised, kept when at least `min_count` questions have them
/// (METER: 9 on VQA v2, giving 3,129 answers). Labels ordered by count, descending, then by the
/// answer's bytes (deterministic). Throws florence::Error if min_count < 1.
AnswerVocab build_answer_vocab(const std::vector<std::vector<std::string>>& train_answers, int64_t min_count = 9);

/// One question's soft target: every vocabulary answer given by k annotators (after
/// normalisation) gets vqa_soft_score(k); answers outside the vocabulary are dropped.
struct SoftTarget {
  std::vector<int64_t> labels;
  std::vector<float> scores;
};
SoftTarget soft_target(const std::vector<std::string>& answers, const AnswerVocab& vocab);

/// Dense targets [B, num_answers] float32 for vqa_loss. Throws florence::Error for a label
/// outside [0, num_answers) or labels/scores of different lengths.
torch::Tensor soft_target_tensor(const std::vector<SoftTarget>& targets, int64_t num_answers);

}  // namespace florence::vlp
