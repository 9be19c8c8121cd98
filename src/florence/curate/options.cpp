// CurateOptions (checks, stage list, JSON) and the relevance stage's vocabulary; see pipeline.h.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <iterator>

#include "florence/core/error.h"
#include "florence/curate/pipeline.h"
#include "florence/model/io.h"
#include "florence/model/run_artifacts.h"

namespace florence::curate {

using nlohmann::json;

void CurateOptions::validate_options() const {
  if (out_dir.empty()) throw Error("curate: no output directory (--out)");
  if (inputs.empty()) throw Error("curate: no input given");
  if (max_text_chars < 1) throw Error("curate: --max-text-chars must be >= 1");
  if (min_size < 0) throw Error("curate: --min-size must be >= 0");
  if (near_dup_threshold < 0 || near_dup_threshold > 64) throw Error("curate: --near-dup-threshold must be in [0, 64]");
  if (index_chunks < 0 || index_chunks > 16) throw Error("curate: --index-chunks must be in [0, 16] (0 = auto)");
  if (relevance) {
    if (!relevance_threshold && !relevance_percentile)
      throw Error("curate: the relevance stage needs --relevance-threshold or --relevance-percentile");
    if (relevance_threshold && relevance_percentile)
      throw Error("curate: --relevance-threshold and --relevance-percentile are mutually exclusive; give one cut");
    // Written so that NaN fails too.
    if (relevance_percentile && !(*relevance_percentile >= 0 && *relevance_percentile <= 100))
      throw Error(fmt::format("curate: --relevance-percentile must be in [0, 100] (got {})", *relevance_percentile));
    if (relevance_threshold && !(*relevance_threshold >= -1 && *relevance_threshold <= 1))
      throw Error(fmt::format("curate: --relevance-threshold is a cosine similarity and must be in [-1, 1] (got {})",
                              *relevance_threshold));
  } else if (relevance_threshold || relevance_percentile) {
    throw Error("curate: a relevance cut was given but the relevance stage is off (give --checkpoint, or list it in --stages)");
  }
  if (balance && !(balance_t > 0 && std::isfinite(balance_t)))
    throw Error("curate: the balance stage needs a finite --balance-t > 0");
  if (!balance && !balance_entries.empty()) throw Error("curate: --balance-entries given but the balance stage is off");
  if (montage_clusters < 0) throw Error("curate: --montage-clusters must be >= 0");
  if (montage_members < 2) throw Error("curate: --montage-members must be >= 2");
  if (montage_tile < 16) throw Error("curate: --montage-tile must be >= 16");
  if (threads < 0) throw Error("curate: --threads must be >= 0");
}

void CurateOptions::set_stages(const std::string& list) {
  const char* const known = "validate, small, exact, near, relevance, balance";
  if (list.empty()) throw Error(std::string("--stages: empty stage list; give a comma-separated list of ") + known);
  bool on[6] = {false, false, false, false, false, false};
  const char* const names[6] = {"validate", "small", "exact", "near", "relevance", "balance"};
  size_t begin = 0, item = 1;
  while (true) {
    const size_t end = list.find(',', begin);
    const std::string s = list.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
    if (s.empty())
      throw Error("--stages: empty item " + std::to_string(item) + " in '" + list + "' (a stray comma?); stages: " + known);
    const auto it = std::find_if(std::begin(names), std::end(names), [&](const char* n) { return s == n; });
    if (it == std::end(names)) throw Error("--stages: unknown stage '" + s + "' (" + known + ")");
    on[it - std::begin(names)] = true;
    if (end == std::string::npos) break;
    begin = end + 1;
    ++item;
  }
  validate = on[0];
  small = on[1];
  exact = on[2];
  near = on[3];
  relevance = on[4];
  balance = on[5];
}

json CurateOptions::to_json() const {
  json stages = json::array();
  if (validate) stages.push_back("validate");
  if (small) stages.push_back("small");
  if (exact) stages.push_back("exact");
  if (near) stages.push_back("near");
  if (relevance) stages.push_back("relevance");
  if (balance) stages.push_back("balance");
  json j{{"stages", stages},
         {"max_text_chars", max_text_chars},
         {"allow_empty_text", allow_empty_text},
         {"max_pixels", max_pixels},
         {"min_size", min_size},
         {"hash", hash_kind_name(hash)},
         {"near_dup_threshold", near_dup_threshold},
         {"cluster", cluster_mode_name(cluster)},
         {"index_chunks", index_chunks},
         {"seed", seed},
         {"montage_clusters", montage_clusters},
         {"montage_members", montage_members},
         {"montage_tile", montage_tile}};
  if (relevance) {
    j["relevance_threshold"] = relevance_threshold ? json(*relevance_threshold) : json(nullptr);
    j["relevance_percentile"] = relevance_percentile ? json(*relevance_percentile) : json(nullptr);
    j["checkpoint"] = model.checkpoint;
    j["model"] = model.model;
  }
  if (balance) {
    j["balance_t"] = balance_t;
    j["balance_entries"] = balance_entries;
  }
  return j;
}

std::string resolve_relevance_vocab(const eval::LoadOptions& m) {
  // model/run_artifacts.h knows where a run keeps its vocabulary; an explicit --vocab is checked there too.
  const model::RunArtifacts a = model::find_run_artifacts(m.checkpoint, m.vocab);
  if (!m.vocab.empty() || m.checkpoint.empty()) return a.vocab;
  if (!a.vocab.empty()) {
    spdlog::info("curate: relevance vocabulary {} (from the checkpoint's run)", a.vocab);
    return a.vocab;
  }
  if (!a.vocab_problem.empty())
    throw Error("curate: the relevance stage needs a BPE vocabulary: " + a.vocab_problem + "; pass --vocab FILE");
  throw Error("curate: the relevance stage needs a BPE vocabulary: no --vocab, " +
              (a.sidecar.is_object() ? "no \"vocab\" in the checkpoint sidecar '" + a.sidecar_path + "'"
                                     : "no checkpoint sidecar ('" + model::sidecar_path(m.checkpoint) + "')") +
              ", and no vocab.bpe.gz / vocab.bpe beside the checkpoint or in its run folder; pass --vocab FILE");
}

}  // namespace florence::curate
