// VQA set from real art: template questions on a hand-built scene, the annotator model, and a
// small set built from real corpora (tests/support/sprite_corpora.h): counts, VQA v2 fields,
// answers from the templates, held-out sprites, the vocabulary, determinism.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <set>

#include "florence/adapt/vlp/vqa_metric.h"
#include "florence/adapt/vlp/vqa_set.h"
#include "florence/core/error.h"
#include "florence/core/files.h"
#include "support/paths.h"
#include "support/sprite_corpora.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_vqa_set {

namespace fs = std::filesystem;
using namespace florence;
using namespace florence::vlp;

namespace {

std::vector<data::SpriteCategory> cats() {
  return {{"bird", "birds", {"birdie"}, {"x:a"}, false},
          {"fish", "fish", {"sea animal"}, {"x:b"}, false},
          {"boat", "boats", {"ship"}, {"x:c"}, false},
          {"fruit", "fruits", {}, {"x:d"}, false}};
}

const VqaDraft* find(const std::vector<VqaDraft>& v, const std::string& q) {
  for (const auto& d : v)
    if (d.question == q) return &d;
  return nullptr;
}

}  // namespace

TEST(VqaTemplates, QuestionsOfAHandBuiltScene) {
  // bird A (x 10..29, small), fish (x 50..79, large, blue), bird B (x 100..119), ordered left to right.
  std::vector<VqaObject> objs = {
      {0, 0, "parrot", cv::Rect(10, 40, 20, 20), 300, "red"},
      {1, 1, "clownfish", cv::Rect(50, 30, 30, 40), 1000, "blue"},
      {2, 0, "owl", cv::Rect(100, 40, 20, 20), 320, ""},
  };
  const auto d = candidate_questions(objs, cats(), {2});
  auto answer = [&](const std::string& q) {
    const VqaDraft* x = find(d, q);
    return x ? x->answer : std::string("<not asked>");
  };
  EXPECT_EQ(answer("is there a bird?"), "yes");
  EXPECT_EQ(answer("is there a boat?"), "no");
  EXPECT_EQ(answer("how many birds are there?"), "2");
  EXPECT_EQ(answer("how many fish are there?"), "1");
  EXPECT_EQ(answer("how many boats are there?"), "0");
  EXPECT_EQ(answer("what kind of thing is the parrot?"), "bird");
  EXPECT_EQ(answer("what kind of thing is the clownfish?"), "fish");
  EXPECT_EQ(answer("what color is the fish?"), "blue");
  EXPECT_EQ(answer("what color is the parrot?"), "red");  // bird is not unique: by name
  EXPECT_EQ(answer("what color is the owl?"), "<not asked>");  // no dominant colour
  // fish centre 65: nearest left is bird A (centre 20), nearest right bird B (110).
  EXPECT_EQ(answer("what is left of the fish?"), "bird");
  EXPECT_EQ(answer("what is right of the fish?"), "bird");
  EXPECT_EQ(answer("what is left of the bird?"), "<not asked>");  // two birds: ambiguous referent
  EXPECT_EQ(answer("what is the largest thing?"), "fish");  // 1000 >= 1.4 * 320
  EXPECT_EQ(answer("what is the smallest thing?"), "<not asked>");  // 300 vs 320: not clear
  for (const auto& q : d) {
    const std::string& t = q.question_type;
    EXPECT_TRUE(t == "presence" || t == "count" || t == "category" || t == "position" || t == "color" || t == "size") << t;
    EXPECT_EQ(q.answer_type, t == "presence" ? "yes/no" : (t == "count" ? "number" : "other"));
  }
  std::mt19937_64 rng(1);
  const auto picked = pick_questions(d, 5, rng);
  EXPECT_EQ(picked.size(), 5u);
  std::set<std::string> texts, types;
  for (const auto& q : picked) texts.insert(q.question), types.insert(q.question_type);
  EXPECT_EQ(texts.size(), 5u);
  EXPECT_EQ(types.size(), 5u);  // round-robin over the six types
}

TEST(VqaTemplates, PositionNeedsAClearNearestObject) {
  // Two objects left of the fish at nearly the same distance (centres 25 and 22, fish 65): not asked.
  std::vector<VqaObject> objs = {{0, 0, "a", cv::Rect(20, 0, 10, 10), 100, ""},
                                 {1, 3, "b", cv::Rect(17, 30, 10, 10), 100, ""},
                                 {2, 1, "c", cv::Rect(60, 0, 10, 10), 100, ""}};
  const auto d = candidate_questions(objs, cats(), {});
  EXPECT_EQ(find(d, "what is left of the fish?"), nullptr);
  ASSERT_NE(find(d, "what is right of the bird?"), nullptr);
  EXPECT_EQ(find(d, "what is right of the bird?")->answer, "fish");  // the fruit is 3 px left: too close to call
  EXPECT_EQ(find(d, "what is left of the bird?"), nullptr);
}

TEST(VqaAnswers, TenAnswersWithDisagreementAndAClearMajority) {
  std::mt19937_64 rng(7);
  int disagree = 0, synonyms = 0, near = 0;
  const std::vector<VqaDraft> drafts = {{"how many birds are there?", "count", "number", "2"},
                                        {"what kind of thing is the owl?", "category", "other", "bird"},
                                        {"what color is the fish?", "color", "other", "gray"},
                                        {"is there a boat?", "presence", "yes/no", "no"}};
  for (int rep = 0; rep < 200; ++rep) {
    for (const auto& d : drafts) {
      const auto a = annotator_answers(d, cats(), {"bird", "fish"}, 10, rng);
      ASSERT_EQ(a.size(), 10u);
      std::map<std::string, int> c;
      for (const auto& x : a) ++c[x];
      int other = 0;
      for (const auto& [k, n] : c)
        if (k != d.answer) other = std::max(other, n);
      EXPECT_GE(c[d.answer], 4);
      EXPECT_GT(c[d.answer], other);
      // The official metric gives the template's answer full credit.
      EXPECT_DOUBLE_EQ(vqa_accuracy(d.answer, a), 1.0);
      disagree += c.size() > 1;
      for (const auto& x : a) {
        synonyms += x == "two" || x == "birdie" || x == "birds" || x == "grey";
        near += x == "1" || x == "3" || x == "fish" || x == "white" || x == "black" || (d.answer == "no" && x == "yes");
        if (d.answer_type == "number") {
          EXPECT_TRUE(x == "two" || std::isdigit(static_cast<unsigned char>(x[0]))) << x;
        }
      }
    }
  }
  EXPECT_GT(disagree, 400);  // most of the 800 questions
  EXPECT_GT(synonyms, 100);
  EXPECT_GT(near, 300);
}

TEST(VqaSet, BuildsFromRealSpritesWithHeldOutTestSprites) {
  if (!test::sprite_sources_available()) GTEST_SKIP() << "needs openclipart-svg, librsvg2-bin and emoji-datasource-google (scripts/setup)";
  const fs::path out = fs::path(FLORENCE_TEST_TMP) / "vqa_set";
  VqaSetOptions o;
  o.out_dir = out.string();
  o.sprites = test::test_sprite_options();
  o.train_images = 40, o.val_images = 8, o.test_images = 16;
  o.image_size = 96;
  o.min_answer_count = 3;
  o.seed = 11;
  o.overwrite = true;
  o.progress = false;
  const nlohmann::json s = build_vqa_set(o);
  EXPECT_THROW(
      [&] {
        VqaSetOptions again = o;
        again.overwrite = false;
        build_vqa_set(again);
      }(),
      Error);

  const data::SpriteBank bank = data::SpriteBank::load(o.sprites);
  std::map<std::string, std::string> split_of_sprite;
  for (const auto& sp : bank.sprites()) split_of_sprite[sp.key] = sp.split;
  std::set<std::string> category_names = {"bird", "bug", "fruit", "boat"};
  std::set<std::string> types;
  std::set<int64_t> image_ids;
  for (const std::string split : {"train", "val", "test"}) {
    const auto q = core::read_json_file(out / (split + "_questions.json"));
    const auto a = core::read_json_file(out / (split + "_annotations.json"));
    EXPECT_EQ(q["data_subtype"], split);
    ASSERT_EQ(q["questions"].size(), a["annotations"].size());
    EXPECT_EQ(q["questions"].size(), s["splits"][split]["questions"].get<size_t>());
    EXPECT_EQ(q["images"].size(), s["splits"][split]["images"].get<size_t>());
    EXPECT_GE(q["images"].size(), size_t(split == "train" ? 38 : 7));
    for (const auto& im : q["images"]) {
      EXPECT_TRUE(image_ids.insert(im["image_id"].get<int64_t>()).second);
      EXPECT_TRUE(fs::exists(out / im["file_name"].get<std::string>())) << im;
    }
    for (const auto& sc : a["scenes"])
      for (const auto& ob : sc["objects"]) {
        EXPECT_EQ(split_of_sprite.at(ob["sprite"].get<std::string>()), split) << ob;  // held-out sprites
        const auto& b = ob["bbox"];
        EXPECT_GE(b[0].get<int>(), 0);
        EXPECT_LE(b[0].get<int>() + b[2].get<int>(), 96);
        EXPECT_LE(b[1].get<int>() + b[3].get<int>(), 96);
      }
    for (size_t i = 0; i < a["annotations"].size(); ++i) {
      const auto& an = a["annotations"][i];
      EXPECT_EQ(an["question_id"], q["questions"][i]["question_id"]);
      ASSERT_EQ(an["answers"].size(), 10u);
      const std::string t = an["question_type"], mc = an["multiple_choice_answer"];
      types.insert(t);
      if (t == "presence") {
        EXPECT_TRUE(mc == "yes" || mc == "no");
      }
      if (t == "count") {
        EXPECT_TRUE(mc.size() == 1 && std::isdigit(static_cast<unsigned char>(mc[0]))) << mc;
      }
      if (t == "category" || t == "position" || t == "size") {
        EXPECT_TRUE(category_names.count(mc)) << mc;
      }
      if (t == "color") {
        const auto& p = data::colour_palette();
        EXPECT_NE(std::find(p.begin(), p.end(), mc), p.end()) << mc;
      }
      for (int k = 0; k < 10; ++k) EXPECT_EQ(an["answers"][size_t(k)]["answer_id"], k + 1);
    }
  }
  EXPECT_EQ(types.size(), 6u);
  const auto vocab = core::read_json_file(out / "answers.json");
  EXPECT_GE(vocab["answers"].size(), 8u);
  EXPECT_EQ(s["answer_vocabulary"].get<int64_t>(), int64_t(vocab["answers"].size()));

  // Same seed, same set; the thread count does not matter.
  const auto first = core::read_text_file(out / "test_annotations.json");
  o.threads = 1;
  build_vqa_set(o);
  EXPECT_EQ(core::read_text_file(out / "test_annotations.json"), first);
  o.seed = 12;
  build_vqa_set(o);
  EXPECT_NE(core::read_text_file(out / "test_annotations.json"), first);
}

}  // namespace test_vqa_set
