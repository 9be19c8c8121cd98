#pragma once
// `florence eval all`: the standard held-out sets of the demo, and the summary table.
//
//   DATA/fashion-mnist/test   zero-shot (10 classes; its labels ARE seen in pretraining, as
//                             ImageNet is in UniCL, so this is not a zero-shot transfer number)
//   DATA/openclipart/test     zero-shot by category (top folder) + retrieval on titles
//   DATA/emoji/test           zero-shot by category + retrieval on names
// (shard layout of data/corpus.h: OUT/{train,val,test}/NNNNNN.tar). A set whose folder is
// missing is reported as missing, not an error.
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "florence/eval/encode.h"

namespace florence::eval {

struct StandardSet {
  std::string name;             ///< folder under the data root
  bool zero_shot = true;
  bool retrieval = false;
  bool labels_seen = false;     ///< class labels are training targets in the demo recipe
};

/// fashion-mnist, openclipart, emoji as above.
const std::vector<StandardSet>& standard_sets();

struct EvalAllOptions {
  std::string data_root;
  std::string split = "test";
  std::string out_dir;                 ///< result files (created); empty = none written
  std::vector<std::string> sets;       ///< subset of standard set names; empty = all
  std::vector<std::string> templates;  ///< empty = default_templates()
  int64_t max_samples = 0;             ///< per set, 0 = all
  int64_t num_examples = 8;            ///< retrieval examples per set
};

/// Runs every selected set. Writes OUT/<set>_zero_shot.json, OUT/<set>_retrieval.json (+ example
/// images in OUT/<set>_retrieval_examples/) and OUT/summary.json when out_dir is set. Returns
/// {"results": [result JSON...], "missing": [set names], "data_root", "split"}.
/// Throws florence::Error for an unknown set name or when no selected set exists.
nlohmann::json eval_all(EvalModel& m, const EvalAllOptions& options);

/// A plain-text table of results (zero-shot top-1/top-5/mean per-class, retrieval R@1/5/10 and
/// median rank both ways), each with its chance level, in percent.
std::string format_summary(const std::vector<nlohmann::json>& results);

/// RUN/eval when `checkpoint` lies in RUN/checkpoints/ or is RUN/model.safetensors of a pretraining run
/// (RUN/metrics.jsonl and RUN/config.json beside it), else "".
std::string default_eval_dir(const std::string& checkpoint);

/// Writes `j` (pretty, 2 spaces) to `path` atomically (temp file + rename), creating parents.
void write_json_file(const std::string& path, const nlohmann::json& j);

}  // namespace florence::eval
