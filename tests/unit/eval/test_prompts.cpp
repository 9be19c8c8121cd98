// Prompt-ensemble math on fixed vectors, template filling, text/label parsing, caption grouping.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "florence/core/error.h"
#include "florence/eval/embed.h"
#include "florence/eval/retrieval.h"
#include "florence/eval/zero_shot.h"
#include "support/paths.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_prompts {

using namespace florence::eval;
namespace fs = std::filesystem;

namespace {
fs::path tmp_dir(const std::string& name) {
  fs::path d = fs::path(FLORENCE_TEST_TMP) / "unit_eval_prompts" / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}
}  // namespace

// Class 0: templates (3,4) and (0,2) -> normalised (0.6,0.8) and (0,1) -> mean (0.3,0.9)
//          -> renormalised (0.3,0.9)/sqrt(0.9) = (1,3)/sqrt(10).
// Class 1: (-5,0) and (0,0.5) -> (-1,0) and (0,1) -> mean (-0.5,0.5) -> (-1,1)/sqrt(2).
// A plain mean of the raw vectors would give (1.5,3)/|.| and (-2.5,0.25)/|.|: different, so the
// test fails if either normalisation step is skipped.
TEST(PromptEnsemble, MeanOfNormalisedRenormalised) {
  torch::Tensor e = torch::tensor({3.0, 4.0, 0.0, 2.0, -5.0, 0.0, 0.0, 0.5}, torch::kDouble).view({2, 2, 2});
  torch::Tensor w = ensemble_embeddings(e);
  ASSERT_EQ(w.sizes(), (std::vector<int64_t>{2, 2}));
  EXPECT_NEAR(w[0][0].item<double>(), 1.0 / std::sqrt(10.0), 1e-12);
  EXPECT_NEAR(w[0][1].item<double>(), 3.0 / std::sqrt(10.0), 1e-12);
  EXPECT_NEAR(w[1][0].item<double>(), -1.0 / std::sqrt(2.0), 1e-12);
  EXPECT_NEAR(w[1][1].item<double>(), 1.0 / std::sqrt(2.0), 1e-12);
  // One template: the ensemble is the normalised embedding itself.
  torch::Tensor one = ensemble_embeddings(torch::tensor({0.0, 0.0, 2.0}, torch::kDouble).view({1, 1, 3}));
  EXPECT_TRUE(one.allclose(torch::tensor({0.0, 0.0, 1.0}, torch::kDouble).view({1, 3})));
  EXPECT_THROW(ensemble_embeddings(torch::zeros({2, 3})), florence::Error);
  EXPECT_THROW(ensemble_embeddings(torch::zeros({2, 0, 3})), florence::Error);
}

TEST(PromptEnsemble, Templates) {
  EXPECT_EQ(fill_template("a photo of a {}.", "cat"), "a photo of a cat.");
  EXPECT_EQ(fill_template("{} and {}", "x"), "x and x");
  EXPECT_THROW(fill_template("no placeholder", "x"), florence::Error);
  const auto& t = default_templates();
  EXPECT_GE(t.size(), 8u);
  for (const auto& s : t) EXPECT_NE(s.find("{}"), std::string::npos) << s;
  fs::path d = tmp_dir("templates");
  std::ofstream(d / "t.txt") << "# comment\n\na {}.\nart of {}\n";
  EXPECT_EQ(read_templates((d / "t.txt").string()), (std::vector<std::string>{"a {}.", "art of {}"}));
  std::ofstream(d / "bad.txt") << "a {}.\nnothing here\n";
  EXPECT_THROW(read_templates((d / "bad.txt").string()), florence::Error);
}

TEST(PromptEnsemble, ClassOfSample) {
  const std::vector<std::string> src{"zero", "one"};
  EXPECT_EQ(class_of({{"category", "Animals"}}, 1, src, "category"), "Animals");
  EXPECT_EQ(class_of({{"class", "dog"}}, -1, src, "category"), "dog");
  EXPECT_EQ(class_of(nlohmann::json::object(), 1, src, "category"), "one");
  EXPECT_EQ(class_of(nlohmann::json::object(), -1, src, "category"), "");
}

TEST(Inputs, TextsAndLabels) {
  fs::path d = tmp_dir("texts");
  std::ofstream(d / "plain.txt") << "a red car\n\nthe dog  \n";
  EXPECT_EQ(read_texts((d / "plain.txt").string()), (std::vector<std::string>{"a red car", "the dog  "}));
  std::ofstream(d / "t.jsonl") << "{\"text\": \"one\", \"id\": 1}\n{\"text\": \"two\"}\n";
  EXPECT_EQ(read_texts((d / "t.jsonl").string()), (std::vector<std::string>{"one", "two"}));
  std::ofstream(d / "bad.jsonl") << "{\"text\": \"one\"}\n{\"txt\": 2}\n";
  EXPECT_THROW(read_texts((d / "bad.jsonl").string()), florence::Error);
  EXPECT_EQ(split_labels(" cat, dog ,bird house "), (std::vector<std::string>{"cat", "dog", "bird house"}));
  EXPECT_EQ(split_labels("  "), std::vector<std::string>{});
  // A blank item is a typo, never silently dropped: the error names the flag, the list and the item.
  for (const auto& [csv, item] : std::vector<std::pair<std::string, int>>{
           {"dog,,cat", 2}, {"dog, ,cat", 2}, {"dog,cat,", 3}, {",dog", 1}}) {
    try {
      split_labels(csv, "--labels");
      ADD_FAILURE() << csv;
    } catch (const florence::Error& e) {
      EXPECT_EQ(std::string(e.what()), "--labels '" + csv + "': item " + std::to_string(item) +
                                           " is empty (a doubled, leading or trailing comma?)");
    }
  }
}

TEST(Retrieval, CaptionsGroupedByCleanedText) {
  // "Grinning Face" and "grinning  face" clean to the same text -> one group.
  TextGroups g = group_texts({"Grinning Face", "cat", "grinning  face", "dog", "cat"});
  EXPECT_EQ(g.texts, (std::vector<std::string>{"Grinning Face", "cat", "dog"}));
  EXPECT_EQ(g.group, (std::vector<int64_t>{0, 1, 0, 2, 1}));
}

TEST(PromptEnsemble, ClassNamesTable) {
  EXPECT_EQ(default_prompt_name("signs_and_symbols"), "signs and symbols");
  const ClassPrompts table{{"Flags", "flag"}, {"People & Body", "person"}};
  EXPECT_EQ(prompt_name("Flags", table), "flag");
  EXPECT_EQ(prompt_name("People & Body", table), "person");
  EXPECT_EQ(prompt_name("hair_dryer", table), "hair dryer");  // no entry: the default rule
  EXPECT_EQ(prompt_name("flags", table), "flags");            // entries match exactly

  fs::path d = tmp_dir("class_names");
  std::ofstream(d / "ok.json") << R"({"Animals & Nature": "animal or plant", "shapes": "shape"})";
  EXPECT_EQ(read_class_prompts((d / "ok.json").string()),
            (ClassPrompts{{"Animals & Nature", "animal or plant"}, {"shapes", "shape"}}));
  std::ofstream(d / "array.json") << R"(["animal", "plant"])";
  std::ofstream(d / "number.json") << R"({"animals": 3})";
  std::ofstream(d / "empty.json") << R"({"animals": ""})";
  std::ofstream(d / "broken.json") << R"({"animals": "animal")";
  for (const char* bad : {"array.json", "number.json", "empty.json", "broken.json", "missing.json"})
    EXPECT_THROW(read_class_prompts((d / bad).string()), florence::Error) << bad;
}

}  // namespace test_prompts
