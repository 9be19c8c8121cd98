// VQA set reading (vqa_data.h): a hand-written two-image set (images written here with OpenCV),
// counted skips, the answer vocabulary checks and the per-question-type prior on hand-computed
// cases.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <opencv2/imgcodecs.hpp>

#include <filesystem>
#include <fstream>

#include "florence/adapt/vlp/vqa_data.h"
#include "florence/core/error.h"
#include "support/paths.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_vqa_data {

using namespace florence;
using namespace florence::vlp;
namespace fs = std::filesystem;

namespace {

nlohmann::json answers(const std::vector<std::string>& a) {
  nlohmann::json j = nlohmann::json::array();
  for (size_t i = 0; i < a.size(); ++i) j.push_back({{"answer", a[i]}, {"answer_confidence", "yes"}, {"answer_id", i + 1}});
  return j;
}

fs::path write_set() {
  const fs::path d = fs::path(FLORENCE_TEST_TMP) / "vqa_data_set";
  fs::remove_all(d);
  fs::create_directories(d / "images");
  // Image 1: red 40x40 (resized to 32), image 2: listed but missing on disk.
  cv::Mat red(40, 40, CV_8UC3, cv::Scalar(0, 0, 255));  // BGR
  cv::imwrite((d / "images/1.png").string(), red);
  const nlohmann::json q = {{"questions",
                             {{{"image_id", 1}, {"question", "what color is the bird?"}, {"question_id", 100}},
                              {{"image_id", 1}, {"question", "is there a bird?"}, {"question_id", 101}},
                              {{"image_id", 2}, {"question", "is there a boat?"}, {"question_id", 200}},
                              {{"image_id", 1}, {"question", "how many birds are there?"}, {"question_id", 102}}}},
                            {"images",
                             {{{"image_id", 1}, {"file_name", "images/1.png"}},
                              {{"image_id", 2}, {"file_name", "images/2.png"}}}}};
  const nlohmann::json a = {
      {"annotations",
       {{{"question_id", 100}, {"image_id", 1}, {"question_type", "color"}, {"answer_type", "other"},
         {"multiple_choice_answer", "red"}, {"answers", answers({"red", "red", "red", "red", "orange"})}},
        {{"question_id", 101}, {"image_id", 1}, {"question_type", "presence"}, {"answer_type", "yes/no"},
         {"multiple_choice_answer", "yes"}, {"answers", answers({"yes", "yes", "no"})}},
        {{"question_id", 200}, {"image_id", 2}, {"question_type", "presence"}, {"answer_type", "yes/no"},
         {"multiple_choice_answer", "no"}, {"answers", answers({"no"})}}}}};  // 102 has no annotation
  std::ofstream(d / "train_questions.json") << q.dump();
  std::ofstream(d / "train_annotations.json") << a.dump();
  std::ofstream(d / "answers.json") << nlohmann::json({{"answers", {"yes", "red", "no"}}, {"counts", {2, 1, 1}}}).dump();
  return d;
}

}  // namespace

TEST(VqaData, ReadsASplitCountingSkips) {
  const fs::path d = write_set();
  VqaImageOptions io;
  io.image_size = 32;
  io.mean = {0.5f, 0.5f, 0.5f};
  io.std = {0.5f, 0.5f, 0.5f};
  const VqaSplit s = load_vqa_split(d.string(), "train", io);
  ASSERT_EQ(s.items.size(), 2u);  // 200: image missing; 102: no annotation
  EXPECT_EQ(s.skipped.at("image_unreadable"), 1);
  EXPECT_EQ(s.skipped.at("question_without_annotation"), 1);
  EXPECT_EQ(s.items[0].question_id, 100);
  EXPECT_EQ(s.items[1].answers.size(), 3u);
  ASSERT_EQ(s.images.sizes(), (std::vector<int64_t>{1, 3, 32, 32}));
  // Pure red normalised with mean = std = 0.5: R = (1 - 0.5) / 0.5 = 1, G = B = -1.
  EXPECT_NEAR(s.images[0][0].mean().item<double>(), 1.0, 1e-6);
  EXPECT_NEAR(s.images[0][1].mean().item<double>(), -1.0, 1e-6);
  ASSERT_EQ(s.by_image.size(), 1u);
  EXPECT_EQ(s.by_image[0], (std::vector<int64_t>{0, 1}));
  const auto q = s.questions();
  EXPECT_EQ(q[1].answer_type, "yes/no");
  EXPECT_THROW(load_vqa_split(d.string(), "test", io), Error);  // no such split

  const AnswerVocab v = load_answer_vocab(d.string());
  EXPECT_EQ(v.answers, (std::vector<std::string>{"yes", "red", "no"}));
  EXPECT_EQ(v.find("Red"), 1);
  EXPECT_THROW(answer_vocab_from_list({"yes", "yes"}, "t"), Error);
  EXPECT_THROW(answer_vocab_from_list({"Two"}, "t"), Error);  // not normalised ("2")
  EXPECT_THROW(answer_vocab_from_list({}, "t"), Error);
}

TEST(VqaData, PriorIsTheMostFrequentAnswerPerQuestionType) {
  VqaSplit train;
  auto add = [&](const std::string& type, const std::string& mc) {
    VqaItem it;
    it.question_type = type;
    it.multiple_choice_answer = mc;
    it.answers = {mc};
    train.items.push_back(it);
  };
  add("count", "2"), add("count", "two"), add("count", "3");  // "two" normalises to "2"
  add("presence", "no"), add("presence", "yes");               // tie: the smaller string
  add("color", "red"), add("color", "blue"), add("color", "red"), add("color", "blue"), add("color", "blue");
  const PriorBaseline p = prior_baseline(train);
  EXPECT_EQ(p.predict("count"), "2");
  EXPECT_EQ(p.predict("presence"), "no");
  EXPECT_EQ(p.predict("color"), "blue");
  EXPECT_EQ(p.predict("size"), "blue");  // unseen type: overall most frequent (blue 3, red 2, 2 2)
  // Scored with the official metric: a count question whose ten answers hold three "2".
  const std::vector<VqaQuestion> qs = {{"count", "number", {"2", "2", "two", "3", "3", "3", "3", "4", "4", "1"}}};
  EXPECT_NEAR(evaluate_vqa(qs, {p.predict("count")}).overall, 90.0, 1e-9);  // 3 matches -> 0.9
}

}  // namespace test_vqa_data
