// `florence eval all` over the standard held-out sets, and the summary table (see standard.h).
#include "florence/eval/standard.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>

#include "florence/core/error.h"
#include "florence/core/files.h"
#include "florence/eval/metrics.h"
#include "florence/eval/retrieval.h"
#include "florence/eval/zero_shot.h"

namespace fs = std::filesystem;

namespace florence::eval {

const std::vector<StandardSet>& standard_sets() {
  static const std::vector<StandardSet> s = {
      {"fashion-mnist", true, false, true, {}},
      {"openclipart", true, true, false,
       {{"animals", "animal"}, {"buildings", "building"}, {"buttons", "button"}, {"containers", "container"},
        {"decorations", "decoration"}, {"electronics", "electronic device"}, {"logos", "logo"},
        {"people", "person"}, {"plants", "plant"}, {"shapes", "shape"}, {"signs_and_symbols", "sign or symbol"},
        {"tools", "tool"}}},
      {"emoji", true, true, false,
       {{"Activities", "activity"}, {"Animals & Nature", "animal or plant"}, {"Component", "skin tone or hair style"},
        {"Flags", "flag"}, {"Food & Drink", "food or drink"}, {"Objects", "object"}, {"People & Body", "person"},
        {"Smileys & Emotion", "smiley face"}, {"Symbols", "symbol"}, {"Travel & Places", "place or vehicle"}}},
      // The corpora of issue 17 (data/corpus.h); a data root without them reports them missing.
      {"twemoji", true, true, false,
       {{"Activities", "activity"}, {"Animals & Nature", "animal or plant"}, {"Component", "skin tone or hair style"},
        {"Flags", "flag"}, {"Food & Drink", "food or drink"}, {"Objects", "object"}, {"People & Body", "person"},
        {"Smileys & Emotion", "smiley face"}, {"Symbols", "symbol"}, {"Travel & Places", "place or vehicle"}}},
      {"tuxpaint", true, true, false,
       {{"animals", "animal"}, {"clothes", "piece of clothing"}, {"hobbies", "hobby"}, {"household", "household object"},
        {"medical", "medical supply"}, {"military", "military object"}, {"naturalforces", "force of nature"},
        {"people", "person"}, {"plants", "plant"}, {"seasonal", "holiday object"}, {"space", "space object"},
        {"sports", "sport"}, {"symbols", "symbol"}, {"town", "building or street sign"}, {"vehicles", "vehicle"}}},
      {"openmoji", true, true, false,
       {{"activities", "activity"}, {"animals-nature", "animal or plant"}, {"component", "skin tone or hair style"},
        {"extras-openmoji", "icon"}, {"extras-unicode", "unicode symbol"}, {"flags", "flag"}, {"food-drink", "food or drink"},
        {"objects", "object"}, {"people-body", "person"}, {"smileys-emotion", "smiley face"}, {"symbols", "symbol"},
        {"travel-places", "place or vehicle"}}},
      {"tabler", true, true, false,
       {{"Animals", "animal"}, {"Arrows", "arrow"}, {"Badges", "badge"}, {"Brand", "brand logo"},
        {"Buildings", "building"}, {"Charts", "chart"}, {"Communication", "communication"}, {"Computers", "computer"},
        {"Currencies", "currency sign"}, {"Database", "database"}, {"Design", "design tool"},
        {"Development", "software development"}, {"Devices", "device"}, {"Document", "document"},
        {"E-commerce", "shopping"}, {"Electrical", "electrical component"}, {"Extensions", "file type"},
        {"Food", "food"}, {"Games", "game"}, {"Gender", "gender symbol"}, {"Gestures", "hand gesture"},
        {"Health", "health"}, {"Laundry", "laundry symbol"}, {"Letters", "letter"}, {"Logic", "logic gate"},
        {"Map", "map"}, {"Math", "math symbol"}, {"Media", "media control"}, {"Mood", "face"}, {"Nature", "nature"},
        {"Numbers", "number"}, {"Photography", "camera"}, {"Shapes", "shape"}, {"Sport", "sport"},
        {"Symbols", "symbol"}, {"System", "system setting"}, {"Text", "text formatting"}, {"Vehicles", "vehicle"},
        {"Version control", "version control"}, {"Weather", "weather"}, {"Zodiac", "zodiac sign"}}},
      {"mdi", false, true, false, {}},
      {"fontawesome", false, true, false, {}},
      {"flags", false, true, false, {}},
  };
  return s;
}

std::string default_eval_dir(const std::string& checkpoint) {
  if (checkpoint.empty()) return {};
  const fs::path parent = fs::absolute(checkpoint).parent_path();
  if (parent.filename() == "checkpoints") return (parent.parent_path() / "eval").string();
  // RUN/model.safetensors, the final weights `florence pretrain` writes next to RUN/metrics.jsonl.
  if (fs::exists(parent / "metrics.jsonl") && fs::exists(parent / "config.json")) return (parent / "eval").string();
  return {};
}

void write_json_file(const std::string& path, const nlohmann::json& j) {
  const fs::path p(path);
  if (p.has_parent_path()) fs::create_directories(p.parent_path());
  core::write_text_atomic(p, j.dump(2) + "\n");
}

std::vector<PromptSetting> prompt_settings(const StandardSet& set, const std::vector<std::string>& templates) {
  const std::vector<std::string> bare{"{}"};
  std::vector<std::pair<std::string, std::vector<std::string>>> template_sets{
      {templates.empty() ? "ensemble" : "templates", templates.empty() ? default_templates() : templates}};
  if (template_sets[0].second != bare) template_sets.push_back({"bare", bare});
  std::vector<std::pair<std::string, ClassPrompts>> tables;
  if (!set.class_prompts.empty()) tables.push_back({"table", set.class_prompts});
  tables.push_back({"names", {}});
  std::vector<PromptSetting> out;  // first: the setting used without selection
  for (const auto& [tname, table] : tables)
    for (const auto& [sname, t] : template_sets) out.push_back({sname + "+" + tname, t, table});
  return out;
}

namespace {

bool has_shards(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return false;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.path().extension() == ".tar") return true;
  return false;
}

// Scores every setting of `choice` on its selection split; returns the chosen index and writes the
// record into `record` (see zero_shot_with_prompt_choice).
size_t choose_prompt_setting(EvalModel& m, const std::string& set_name, const PromptChoice& choice,
                             const ZeroShotOptions& base, nlohmann::json& record) {
  const auto& settings = choice.settings;
  const std::string& split = choice.split;
  if (!choice.unavailable.empty()) {
    spdlog::warn("zero-shot {}: prompts are not chosen on '{}' ({}); using {}", set_name, split, choice.unavailable,
                 settings[0].name);
    record = {{"split", split}, {"unavailable", choice.unavailable}, {"chosen", settings[0].name}};
    return 0;
  }
  if (!has_shards(choice.dir)) {
    spdlog::warn("zero-shot {}: {} has no shards; prompt setting {} used without selection", set_name, choice.dir,
                 settings[0].name);
    record = {{"split", split}, {"missing", true}, {"chosen", settings[0].name}};
    return 0;
  }
  // A split that cannot be scored (unreadable, one class, no class field) falls back to settings[0].
  size_t best = 0;
  double best_top1 = -1.0;
  try {
    auto source = open_source(choice.dir, "");
    const EncodedImages enc = encode_source(m, source, /*require_text=*/false, base.max_samples, /*with_meta=*/true);
    record = {{"split", split}, {"source", source->describe()}, {"candidates", nlohmann::json::array()}};
    for (size_t i = 0; i < settings.size(); ++i) {
      ZeroShotOptions zo = base;
      zo.name = set_name + "/" + split + " " + settings[i].name;
      zo.templates = settings[i].templates;
      zo.class_prompts = settings[i].class_prompts;
      const nlohmann::json r = zero_shot_encoded(m, enc, *source, zo);
      const double top1 = r.at("metrics").at("top1").get<double>();
      record["num_images"] = r.at("num_images");
      record["candidates"].push_back({{"name", settings[i].name},
                                      {"templates", r.at("templates")},
                                      {"prompt_names", r.at("prompt_names")},
                                      {"top1", top1},
                                      {"mean_per_class", r.at("metrics").at("mean_per_class")}});
      if (top1 > best_top1) {
        best = i;
        best_top1 = top1;
      }
    }
  } catch (const Error& e) {
    spdlog::warn("zero-shot {}: cannot choose prompts on {} ({}); using {}", set_name, choice.dir, e.what(),
                 settings[0].name);
    record = {{"split", split}, {"error", e.what()}, {"chosen", settings[0].name}};
    return 0;
  }
  record["chosen"] = settings[best].name;
  spdlog::info("zero-shot {}: prompts chosen on {}: {} (top-1 {:.4f} on {} images)", set_name, split,
               settings[best].name, best_top1, record["num_images"].get<int64_t>());
  return best;
}

// Where a standard set's prompt words come from, for the result record.
std::string class_names_note(const StandardSet& set) {
  return set.class_prompts.empty() ? "none: the class names as they are" : "built-in table of " + set.name;
}

}  // namespace

std::string default_set_name(const std::string& data) {
  fs::path p = fs::path(data).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  return p.filename().string();
}

const StandardSet* find_standard_set(const std::string& name) {
  for (const auto& s : standard_sets())
    if (s.name == name) return &s;
  return nullptr;
}

nlohmann::json zero_shot_with_prompt_choice(EvalModel& m, std::shared_ptr<const data::SampleSource> source,
                                            ZeroShotOptions o, const PromptChoice& choice) {
  if (choice.settings.empty()) throw Error("zero-shot " + o.name + ": no prompt setting to choose from");
  nlohmann::json selection;
  size_t chosen = 0;
  if (!choice.split.empty() && choice.settings.size() > 1) chosen = choose_prompt_setting(m, o.name, choice, o, selection);
  const PromptSetting& s = choice.settings[chosen];
  o.templates = s.templates;
  o.class_prompts = s.class_prompts;
  nlohmann::json r = zero_shot(m, source, o);
  r["prompt_setting"] = s.name;
  if (!selection.is_null()) r["prompt_selection"] = selection;
  return r;
}

void check_prompt_selection(const std::string& ps, const std::string& split) {
  if (ps.empty()) return;
  if (ps.find('/') != std::string::npos || ps == "." || ps == "..")
    throw Error("--prompt-selection takes a split folder name of each corpus (val) or none, not a path: '" + ps + "'");
  if (ps == split)
    throw Error("--prompt-selection " + ps + " is the split being reported (--split " + split +
                "): choose prompts on another split or pass --prompt-selection none");
}

void check_prompt_selection(const EvalAllOptions& o) { check_prompt_selection(o.prompt_selection_split, o.split); }

nlohmann::json zero_shot_run(EvalModel& m, const ZeroShotRunOptions& o) {
  check_prompt_selection(o.prompt_selection, o.split);
  ZeroShotOptions zo;
  zo.name = o.name.empty() ? default_set_name(o.data) : o.name;
  zo.class_field = o.class_field;
  zo.max_samples = o.max_samples;
  const StandardSet* known = find_standard_set(zo.name);
  StandardSet set{zo.name, true, false, known ? known->labels_seen : false, {}};
  set.class_prompts = !o.class_names.empty() ? o.class_names : known ? known->class_prompts : ClassPrompts{};
  const std::string class_names = !o.class_names.empty() ? "--class-names " + o.class_names_file : class_names_note(set);
  PromptChoice choice{prompt_settings(set, o.templates), o.prompt_selection, "", ""};
  if (!choice.split.empty()) {
    std::error_code ec;
    if (fs::is_directory(fs::path(o.data) / o.split, ec))
      choice.dir = (fs::path(o.data) / o.prompt_selection).string();
    else
      choice.unavailable = "--data is not a corpus root with split folders (give the folder holding " + o.split +
                           "/ and " + o.prompt_selection + "/ to choose prompts as eval all does)";
  }
  nlohmann::json r = zero_shot_with_prompt_choice(m, open_source(o.data, o.split), zo, choice);
  r["class_names"] = class_names;
  if (known) r["labels_seen_in_pretraining"] = known->labels_seen;
  spdlog::info("zero-shot {}: {}", zo.name, describe_prompt_choice(r));
  return r;
}

nlohmann::json eval_all(EvalModel& m, const EvalAllOptions& o) {
  check_prompt_selection(o);
  for (const auto& name : o.sets) {
    bool known = false;
    for (const auto& s : standard_sets()) known |= s.name == name;
    if (!known) throw Error("eval all: unknown set '" + name + "' (fashion-mnist | openclipart | emoji)");
  }
  auto selected = [&](const StandardSet& set) {
    return o.sets.empty() || std::find(o.sets.begin(), o.sets.end(), set.name) != o.sets.end();
  };
  if (!o.prompt_selection_split.empty()) {
    // A selection split that no built corpus has is a typo (vall, Val), not a corpus without that
    // split: refuse it rather than warn once per set and silently use the first prompt setting.
    bool any_corpus = false, any_split = false;
    std::set<std::string> splits;
    for (const auto& set : standard_sets()) {
      if (!selected(set)) continue;
      if (!set.zero_shot || !has_shards(fs::path(o.data_root) / set.name / o.split)) continue;
      any_corpus = true;
      any_split |= fs::is_directory(fs::path(o.data_root) / set.name / o.prompt_selection_split);
      std::error_code ec;
      for (const auto& e : fs::directory_iterator(fs::path(o.data_root) / set.name, ec))
        if (e.is_directory()) splits.insert(e.path().filename().string());
    }
    if (any_corpus && !any_split)
      throw Error("eval all: --prompt-selection " + o.prompt_selection_split + ": none of the selected corpora under '" + o.data_root +
                  "' has that split folder (split folders there: " + fmt::format("{}", fmt::join(splits, ", ")) +
                  "); pass one of them or none");
  }
  nlohmann::json out{{"data_root", o.data_root}, {"split", o.split}, {"results", nlohmann::json::array()},
                     {"missing", nlohmann::json::array()}, {"failed", nlohmann::json::array()}};
  // One set's evaluation failing (a test split with one class, unreadable shards) is recorded and the
  // other sets still run; the caller decides what a failure means (the CLI exits non-zero).
  auto attempt = [&](const std::string& set, const std::string& task, const std::function<void()>& f) {
    try {
      f();
    } catch (const Error& e) {
      spdlog::error("eval all: {} on '{}' failed: {}", task, set, e.what());
      out["failed"].push_back({{"set", set}, {"task", task}, {"error", e.what()}});
    }
  };
  if (!o.out_dir.empty()) {  // rewritten at the end; an earlier one must not outlive a failed run
    std::error_code ec;
    fs::remove(fs::path(o.out_dir) / "summary.json", ec);
  }
  for (const auto& set : standard_sets()) {
    if (!selected(set)) continue;
    const fs::path dir = fs::path(o.data_root) / set.name / o.split;
    if (!has_shards(dir)) {
      spdlog::warn("eval all: {} has no shards, set '{}' skipped (build it with `florence data build {} --out {}`)",
                   dir.string(), set.name, set.name, (fs::path(o.data_root) / set.name).string());
      out["missing"].push_back(set.name);
      continue;
    }
    if (!o.out_dir.empty()) {
      // This set's earlier results are replaced, also when this run fails on it: never left beside new ones.
      std::error_code ec;
      for (const char* suffix : {"_zero_shot.json", "_retrieval.json", "_retrieval_examples"})
        fs::remove_all(fs::path(o.out_dir) / (set.name + suffix), ec);
    }
    std::shared_ptr<data::SampleSource> source;
    attempt(set.name, "open", [&] { source = open_source(dir.string(), ""); });
    if (!source) continue;
    if (set.zero_shot) attempt(set.name, "zero-shot", [&] {
      PromptChoice choice{prompt_settings(set, o.templates), o.prompt_selection_split,
                          (fs::path(o.data_root) / set.name / o.prompt_selection_split).string(), ""};
      ZeroShotOptions zo;
      zo.name = set.name;
      zo.max_samples = o.max_samples;
      nlohmann::json r = zero_shot_with_prompt_choice(m, source, zo, choice);
      r["labels_seen_in_pretraining"] = set.labels_seen;
      r["class_names"] = class_names_note(set);
      if (!o.out_dir.empty()) write_json_file((fs::path(o.out_dir) / (set.name + "_zero_shot.json")).string(), r);
      out["results"].push_back(r);
    });
    if (set.retrieval) attempt(set.name, "retrieval", [&] {
      RetrievalOptions ro;
      ro.name = set.name;
      ro.max_samples = o.max_samples;
      ro.num_examples = o.num_examples;
      if (!o.out_dir.empty()) {
        ro.examples_dir = (fs::path(o.out_dir) / (set.name + "_retrieval_examples")).string();
        ro.relative_to = o.out_dir;
      }
      nlohmann::json r = retrieval(m, source, ro);
      if (!o.out_dir.empty()) write_json_file((fs::path(o.out_dir) / (set.name + "_retrieval.json")).string(), r);
      out["results"].push_back(r);
    });
  }
  if (out["results"].empty() && !out["failed"].empty())
    throw Error("eval all: every evaluation failed; the first: " + out["failed"][0]["task"].get<std::string>() + " on '" +
                out["failed"][0]["set"].get<std::string>() + "': " + out["failed"][0]["error"].get<std::string>());
  if (out["results"].empty())
    throw Error("eval all: none of the standard sets exists under '" + o.data_root + "/<set>/" + o.split +
                "' (build them with `florence data build`, see scripts/demo)");
  if (!o.out_dir.empty()) {
    nlohmann::json brief = out;
    for (auto& r : brief["results"]) r.erase("examples");
    write_json_file((fs::path(o.out_dir) / "summary.json").string(), brief);
  }
  return out;
}

std::string format_summary(const std::vector<nlohmann::json>& results) {
  std::string s = fmt::format("{:<14} {:<24} {:<18} {:>8} {:>8} {:>8}\n", "set", "task", "metric", "value", "chance",
                              "p");
  // p: the one-sided p-value against chance where the result has one (zero-shot), else blank.
  auto row = [&](const std::string& set, const std::string& task, const std::string& metric, double v, double c,
                 bool percent, const nlohmann::json& p = nullptr) {
    const std::string pv = fmt::format("{:>8}", p.is_number() ? format_p_value(p.get<double>()) : "");
    s += percent ? fmt::format("{:<14} {:<24} {:<18} {:>8.2f} {:>8.2f} {}", set, task, metric, 100 * v, 100 * c, pv)
                 : fmt::format("{:<14} {:<24} {:<18} {:>8g} {:>8g} {}", set, task, metric, v, c, pv);
    while (!s.empty() && s.back() == ' ') s.pop_back();
    s += "\n";
  };
  for (const auto& r : results) {
    const std::string set = r.value("set", "?");
    if (r.value("task", "") == "zero-shot") {
      const auto& m = r.at("metrics");
      const auto& ch = m.at("chance");
      const std::string task = fmt::format("zero-shot{} ({})", r.value("labels_seen_in_pretraining", false) ? " [seen]" : "",
                                           m.at("num_classes").get<int64_t>());
      const nlohmann::json pv = m.value("p_value", nlohmann::json::object());  // absent in results of older versions
      row(set, task, "top-1 %", m.at("top1").get<double>(), ch.at("top1").get<double>(), true, pv.value("top1", nlohmann::json()));
      row(set, task, "top-5 %", m.at("top5").get<double>(), ch.at("top5").get<double>(), true, pv.value("top5", nlohmann::json()));
      row(set, task, "mean per-class %", m.at("mean_per_class").get<double>(), ch.at("mean_per_class").get<double>(), true,
          pv.value("mean_per_class", nlohmann::json()));
      if (const std::string p = describe_prompt_choice(r); !p.empty()) s += fmt::format("{:<14} {}\n", "", p);
    } else if (r.value("task", "") == "retrieval") {
      for (const auto& [key, label] : {std::pair<std::string, std::string>{"image_to_text", "retrieval i->t"},
                                       {"text_to_image", "retrieval t->i"}}) {
        const auto& m = r.at(key);
        const auto& ch = m.at("chance");
        const std::string task = fmt::format("{} ({})", label, m.at("num_items").get<int64_t>());
        for (const char* k : {"R@1", "R@5", "R@10"})
          if (m.contains(k)) row(set, task, std::string(k) + " %", m[k].get<double>(), ch.at(k).get<double>(), true);
        row(set, task, "median rank", m.at("median_rank").get<double>(), ch.at("median_rank").get<double>(), false);
      }
    }
  }
  return s;
}

std::string describe_prompt_choice(const nlohmann::json& r) {
  if (!r.is_object() || !r.contains("prompt_setting") || !r["prompt_setting"].is_string()) return "";
  std::string s = "prompts " + r["prompt_setting"].get<std::string>();
  const nlohmann::json sel = r.value("prompt_selection", nlohmann::json::object());
  const std::string split = sel.value("split", "");
  if (sel.contains("candidates") && sel["candidates"].is_array() && !sel["candidates"].empty()) {
    double lo = 2, hi = -1, chosen = -1;
    for (const auto& c : sel["candidates"]) {
      const double t = c.value("top1", 0.0);
      lo = std::min(lo, t);
      hi = std::max(hi, t);
      if (c.value("name", "") == r["prompt_setting"]) chosen = t;
    }
    s += fmt::format(", chosen on {} (top-1 {:.2f}; the {} settings scored {:.2f}-{:.2f})", split, 100 * chosen,
                     sel["candidates"].size(), 100 * lo, 100 * hi);
  } else if (sel.contains("missing")) {
    s += ", not chosen: no " + split + " split";
  } else if (sel.contains("error") || sel.contains("unavailable")) {
    s += ", not chosen on " + split + " (" + sel.value("unavailable", std::string("it cannot be scored")) + ")";
  } else {
    s += ", not chosen (no selection split)";
  }
  if (r.contains("class_names") && r["class_names"].is_string()) s += "; class words: " + r["class_names"].get<std::string>();
  return s;
}

}  // namespace florence::eval
