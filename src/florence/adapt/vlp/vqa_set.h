#pragma once
// A VQA set from real art (`florence data build vqa`): scenes of real sprites (sprites.h,
// scene.h) with template questions and ten simulated annotator answers each, written in a JSON
// layout close to VQA v2's (Goyal et al. 2017; the official files v2_OpenEnded_mscoco_*_questions
// .json and v2_mscoco_*_annotations.json).
//
// Output (OUT = VqaSetOptions::out_dir):
//   OUT/images/{train,val,test}/NNNNNNNN.png      scene images (RGB PNG, image_size square)
//   OUT/{split}_questions.json    {info, task_type "Open-Ended", data_type "florence-sprites",
//                                  data_subtype split, questions [{image_id, question,
//                                  question_id}], images [{image_id, file_name, width, height}]}
//                                  (images[] is our addition: where each image is, relative to OUT)
//   OUT/{split}_annotations.json  {info, data_subtype, annotations [{image_id, question_id,
//                                  question_type, answer_type, multiple_choice_answer,
//                                  answers [{answer, answer_confidence, answer_id 1..10}]}],
//                                  scenes [{image_id, objects [{sprite, category, name, bbox
//                                  [x,y,w,h], area, color}]}]}
//   OUT/answers.json              the answer vocabulary: METER's rule (vqa_metric.h
//                                  build_answer_vocab) over the train questions, min_answer_count
//   OUT/summary.json              counts per split / question type / answer, sprite and
//                                  background summaries, failures
//
// Templates (question_type; answer_type):
//   presence  "is there a bird?"                      yes/no   (half yes, half no)
//   count     "how many birds are there?"             number   (0 for an absent category)
//   category  "what kind of thing is the sunflower?"  other    (sprite name unique in the scene)
//   position  "what is left of the bird?" / right     other    (nearest object on that side whose
//                                                              gap is clear of the runner-up by
//                                                              >= 6 px; referent's category unique)
//   color     "what color is the bird?"               other    (dominant palette colour with
//                                                              >= 45% of the sprite's pixels)
//   size      "what is the largest thing?" / smallest other    (visible area >= 1.4x the next)
// Answers: each of the ten annotators gives the right answer with a per-type probability
// (yes/no 0.9, number 0.8, others 0.75), then as a synonym with probability 0.15 (category
// synonyms and plural, "grey", "two"), otherwise a near miss (count +-1, a similar colour, another
// object of the scene, the other yes/no) with probability 0.7, else a random answer of the type.
// The right answer is then made the strict plurality with at least 4 votes by replacing other
// votes (so multiple_choice_answer is always the template's answer); the disagreement stays.
// Test scenes use only test sprites and test photos (sprites.h split), val likewise.
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "florence/data/scene.h"
#include "florence/data/sprites.h"

namespace florence::vlp {

struct VqaSetOptions {
  std::string out_dir;
  data::SpriteBankOptions sprites;
  data::BackgroundOptions backgrounds;
  int image_size = 128;                   ///< square scenes, pixels
  int64_t train_images = 2100, val_images = 300, test_images = 600;
  int min_objects = 2, max_objects = 6;   ///< sprites per scene
  double p_repeat_category = 0.35;        ///< a further sprite takes a category already present
  double min_side_frac = 0.2, max_side_frac = 0.5;  ///< sprite's longer side / image_size
  double min_visible = 0.7;               ///< a placement may hide at most 30% of an earlier sprite
  int questions_per_image = 6;            ///< at most; types drawn round-robin in random order
  int answers_per_question = 10;          ///< VQA v2: 10
  int64_t min_answer_count = 9;           ///< answer vocabulary threshold (METER: 9)
  uint64_t seed = 0;
  int threads = 0;
  bool overwrite = false;                 ///< replace an existing set in out_dir
  bool progress = true;
};

/// Builds the set; returns summary.json's content. Throws florence::Error when out_dir holds a set
/// and overwrite is false, options are out of range, or the sprite bank has fewer than 3 categories
/// with sprites in every split. Scenes whose sprites cannot be placed, or that yield no question,
/// are counted in summary["failures"] and logged, not thrown.
nlohmann::json build_vqa_set(const VqaSetOptions& options);

// Building blocks (tests) ------------------------------------------------------------------------

/// One sprite as placed in a scene.
struct VqaObject {
  size_t sprite = 0;   ///< index into the bank's sprites()
  int category = -1;
  std::string name;    ///< the sprite's name
  cv::Rect box;        ///< visible box, pixels
  int64_t area = 0;    ///< visible pixels
  std::string color;   ///< dominant colour ("" when no colour has >= 45%)
};

struct VqaDraft {
  std::string question, question_type, answer_type, answer;
};

/// All the template questions a scene allows (at most one per template variant and referent),
/// in a fixed order. `absent` are categories not in the scene that presence/count may ask about.
std::vector<VqaDraft> candidate_questions(const std::vector<VqaObject>& objects,
                                          const std::vector<data::SpriteCategory>& categories,
                                          const std::vector<int>& absent);

/// Picks up to n drafts, cycling through the question types in a random order.
std::vector<VqaDraft> pick_questions(const std::vector<VqaDraft>& drafts, int n, std::mt19937_64& rng);

/// The annotators' answers for a draft (see top). `scene_categories`: category names present.
std::vector<std::string> annotator_answers(const VqaDraft& draft, const std::vector<data::SpriteCategory>& categories,
                                           const std::vector<std::string>& scene_categories, int n,
                                           std::mt19937_64& rng);

}  // namespace florence::vlp
