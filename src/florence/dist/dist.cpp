// c10d process group, rendezvous and collectives; the contract is in dist.h.
//
// ProcessGroupGloo.hpp is compiled only when USE_C10D_GLOO is defined. LibTorch's CMake package
// exports it (with USE_DISTRIBUTED) on the torch target for builds that contain Gloo; the guard
// below only matters for builds set up without that package. Debian's libtorch_cpu links
// libgloo.so.0 itself, so nothing else needs linking.
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif
#include "florence/dist/dist.h"

#include <ATen/core/ivalue.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Types.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>
#if defined(USE_C10D_NCCL)
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#include <torch/nn/module.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <sstream>
#include <thread>

#include "florence/core/error.h"

namespace florence::dist {

namespace {

using Clock = std::chrono::steady_clock;
using WorkPtr = c10::intrusive_ptr<c10d::Work>;

// ---------------------------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------------------------

const char* env_or_null(const char* name) {
  const char* v = std::getenv(name);
  return (v && *v) ? v : nullptr;
}

int64_t parse_int(const char* name, const char* value) {
  const std::string s(value);
  size_t pos = 0;
  long long v = 0;
  try {
    v = std::stoll(s, &pos, 10);
  } catch (const std::exception&) {
    pos = 0;
  }
  if (pos == 0 || pos != s.size()) throw Error(fmt::format("environment variable {}='{}' is not an integer", name, s));
  return int64_t(v);
}

c10d::ReduceOp to_c10d(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return c10d::ReduceOp::SUM;
    case ReduceOp::kMax: return c10d::ReduceOp::MAX;
    case ReduceOp::kMin: return c10d::ReduceOp::MIN;
  }
  return c10d::ReduceOp::SUM;
}

// The calls used on a process group, over LibTorch 1.x ProcessGroup / 2.x Backend subclasses
// alike (same virtual signatures in both).
struct Comm {
  virtual ~Comm() = default;
  virtual WorkPtr allreduce(std::vector<at::Tensor>& t, const c10d::AllreduceOptions& o) = 0;
  virtual WorkPtr broadcast(std::vector<at::Tensor>& t, const c10d::BroadcastOptions& o) = 0;
  virtual WorkPtr allgather(std::vector<std::vector<at::Tensor>>& out, std::vector<at::Tensor>& in,
                            const c10d::AllgatherOptions& o) = 0;
  virtual WorkPtr barrier(const c10d::BarrierOptions& o) = 0;
  /// Gives up the process group without destroying it (see Impl::~Impl).
  virtual void leak() = 0;
};

template <class PG>
struct CommImpl : Comm {
  explicit CommImpl(c10::intrusive_ptr<PG> p) : pg(std::move(p)) {}
  WorkPtr allreduce(std::vector<at::Tensor>& t, const c10d::AllreduceOptions& o) override {
    return pg->allreduce(t, o);
  }
  WorkPtr broadcast(std::vector<at::Tensor>& t, const c10d::BroadcastOptions& o) override {
    return pg->broadcast(t, o);
  }
  WorkPtr allgather(std::vector<std::vector<at::Tensor>>& out, std::vector<at::Tensor>& in,
                    const c10d::AllgatherOptions& o) override {
    return pg->allgather(out, in, o);
  }
  WorkPtr barrier(const c10d::BarrierOptions& o) override { return pg->barrier(o); }
  void leak() override { (void)pg.release(); }
  c10::intrusive_ptr<PG> pg;
};

std::string reason_of(const std::exception_ptr& ep) {
  try {
    std::rethrow_exception(ep);
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "unknown error";
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Shared state
// ---------------------------------------------------------------------------------------------

struct DistContext::Impl {
  int rank = 0, world = 1, local_rank = 0;
  double timeout_s = 600;
  std::string backend = "none";
  std::string where;  // "127.0.0.1:29500 (torchrun)"
  torch::Device device{torch::kCPU};
  c10::intrusive_ptr<c10d::Store> store;
  std::unique_ptr<Comm> comm;
  std::vector<std::pair<WorkPtr, std::string>> pending;
  mutable std::mutex mu;  // stats
  CommStats stats;
  bool failed = false;
  std::string failure;

  ~Impl() {
    // After a failed collective, Gloo's worker threads may still be blocked in that operation
    // (until the transport timeout) and the group's destructor would wait for them and for any
    // queued work. The process is about to report the error and exit, so the group is
    // abandoned instead of destroyed.
    if (failed && comm) comm->leak();
  }

  std::chrono::milliseconds timeout() const {
    return std::chrono::milliseconds(int64_t(timeout_s * 1000.0));
  }

  [[noreturn]] void fail(const std::string& op, const std::string& reason) {
    failed = true;
    failure = fmt::format(
        "distributed: {} failed on rank {} of {} - a peer process died, hung or is unreachable "
        "(--dist-timeout {:g} s): {}",
        op, rank, world, timeout_s, reason);
    throw Error(failure);
  }

  void check_usable(const char* op) {
    if (failed) throw Error(fmt::format("distributed: {} refused after an earlier failure: {}", op, failure));
    if (!comm) throw Error(fmt::format("distributed: {} without a process group", op));
  }

  /// Adds to the statistics; a collective counts as one call when its wait ends (calls = 1).
  void account(double seconds, int64_t bytes, int64_t calls = 0) {
    std::lock_guard<std::mutex> lock(mu);
    stats.seconds += seconds;
    stats.bytes += bytes;
    stats.calls += calls;
  }

  // Enqueues a collective. Failures here are about the arguments (dtype, shape, device), not
  // about peers, so the context stays usable.
  template <class Start>
  WorkPtr start(const std::string& op, Start&& fn) {
    check_usable(op.c_str());
    try {
      return fn();
    } catch (const std::exception&) {
      throw Error(fmt::format("distributed: {} rejected its input on rank {} of {}: {}", op, rank, world,
                              reason_of(std::current_exception())));
    }
  }

  void wait(const WorkPtr& work, const std::string& op, int64_t bytes) {
    const auto t0 = Clock::now();
    try {
      work->wait(timeout());
    } catch (const std::exception&) {
      account(std::chrono::duration<double>(Clock::now() - t0).count(), bytes, 1);
      fail(op, reason_of(std::current_exception()));
    }
    account(std::chrono::duration<double>(Clock::now() - t0).count(), bytes, 1);
  }

  int64_t bytes_of(const std::vector<at::Tensor>& ts) const {
    int64_t b = 0;
    for (const auto& t : ts) b += int64_t(t.numel()) * int64_t(t.element_size());
    return b;
  }

  // One collective per tensor (c10d reads a vector of tensors as one tensor's per-device
  // replicas), all in flight before the first wait.
  void allreduce(std::vector<at::Tensor>& ts, ReduceOp op, bool wait_now = true) {
    c10d::AllreduceOptions o;
    o.reduceOp = to_c10d(op);
    o.timeout = timeout();
    for (auto& t : ts) {
      std::vector<at::Tensor> one{t};
      WorkPtr w = start("all-reduce", [&] { return comm->allreduce(one, o); });
      pending.emplace_back(w, "all-reduce");
      account(0, bytes_of(one));
    }
    if (wait_now) wait_pending();
  }

  void wait_pending() {
    auto ps = std::move(pending);
    pending.clear();
    for (auto& [w, op] : ps) wait(w, op, 0);
  }

  /// Every rank's `local` (same shape everywhere), in rank order.
  std::vector<at::Tensor> allgather_same(const at::Tensor& local) {
    std::vector<at::Tensor> in{local.contiguous()};
    std::vector<std::vector<at::Tensor>> out(1);
    for (int r = 0; r < world; ++r) out[0].push_back(torch::empty_like(in[0]));
    c10d::AllgatherOptions o;
    o.timeout = timeout();
    WorkPtr w = start("all-gather", [&] { return comm->allgather(out, in, o); });
    wait(w, "all-gather", bytes_of(in));
    return out[0];
  }

  /// Descriptor exchange for variable-size gathers: [size0, dtype, ndim, dims 1..7] per rank.
  std::vector<std::vector<int64_t>> exchange_descriptors(const at::Tensor& t) {
    constexpr int kMaxDims = 8;
    if (t.dim() > kMaxDims || t.dim() < 1) {
      throw Error(fmt::format("distributed all-gather: tensors must have 1..{} dimensions, got {}", kMaxDims, t.dim()));
    }
    std::vector<int64_t> d(2 + kMaxDims, -1);
    d[0] = int64_t(t.scalar_type());
    d[1] = t.dim();
    for (int64_t i = 0; i < t.dim(); ++i) d[size_t(2 + i)] = t.size(i);
    auto gathered = allgather_same(torch::tensor(d, torch::kInt64).to(device));
    std::vector<std::vector<int64_t>> out;
    for (auto& g : gathered) {
      auto c = g.cpu();
      out.emplace_back(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
    }
    return out;
  }

  /// Concatenation along dim 0 of every rank's tensor (leading sizes may differ).
  at::Tensor gather_cat(const at::Tensor& local, std::vector<int64_t>* sizes_out) {
    const auto desc = exchange_descriptors(local);
    std::vector<int64_t> sizes;
    int64_t max_n = 0;
    for (int r = 0; r < world; ++r) {
      const auto& d = desc[size_t(r)];
      bool same = d[0] == int64_t(local.scalar_type()) && d[1] == local.dim();
      for (int64_t i = 1; same && i < local.dim(); ++i) same = d[size_t(2 + i)] == local.size(i);
      if (!same) {
        std::string theirs;
        for (int64_t i = 0; i < d[1]; ++i) theirs += (i ? ", " : "") + std::to_string(d[size_t(2 + i)]);
        throw Error(fmt::format("distributed all-gather: rank {} has a tensor of dtype {} and sizes [{}], rank {} has "
                                "dtype {} and sizes {} (only the leading size may differ)",
                                r, c10::toString(c10::ScalarType(d[0])), theirs, rank,
                                c10::toString(local.scalar_type()), c10::str(local.sizes())));
      }
      sizes.push_back(d[2]);
      max_n = std::max(max_n, d[2]);
    }
    if (sizes_out) *sizes_out = sizes;
    if (max_n == 0) return local.contiguous();  // nothing anywhere: no transfer
    at::Tensor padded = local.contiguous();
    if (local.size(0) < max_n) {
      std::vector<int64_t> shape(local.sizes().begin(), local.sizes().end());
      shape[0] = max_n - local.size(0);
      padded = torch::cat({padded, torch::zeros(shape, local.options())});
    }
    auto parts = allgather_same(padded);
    for (int r = 0; r < world; ++r) parts[size_t(r)] = parts[size_t(r)].narrow(0, 0, sizes[size_t(r)]);
    return torch::cat(parts);
  }
};

// ---------------------------------------------------------------------------------------------
// Environment parsing
// ---------------------------------------------------------------------------------------------

std::string first_slurm_host(const std::string& list) {
  if (list.empty()) throw Error("empty Slurm node list");
  // The first element ends at the first comma outside brackets.
  int depth = 0;
  size_t end = list.size();
  for (size_t i = 0; i < list.size(); ++i) {
    if (list[i] == '[') ++depth;
    if (list[i] == ']') {
      if (--depth < 0) throw Error(fmt::format("malformed Slurm node list '{}'", list));
    }
    if (list[i] == ',' && depth == 0) {
      end = i;
      break;
    }
  }
  if (depth > 0 && end == list.size()) throw Error(fmt::format("malformed Slurm node list '{}'", list));
  const std::string first = list.substr(0, end);
  const size_t lb = first.find('[');
  if (lb == std::string::npos) {
    if (first.empty()) throw Error(fmt::format("malformed Slurm node list '{}'", list));
    return first;
  }
  const size_t rb = first.find(']', lb);
  if (rb == std::string::npos || lb == 0) throw Error(fmt::format("malformed Slurm node list '{}'", list));
  // "node[01-04,07]suffix": the first number of the range list, zero padding kept.
  const std::string ranges = first.substr(lb + 1, rb - lb - 1);
  size_t stop = ranges.find_first_of(",-");
  const std::string num = ranges.substr(0, stop);
  if (num.empty()) throw Error(fmt::format("malformed Slurm node list '{}'", list));
  return first.substr(0, lb) + num + first.substr(rb + 1);
}

EnvInfo read_env() {
  EnvInfo e;
  const char* rank = env_or_null("RANK");
  const char* world = env_or_null("WORLD_SIZE");
  const bool torchrun = rank || world;
  const char* s_rank = env_or_null("SLURM_PROCID");
  const char* s_world = env_or_null("SLURM_STEP_NUM_TASKS");
  if (!s_world) s_world = env_or_null("SLURM_NTASKS");
  if (torchrun) {
    if (!rank || !world) throw Error("set both RANK and WORLD_SIZE (torchrun's environment), or neither");
    e.source = "torchrun";
    e.rank = int(parse_int("RANK", rank));
    e.world_size = int(parse_int("WORLD_SIZE", world));
    if (const char* lr = env_or_null("LOCAL_RANK")) e.local_rank = int(parse_int("LOCAL_RANK", lr));
  } else if (s_rank && s_world) {
    e.source = "slurm";
    e.rank = int(parse_int("SLURM_PROCID", s_rank));
    e.world_size = int(parse_int(std::getenv("SLURM_STEP_NUM_TASKS") ? "SLURM_STEP_NUM_TASKS" : "SLURM_NTASKS",
                                 s_world));
    if (const char* lr = env_or_null("SLURM_LOCALID")) e.local_rank = int(parse_int("SLURM_LOCALID", lr));
  } else {
    return e;
  }
  if (e.world_size < 1) throw Error(fmt::format("world size must be >= 1, got {}", e.world_size));
  if (e.rank < 0 || e.rank >= e.world_size) {
    throw Error(fmt::format("rank {} is outside [0, world size {})", e.rank, e.world_size));
  }
  if (e.local_rank < 0) throw Error(fmt::format("local rank must be >= 0, got {}", e.local_rank));

  if (const char* addr = env_or_null("MASTER_ADDR")) {
    e.master_addr = addr;
  } else if (e.source == "slurm") {
    const char* nodes = env_or_null("SLURM_STEP_NODELIST");
    if (!nodes) nodes = env_or_null("SLURM_JOB_NODELIST");
    if (nodes) e.master_addr = first_slurm_host(nodes);
  } else if (e.world_size > 1) {
    throw Error("MASTER_ADDR is not set (torchrun's environment: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)");
  }
  if (const char* port = env_or_null("MASTER_PORT")) {
    e.master_port = int(parse_int("MASTER_PORT", port));
  } else if (e.source == "slurm") {
    if (const char* job = env_or_null("SLURM_JOB_ID")) e.master_port = int(15000 + parse_int("SLURM_JOB_ID", job) % 20000);
  } else if (e.world_size > 1) {
    throw Error("MASTER_PORT is not set (torchrun's environment: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)");
  }
  if (e.master_port < 1 || e.master_port > 65535) {
    throw Error(fmt::format("MASTER_PORT {} is outside 1..65535", e.master_port));
  }
  if (const char* agent = env_or_null("TORCHELASTIC_USE_AGENT_STORE")) {
    e.use_agent_store = std::string(agent) == "True";
    if (e.use_agent_store) {
      const char* attempt = env_or_null("TORCHELASTIC_RESTART_COUNT");
      e.store_prefix = fmt::format("/worker/attempt_{}", attempt ? attempt : "0");
    }
  }
  return e;
}

// ---------------------------------------------------------------------------------------------
// DistContext
// ---------------------------------------------------------------------------------------------

DistContext::DistContext() : impl_(std::make_shared<Impl>()) {}
DistContext::DistContext(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
DistContext::~DistContext() = default;
DistContext::DistContext(const DistContext&) = default;
DistContext& DistContext::operator=(const DistContext&) = default;

int DistContext::rank() const { return impl_->rank; }
int DistContext::world_size() const { return impl_->world; }
int DistContext::local_rank() const { return impl_->local_rank; }
double DistContext::timeout_s() const { return impl_->timeout_s; }
std::string DistContext::backend() const { return impl_->backend; }

std::string DistContext::describe() const {
  if (impl_->world == 1 && !impl_->comm) return "single process (no launcher environment)";
  return fmt::format("rank {}/{} (local {}), {} via {}", impl_->rank, impl_->world, impl_->local_rank,
                     impl_->backend, impl_->where);
}

CommStats DistContext::stats() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->stats;
}

void DistContext::allreduce(std::vector<torch::Tensor>& tensors, ReduceOp op) {
  if (world_size() == 1 || tensors.empty()) return;
  impl_->allreduce(tensors, op);
}

void DistContext::allreduce_async(std::vector<torch::Tensor>& tensors, ReduceOp op) {
  if (world_size() == 1 || tensors.empty()) return;
  impl_->allreduce(tensors, op, /*wait_now=*/false);
}

void DistContext::wait_all() {
  if (world_size() == 1) return;
  impl_->wait_pending();
}

void DistContext::broadcast(std::vector<torch::Tensor>& tensors, int root) {
  if (world_size() == 1 || tensors.empty()) return;
  if (root < 0 || root >= world_size()) throw Error(fmt::format("broadcast root {} outside the world", root));
  c10d::BroadcastOptions o;
  o.rootRank = root;
  o.timeout = impl_->timeout();
  // Gloo broadcasts one tensor per call (several only for multi-device inputs).
  for (auto& t : tensors) {
    std::vector<at::Tensor> one{t};
    WorkPtr w = impl_->start("broadcast", [&] { return impl_->comm->broadcast(one, o); });
    impl_->wait(w, "broadcast", impl_->bytes_of(one));
  }
}

torch::Tensor DistContext::all_gather_cat(const torch::Tensor& local) {
  if (world_size() == 1) return local;
  impl_->check_usable("all-gather");
  return impl_->gather_cat(local, nullptr);
}

std::vector<int64_t> DistContext::all_gather_sizes(int64_t local_size) {
  if (world_size() == 1) return {local_size};
  impl_->check_usable("all-gather");
  auto parts = impl_->allgather_same(torch::tensor({local_size}, torch::kInt64).to(impl_->device));
  std::vector<int64_t> out;
  for (auto& p : parts) out.push_back(p.cpu().item<int64_t>());
  return out;
}

std::vector<std::vector<uint8_t>> DistContext::all_gather_bytes(const std::vector<uint8_t>& local) {
  if (world_size() == 1) return {local};
  impl_->check_usable("all-gather");
  torch::Tensor t = torch::empty({int64_t(local.size())}, torch::kUInt8);
  if (!local.empty()) std::memcpy(t.data_ptr<uint8_t>(), local.data(), local.size());
  t = t.to(impl_->device);
  std::vector<int64_t> sizes;
  torch::Tensor all = impl_->gather_cat(t, &sizes).cpu().contiguous();
  std::vector<std::vector<uint8_t>> out;
  const uint8_t* p = all.data_ptr<uint8_t>();
  for (int64_t n : sizes) {
    out.emplace_back(p, p + n);
    p += n;
  }
  return out;
}

std::vector<std::vector<int64_t>> DistContext::all_gather_int64(const std::vector<int64_t>& local) {
  if (world_size() == 1) return {local};
  impl_->check_usable("all-gather");
  torch::Tensor t = torch::tensor(local, torch::kInt64);
  if (local.empty()) t = torch::empty({0}, torch::kInt64);
  std::vector<int64_t> sizes;
  torch::Tensor all = impl_->gather_cat(t.to(impl_->device), &sizes).cpu().contiguous();
  std::vector<std::vector<int64_t>> out;
  const int64_t* p = all.data_ptr<int64_t>();
  for (int64_t n : sizes) {
    out.emplace_back(p, p + n);
    p += n;
  }
  return out;
}

void DistContext::barrier() {
  if (world_size() == 1) return;
  c10d::BarrierOptions o;
  o.timeout = impl_->timeout();
  WorkPtr w = impl_->start("barrier", [&] { return impl_->comm->barrier(o); });
  impl_->wait(w, "barrier", 0);
}

// ---------------------------------------------------------------------------------------------
// Rendezvous
// ---------------------------------------------------------------------------------------------

DistContext init_from_env(const InitOptions& options) {
  if (!(options.timeout_s > 0)) throw Error(fmt::format("--dist-timeout must be > 0 seconds, got {}", options.timeout_s));
  const EnvInfo env = read_env();
  auto impl = std::make_shared<DistContext::Impl>();
  impl->rank = env.rank;
  impl->world = env.world_size;
  impl->local_rank = env.local_rank;
  impl->timeout_s = options.timeout_s;
  if (env.source == "none") return DistContext(impl);

  const torch::Device device(options.device);
  impl->where = fmt::format("{}:{} ({}{})", env.master_addr, env.master_port, env.source,
                            env.use_agent_store ? ", agent store" : "");
  if (env.world_size == 1) {
    // A launcher with one process: nothing to talk to.
    impl->where += ", nothing to connect";
    return DistContext(impl);
  }
  const auto timeout = impl->timeout();
  try {
    c10d::TCPStoreOptions so;
    so.port = uint16_t(env.master_port);
    so.isServer = env.rank == 0 && !env.use_agent_store;
    so.numWorkers = size_t(env.world_size);
    so.waitWorkers = true;
    so.timeout = timeout;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
    const std::string prefix = env.use_agent_store ? env.store_prefix : std::string("florence");
    impl->store = c10::make_intrusive<c10d::PrefixStore>(prefix, tcp);
  } catch (const std::exception&) {
    throw Error(fmt::format("distributed rendezvous at {}:{} failed for rank {} of {} within --dist-timeout {:g} s "
                            "(is rank 0 running, with the same MASTER_ADDR/MASTER_PORT, and is the port free on "
                            "the master?): {}",
                            env.master_addr, env.master_port, env.rank, env.world_size, options.timeout_s,
                            reason_of(std::current_exception())));
  }
  // Every rank counts itself in and waits for the others (the store's server does not wait for
  // its clients by itself), so a missing process is reported here by name and count.
  int64_t joined = 0;
  try {
    const auto deadline = Clock::now() + timeout;
    impl->store->add("joined", 1);
    for (;;) {
      joined = impl->store->add("joined", 0);
      if (joined >= env.world_size) break;
      if (Clock::now() > deadline) throw std::runtime_error("timed out");
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  } catch (const std::exception&) {
    throw Error(fmt::format("distributed rendezvous at {}:{} failed for rank {} of {}: {} of {} processes joined "
                            "within --dist-timeout {:g} s (are all of them started, with the same WORLD_SIZE, "
                            "MASTER_ADDR and MASTER_PORT?): {}",
                            env.master_addr, env.master_port, env.rank, env.world_size, joined, env.world_size,
                            options.timeout_s, reason_of(std::current_exception())));
  }

  bool use_nccl = false;
#if defined(USE_C10D_NCCL)
  use_nccl = device.is_cuda();
#else
  if (device.is_cuda()) {
    spdlog::warn("distributed: this LibTorch build has no NCCL support compiled in (USE_C10D_NCCL); using Gloo for "
                 "CUDA tensors");
  }
#endif
  try {
    if (use_nccl) {
#if defined(USE_C10D_NCCL)
      auto o = c10d::ProcessGroupNCCL::Options::create();
      o->timeout = timeout;
      impl->comm = std::make_unique<CommImpl<c10d::ProcessGroupNCCL>>(
          c10::make_intrusive<c10d::ProcessGroupNCCL>(impl->store, env.rank, env.world_size, o));
      impl->backend = "nccl";
#endif
    } else {
      auto o = c10d::ProcessGroupGloo::Options::create(timeout);
      if (const char* ifname = env_or_null("GLOO_SOCKET_IFNAME")) {
        std::stringstream ss(ifname);
        for (std::string part; std::getline(ss, part, ',');) {
          if (!part.empty()) o->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(part));
        }
      }
      if (o->devices.empty()) o->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      o->threads = std::max(1, options.gloo_threads);
      impl->comm = std::make_unique<CommImpl<c10d::ProcessGroupGloo>>(
          c10::make_intrusive<c10d::ProcessGroupGloo>(impl->store, env.rank, env.world_size, o));
      impl->backend = "gloo";
    }
  } catch (const Error&) {
    throw;
  } catch (const std::exception&) {
    throw Error(fmt::format("distributed: creating the process group failed on rank {} of {} (--dist-timeout {:g} s; "
                            "for multi-host Gloo set GLOO_SOCKET_IFNAME to the interface the hosts share): {}",
                            env.rank, env.world_size, options.timeout_s, reason_of(std::current_exception())));
  }
  impl->device = use_nccl ? device : torch::Device(torch::kCPU);
  return DistContext(impl);
}

// ---------------------------------------------------------------------------------------------
// Model helpers
// ---------------------------------------------------------------------------------------------

namespace {

/// Tensors grouped into flat buckets (same dtype and device, at most `cap` bytes unless one
/// tensor alone is larger), in order.
struct Bucket {
  std::vector<size_t> members;
  at::Tensor flat;
};

std::vector<Bucket> make_buckets(const std::vector<at::Tensor>& ts, int64_t cap) {
  std::vector<Bucket> out;
  int64_t bytes = 0;
  for (size_t i = 0; i < ts.size(); ++i) {
    const auto& t = ts[i];
    const int64_t b = int64_t(t.numel()) * int64_t(t.element_size());
    bool fresh = out.empty() || bytes + b > cap;
    if (!fresh) {
      const auto& first = ts[out.back().members.front()];
      fresh = first.scalar_type() != t.scalar_type() || first.device() != t.device();
    }
    if (fresh) {
      out.emplace_back();
      bytes = 0;
    }
    out.back().members.push_back(i);
    bytes += b;
  }
  for (auto& bk : out) {
    std::vector<at::Tensor> flat;
    for (size_t i : bk.members) flat.push_back(ts[i].reshape({-1}));
    bk.flat = flat.size() == 1 ? flat[0].clone() : torch::cat(flat);
  }
  return out;
}

void unflatten(const Bucket& bk, std::vector<at::Tensor>& ts, double scale) {
  int64_t off = 0;
  for (size_t i : bk.members) {
    const int64_t n = ts[i].numel();
    at::Tensor src = bk.flat.narrow(0, off, n).view(ts[i].sizes());
    if (scale != 1.0) src = src * scale;
    ts[i].copy_(src);
    off += n;
  }
}

void check_same_layout(DistContext& ctx, const std::vector<at::Tensor>& ts, const char* what) {
  int64_t numel = 0;
  for (const auto& t : ts) numel += t.numel();
  const auto all = ctx.all_gather_int64({int64_t(ts.size()), numel});
  for (int r = 0; r < ctx.world_size(); ++r) {
    if (all[size_t(r)] != all[size_t(ctx.rank())]) {
      throw Error(fmt::format("distributed: rank {} has {} {} tensors with {} elements, rank {} has {} with {} - the "
                              "ranks built different models",
                              r, all[size_t(r)][0], what, all[size_t(r)][1], ctx.rank(), ts.size(), numel));
    }
  }
}

}  // namespace

void broadcast_parameters(DistContext& ctx, torch::nn::Module& module, int root) {
  if (ctx.world_size() == 1) return;
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> ts;
  for (auto& p : module.parameters(true)) ts.push_back(p);
  for (auto& b : module.buffers(true)) ts.push_back(b);
  check_same_layout(ctx, ts, "parameter/buffer");
  auto buckets = make_buckets(ts, int64_t(25) << 20);
  for (auto& bk : buckets) {
    std::vector<at::Tensor> one{bk.flat};
    ctx.broadcast(one, root);
    unflatten(bk, ts, 1.0);
  }
}

void allreduce_gradients(DistContext& ctx, const std::vector<torch::Tensor>& params, int64_t bucket_bytes) {
  if (ctx.world_size() == 1 || params.empty()) return;
  torch::NoGradGuard no_grad;
  // Agree on which gradients exist.
  at::Tensor defined = torch::empty({int64_t(params.size())}, torch::kInt64);
  {
    auto acc = defined.accessor<int64_t, 1>();
    for (size_t i = 0; i < params.size(); ++i) acc[int64_t(i)] = params[i].grad().defined() ? 1 : 0;
  }
  std::vector<at::Tensor> flag{defined};
  ctx.allreduce(flag, ReduceOp::kMax);
  std::vector<at::Tensor> grads;
  {
    auto acc = defined.accessor<int64_t, 1>();
    for (size_t i = 0; i < params.size(); ++i) {
      if (acc[int64_t(i)] == 0) continue;
      torch::Tensor p = params[i];
      if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
      grads.push_back(p.grad());
    }
  }
  auto buckets = make_buckets(grads, std::max<int64_t>(bucket_bytes, 1));
  for (auto& bk : buckets) {
    std::vector<at::Tensor> one{bk.flat};
    ctx.allreduce_async(one, ReduceOp::kSum);
  }
  ctx.wait_all();
  const double scale = 1.0 / double(ctx.world_size());
  for (auto& bk : buckets) unflatten(bk, grads, scale);
}

// ---------------------------------------------------------------------------------------------
// All-gather with gradient
// ---------------------------------------------------------------------------------------------

namespace {

// Keeps the shared context alive inside the autograd graph (saved_data holds IValues only).
struct ImplHolder : torch::CustomClassHolder {
  explicit ImplHolder(std::shared_ptr<DistContext::Impl> i) : impl(std::move(i)) {}
  std::shared_ptr<DistContext::Impl> impl;
};

class GatherWithGrad : public torch::autograd::Function<GatherWithGrad> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor local,
                               std::shared_ptr<DistContext::Impl> impl) {
    impl->check_usable("all-gather");
    std::vector<int64_t> sizes;
    torch::Tensor all = impl->gather_cat(local.detach(), &sizes);
    int64_t offset = 0;
    for (int r = 0; r < impl->rank; ++r) offset += sizes[size_t(r)];
    ctx->saved_data["offset"] = offset;
    ctx->saved_data["n"] = local.size(0);
    ctx->saved_data["comm"] = at::IValue::make_capsule(c10::make_intrusive<ImplHolder>(impl));
    return all;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto holder = c10::static_intrusive_pointer_cast<ImplHolder>(ctx->saved_data["comm"].toCapsule());
    const int64_t offset = ctx->saved_data["offset"].toInt();
    const int64_t n = ctx->saved_data["n"].toInt();
    std::vector<at::Tensor> g{grads[0].contiguous().clone()};
    holder->impl->allreduce(g, ReduceOp::kSum);
    return {g[0].narrow(0, offset, n), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor gather_with_grad(DistContext& ctx, const torch::Tensor& local) {
  if (ctx.world_size() == 1) return local;
  if (!local.is_floating_point()) {
    throw Error(fmt::format("gather_with_grad: expected a floating tensor, got dtype {}",
                            c10::toString(local.scalar_type())));
  }
  return GatherWithGrad::apply(local, ctx.impl());
}

}  // namespace florence::dist
