// florence report RUN_DIR [--gnuplot PATH] [--examples N]
#include <iostream>

#include "command.h"
#include "florence/eval/report.h"

namespace {

void setup_report(CLI::App& root) {
  auto* cmd = root.add_subcommand("report", "HTML report of a pretraining run: curves, eval table, confusion, retrieval examples");
  auto o = std::make_shared<florence::eval::ReportOptions>();
  cmd->add_option("run_dir", o->run_dir, "Run folder (metrics.jsonl, config.json, eval/*.json)")->required();
  cmd->add_option("--gnuplot", o->gnuplot, "gnuplot executable")->capture_default_str();
  cmd->add_option("--examples", o->max_examples, "Retrieval example rows per result")->capture_default_str();
  cmd->callback([=] {
    const auto r = florence::eval::write_report(*o);
    std::cout << "wrote " << r.html_path << " (" << r.metrics_lines << " metric lines, " << r.eval_results
              << " eval results, " << r.images.size() << " images, " << r.warnings.size() << " warnings)\n";
  });
}

}  // namespace

FLORENCE_COMMAND(setup_report);
