// florence curate INPUT... --out DIR [--stages LIST] [--min-size N] [--max-text-chars N] [--allow-empty-text]
//                 [--hash phash|dhash] [--near-dup-threshold N] [--cluster leader|components] [--index-chunks N]
//                 [--checkpoint F [eval flags] --relevance-threshold X | --relevance-percentile P]
//                 [--balance-t T [--balance-entries FILE]] [--seed S] [--montage-clusters N] [--montage-members N]
//                 [--montage-tile PX] [--overwrite] [--json] [--dist-timeout S]
// Under `florence launch --nproc N -- curate ...` (or torchrun) the processes split the input shards and
// search near duplicates globally (curate/pipeline.h).
#include <torch/torch.h>

#include <iostream>

#include "command.h"
#include "eval_flags.h"
#include "florence/curate/collective.h"
#include "florence/curate/pipeline.h"
#include "florence/dist/dist.h"

namespace {

void setup_curate(CLI::App& root) {
  auto* cmd = root.add_subcommand(
      "curate",
      "Curate WebDataset shards like FLD-900M: validate, small images, exact and near duplicates, image-text "
      "relevance, balanced sampling; writes curated shards, report.json, removed.jsonl and montage.png");
  auto o = std::make_shared<florence::curate::CurateOptions>();
  auto ef = std::make_shared<florence::cli::EvalFlags>();
  auto stages = std::make_shared<std::string>();
  auto hash = std::make_shared<std::string>("phash");
  auto cluster = std::make_shared<std::string>("leader");
  // Given or not is read from the option's count (a NaN value is an error, not "not given").
  auto threshold = std::make_shared<double>(0.0);
  auto percentile = std::make_shared<double>(0.0);
  auto as_json = std::make_shared<bool>(false);
  auto timeout = std::make_shared<double>(600);
  cmd->add_option("inputs", o->inputs,
                  "Corpus roots (DIR/<split>/*.tar, as `florence data build` writes), shard dirs, shard files or brace "
                  "patterns; several inputs keep their paths below their common folder under --out")
      ->required();
  cmd->add_option("--out", o->out_dir, "Output directory (curated shards in the input's layout + report files)")->required();
  cmd->add_flag("--overwrite", o->overwrite,
                "Replace the output of a previous curate run in --out (only the files its report.json lists; a folder "
                "with other .tar files is refused)");
  auto* stages_opt = cmd->add_option("--stages", *stages,
                  "Comma-separated stages to run: validate,small,exact,near,relevance,balance (default: validate,small,"
                  "exact,near, plus relevance when --checkpoint is given and balance when --balance-t is)");
  cmd->add_option("--min-size", o->min_size, "small: remove images whose shorter side is below this (px)")
      ->capture_default_str()
      ->check(florence::cli::non_negative());
  cmd->add_option("--max-text-chars", o->max_text_chars, "validate: remove texts longer than this (Unicode code points)")
      ->capture_default_str()
      ->check(florence::cli::positive());
  cmd->add_flag("--allow-empty-text", o->allow_empty_text, "validate: keep samples with empty texts (label-only data)");
  cmd->add_option("--hash", *hash, "near: perceptual hash, phash (DCT) or dhash (gradient)")
      ->capture_default_str()
      ->check(CLI::IsMember({"phash", "dhash"}));
  cmd->add_option("--near-dup-threshold", o->near_dup_threshold, "near: largest Hamming distance (of 64 bits) of a duplicate")
      ->capture_default_str()
      ->check(CLI::Range(0, 64));
  cmd->add_option("--cluster", *cluster,
                  "near: leader (each removed image within the threshold of its kept one) or components (single linkage)")
      ->capture_default_str()
      ->check(CLI::IsMember({"leader", "components"}));
  cmd->add_option("--index-chunks", o->index_chunks, "near: multi-index hashing chunks (0 = chosen from the input size)")
      ->capture_default_str()
      ->check(CLI::Range(0, 16));
  florence::cli::add_eval_flags(cmd, ef, /*checkpoint_required=*/false);
  auto* threshold_opt = cmd->add_option("--relevance-threshold", *threshold,
                                        "relevance: remove pairs whose cosine similarity (-1..1) is below this");
  auto* percentile_opt = cmd->add_option("--relevance-percentile", *percentile,
                                         "relevance: remove pairs below this percentile (0-100) of the similarities")
                             ->check(CLI::Range(0.0, 100.0));
  threshold_opt->excludes(percentile_opt);
  cmd->add_option("--balance-t", o->balance_t, "balance: MetaCLIP t; an entry seen c times keeps a pair with p = t/max(c,t)")
      ->check(florence::cli::positive());
  cmd->add_option("--balance-entries", o->balance_entries,
                  "balance: entry list (one per line, or a JSON array) matched as whole words; default: the exact text")
      ->check(CLI::ExistingFile);
  cmd->add_option("--seed", o->seed, "balance / montage sampling seed")->capture_default_str();
  cmd->add_option("--montage-clusters", o->montage_clusters, "Rows (near-duplicate clusters) in montage.png; 0 = none")
      ->capture_default_str()
      ->check(florence::cli::non_negative());
  cmd->add_option("--montage-members", o->montage_members, "Tiles per montage row, representative included")
      ->capture_default_str()
      ->check(CLI::Range(2, 64));
  cmd->add_option("--montage-tile", o->montage_tile, "Montage tile size (px)")->capture_default_str()->check(CLI::Range(16, 512));
  cmd->add_option("--dist-timeout", *timeout, "Seconds a multi-process exchange may wait for the other processes")
      ->capture_default_str()
      ->check(florence::cli::positive());
  cmd->add_flag("--json", *as_json, "Print report.json instead of the summary");
  cmd->callback([=] {
    florence::curate::CurateOptions opt = *o;
    opt.hash = florence::curate::parse_hash_kind(*hash);
    opt.cluster = florence::curate::parse_cluster_mode(*cluster);
    opt.model = ef->resolve();
    if (threshold_opt->count() > 0) opt.relevance_threshold = *threshold;
    if (percentile_opt->count() > 0) opt.relevance_percentile = *percentile;
    if (stages_opt->count() > 0) {
      opt.set_stages(*stages);  // throws on an empty list / item or an unknown stage
    } else {
      opt.relevance = !opt.model.checkpoint.empty();
      opt.balance = opt.balance_t > 0;
    }
    if (opt.relevance && opt.model.checkpoint.empty())
      throw florence::Error("the relevance stage needs --checkpoint (a trained Florence model)");
    const int requested = florence::cli::requested_threads();
    opt.threads = requested > 0 ? requested : torch::get_num_threads();

    florence::dist::InitOptions di;
    di.timeout_s = *timeout;
    florence::dist::DistContext ctx = florence::dist::init_from_env(di);
    const florence::curate::Collective coll =
        ctx.distributed() ? florence::curate::collective_from(ctx) : florence::curate::Collective{};
    const nlohmann::json report = florence::curate::curate(opt, coll);
    if (coll.rank != 0) return;
    if (*as_json) {
      std::cout << report.dump(2) << "\n";
    } else {
      std::cout << florence::curate::format_curate_summary(report);
      std::cout << "wrote " << opt.out_dir << "/report.json, removed.jsonl"
                << (report["montage"].is_string() ? ", montage.png" : "") << "\n";
    }
  });
}

}  // namespace

FLORENCE_COMMAND(setup_curate);
