#pragma once
// `florence eval all`: the standard held-out sets of the demo, and the summary table.
//
//   DATA/fashion-mnist/test   zero-shot (10 classes; its labels ARE seen in pretraining, as
//                             ImageNet is in UniCL, so this is not a zero-shot transfer number)
//   DATA/openclipart/test     zero-shot by category (top folder) + retrieval on the pair texts
//                             (the demo builds them as title + keywords; about three quarters of
//                             the training pairs name their category's word in their keywords, so
//                             the category words are seen in captions, though never as labels)
//   DATA/emoji/test           zero-shot by category + retrieval on the pair texts (name + short names)
//   DATA/twemoji/test         as emoji, Twitter's art of the same emoji (same split)
//   DATA/tuxpaint/test        zero-shot by category (top folder) + retrieval on the stamp captions
//   DATA/openmoji/test        zero-shot by group + retrieval on annotation + tags
//   DATA/tabler/test          zero-shot by category (icons without one are skipped) + retrieval
//   DATA/mdi/test, DATA/fontawesome/test, DATA/flags/test   retrieval only
// (shard layout of data/corpus.h: OUT/{train,val,test}/NNNNNN.tar). A set whose folder is
// missing is reported as missing, not an error.
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "florence/eval/encode.h"
#include "florence/eval/zero_shot.h"

namespace florence::eval {

struct StandardSet {
  std::string name;             ///< folder under the data root
  bool zero_shot = true;
  bool retrieval = false;
  bool labels_seen = false;     ///< class labels are training targets in the demo recipe
  /// The words each category is put into the prompts as (zero_shot.h ClassPrompts). The corpora's
  /// category names are folder or group names ("signs_and_symbols", "Smileys & Emotion"); plural
  /// and grouped names are rewritten as the singular noun phrase one would write under one picture
  /// ("sign or symbol", "smiley face"); names that already read so (computer, food, geography,
  /// office, ...) have no entry. Written once from the category's meaning, not searched on the test
  /// set (docs/evaluation.md). Fashion-MNIST keeps its own names: they are its pretraining labels.
  ClassPrompts class_prompts;
};

/// The sets above, in that order.
const std::vector<StandardSet>& standard_sets();

struct EvalAllOptions {
  std::string data_root;
  std::string split = "test";
  std::string out_dir;                 ///< result files (created); empty = none written
  std::vector<std::string> sets;       ///< subset of standard set names; empty = all
  std::vector<std::string> templates;  ///< empty = default_templates()
  /// Split on which the zero-shot prompt setting is chosen (see eval_all); "" = no selection, the
  /// template ensemble with the set's class-name table is used.
  std::string prompt_selection_split = "val";
  int64_t max_samples = 0;             ///< per set, 0 = all
  int64_t num_examples = 8;            ///< retrieval examples per set
};

/// One zero-shot prompt setting: the templates and the class-name table put into them.
struct PromptSetting {
  std::string name;                    ///< e.g. "ensemble+table", "bare+names"
  std::vector<std::string> templates;
  ClassPrompts class_prompts;
};

/// The settings eval_all chooses among for `set`: the template ensemble (`templates`, or
/// default_templates() when empty) and the bare class words ("{}"), each with the set's class-name
/// table and, when the set has one, with the class names as they are (default_prompt_name).
std::vector<PromptSetting> prompt_settings(const StandardSet& set, const std::vector<std::string>& templates);

/// Throws florence::Error when options.prompt_selection_split is a path (holds '/', or is "." or "..")
/// or equals options.split: prompts are chosen on a split folder of each corpus, never the reported one.
void check_prompt_selection(const EvalAllOptions& options);
/// The same check for a selection split `selection` ("" = none) and the reported split `split`.
void check_prompt_selection(const std::string& selection, const std::string& split);

/// The standard set called `name` (standard_sets()), or nullptr.
const StandardSet* find_standard_set(const std::string& name);

/// How a zero-shot run picks its prompt setting.
struct PromptChoice {
  std::vector<PromptSetting> settings;  ///< candidates (prompt_settings()); settings[0] is used without selection
  std::string split;                    ///< name of the split the choice is made on ("val"); "" = no selection
  std::string dir;                      ///< that split's shards (CORPUS/<split>); ignored when split is ""
  std::string unavailable;              ///< set: no selection possible, for this reason (recorded, logged)
};

/// zero_shot() on `source` with the prompt setting of `choice`: with a selection split (and more than
/// one setting), every setting
/// is scored on choice.dir (its images encoded once; options.max_samples applies) and the one with the
/// highest top-1 (the first on a tie) is used; otherwise settings[0]. options.templates and
/// options.class_prompts are replaced by the setting's. Adds to the result "prompt_setting" (the name
/// used) and, with a selection split, "prompt_selection": {"split", "source", "num_images",
/// "candidates": [{"name", "templates", "prompt_names", "top1", "mean_per_class"}], "chosen"}; a
/// split without shards is recorded as {"split", "missing": true, "chosen"}, one that cannot be
/// scored (one class, no class field, unreadable shards) as {"split", "error", "chosen"}, an
/// unavailable one as {"split", "unavailable": reason, "chosen"}: those use settings[0], logged.
/// Throws as zero_shot(), and florence::Error when choice.settings is empty.
nlohmann::json zero_shot_with_prompt_choice(EvalModel& m, std::shared_ptr<const data::SampleSource> source,
                                            ZeroShotOptions options, const PromptChoice& choice);

/// `florence eval zero-shot`: one set, the same prompt choice as eval_all() makes for it, so that
/// both commands give the same numbers on the same data (issue 25).
struct ZeroShotRunOptions {
  std::string data;                    ///< corpus root, shard dir/pattern, manifest or ImageFolder (open_source)
  std::string split = "test";          ///< split folder of a corpus root
  std::string name;                    ///< set name; "" = default_set_name(data)
  std::string class_field = "category";
  std::vector<std::string> templates;  ///< empty = default_templates()
  ClassPrompts class_names;            ///< --class-names table; empty = the standard set's built-in table
  std::string class_names_file;        ///< where class_names came from ("" = not given)
  std::string prompt_selection = "val";  ///< split folder of the corpus root to choose prompts on; "" = none
  int64_t max_samples = 0;
};

/// Runs zero-shot as eval_all() does for a set: the candidates are prompt_settings() of a set whose
/// class-name table is options.class_names when given, else the built-in table of the standard set
/// called options.name (standard_sets(); none for other names); the choice is made
/// on DATA/<prompt_selection> when DATA is a corpus root (has a DATA/<split> folder), else settings[0]
/// is used and the reason recorded. The result carries "prompt_setting", "prompt_selection",
/// "class_names" ("--class-names FILE", "built-in table of SET" or "none: the class names as they
/// are") and, for a standard set, "labels_seen_in_pretraining". Logs the setting and the words used.
/// Throws as zero_shot() and check_prompt_selection(prompt_selection, split).
nlohmann::json zero_shot_run(EvalModel& m, const ZeroShotRunOptions& options);

/// The set name of a data specification: its last path component ("data/emoji/" -> "emoji").
std::string default_set_name(const std::string& data);

/// Runs every selected set. Zero-shot: when DATA/<set>/<prompt_selection_split> has shards, every
/// PromptSetting of the set is scored on that split (images encoded once) and the one with the
/// highest top-1 (the first on a tie) is used on the evaluation split; the result carries
/// "prompt_selection": {"split", "num_images", "candidates": [{"name", "templates",
/// "prompt_names", "top1", "mean_per_class"}], "chosen"}. This is hyper-parameter choice on held-out
/// training-time data, never on the split that is reported. A set without that split, or whose split
/// cannot be scored (one class, no class field, unreadable shards), uses the first setting, logged
/// and recorded as {"missing": true} or {"error": message}. Throws as check_prompt_selection().
/// Writes OUT/<set>_zero_shot.json, OUT/<set>_retrieval.json (+ example
/// images in OUT/<set>_retrieval_examples/) and OUT/summary.json when out_dir is set. Returns
/// {"results": [result JSON...], "missing": [set names], "failed": [{"set", "task", "error"}],
/// "data_root", "split"}. A set's earlier result files in out_dir are removed before it is evaluated,
/// so a failed evaluation leaves none behind; one that throws florence::Error is logged, recorded in
/// "failed" and the other sets go on.
/// Throws florence::Error for an unknown set name, when no selected set exists or when every
/// evaluation failed.
nlohmann::json eval_all(EvalModel& m, const EvalAllOptions& options);

/// A plain-text table of results (zero-shot top-1/top-5/mean per-class, retrieval R@1/5/10 and
/// median rank both ways), each with its chance level, in percent, and for zero-shot rows the
/// one-sided p-value against chance (metrics.h, ClassificationMetrics::p_topk / p_mean_per_class).
/// A zero-shot result with a "prompt_setting" gets a line below its rows: describe_prompt_choice().
std::string format_summary(const std::vector<nlohmann::json>& results);

/// One line on a zero-shot result's prompts, e.g. "prompts ensemble+table, chosen on val (top-1 36.50
/// of 4 settings scored 7.70-36.50); class words: built-in table of emoji"; "" without "prompt_setting".
std::string describe_prompt_choice(const nlohmann::json& result);

/// RUN/eval when `checkpoint` lies in RUN/checkpoints/ or is RUN/model.safetensors of a pretraining run
/// (RUN/metrics.jsonl and RUN/config.json beside it), else "".
std::string default_eval_dir(const std::string& checkpoint);

/// Writes `j` (pretty, 2 spaces) to `path` atomically (temp file + rename), creating parents.
void write_json_file(const std::string& path, const nlohmann::json& j);

}  // namespace florence::eval
