// florence launch --nproc N [--nnodes M --node-rank K] [--master-addr A] [--master-port P] -- ARGS...
// Starts N local copies of `florence ARGS...` with torchrun's environment (RANK, WORLD_SIZE,
// LOCAL_RANK, MASTER_ADDR, MASTER_PORT); thin front end over dist::launch (src/florence/dist/launch.h).
#include <cstdlib>

#include "command.h"
#include "florence/dist/launch.h"

namespace {

void setup_launch(CLI::App& root) {
  auto* cmd = root.add_subcommand(
      "launch",
      "Run N local processes of a florence command as one distributed job (torchrun's environment), e.g. "
      "`florence launch --nproc 2 -- pretrain ...`; if one process fails the others are stopped");
  auto o = std::make_shared<florence::dist::LaunchOptions>();
  cmd->add_option("--nproc", o->nproc, "Processes on this node")->required()->check(florence::cli::positive());
  cmd->add_option("--nnodes", o->nnodes, "Nodes in the job (run `launch` once per node)")
      ->capture_default_str()
      ->check(florence::cli::positive());
  cmd->add_option("--node-rank", o->node_rank, "This node's index in [0, nnodes)")->capture_default_str();
  cmd->add_option("--master-addr", o->master_addr, "Address of rank 0's node (hosts the rendezvous store)")
      ->capture_default_str();
  cmd->add_option("--master-port", o->master_port,
                  "Rendezvous port (default: a free local port; required with --nnodes > 1)")
      ->check(CLI::Range(0, 65535));
  cmd->add_option("--grace", o->grace_s, "Seconds between SIGTERM and SIGKILL for the others after a failure")
      ->capture_default_str()
      ->check(florence::cli::non_negative());
  cmd->add_option("args", o->args, "The florence command line to run in every process (after --)")->required();
  cmd->callback([o] {
    const int rc = florence::dist::launch(*o);
    if (rc != 0) std::exit(rc);
  });
}

}  // namespace

FLORENCE_COMMAND(setup_launch);
