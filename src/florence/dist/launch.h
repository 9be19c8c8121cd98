#pragma once
// `florence launch`: starts N local processes of a command with torchrun's environment, the way
// `torchrun --nproc_per_node N --no_python CMD ...` does for one node (torch/distributed/run.py),
// without needing Python:
//   RANK = node_rank * nproc + local_rank, LOCAL_RANK, WORLD_SIZE = nnodes * nproc,
//   LOCAL_WORLD_SIZE = nproc, GROUP_RANK = node_rank, MASTER_ADDR, MASTER_PORT,
//   OMP_NUM_THREADS = max(1, cores / nproc) unless already set (torchrun sets 1 and warns; an even
//   share of the cores keeps a single node busy without oversubscribing it).
// Each child runs in its own process group and gets SIGTERM if the launcher dies
// (PR_SET_PDEATHSIG), so a terminal's Ctrl-C reaches the launcher only; the launcher forwards
// SIGINT / SIGTERM once to every child (the trainer then finishes its step and checkpoints; a
// second signal is forwarded again, which kills a trainer at once).
// When a child exits non-zero or is killed, the others get SIGTERM, then SIGKILL after
// `grace_s`; launch() returns the first failing child's status (128 + signal number for a
// signal), 0 when every child exited 0.
#include <string>
#include <vector>

namespace florence::dist {

struct LaunchOptions {
  int nproc = 1;                       ///< processes on this node (>= 1)
  int nnodes = 1;                      ///< nodes in the job (>= 1)
  int node_rank = 0;                   ///< this node's index in [0, nnodes)
  std::string master_addr = "127.0.0.1";
  int master_port = 0;                 ///< 0: a free local port (single node only)
  double grace_s = 10;                 ///< SIGTERM -> SIGKILL delay after a failure
  std::string executable;              ///< program to run; empty: this executable (/proc/self/exe)
  std::vector<std::string> args;       ///< its arguments (e.g. {"pretrain", "--model", ...})
};

/// Runs the children and waits for them (see the file comment). Throws florence::Error for bad
/// options (nproc < 1, node_rank outside [0, nnodes), no arguments, nnodes > 1 without an
/// explicit --master-port, a port outside 0..65535) or when a process cannot be started.
int launch(const LaunchOptions& options);

/// A TCP port that was free on 127.0.0.1 a moment ago (bind to port 0). Throws florence::Error
/// when no socket can be bound.
int find_free_port();

}  // namespace florence::dist
