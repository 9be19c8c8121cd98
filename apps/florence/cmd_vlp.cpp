// florence vlp pretrain --checkpoint FLORENCE_WEIGHTS | --random-init --vocab BPE  --data CORPORA --out RUN_DIR
//                       --steps N [--model meter-nano] [--batch-size B] [--lr X] ... [--resume [RUN_DIR]]
// ITM + MLM pretraining of the METER-style fusion model on image-text pairs (adapt/vlp/vlp_train.h),
// then ITM / MLM accuracy on the held-out pairs. Front end over vlp::vlp_pretrain.
#include <iostream>

#include "command.h"
#include "run_flags.h"
#include "florence/adapt/vlp/vlp_train.h"
#include "florence/core/error.h"

namespace {

using florence::vlp::VlpPretrainOptions;

void setup_vlp(CLI::App& root) {
  auto* grp = florence::cli::group(root, "vlp", "Vision-language pretraining of the METER-style fusion adapter");
  auto* cmd = grp->add_subcommand("pretrain", "ITM + MLM pretraining of the co-attention fusion on image-text pairs");
  auto o = std::make_shared<VlpPretrainOptions>();
  auto resume = std::make_shared<std::string>();
  florence::cli::add_run_flags(cmd, *o);
  cmd->add_option("--resume", *resume, "Continue a run: RUN_DIR or checkpoint (without a value: --out)")->expected(0, 1);
  cmd->callback([cmd, o, resume] {
    if (o->threads == 0) o->threads = florence::cli::requested_threads();
    VlpPretrainOptions run = *o;
    if (cmd->count("--resume") > 0) {
      const std::string target = resume->empty() ? o->out_dir : *resume;
      if (target.empty()) throw florence::Error("--resume without a value needs --out RUN_DIR");
      run = florence::cli::resume_merge(cmd, florence::vlp::load_vlp_pretrain_options(target), *o);
      run.resume = target;
    }
    const auto r = florence::vlp::vlp_pretrain(run);
    if (r.interrupted) {
      std::cout << fmt::format("stopped after step {}/{}; resume with: florence vlp pretrain --resume {}\n",
                               r.steps_done, r.total_steps, r.run_dir);
      return;
    }
    std::cout << fmt::format("pretrained {} steps ({:.0f} s); loss {:.4f} -> {:.4f} (mean of first / last 10)\n",
                             r.steps_done, r.seconds, r.first_loss_mean, r.last_loss_mean);
    if (r.result.contains("eval")) {
      const auto& e = r.result["eval"];
      std::cout << fmt::format(
          "held-out {} pairs: ITM accuracy {:.2f} % (loss {:.4f}, chance 50 %), MLM accuracy {:.2f} % (loss {:.4f}, {} "
          "tokens)\n",
          e["pairs"].get<int64_t>(), 100 * e["itm_accuracy"].get<double>(), e["itm_loss"].get<double>(),
          100 * e["mlm_accuracy"].get<double>(), e["mlm_loss"].get<double>(), e["mlm_predicted"].get<int64_t>());
    }
    std::cout << "weights " << r.final_weights << "\n";
  });
}

}  // namespace

FLORENCE_COMMAND(setup_vlp);
