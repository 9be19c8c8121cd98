// VQA set from real art; see vqa_set.h.
#include "florence/adapt/vlp/vqa_set.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>
#include <set>

#include "florence/adapt/vlp/vqa_metric.h"
#include "florence/core/error.h"
#include "florence/core/files.h"
#include "florence/data/transforms.h"

namespace fs = std::filesystem;

namespace florence::vlp {

namespace {

using data::uniform01;
using data::uniform_int;

const char* const kSplits[] = {"train", "val", "test"};

const std::vector<std::string>& number_names() {
  static const std::vector<std::string> w = {"zero", "one", "two", "three", "four", "five",
                                             "six",  "seven", "eight", "nine", "ten"};
  return w;
}

template <class T>
const T& pick(const std::vector<T>& v, std::mt19937_64& rng) {
  return v[uniform_int(rng, v.size())];
}

std::string article_phrase(const std::string& word) { return data::indefinite_article(word) + " " + word; }

// Category-valued answer types: "category", "position", "size".
bool category_valued(const std::string& type) { return type == "category" || type == "position" || type == "size"; }

const data::SpriteCategory* find_category(const std::vector<data::SpriteCategory>& cats, const std::string& name) {
  for (const auto& c : cats)
    if (c.name == name) return &c;
  return nullptr;
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// Questions
// ------------------------------------------------------------------------------------------------

std::vector<VqaDraft> candidate_questions(const std::vector<VqaObject>& objects,
                                          const std::vector<data::SpriteCategory>& categories,
                                          const std::vector<int>& absent) {
  std::vector<VqaDraft> out;
  std::map<int, int> count;
  std::map<std::string, int> name_count;
  for (const auto& o : objects) ++count[o.category], ++name_count[o.name];
  auto cname = [&](int c) { return categories[size_t(c)].name; };
  // presence + count
  for (const auto& [c, n] : count) {
    out.push_back({"is there " + article_phrase(cname(c)) + "?", "presence", "yes/no", "yes"});
    out.push_back({"how many " + categories[size_t(c)].plural + " are there?", "count", "number", std::to_string(n)});
  }
  for (int c : absent) {
    if (count.count(c)) continue;
    out.push_back({"is there " + article_phrase(cname(c)) + "?", "presence", "yes/no", "no"});
    out.push_back({"how many " + categories[size_t(c)].plural + " are there?", "count", "number", "0"});
  }
  for (size_t i = 0; i < objects.size(); ++i) {
    const VqaObject& o = objects[i];
    const bool unique_cat = count[o.category] == 1;
    const bool unique_name = name_count[o.name] == 1 && o.name != cname(o.category);
    // category: by the sprite's own name
    if (unique_name) out.push_back({"what kind of thing is the " + o.name + "?", "category", "other", cname(o.category)});
    // color: by category, else by name
    if (!o.color.empty() && (unique_cat || unique_name))
      out.push_back({"what color is the " + (unique_cat ? cname(o.category) : o.name) + "?", "color", "other", o.color});
    // position: nearest object on each side by centre, clear of the runner-up
    if (!unique_cat) continue;
    const double cx = o.box.x + 0.5 * o.box.width;
    for (int side : {-1, 1}) {
      std::vector<std::pair<double, int>> cand;  // (gap, category)
      for (size_t j = 0; j < objects.size(); ++j) {
        if (j == i) continue;
        const double ox = objects[j].box.x + 0.5 * objects[j].box.width;
        const double gap = side * (ox - cx);
        if (gap > 4.0) cand.emplace_back(gap, objects[j].category);
      }
      if (cand.empty()) continue;
      std::sort(cand.begin(), cand.end());
      if (cand.size() > 1 && cand[1].first - cand[0].first < 6.0 && cand[1].second != cand[0].second) continue;
      out.push_back({std::string("what is ") + (side < 0 ? "left" : "right") + " of the " + cname(o.category) + "?",
                     "position", "other", cname(cand[0].second)});
    }
  }
  // size: largest / smallest by visible area, clear by a factor 1.4
  if (objects.size() >= 2) {
    std::vector<std::pair<int64_t, int>> by_area;
    for (const auto& o : objects) by_area.emplace_back(o.area, o.category);
    std::sort(by_area.begin(), by_area.end());
    const size_t n = by_area.size();
    if (double(by_area[n - 1].first) >= 1.4 * double(by_area[n - 2].first))
      out.push_back({"what is the largest thing?", "size", "other", cname(by_area[n - 1].second)});
    if (double(by_area[1].first) >= 1.4 * double(by_area[0].first))
      out.push_back({"what is the smallest thing?", "size", "other", cname(by_area[0].second)});
  }
  return out;
}

std::vector<VqaDraft> pick_questions(const std::vector<VqaDraft>& drafts, int n, std::mt19937_64& rng) {
  std::vector<std::string> types;
  std::map<std::string, std::vector<size_t>> by_type;
  for (size_t i = 0; i < drafts.size(); ++i) {
    if (!by_type.count(drafts[i].question_type)) types.push_back(drafts[i].question_type);
    by_type[drafts[i].question_type].push_back(i);
  }
  for (size_t i = types.size(); i > 1; --i) std::swap(types[i - 1], types[uniform_int(rng, i)]);
  // presence: keep yes and no equally likely (scenes have more absent than present categories).
  std::vector<VqaDraft> out;
  std::set<std::string> asked;
  bool any = true;
  while (int(out.size()) < n && any) {
    any = false;
    for (const auto& t : types) {
      if (int(out.size()) >= n) break;
      auto& pool = by_type[t];
      if (pool.empty()) continue;
      size_t k = uniform_int(rng, pool.size());
      if (t == "presence" || t == "count") {  // half present, half absent
        const bool want_absent = uniform01(rng) < (t == "presence" ? 0.5 : 0.2);
        std::vector<size_t> match;
        for (size_t m = 0; m < pool.size(); ++m)
          if ((drafts[pool[m]].answer == (t == "presence" ? "no" : "0")) == want_absent) match.push_back(m);
        if (!match.empty()) k = match[uniform_int(rng, match.size())];
      }
      const VqaDraft& d = drafts[pool[k]];
      pool.erase(pool.begin() + long(k));
      any = true;
      if (!asked.insert(d.question).second) continue;  // one question text per image
      out.push_back(d);
    }
  }
  return out;
}

std::vector<std::string> annotator_answers(const VqaDraft& d, const std::vector<data::SpriteCategory>& categories,
                                           const std::vector<std::string>& scene_categories, int n,
                                           std::mt19937_64& rng) {
  const std::string& t = d.answer_type == "yes/no" ? d.answer_type : (d.answer_type == "number" ? d.answer_type : d.question_type);
  const double p_right = t == "yes/no" ? 0.9 : (t == "number" ? 0.8 : 0.75);
  auto synonym = [&]() -> std::string {
    if (t == "number") {
      const int v = std::stoi(d.answer);
      return v >= 0 && v < int(number_names().size()) ? number_names()[size_t(v)] : d.answer;
    }
    if (t == "color") return d.answer == "gray" ? "grey" : (d.answer == "purple" ? "violet" : d.answer);
    if (category_valued(t)) {
      const data::SpriteCategory* c = find_category(categories, d.answer);
      if (!c) return d.answer;
      std::vector<std::string> alts = c->synonyms;
      if (c->plural != c->name) alts.push_back(c->plural);
      return alts.empty() ? d.answer : pick(alts, rng);
    }
    return d.answer;
  };
  auto random_category = [&]() { return categories[uniform_int(rng, categories.size())].name; };
  auto near_miss = [&]() -> std::string {
    if (t == "yes/no") return d.answer == "yes" ? "no" : "yes";
    if (t == "number") {
      const int v = std::stoi(d.answer);
      return std::to_string(v == 0 || uniform01(rng) < 0.5 ? v + 1 : v - 1);
    }
    if (t == "color") {
      const auto& sim = data::similar_colours(d.answer);
      return sim.empty() ? pick(data::colour_palette(), rng) : pick(sim, rng);
    }
    std::vector<std::string> others;
    for (const auto& c : scene_categories)
      if (c != d.answer) others.push_back(c);
    return others.empty() ? random_category() : pick(others, rng);
  };
  auto random_answer = [&]() -> std::string {
    if (t == "yes/no") return uniform01(rng) < 0.5 ? "yes" : "no";
    if (t == "number") return std::to_string(uniform_int(rng, 7));
    if (t == "color") return pick(data::colour_palette(), rng);
    return random_category();
  };
  std::vector<std::string> ans(size_t(std::max(0, n)));
  for (auto& a : ans) {
    if (uniform01(rng) < p_right)
      a = uniform01(rng) < 0.15 ? synonym() : d.answer;
    else
      a = uniform01(rng) < 0.7 ? near_miss() : random_answer();
  }
  // The template's answer is the strict plurality with >= 4 votes (min(4, n)).
  auto tally = [&](std::map<std::string, int>& c) {
    c.clear();
    for (const auto& a : ans) ++c[a];
  };
  std::map<std::string, int> counts;
  tally(counts);
  for (;;) {
    const int right = counts[d.answer];
    int other = 0;
    for (const auto& [a, k] : counts)
      if (a != d.answer) other = std::max(other, k);
    if ((right >= std::min(4, n) && right > other) || right == n) break;
    std::vector<size_t> wrong;
    for (size_t i = 0; i < ans.size(); ++i)
      if (ans[i] != d.answer) wrong.push_back(i);
    ans[pick(wrong, rng)] = d.answer;
    tally(counts);
  }
  return ans;
}

// ------------------------------------------------------------------------------------------------
// The set
// ------------------------------------------------------------------------------------------------

namespace {

struct SceneResult {
  bool ok = false;
  std::string failure;
  int64_t placement_failures = 0;
  std::string background;
  std::vector<VqaObject> objects;
  std::vector<VqaDraft> drafts;
  std::vector<std::vector<std::string>> answers;
};

}  // namespace

nlohmann::json build_vqa_set(const VqaSetOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  if (o.image_size < 32) throw Error("vqa set: --size must be >= 32, got " + std::to_string(o.image_size));
  if (o.train_images < 1 || o.val_images < 0 || o.test_images < 0) throw Error("vqa set: image counts must be >= 0 (train >= 1)");
  if (o.min_objects < 1 || o.max_objects < o.min_objects) throw Error("vqa set: objects range is invalid");
  if (o.questions_per_image < 1 || o.answers_per_question < 1) throw Error("vqa set: questions and answers per item must be >= 1");
  if (!(o.min_side_frac > 0 && o.max_side_frac >= o.min_side_frac && o.max_side_frac <= 1))
    throw Error("vqa set: sprite size fractions must satisfy 0 < min <= max <= 1");
  std::vector<std::string> owned = {"images", "answers.json", "summary.json"};
  for (const char* s : kSplits) owned.push_back(std::string(s) + "_questions.json"), owned.push_back(std::string(s) + "_annotations.json");
  data::check_set_dir(o.out_dir, owned, o.overwrite, "vqa set");

  data::SpriteBankOptions so = o.sprites;
  if (so.threads == 0) so.threads = o.threads;
  const data::SpriteBank bank = data::SpriteBank::load(so);
  const data::BackgroundBank backgrounds(o.backgrounds);
  const auto& cats = bank.categories();
  const std::vector<int> usable = bank.usable_categories({"train", "val", "test"}, 1);
  if (usable.size() < 3)
    throw Error(fmt::format("vqa set: only {} categories have sprites in train, val and test (need 3)", usable.size()));
  data::prepare_set_dir(o.out_dir, owned, o.overwrite, "vqa set");

  data::ComposeOptions co;
  co.width = co.height = o.image_size;
  co.min_objects = o.min_objects;
  co.max_objects = o.max_objects;
  co.p_repeat_category = o.p_repeat_category;
  co.min_visible = o.min_visible;
  auto side = [&](std::mt19937_64& rng, const data::Sprite&) {
    return data::uniform_range(rng, o.min_side_frac, o.max_side_frac) * o.image_size;
  };

  const int64_t counts[3] = {o.train_images, o.val_images, o.test_images};
  std::vector<nlohmann::json> questions_files, annotation_files;
  std::vector<std::vector<std::string>> train_answers;
  std::map<std::string, int64_t> failures;
  nlohmann::json per_split = nlohmann::json::object();
  std::map<std::string, std::map<std::string, int64_t>> type_counts, answer_counts;
  int64_t next_image_id = 1;
  for (int si = 0; si < 3; ++si) {
    const std::string split = kSplits[si];
    const fs::path img_dir = fs::path(o.out_dir) / "images" / split;
    fs::create_directories(img_dir);
    std::vector<SceneResult> results(static_cast<size_t>(counts[si]));
    const int64_t first_id = next_image_id;
    data::parallel_for_index(results.size(), o.threads, [&](size_t i) {
      std::mt19937_64 rng(data::item_seed(o.seed, "vqa/" + split, i));
      SceneResult& r = results[i];
      const data::ComposedScene scene = data::compose_scene(bank, backgrounds, split, usable, co, side, rng);
      r.placement_failures = scene.placement_failures;
      r.background = scene.background;
      std::set<int> present;
      for (const auto& ob : scene.objects) {
        const data::Sprite& sp = bank.sprites()[ob.sprite];
        VqaObject v{ob.sprite, ob.category, sp.name, ob.box, ob.area, sp.colour.share >= 0.45 ? sp.colour.name : ""};
        r.objects.push_back(v);
        present.insert(ob.category);
      }
      if (r.objects.empty()) {
        r.failure = "no_object_placed";
        return;
      }
      std::vector<int> absent;
      for (int c : usable)
        if (!present.count(c)) absent.push_back(c);
      for (size_t k = absent.size(); k > 1; --k) std::swap(absent[k - 1], absent[uniform_int(rng, k)]);
      if (absent.size() > 3) absent.resize(3);
      r.drafts = pick_questions(candidate_questions(r.objects, cats, absent), o.questions_per_image, rng);
      if (r.drafts.empty()) {
        r.failure = "no_question";
        return;
      }
      std::vector<std::string> scene_cats;
      for (int c : present) scene_cats.push_back(cats[size_t(c)].name);
      for (const auto& d : r.drafts) r.answers.push_back(annotator_answers(d, cats, scene_cats, o.answers_per_question, rng));
      data::write_rgb_png((img_dir / fmt::format("{:08d}.png", first_id + int64_t(i))).string(), scene.image);
      r.ok = true;
    });
    nlohmann::json qs = nlohmann::json::array(), imgs = nlohmann::json::array(), anns = nlohmann::json::array(),
                   scenes = nlohmann::json::array();
    int64_t n_images = 0, n_questions = 0;
    for (size_t i = 0; i < results.size(); ++i) {
      const SceneResult& r = results[i];
      failures["placement_failed"] += r.placement_failures;
      const int64_t image_id = first_id + int64_t(i);
      if (!r.ok) {
        ++failures[r.failure];
        continue;
      }
      ++n_images;
      imgs.push_back({{"image_id", image_id},
                      {"file_name", fmt::format("images/{}/{:08d}.png", split, image_id)},
                      {"width", o.image_size},
                      {"height", o.image_size}});
      nlohmann::json objs = nlohmann::json::array();
      for (const auto& ob : r.objects)
        objs.push_back({{"sprite", bank.sprites()[ob.sprite].key},
                        {"category", cats[size_t(ob.category)].name},
                        {"name", ob.name},
                        {"bbox", {ob.box.x, ob.box.y, ob.box.width, ob.box.height}},
                        {"area", ob.area},
                        {"color", ob.color}});
      scenes.push_back({{"image_id", image_id}, {"background", r.background}, {"objects", objs}});
      for (size_t q = 0; q < r.drafts.size(); ++q) {
        const VqaDraft& d = r.drafts[q];
        const int64_t qid = image_id * 100 + int64_t(q);
        qs.push_back({{"image_id", image_id}, {"question", d.question}, {"question_id", qid}});
        nlohmann::json answers = nlohmann::json::array();
        for (size_t a = 0; a < r.answers[q].size(); ++a) {
          const std::string& ans = r.answers[q][a];
          const bool right = normalize_answer(ans) == normalize_answer(d.answer);
          answers.push_back({{"answer", ans}, {"answer_confidence", right ? "yes" : "maybe"}, {"answer_id", int64_t(a) + 1}});
        }
        anns.push_back({{"image_id", image_id},
                        {"question_id", qid},
                        {"question_type", d.question_type},
                        {"answer_type", d.answer_type},
                        {"multiple_choice_answer", d.answer},
                        {"answers", answers}});
        ++type_counts[split][d.question_type];
        ++answer_counts[split][d.answer];
        if (split == "train") train_answers.push_back(r.answers[q]);
        ++n_questions;
      }
    }
    next_image_id += counts[si];
    const nlohmann::json info = {{"description", "florence VQA set from real art (sprites)"}, {"seed", o.seed}};
    core::write_text_atomic(fs::path(o.out_dir) / (split + "_questions.json"),
                            nlohmann::json({{"info", info},
                                            {"task_type", "Open-Ended"},
                                            {"data_type", "florence-sprites"},
                                            {"data_subtype", split},
                                            {"questions", qs},
                                            {"images", imgs}})
                                .dump());
    core::write_text_atomic(fs::path(o.out_dir) / (split + "_annotations.json"),
                            nlohmann::json({{"info", info}, {"data_subtype", split}, {"annotations", anns}, {"scenes", scenes}}).dump());
    per_split[split] = {{"images", n_images}, {"questions", n_questions}, {"question_types", type_counts[split]}};
    if (o.progress) spdlog::info("vqa set: {}: {} images, {} questions", split, n_images, n_questions);
  }
  const AnswerVocab vocab = build_answer_vocab(train_answers, o.min_answer_count);
  nlohmann::json vocab_json = {{"answers", vocab.answers}, {"counts", vocab.counts}, {"min_count", o.min_answer_count},
                               {"rule", "majority answers of the train questions, normalised (vqa_metric.h build_answer_vocab)"}};
  core::write_text_atomic(fs::path(o.out_dir) / "answers.json", vocab_json.dump(1));

  nlohmann::json top = nlohmann::json::object();
  for (const auto& [split, m] : answer_counts) {
    std::vector<std::pair<int64_t, std::string>> v;
    for (const auto& [a, k] : m) v.emplace_back(-k, a);
    std::sort(v.begin(), v.end());
    nlohmann::json list = nlohmann::json::array();
    for (size_t i = 0; i < v.size() && i < 15; ++i) list.push_back({v[i].second, -v[i].first});
    top[split] = list;
  }
  nlohmann::json summary = {
      {"set", "vqa"},
      {"out_dir", o.out_dir},
      {"options",
       {{"image_size", o.image_size}, {"images", {o.train_images, o.val_images, o.test_images}},
        {"objects", {o.min_objects, o.max_objects}}, {"questions_per_image", o.questions_per_image},
        {"answers_per_question", o.answers_per_question}, {"seed", o.seed}}},
      {"splits", per_split},
      {"answer_vocabulary", vocab.size()},
      {"top_answers", top},
      {"categories_used", [&] {
         nlohmann::json a = nlohmann::json::array();
         for (int c : usable) a.push_back(cats[size_t(c)].name);
         return a;
       }()},
      {"sprites", bank.summary()},
      {"backgrounds", backgrounds.summary()},
      {"failures", failures},
      {"seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()}};
  core::write_text_atomic(fs::path(o.out_dir) / "summary.json", summary.dump(2));
  return summary;
}

}  // namespace florence::vlp
