#pragma once
// Data-parallel communication on PyTorch's own distributed layer, c10d (the library LibTorch
// ships): a TCPStore rendezvous and a Gloo process group (NCCL for CUDA tensors when LibTorch is
// built with it), wrapped in the few collectives the trainer and the curation pipeline need.
//
// Rendezvous (init_from_env) follows torchrun's environment contract (torch/distributed/run.py,
// torch/distributed/rendezvous.py, "env://"):
//   RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT
// with Slurm's srun variables as the fallback when RANK/WORLD_SIZE are absent:
//   SLURM_PROCID -> rank, SLURM_STEP_NUM_TASKS (else SLURM_NTASKS) -> world size,
//   SLURM_LOCALID -> local rank, MASTER_ADDR default: the first host of SLURM_STEP_NODELIST
//   (else SLURM_JOB_NODELIST), MASTER_PORT default: 15000 + SLURM_JOB_ID % 20000 (so two jobs
//   sharing a node do not collide; torchrun's default 29500 otherwise).
// Neither present: a single process (world size 1) that communicates with nobody; every
// collective is then the identity, so callers need no special case.
// Rank 0 hosts the TCPStore server, except under torchrun's agent store
// (TORCHELASTIC_USE_AGENT_STORE=True), where every rank is a client of the agent's server and
// keys live under "/worker/attempt_<TORCHELASTIC_RESTART_COUNT>" as torch.distributed does.
// The Gloo transport binds to the interface named by GLOO_SOCKET_IFNAME (first of a comma list)
// when set, else to the address the host name resolves to (loopback if it does not resolve) -
// PyTorch's rules, so the same cluster settings work for both.
//
// Failures: every collective waits at most `timeout` (--dist-timeout); a peer that died (its
// sockets close) fails the collective at once, one that hangs fails it after the timeout. Either
// way a florence::Error names the operation, this rank, the timeout and the transport's reason,
// and the context refuses further collectives (they would only wait again).
//
// Headers stay light: the c10d and Gloo types live in dist.cpp only (their API moved between
// LibTorch 1.x, where ProcessGroupGloo is a ProcessGroup, and 2.x, where it is a Backend; the
// calls used here exist in both).
#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace torch::nn {
class Module;
}

namespace florence::dist {

/// Where this process sits, as read from the environment.
struct EnvInfo {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::string source = "none";     ///< "torchrun" (RANK/WORLD_SIZE), "slurm", or "none"
  bool use_agent_store = false;    ///< TORCHELASTIC_USE_AGENT_STORE=True: rank 0 is a client too
  std::string store_prefix;        ///< key prefix in the agent's store ("/worker/attempt_N")
};

/// Reads the variables listed above. Throws florence::Error naming the variable when one is
/// malformed (not an integer, port outside 1..65535, rank outside [0, world_size), world size
/// < 1, or a multi-process world without MASTER_ADDR under torchrun's contract).
EnvInfo read_env();

/// First host name of a Slurm node list: "node[01-04,07],gpu5" -> "node01", "a,b" -> "a".
/// Throws florence::Error on an empty or unbalanced list.
std::string first_slurm_host(const std::string& nodelist);

struct InitOptions {
  /// Per-collective and rendezvous timeout in seconds (--dist-timeout). Must be > 0.
  double timeout_s = 600;
  /// Device of the tensors that will be communicated ("cpu", "cuda:0"): CUDA selects NCCL when
  /// this LibTorch was built with it (USE_C10D_NCCL), Gloo otherwise.
  std::string device = "cpu";
  /// Gloo worker threads per process group (PyTorch's default: 2).
  int gloo_threads = 2;
};

/// Seconds and bytes spent in collectives since the context was created (for the benchmark and
/// metrics.jsonl). Seconds are wall time blocked in wait(), so they include the time spent
/// waiting for slower peers.
struct CommStats {
  double seconds = 0;
  int64_t bytes = 0;  ///< payload bytes handed to collectives by this rank
  int64_t calls = 0;
};

enum class ReduceOp { kSum, kMax, kMin };

/// A process group and this process's place in it. Copies share the group. A default-constructed
/// context is the single-process world (rank 0 of 1).
class DistContext {
 public:
  DistContext();
  ~DistContext();
  DistContext(const DistContext&);
  DistContext& operator=(const DistContext&);

  int rank() const;
  int world_size() const;
  int local_rank() const;
  bool is_main() const { return rank() == 0; }
  bool distributed() const { return world_size() > 1; }
  double timeout_s() const;
  /// "none" (single process), "gloo" or "nccl".
  std::string backend() const;
  /// One line for logs: "rank 1/2 (local 1), gloo via 127.0.0.1:29500 (torchrun)".
  std::string describe() const;

  // ----- Collectives: blocking, called by every rank in the same order. Throw florence::Error
  // ----- when a peer failed or the timeout passed (see the file comment).

  /// In-place reduction of each tensor over all ranks (same shapes and dtypes everywhere).
  /// Tensors must be contiguous.
  void allreduce(std::vector<torch::Tensor>& tensors, ReduceOp op = ReduceOp::kSum);
  /// Starts the reductions without waiting (the bucketed gradient all-reduce overlaps them);
  /// finish with wait_all(). Tensors must stay alive and untouched until then.
  void allreduce_async(std::vector<torch::Tensor>& tensors, ReduceOp op = ReduceOp::kSum);
  void wait_all();
  /// In-place broadcast of `tensors` from `root` (contiguous, same shapes everywhere).
  void broadcast(std::vector<torch::Tensor>& tensors, int root = 0);
  /// Concatenation along dim 0 of every rank's `local` in rank order. Leading sizes may differ
  /// between ranks; the other dimensions and the dtype must agree (checked: a florence::Error
  /// names the mismatch). No autograd (see gather_with_grad). Returns `local` itself when
  /// world_size == 1.
  torch::Tensor all_gather_cat(const torch::Tensor& local);
  /// Leading sizes of every rank's tensor (what all_gather_cat exchanges first), [world_size].
  std::vector<int64_t> all_gather_sizes(int64_t local_size);
  /// Every rank's byte buffer (any sizes), in rank order.
  std::vector<std::vector<uint8_t>> all_gather_bytes(const std::vector<uint8_t>& local);
  /// Every rank's int64 values (any counts), in rank order.
  std::vector<std::vector<int64_t>> all_gather_int64(const std::vector<int64_t>& local);
  void barrier();

  CommStats stats() const;

  struct Impl;
  /// Internal: the shared state (used by the autograd gather in dist.cpp).
  const std::shared_ptr<Impl>& impl() const { return impl_; }
  explicit DistContext(std::shared_ptr<Impl> impl);

 private:
  std::shared_ptr<Impl> impl_;
};

/// Joins the process group described by the environment (see the file comment), or returns the
/// single-process context when no launcher variables are set. Blocks until all world_size ranks
/// have joined or `timeout_s` passed. Throws florence::Error naming the master address, port and
/// the missing peers' count on a rendezvous timeout, and on bad variables (read_env()).
DistContext init_from_env(const InitOptions& options = {});

/// Copies rank 0's parameters and buffers into every other rank's `module` (same architecture on
/// all ranks; tensors are matched by name order). No-op for a single process.
void broadcast_parameters(DistContext& ctx, torch::nn::Module& module, int root = 0);

/// Replaces each parameter's gradient by its mean over ranks (DistributedDataParallel's rule),
/// in flat buckets of at most `bucket_bytes` (PyTorch DDP's default bucket_cap_mb is 25 MiB),
/// all buckets in flight at once. A parameter whose gradient is undefined on every rank stays
/// undefined; undefined on some ranks only, it counts as zero there (so all ranks apply the same
/// update). `params` must list the same tensors in the same order on all ranks. No-op for a
/// single process.
void allreduce_gradients(DistContext& ctx, const std::vector<torch::Tensor>& params,
                         int64_t bucket_bytes = int64_t(25) << 20);

/// All-gather with gradient: returns the rows of every rank, in rank order ([sum_r n_r, ...],
/// this rank's rows are `local` values at offset sum_{r' < rank} n_r'), differentiable w.r.t.
/// `local`. Backward sums the incoming gradient over ranks (all-reduce) and returns this rank's
/// slice of it - open_clip's `gather_features(..., gather_with_grad=True)`, which uses
/// torch.distributed.nn.all_gather (open_clip/loss.py). With every rank computing a loss over
/// the gathered rows, this makes the parameter gradient, once averaged over ranks by
/// allreduce_gradients, the gradient of the mean of the ranks' losses (UniCL global loss: every
/// rank's loss is the same global loss; local loss: the mean over ranks is the global loss).
///   local: [n, ...] floating tensor; n may differ between ranks (padded internally).
/// Returns `local` itself when world_size == 1.
torch::Tensor gather_with_grad(DistContext& ctx, const torch::Tensor& local);

}  // namespace florence::dist
