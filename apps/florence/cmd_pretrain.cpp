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

// Copies the fields of the flags given on the command line from `src` into `dst` (used when
// resuming: the saved options are the base, flags given again override them).
void overlay(CLI::App* cmd, TrainOptions& dst, const PretrainArgs& a) {
  const TrainOptions& s = a.o;
  auto given = [&](const char* flag) { return cmd->count(flag) > 0; };
  if (given("--model")) dst.model = s.model;
  if (given("--vocab")) dst.vocab = s.vocab;
  if (given("--out")) dst.out_dir = s.out_dir;
  if (given("--device")) dst.device = s.device;
  if (given("--batch-size")) dst.batch_size = s.batch_size;
  if (given("--accum-steps")) dst.accum_steps = s.accum_steps;
  if (given("--local-loss")) dst.local_loss = s.local_loss;
  if (given("--dist-timeout")) dst.dist_timeout_s = s.dist_timeout_s;
  if (given("--lr")) dst.lr = s.lr;
  if (given("--min-lr")) dst.min_lr = s.min_lr;
  if (given("--warmup-steps")) dst.warmup_steps = s.warmup_steps;
  if (given("--weight-decay")) dst.weight_decay = s.weight_decay;
  if (given("--grad-clip")) dst.grad_clip = s.grad_clip;
  if (given("--average-directions")) dst.average_directions = s.average_directions;
  if (given("--steps")) dst.steps = s.steps;
  if (given("--epochs")) dst.epochs = s.epochs;
  if (given("--stage1-steps")) dst.stage1_steps = s.stage1_steps;
  if (given("--stage2-steps")) dst.stage2_steps = s.stage2_steps;
  if (given("--stage3-steps")) dst.stage3_steps = s.stage3_steps;
  if (given("--stage3-image-size")) dst.stage3_image_size = s.stage3_image_size;
  if (given("--image-size")) dst.image_size = s.image_size;
  if (given("--augment")) dst.augment = s.augment;
  if (given("--tag-sampling")) dst.tag_sampling = s.tag_sampling;
  if (given("--seed")) dst.seed = s.seed;
  if (given("--threads")) dst.threads = s.threads;
  if (given("--workers")) dst.workers = s.workers;
  if (given("--ckpt-every")) dst.ckpt_every = s.ckpt_every;
  if (given("--keep-checkpoints")) dst.keep_checkpoints = s.keep_checkpoints;
  if (given("--log-every")) dst.log_every = s.log_every;
  if (given("--shards") || given("--manifest") || given("--labelled")) dst.data = s.data;
  // Per-invocation hooks are never inherited from the saved options.
  dst.stop_after_steps = s.stop_after_steps;
  dst.debug_nan_at_step = s.debug_nan_at_step;
  dst.progress = s.progress;
}

void setup_pretrain(CLI::App& root) {
  auto* cmd = root.add_subcommand(
      "pretrain",
      "UniCL pretraining of a Florence two-tower model (stage 1: all data + prompt-augmented short texts; "
      "stage 2: original texts; optional stage 3 at a higher resolution)");
  auto a = std::make_shared<PretrainArgs>();
  TrainOptions& o = a->o;
  cmd->add_option("--model", o.model, "Model: registered name (florence-nano, florence-t, ...) or config JSON")
      ->capture_default_str();
  cmd->add_option("--vocab", o.vocab,
                  "BPE merges file (CLIP format, e.g. from `florence tokenizer train`); sets the model's text "
                  "vocab_size / SOT / EOT, recorded in the saved config");
  cmd->add_option("--shards", a->shards, "Image-text WebDataset shards: DIR, FILE, brace pattern; optional :WEIGHT")
      ->type_name("SPEC[:W]");
  cmd->add_option("--manifest", a->manifests, "Image-text manifest (.jsonl/.tsv); optional :WEIGHT")
      ->type_name("FILE[:W]");
  cmd->add_option("--labelled", a->labelled,
                  "Classification data (shards, manifest or class folders; text = class name, prompt templates); "
                  "optional :WEIGHT")
      ->type_name("SPEC[:W]");
  cmd->add_option("--out", o.out_dir, "Run directory (checkpoints/, metrics.jsonl, config.json, model.safetensors)");
  cmd->add_option("--device", o.device, "Torch device (cpu, cuda, cuda:1)")->capture_default_str();
  cmd->add_option("--batch-size", o.batch_size,
                  "Global contrastive batch size (all in-batch negatives); split evenly over the processes of a "
                  "distributed run")
      ->capture_default_str()
      ->check(florence::cli::positive());
  cmd->add_option("--accum-steps", o.accum_steps,
                  "Micro-batches per batch (GradCache: the contrastive batch stays whole)")
      ->capture_default_str()
      ->check(florence::cli::positive());
  cmd->add_flag("--local-loss", o.local_loss,
                "Distributed: UniCL of this process's rows against all gathered columns (same gradient, smaller "
                "logits) instead of the whole global batch on every process");
  cmd->add_option("--dist-timeout", o.dist_timeout_s,
                  "Distributed: seconds to wait for the other processes (rendezvous, each collective) before "
                  "stopping with an error")
      ->capture_default_str()
      ->check(florence::cli::positive());
  cmd->add_option("--lr", o.lr, "Peak learning rate")->capture_default_str();
  cmd->add_option("--min-lr", o.min_lr, "Learning rate at the end of the cosine")->capture_default_str();
  cmd->add_option("--warmup-steps", o.warmup_steps, "Linear warm-up steps (default: 5% of the total)");
  cmd->add_option("--weight-decay", o.weight_decay,
                  "AdamW decoupled weight decay (not on norms, biases, embeddings, relative position tables, logit "
                  "scale)")
      ->capture_default_str();
  cmd->add_option("--grad-clip", o.grad_clip, "Global gradient-norm clip (0 = off)")->capture_default_str();
  cmd->add_flag("--average-directions", o.average_directions,
                "Loss = mean of the two directions (CLIP) instead of their sum (UniCL)");
  cmd->add_option("--steps", o.steps, "Total optimizer steps");
  cmd->add_option("--epochs", o.epochs, "Total epochs (steps = epochs x full batches per epoch)");
  cmd->add_option("--stage1-steps", o.stage1_steps, "Stage-1 steps (default: the total minus stages 2 and 3)");
  cmd->add_option("--stage2-steps", o.stage2_steps,
                  "Stage-2 steps (default: 180/1180 of the steps before stage 3, Florence's ratio)");
  cmd->add_option("--stage3-steps", o.stage3_steps, "Stage-3 (high resolution) steps")->capture_default_str();
  cmd->add_option("--stage3-image-size", o.stage3_image_size, "Stage-3 image size");
  cmd->add_option("--image-size", o.image_size, "Image size of stages 1-2 (default: the model's)");
  cmd->add_option("--augment", o.augment,
                  "rrc: RandomResizedCrop + flip; none: resize + full center crop")
      ->capture_default_str()
      ->check(CLI::IsMember({"rrc", "none"}));
  cmd->add_option("--tag-sampling", o.tag_sampling,
                  "Stage-1 probability of training on one tag of a list text (pieces split at ', ' and '. '; "
                  "same tag = positives) instead of the whole text; not in the Florence paper")
      ->capture_default_str()
      ->check(CLI::Number)
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--seed", o.seed, "Seed of init, data order, augmentation and prompt templates")
      ->capture_default_str();
  cmd->add_option("--threads", o.threads, "Intra-op threads (default: the global --threads / OMP_NUM_THREADS / all)");
  cmd->add_option("--workers", o.workers, "Data loader decode threads (0 = all cores)")->capture_default_str();
  cmd->add_option("--ckpt-every", o.ckpt_every, "Checkpoint every N steps (0: only at stage ends / end / Ctrl-C)")
      ->capture_default_str();
  cmd->add_option("--keep-checkpoints", o.keep_checkpoints,
                  "Periodic checkpoints kept (stage-end ones are always kept; 0 = keep all)")
      ->capture_default_str();
  cmd->add_option("--log-every", o.log_every, "Log line every N steps when stderr is not a terminal")
      ->capture_default_str();
  cmd->add_option("--resume", a->resume,
                  "Continue a run: RUN_DIR (its checkpoints/latest) or a checkpoint .safetensors; without a value, "
                  "--out. Saved options are reused; flags given again override them")
      ->expected(0, 1);
  cmd->add_option("--stop-after-steps", o.stop_after_steps,
                  "Stop with a checkpoint after this many steps, keeping the full run's schedule (resume later)");
  cmd->add_option("--debug-nan-at-step", o.debug_nan_at_step,
                  "TEST HOOK: make the loss of this (1-based) step NaN to exercise the NaN guard");
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
      run = florence::train::load_run_options(target);
      overlay(cmd, run, *a);
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
