// florence pretrain --model NAME|CONFIG.json --vocab FILE --out RUN_DIR
//                   [--shards SPEC[:W]]... [--manifest FILE[:W]]... [--labelled SPEC[:W]]...
//                   [--steps N | --epochs N] [--stage1-steps N] [--stage2-steps N] [--stage3-steps N
//                   --stage3-image-size S] [--batch-size B] [--accum-steps K] [--lr X] ... [--resume [RUN_DIR|CKPT]]
//                   [--local-loss] [--dist-timeout S]
// Thin front end over train::pretrain (src/florence/train/trainer.h). Distributed when started by
// `florence launch`, torchrun or srun (their environment; see src/florence/dist/dist.h).
#include <iostream>
#include <set>

#include "command.h"
#include "run_flags.h"
#include "florence/core/error.h"
#include "florence/train/mixture.h"
#include "florence/train/trainer.h"

namespace {

using florence::train::TrainOptions;

struct PretrainArgs {
  TrainOptions o;
  std::vector<std::string> shards, manifests, labelled;
  std::string resume;
  bool no_progress = false, progress = false;
};

void setup_pretrain(CLI::App& root) {
  auto* cmd = root.add_subcommand(
      "pretrain",
      "UniCL pretraining of a Florence two-tower model (stage 1: all data + prompt-augmented short texts; "
      "stage 2: original texts; optional stage 3 at a higher resolution)");
  auto a = std::make_shared<PretrainArgs>();
  florence::cli::add_run_flags(cmd, a->o);  // every option of TrainOptions' field table
  cmd->add_option("--shards", a->shards, "Image-text WebDataset shards: DIR, FILE, brace pattern; optional :WEIGHT")
      ->type_name("SPEC[:W]");
  cmd->add_option("--manifest", a->manifests, "Image-text manifest (.jsonl/.tsv); optional :WEIGHT")
      ->type_name("FILE[:W]");
  cmd->add_option("--labelled", a->labelled,
                  "Classification data (shards, manifest or class folders; text = class name, prompt templates); "
                  "optional :WEIGHT")
      ->type_name("SPEC[:W]");
  cmd->add_option("--resume", a->resume,
                  "Continue a run: RUN_DIR (its checkpoints/latest) or a checkpoint .safetensors; without a value, "
                  "--out. Saved options are reused; flags given again override them")
      ->expected(0, 1);
  cmd->add_flag("--progress", a->progress, "Force the progress bar on");
  cmd->add_flag("--no-progress", a->no_progress, "Log lines instead of a progress bar");

  cmd->callback([cmd, a] {
    TrainOptions& o = a->o;
    o.data.clear();
    auto add = [&](const char* flag, const std::vector<std::string>& specs) {
      for (const auto& s : specs) {
        auto [spec, weight] = florence::train::parse_weighted_spec(s);
        o.data.push_back({flag, spec, weight});
      }
    };
    add("shards", a->shards);
    add("manifest", a->manifests);
    add("labelled", a->labelled);
    if (o.threads == 0) o.threads = florence::cli::requested_threads();
    o.progress = a->progress ? 1 : (a->no_progress ? 0 : -1);

    TrainOptions run = o;
    if (cmd->count("--resume") > 0) {
      std::string target = a->resume.empty() ? o.out_dir : a->resume;
      if (target.empty()) throw florence::Error("--resume without a value needs --out RUN_DIR");
      run = florence::cli::resume_merge(cmd, florence::train::load_run_options(target), o);
      if (cmd->count("--shards") || cmd->count("--manifest") || cmd->count("--labelled")) run.data = o.data;
      run.resume = target;
    }
    const auto r = florence::train::pretrain(run);
    if (r.rank != 0) return;  // rank 0 reports for the job
    if (r.interrupted) {
      std::cout << fmt::format("stopped after step {}/{}; checkpoint {}\nresume with: florence pretrain --resume {}\n",
                               r.steps_done, r.total_steps, r.last_checkpoint, r.run_dir);
    } else {
      std::cout << fmt::format("trained {} steps ({} in this run, {:.0f} s); loss {:.4f} -> {:.4f}; weights {}/"
                               "model.safetensors\n",
                               r.steps_done, r.steps_done - r.start_step, r.seconds, r.first_loss, r.last_loss,
                               r.run_dir);
    }
  });
}

}  // namespace

FLORENCE_COMMAND(setup_pretrain);
