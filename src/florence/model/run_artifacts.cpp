// Finding what a run wrote beside a checkpoint; see run_artifacts.h.
#include "florence/model/run_artifacts.h"

#include <spdlog/spdlog.h>

#include <fstream>
#include <vector>

#include "florence/core/error.h"
#include "florence/model/io.h"

namespace florence::model {

namespace fs = std::filesystem;

namespace {

nlohmann::json read_json(const fs::path& p, bool strict) {
  std::ifstream in(p);
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    if (strict) throw Error("checkpoint sidecar '" + p.string() + "' is not valid JSON: " + e.what());
    spdlog::warn("ignoring {}: not valid JSON ({})", p.string(), e.what());
    return nullptr;
  }
}

}  // namespace

RunArtifacts find_run_artifacts(const std::string& checkpoint, const std::string& vocab) {
  RunArtifacts a;
  a.checkpoint = checkpoint;
  std::error_code ec;
  if (!vocab.empty() && !fs::is_regular_file(vocab, ec)) throw Error("--vocab '" + vocab + "' does not exist");
  a.vocab = vocab;
  if (checkpoint.empty()) return a;

  const std::string sp = sidecar_path(checkpoint);
  if (fs::is_regular_file(sp, ec)) {
    a.sidecar_path = sp;
    a.sidecar = read_json(sp, true);
  }
  const fs::path dir = fs::absolute(checkpoint).parent_path();
  const bool in_ckpt_dir = dir.filename() == "checkpoints";
  const fs::path run = in_ckpt_dir ? dir.parent_path() : dir;
  if ((in_ckpt_dir || fs::is_directory(dir / "checkpoints", ec)) && fs::is_regular_file(run / "config.json", ec)) {
    a.run_config = read_json(run / "config.json", false);
    if (!a.run_config.is_null()) a.run_dir = run;
  } else if (fs::is_regular_file(dir / "config.json", ec)) {
    nlohmann::json cfg = read_json(dir / "config.json", false);
    if (cfg.is_object() && cfg.contains("options")) {
      a.run_config = std::move(cfg);
      a.run_dir = dir;
    }
  }

  if (a.sidecar.is_object() && a.sidecar.contains("preprocess") && a.sidecar["preprocess"].is_object()) {
    a.preprocess = a.sidecar["preprocess"];
    a.preprocess_origin = a.sidecar_path;
  } else if (a.run_config.is_object() && a.run_config.contains("preprocess") &&
             a.run_config["preprocess"].is_object()) {
    a.preprocess = a.run_config["preprocess"];
    if (!a.preprocess.contains("image_size") && a.run_config.contains("image_size"))
      a.preprocess["image_size"] = a.run_config["image_size"];
    a.preprocess_origin = (a.run_dir / "config.json").string();
  }

  if (!a.vocab.empty()) return a;
  std::vector<std::string> missing;  // recorded paths that do not exist (relative to another cwd?)
  auto existing = [&](const nlohmann::json& j) -> std::string {
    if (!j.is_string()) return "";
    const std::string p = j.get<std::string>();
    if (fs::is_regular_file(p, ec)) return p;
    if (fs::path(p).is_relative() && fs::is_regular_file(dir / p, ec)) return (dir / p).string();
    missing.push_back(p);
    return "";
  };
  if (a.sidecar.is_object() && a.sidecar.contains("vocab")) a.vocab = existing(a.sidecar["vocab"]);
  std::vector<fs::path> dirs{dir};
  if (!a.run_dir.empty() && a.run_dir != dir) dirs.push_back(a.run_dir);
  else if (in_ckpt_dir) dirs.push_back(run);
  for (const fs::path& d : dirs)
    for (const char* name : {"vocab.bpe.gz", "vocab.bpe"})
      if (a.vocab.empty() && fs::is_regular_file(d / name, ec)) a.vocab = (d / name).string();
  const nlohmann::json::json_pointer ptr("/train_state/options/vocab");
  if (a.vocab.empty() && a.sidecar.is_object() && a.sidecar.contains(ptr)) a.vocab = existing(a.sidecar[ptr]);
  if (a.vocab.empty() && !missing.empty()) {
    std::string list;
    for (const auto& p : missing) list += (list.empty() ? "'" : ", '") + p + "'";
    a.vocab_problem = "the checkpoint names " + list +
                      ", which does not exist here (paths recorded by training are relative to the folder it ran in)";
  }
  return a;
}

}  // namespace florence::model
