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
#include "run_flags.h"
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
  // Every option of FinetuneOptions' field table; range checks of the run options are
  // florence::Errors of train::finetune (so library callers get them too).
  florence::cli::add_run_flags(cmd, *o);
  cmd->add_option("--max-retrieval-samples", *max_retrieval, "retrieval: only the first N test images (0 = all)")
      ->check(florence::cli::non_negative());
  cmd->add_option("--resume", *resume, "Continue a run: RUN_DIR or checkpoint (without a value: --out)")->expected(0, 1);
  cmd->add_option("--result", *result, "Also write the result JSON here (e.g. RUN/eval/finetune.json for florence report)");

  cmd->callback([cmd, o, resume, result, max_retrieval] {
    // 0 is the library's "not given" value of --steps / --epochs: an explicit 0 (or less) is an error.
    if (cmd->count("--steps") > 0 && o->steps < 1)
      throw florence::Error(fmt::format("--steps must be >= 1, got {}", o->steps));
    if (cmd->count("--epochs") > 0 && o->epochs < 1)
      throw florence::Error(fmt::format("--epochs must be >= 1, got {}", o->epochs));
    if (o->threads == 0) o->threads = florence::cli::requested_threads();
    FinetuneOptions run = *o;
    if (cmd->count("--resume") > 0) {
      const std::string target = resume->empty() ? o->out_dir : *resume;
      if (target.empty()) throw florence::Error("--resume without a value needs --out RUN_DIR");
      run = florence::cli::resume_merge(cmd, florence::train::load_finetune_options(target), *o);
      run.resume = target;
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
