// The official VQA accuracy (GT-Vision-Lab/VQA vqaEval.py) on hand-computed cases, and METER's
// soft targets / answer vocabulary. Expected normal forms were worked out by hand from the
// official rules (vqa_metric.h) and agree with what vqaEval.py's two functions return.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "florence/adapt/vlp/vqa_metric.h"
#include "florence/core/error.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_vqa_metric {

namespace {

using namespace florence::vlp;

std::vector<std::string> answers(std::initializer_list<std::pair<const char*, int>> groups) {
  std::vector<std::string> out;
  for (const auto& [a, n] : groups) {
    for (int i = 0; i < n; ++i) out.emplace_back(a);
  }
  return out;
}

TEST(VqaPunctuation, CommaAndSpacingRules) {
  EXPECT_EQ(vqa_process_punctuation("1,000"), "1000");        // digit,digit: every mark deleted
  EXPECT_EQ(vqa_process_punctuation("yes, it is"), "yes it is");  // ", " present: ',' deleted
  EXPECT_EQ(vqa_process_punctuation("a,b"), "a b");            // otherwise replaced by a space
  EXPECT_EQ(vqa_process_punctuation("hot-dog"), "hot dog");
  EXPECT_EQ(vqa_process_punctuation("hot - dog"), "hot  dog");
  EXPECT_EQ(vqa_process_punctuation("it's (red)"), "it's red ");  // " (" deleted, ")" -> ' '
  EXPECT_EQ(vqa_process_punctuation("1,000 and a-b"), "1000 and ab");  // the comma rule covers '-' too
  EXPECT_EQ(vqa_process_punctuation("10:30"), "10:30");        // ':' and '\'' are not in the list
}

TEST(VqaPunctuation, PeriodRule) {
  EXPECT_EQ(vqa_process_punctuation("3.5"), "3.5");    // followed by a digit: kept
  EXPECT_EQ(vqa_process_punctuation(".5"), ".5");
  EXPECT_EQ(vqa_process_punctuation("5."), "5");
  EXPECT_EQ(vqa_process_punctuation("end."), "end");
  EXPECT_EQ(vqa_process_punctuation("e.g."), "eg");
  EXPECT_EQ(vqa_process_punctuation(std::string(33, '.')), ".");  // at most 32 removed
}

TEST(VqaDigitArticle, NumbersArticlesContractions) {
  EXPECT_EQ(vqa_process_digit_article("Two"), "2");
  EXPECT_EQ(vqa_process_digit_article("none"), "0");
  EXPECT_EQ(vqa_process_digit_article("ten"), "10");
  EXPECT_EQ(vqa_process_digit_article("eleven"), "eleven");
  EXPECT_EQ(vqa_process_digit_article("A Dog"), "dog");
  EXPECT_EQ(vqa_process_digit_article("the an apple"), "apple");
  EXPECT_EQ(vqa_process_digit_article(" two  dogs "), "2 dogs");
  EXPECT_EQ(vqa_process_digit_article("dont"), "don't");
  EXPECT_EQ(vqa_process_digit_article("isnt it"), "isn't it");
  EXPECT_EQ(vqa_process_digit_article("\xC3\x84PFEL"), "\xC3\xA4pfel");  // Unicode lowercase (Ä -> ä)
  EXPECT_THROW(vqa_process_digit_article("\xFF"), florence::Error);
}

TEST(VqaNormalize, FullForm) {
  EXPECT_EQ(normalize_answer("The 2 dogs."), "2 dogs");
  EXPECT_EQ(normalize_answer("a,b"), "b");  // ',' -> ' ', then the article "a" goes
  EXPECT_EQ(normalize_answer("\tYes!\n"), "yes");
  EXPECT_EQ(normalize_answer("1,000"), "1000");
}

TEST(VqaAccuracy, LeaveOneOutCounts) {
  // k of 10 answers match; every other answer differs. Leave-one-out by hand:
  //   k=1: 9 subsets hold 1 match -> 1/3 each, the other 0: 9/3/10 = 0.3
  //   k=2: 8 subsets hold 2 (2/3), 2 hold 1 (1/3): (16/3 + 2/3)/10 = 0.6
  //   k=3: 7 subsets hold 3 (1), 3 hold 2 (2/3): (7 + 2)/10 = 0.9
  //   k>=4: every subset holds >= 3: 1
  const std::vector<std::pair<int, double>> cases = {{0, 0.0}, {1, 0.3}, {2, 0.6}, {3, 0.9}, {4, 1.0}, {10, 1.0}};
  for (const auto& [k, expected] : cases) {
    auto gt = answers({{"yes", k}, {"no", 10 - k}});
    EXPECT_NEAR(vqa_accuracy("yes", gt), expected, 1e-12) << "k = " << k;
  }
}

TEST(VqaAccuracy, NormalisationOnlyWhenAnswersDisagree) {
  // Answers that disagree: both sides are normalised ("two" -> "2", "The 2." -> "2").
  EXPECT_NEAR(vqa_accuracy("two", answers({{"2", 9}, {"3", 1}})), 1.0, 1e-12);
  EXPECT_NEAR(vqa_accuracy("two", answers({{"2", 2}, {"The 2.", 1}, {"3", 7}})), 0.9, 1e-12);
  // All ten identical: the official tool compares the stripped strings as they are.
  EXPECT_NEAR(vqa_accuracy("two", answers({{"2", 10}})), 0.0, 1e-12);
  EXPECT_NEAR(vqa_accuracy("Yes", answers({{"yes", 10}})), 0.0, 1e-12);
  EXPECT_NEAR(vqa_accuracy(" yes\n", answers({{"yes", 10}})), 1.0, 1e-12);  // strip still applies
  EXPECT_THROW(vqa_accuracy("yes", {}), florence::Error);
}

TEST(VqaEvaluate, PerQuestionAndAnswerType) {
  std::vector<VqaQuestion> qs = {
      {"what color is", "other", answers({{"red", 3}, {"blue", 7}})},
      {"what color is", "other", answers({{"red", 10}})},
      {"how many", "number", answers({{"2", 2}, {"3", 8}})},
      {"is there a", "yes/no", answers({{"yes", 1}, {"no", 9}})},
  };
  const std::vector<std::string> preds = {"red", "red", "two", "no"};
  const VqaResult r = evaluate_vqa(qs, preds);
  // 0.9, 1, 0.6 ("two" -> "2" matches 2), 1 (9 matches)
  ASSERT_EQ(r.per_question.size(), 4u);
  EXPECT_NEAR(r.per_question[0], 0.9, 1e-12);
  EXPECT_NEAR(r.per_question[2], 0.6, 1e-12);
  EXPECT_NEAR(r.overall, 100.0 * (0.9 + 1.0 + 0.6 + 1.0) / 4, 1e-9);
  EXPECT_NEAR(r.per_question_type.at("what color is"), 95.0, 1e-9);
  EXPECT_NEAR(r.per_question_type.at("how many"), 60.0, 1e-9);
  EXPECT_NEAR(r.per_answer_type.at("other"), 95.0, 1e-9);
  EXPECT_NEAR(r.per_answer_type.at("yes/no"), 100.0, 1e-9);
  EXPECT_EQ(r.question_type_counts.at("what color is"), 2);
  EXPECT_THROW(evaluate_vqa(qs, {"red"}), florence::Error);
  EXPECT_THROW(evaluate_vqa({}, {}), florence::Error);
}

TEST(VqaTargets, SoftScoresVocabularyAndTensor) {
  EXPECT_DOUBLE_EQ(vqa_soft_score(0), 0.0);
  EXPECT_DOUBLE_EQ(vqa_soft_score(1), 0.3);
  EXPECT_DOUBLE_EQ(vqa_soft_score(2), 0.6);
  EXPECT_NEAR(vqa_soft_score(3), 0.9, 1e-12);
  EXPECT_DOUBLE_EQ(vqa_soft_score(4), 1.0);
  EXPECT_DOUBLE_EQ(vqa_soft_score(10), 1.0);
  EXPECT_THROW(vqa_soft_score(-1), florence::Error);

  EXPECT_EQ(majority_answer({"Two", "2", "3", "red", "red"}), "2");  // "Two" and "2" are one answer; tie -> first seen
  // Majority answers: "2" x3, "red" x2, "blue" x1 -> with min_count 2: ["2", "red"].
  const std::vector<std::vector<std::string>> train = {
      {"2", "2", "3"}, {"two", "2"}, {"2"}, {"Red", "red", "blue"}, {"red."}, {"blue"}};
  const AnswerVocab v = build_answer_vocab(train, 2);
  ASSERT_EQ(v.size(), 2);
  EXPECT_EQ(v.answers[0], "2");
  EXPECT_EQ(v.answers[1], "red");
  EXPECT_EQ(v.counts[0], 3);
  EXPECT_EQ(v.find("The Red."), 1);
  EXPECT_EQ(v.find("blue"), -1);
  EXPECT_THROW(build_answer_vocab(train, 0), florence::Error);

  const SoftTarget t = soft_target({"2", "two", "2", "red", "blue", "blue"}, v);
  ASSERT_EQ(t.labels.size(), 2u);
  EXPECT_EQ(t.labels[0], 0);
  EXPECT_NEAR(t.scores[0], 0.9f, 1e-6);  // three annotators said 2
  EXPECT_NEAR(t.scores[1], 0.3f, 1e-6);  // one said red; blue is not in the vocabulary
  const auto dense = soft_target_tensor({t, SoftTarget{}}, 2);
  EXPECT_TRUE(torch::allclose(dense, torch::tensor({{0.9f, 0.3f}, {0.0f, 0.0f}})));
  EXPECT_THROW(soft_target_tensor({t}, 1), florence::Error);
}

}  // namespace

}  // namespace test_vqa_metric
