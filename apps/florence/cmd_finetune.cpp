// florence finetune --checkpoint FILE | --model NAME  --data ROOT --out RUN_DIR [--task classify|retrieval]
//                   [--steps N | --epochs N] [--lr X] [--layer-decay D] [--label-smoothing E] ...
//                   [--resume [RUN_DIR]] [--result FILE]
// classify: image tower + linear head trained end to end, top-1/5 on the test split.
// retrieval: UniCL training continued on the train split's pairs, then R@K on the test split
// (eval::retrieval on the fine-tuned weights). Front end over train::finetune.
#include <torch/torch.h>

#include <filesystem>
#include <iostream>

#include "command.h"
#include "florence/core/error.h"
#include "florence/eval/encode.h"
#include "florence/eval/retrieval.h"
#include "florence/eval/standard.h"
#include "florence/model/florence.h"
#include "florence/model/io.h"
#include "florence/train/seeding.h"
#include "florence/train/finetune.h"

namespace {

namespace fs = std::filesystem;
using florence::train::FinetuneOptions;

void setup_finetune(CLI::App& root) {
  auto* cmd = root.add_subcommand(
      "finetune",
      "Fine-tune a pretrained model: image tower + linear head (classify) or UniCL on a retrieval set (retrieval)");
  auto o = std::make_shared<FinetuneOptions>();
  auto resume = std::make_shared<std::string>();
  auto result = std::make_shared<std::string>();
  auto max_retrieval = std::make_shared<int64_t>(0);
  cmd->add_option("--task", o->task, "classify | retrieval")->capture_default_str()->check(CLI::IsMember({"classify", "retrieval"}));
  cmd->add_option("--checkpoint", o->checkpoint, "Initial weights (a pretraining run's model.safetensors)");
  cmd->add_flag("--random-init", o->random_init,
                "Random weights for the --checkpoint's config (its preprocessing / vocabulary kept): the baseline");
  cmd->add_option("--model", o->model, "Model config (name / JSON); without --checkpoint: random init (baseline)");
  cmd->add_option("--vocab", o->vocab, "retrieval: BPE merges file (default: the checkpoint's run)");
  cmd->add_option("--data", o->data, "Corpus root with split folders (train/val/test)");
  cmd->add_option("--train-split", o->train_split, "Training split folder")->capture_default_str();
  cmd->add_option("--val-split", o->val_split, "Validation split ('' = none)")->capture_default_str();
  cmd->add_option("--test-split", o->test_split, "Test split ('' = none)")->capture_default_str();
  cmd->add_option("--class-field", o->class_field, "Sample meta field holding the class name")->capture_default_str();
  cmd->add_option("--out", o->out_dir, "Run directory (config.json, metrics.jsonl, checkpoints/, model.safetensors)");
  cmd->add_option("--device", o->device, "Torch device (cpu, cuda, cuda:1)")->capture_default_str();
  cmd->add_option("--batch-size", o->batch_size, "Batch size")->capture_default_str()->check(florence::cli::positive());
  cmd->add_option("--steps", o->steps, "Optimizer steps (>= 1)");
  cmd->add_option("--epochs", o->epochs, "Epochs (>= 1; steps = epochs x full batches)");
  cmd->add_option("--lr", o->lr, "Peak learning rate (of the head / last layer)")->capture_default_str();
  cmd->add_option("--min-lr", o->min_lr, "Learning rate at the end of the cosine")->capture_default_str();
  cmd->add_option("--warmup-steps", o->warmup_steps, "Linear warm-up steps, >= 0 (default, or -1: 5% of the steps)");
  cmd->add_option("--weight-decay", o->weight_decay, "AdamW decoupled weight decay")->capture_default_str();
  cmd->add_option("--layer-decay", o->layer_decay, "Layer-wise lr decay factor per block (1 = off; BEiT/SimMIM use 0.65-0.9)")
      ->capture_default_str();
  cmd->add_option("--label-smoothing", o->label_smoothing, "Label smoothing epsilon (classify)")->capture_default_str();
  cmd->add_option("--grad-clip", o->grad_clip, "Global gradient-norm clip (0 = off)")->capture_default_str();
  cmd->add_option("--drop-path", o->drop_path, "Stochastic depth rate (default: the config's)");
  cmd->add_option("--augment", o->augment, "rrc: RandomResizedCrop + flip; none: resize + full centre crop")
      ->capture_default_str()
      ->check(CLI::IsMember({"rrc", "none"}));
  cmd->add_option("--image-size", o->image_size, "Input size (default: the checkpoint run's)");
  cmd->add_option("--crop-pct", o->crop_pct, "Eval resize = size / crop_pct then centre crop (default: the run's, else 0.875)");
  cmd->add_option("--seed", o->seed, "Seed of head init / random init, data order, augmentation, subsets")->capture_default_str();
  cmd->add_option("--workers", o->workers, "Data loader decode threads (0 = all cores)")->capture_default_str();
  // Range checks of the run options are florence::Errors of train::finetune (so library callers
  // get them too); only flags that finetune cannot see are checked here.
  cmd->add_option("--max-train-samples", o->max_train_samples, "Seeded random subset of train (0 = all)");
  cmd->add_option("--max-eval-samples", o->max_eval_samples, "Seeded random subset of val / test (0 = all)");
  cmd->add_option("--max-retrieval-samples", *max_retrieval, "retrieval: only the first N test images (0 = all)")
      ->check(florence::cli::non_negative());
  cmd->add_option("--ckpt-every", o->ckpt_every, "Checkpoint every N steps (0: end / signal only)")->capture_default_str();
  cmd->add_option("--keep-checkpoints", o->keep_checkpoints, "Periodic checkpoints kept (0 = all)")->capture_default_str();
  cmd->add_option("--log-every", o->log_every, "Log line every N steps (>= 1)")->capture_default_str();
  cmd->add_option("--stop-after-steps", o->stop_after_steps, "Stop with a checkpoint after N steps (resume later; 0 = off)");
  cmd->add_option("--resume", *resume, "Continue a run: RUN_DIR or checkpoint (without a value: --out)")->expected(0, 1);
  cmd->add_option("--result", *result, "Also write the result JSON here (e.g. RUN/eval/finetune.json for florence report)");

  cmd->callback([cmd, o, resume, result, max_retrieval] {
    // 0 is the library's "not given" value of --steps / --epochs: an explicit 0 (or less) is an error.
    if (cmd->count("--steps") > 0 && o->steps < 1)
      throw florence::Error(fmt::format("--steps must be >= 1, got {}", o->steps));
    if (cmd->count("--epochs") > 0 && o->epochs < 1)
      throw florence::Error(fmt::format("--epochs must be >= 1, got {}", o->epochs));
    FinetuneOptions run = *o;
    run.threads = florence::cli::requested_threads();
    if (cmd->count("--resume") > 0) {
      const std::string target = resume->empty() ? o->out_dir : *resume;
      if (target.empty()) throw florence::Error("--resume without a value needs --out RUN_DIR");
      run = florence::train::load_finetune_options(target);
      run.resume = target;
      run.threads = florence::cli::requested_threads();
      if (cmd->count("--stop-after-steps")) run.stop_after_steps = o->stop_after_steps;
      else run.stop_after_steps = 0;
      if (cmd->count("--device")) run.device = o->device;
      if (cmd->count("--workers")) run.workers = o->workers;
    }
    const auto r = florence::train::finetune(run);
    if (r.interrupted) {
      std::cout << fmt::format("stopped after step {}/{}; resume with: florence finetune --resume {}\n", r.steps_done,
                               r.total_steps, r.run_dir);
      return;
    }
    nlohmann::json out = r.result;
    if (run.task == "retrieval") {
      // R@K on the held-out split (eval::retrieval, as `florence eval retrieval`) of the initial
      // weights ("zero-shot": the pretrained checkpoint, or the same seeded random init the run
      // started from) and of the fine-tuned weights, with the run's preprocessing.
      const fs::path res_path = result->empty() ? fs::path(r.run_dir) / "eval" / "finetune_retrieval.json" : fs::path(*result);
      auto evaluate = [&](florence::eval::EvalModel& m, const std::string& tag) {
        florence::eval::RetrievalOptions ro;
        ro.name = out.value("set", "");
        ro.max_samples = *max_retrieval;
        ro.num_examples = 8;
        ro.examples_dir = (res_path.parent_path() / (res_path.stem().string() + tag + "_examples")).string();
        ro.relative_to = res_path.parent_path().string();
        return florence::eval::retrieval(m, florence::eval::open_source(run.data, run.test_split), ro);
      };
      florence::eval::LoadOptions lo;
      lo.checkpoint = r.final_weights;
      lo.device = run.device;
      lo.preprocess.num_workers = run.workers;
      florence::eval::EvalModel m = florence::eval::load_eval_model(lo);  // preprocessing + vocab from the sidecar
      const nlohmann::json tuned = evaluate(m, "");
      if (run.checkpoint.empty() || run.random_init) {
        torch::manual_seed(florence::train::seed_mix({florence::train::kTagInit, run.seed}) >> 1);
        m.model = florence::model::FlorenceModel(*m.spec.florence);
      } else {
        m.model = florence::model::load_florence(m.spec, run.checkpoint);
      }
      m.model->to(m.device);
      m.model->eval();
      m.checkpoint = run.checkpoint;
      const nlohmann::json zero = evaluate(m, "_init");
      out = {{"task", "finetune-retrieval"}, {"set", out.value("set", "")}, {"train", r.result}, {"zero_shot", zero},
             {"retrieval", tuned}, {"seconds", r.seconds + tuned.value("seconds", 0.0) + zero.value("seconds", 0.0)}};
      florence::eval::write_json_file((fs::path(r.run_dir) / "result.json").string(), out);
      florence::eval::write_json_file(res_path.string(), out);
      std::cout << fmt::format("fine-tuned {} steps ({:.0f} s); loss {:.4f} -> {:.4f} (mean of first / last 10)\n",
                               r.steps_done, r.seconds, r.first_loss_mean, r.last_loss_mean)
                << "before fine-tuning (" << r.result.value("init", "") << "):\n"
                << florence::eval::format_summary({zero}) << "after fine-tuning:\n"
                << florence::eval::format_summary({tuned});
      return;
    }
    if (!result->empty()) florence::eval::write_json_file(*result, out);
    std::cout << fmt::format("fine-tuned {} steps ({:.0f} s); loss {:.4f} -> {:.4f} (mean of first / last 10)\n",
                             r.steps_done, r.seconds, r.first_loss_mean, r.last_loss_mean);
    if (out.contains("val_top1")) std::cout << fmt::format("val top-1 {:.2f} %\n", 100 * out["val_top1"].get<double>());
    if (out.contains("metrics")) {
      const auto& m = out["metrics"];
      std::cout << fmt::format("test top-1 {:.2f} %  top-5 {:.2f} %  mean per-class {:.2f} %  ({} images, chance {:.2f} %)\n",
                               100 * m["top1"].get<double>(), 100 * m["top5"].get<double>(),
                               100 * m["mean_per_class"].get<double>(), m["num_samples"].get<int64_t>(),
                               100 * m["chance"]["top1"].get<double>());
    }
    std::cout << "weights " << r.final_weights << "\n";
  });
}

}  // namespace

FLORENCE_COMMAND(setup_finetune);
