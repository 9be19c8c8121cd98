#pragma once
// What a training run wrote beside a checkpoint, found by one set of rules for every consumer
// (evaluation, fine-tuning, curation, search): the sidecar, the run folder and its config, the
// preprocessing the model was trained with, and its vocabulary. The writers are train/run.h (run
// folder, checkpoints, sidecars) and the tasks (their "preprocess" / "vocab" sidecar keys).
//
// Rules, for a checkpoint C = DIR/NAME.safetensors:
//   * sidecar: DIR/NAME.json (model::sidecar_path) when it exists;
//   * run folder: DIR's parent when DIR is named "checkpoints" (RUN/checkpoints/step_N), else DIR
//     when it holds a checkpoints/ folder (RUN/model.safetensors); accepted when it has a
//     config.json. A config.json beside C in any other folder is used only when it is a run
//     config (has "options"), e.g. a run folder copied without its checkpoints;
//   * preprocessing: the sidecar's "preprocess" object, else the run config's "preprocess" (with
//     its top-level "image_size" when the object lacks one: runs older than the sidecar key);
//   * vocabulary: an explicit path (must exist), else the sidecar's "vocab", else the copy a run
//     keeps (vocab.bpe.gz, vocab.bpe in DIR, in RUN), else the path training started from
//     (sidecar train_state.options.vocab). Recorded paths that are relative are also tried
//     relative to DIR; recorded paths that do not exist are listed in vocab_problem.
#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>

namespace florence::model {

struct RunArtifacts {
  std::string checkpoint;              ///< the weights path as given
  std::string sidecar_path;            ///< "" when there is no sidecar
  nlohmann::json sidecar;              ///< null when there is none
  std::filesystem::path run_dir;       ///< "" when the checkpoint is not in a run folder
  nlohmann::json run_config;           ///< RUN/config.json, null when none
  nlohmann::json preprocess = nlohmann::json::object();  ///< {image_size, crop_pct, mean, std}, any subset
  std::string preprocess_origin;       ///< the file the preprocessing came from ("" when none)
  std::string vocab;                   ///< an existing vocabulary file, "" when none was found
  std::string vocab_problem;           ///< recorded vocabulary paths that do not exist, "" otherwise
};

/// Finds the artifacts of `checkpoint` (may be "": all empty). `vocab` overrides the vocabulary.
/// Throws florence::Error for an explicit vocab that does not exist and for a sidecar that is not
/// valid JSON (naming it). A run config.json that is not valid JSON is ignored with a warning.
RunArtifacts find_run_artifacts(const std::string& checkpoint, const std::string& vocab = "");

}  // namespace florence::model
