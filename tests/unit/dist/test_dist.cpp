// florence::dist on localhost: environment parsing, the single-process identity, and real
// 2-process Gloo groups (collective values, all-gather with gradient, gradient averaging,
// parameter broadcast, a dead peer, a hung peer, a missing peer at rendezvous).
//
// Multi-process cases re-run this test binary (/proc/self/exe) filtered to DistWorker.Child with
// FLORENCE_DIST_SCENARIO and torchrun's variables set; each child asserts its own values with
// gtest and its exit status carries the verdict. Without FLORENCE_DIST_SCENARIO the child test
// skips itself.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "support/files.h"
#include "florence/core/error.h"
#include "florence/dist/dist.h"
#include "florence/dist/launch.h"
#include "support/paths.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_dist {

using namespace florence;
namespace fs = std::filesystem;

namespace {
using florence::test::read_text;
using florence::test::free_port;

const fs::path kTmp = fs::path(FLORENCE_TEST_TMP) / "dist_unit";

// Sets / unsets environment variables for the duration of a scope.
class EnvScope {
 public:
  EnvScope(std::initializer_list<std::pair<const char*, const char*>> vars) {
    for (const char* name : kAll) {
      const char* v = std::getenv(name);
      saved_.emplace_back(name, v ? std::optional<std::string>(v) : std::nullopt);
      unsetenv(name);
    }
    for (auto& [k, v] : vars) setenv(k, v, 1);
  }
  ~EnvScope() {
    for (auto& [k, v] : saved_) {
      if (v) setenv(k.c_str(), v->c_str(), 1);
      else unsetenv(k.c_str());
    }
  }

 private:
  static constexpr const char* kAll[] = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
                                         "SLURM_PROCID", "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID",
                                         "SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_JOB_ID",
                                         "TORCHELASTIC_USE_AGENT_STORE", "TORCHELASTIC_RESTART_COUNT"};
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};



struct Child {
  pid_t pid = -1;
  fs::path log;
};

// Starts this binary as rank `rank` of `world` running `scenario`.
Child spawn(const std::string& scenario, int rank, int world, int port, double timeout_s) {
  fs::create_directories(kTmp);
  Child c;
  c.log = kTmp / fmt::format("{}_rank{}.log", scenario, rank);
  c.pid = fork();
  if (c.pid == 0) {
    setenv("FLORENCE_DIST_SCENARIO", scenario.c_str(), 1);
    setenv("FLORENCE_DIST_TIMEOUT", fmt::format("{}", timeout_s).c_str(), 1);
    setenv("RANK", std::to_string(rank).c_str(), 1);
    setenv("LOCAL_RANK", std::to_string(rank).c_str(), 1);
    setenv("WORLD_SIZE", std::to_string(world).c_str(), 1);
    setenv("MASTER_ADDR", "127.0.0.1", 1);
    setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
    setenv("OMP_NUM_THREADS", "1", 1);
    FILE* f = std::freopen(c.log.c_str(), "w", stdout);
    (void)f;
    dup2(fileno(stdout), STDERR_FILENO);
    execl("/proc/self/exe", "test_dist", "--gtest_filter=DistWorker.Child", nullptr);
    _exit(127);
  }
  return c;
}

// Waits for a child; returns its exit status (128 + signal when killed).
int wait_child(const Child& c) {
  int status = 0;
  waitpid(c.pid, &status, 0);
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

// Runs `scenario` on `world` ranks and expects every rank to exit 0.
void run_all_ok(const std::string& scenario, int world = 2, double timeout_s = 60) {
  const int port = free_port();
  std::vector<Child> kids;
  for (int r = 0; r < world; ++r) kids.push_back(spawn(scenario, r, world, port, timeout_s));
  for (auto& k : kids) {
    const int rc = wait_child(k);
    EXPECT_EQ(rc, 0) << "rank log " << k.log << ":\n" << read_text(k.log);
  }
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// Environment
// ------------------------------------------------------------------------------------------------

TEST(DistEnv, NoLauncherMeansOneProcess) {
  EnvScope env({});
  const auto e = dist::read_env();
  EXPECT_EQ(e.source, "none");
  EXPECT_EQ(e.rank, 0);
  EXPECT_EQ(e.world_size, 1);
  auto ctx = dist::init_from_env({});
  EXPECT_FALSE(ctx.distributed());
  EXPECT_EQ(ctx.backend(), "none");
}

TEST(DistEnv, TorchrunVariables) {
  EnvScope env({{"RANK", "3"}, {"WORLD_SIZE", "8"}, {"LOCAL_RANK", "1"}, {"MASTER_ADDR", "node7"},
                {"MASTER_PORT", "29555"}, {"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "16"}});
  const auto e = dist::read_env();
  EXPECT_EQ(e.source, "torchrun");  // torchrun's variables win over Slurm's
  EXPECT_EQ(e.rank, 3);
  EXPECT_EQ(e.world_size, 8);
  EXPECT_EQ(e.local_rank, 1);
  EXPECT_EQ(e.master_addr, "node7");
  EXPECT_EQ(e.master_port, 29555);
  EXPECT_FALSE(e.use_agent_store);
}

TEST(DistEnv, TorchrunAgentStore) {
  EnvScope env({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", "29500"},
                {"TORCHELASTIC_USE_AGENT_STORE", "True"}, {"TORCHELASTIC_RESTART_COUNT", "2"}});
  const auto e = dist::read_env();
  EXPECT_TRUE(e.use_agent_store);
  EXPECT_EQ(e.store_prefix, "/worker/attempt_2");
}

TEST(DistEnv, SlurmFallback) {
  EnvScope env({{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "16"}, {"SLURM_STEP_NUM_TASKS", "8"},
                {"SLURM_LOCALID", "1"}, {"SLURM_STEP_NODELIST", "gpu[003-004,010],cpu1"}, {"SLURM_JOB_ID", "123456"}});
  const auto e = dist::read_env();
  EXPECT_EQ(e.source, "slurm");
  EXPECT_EQ(e.rank, 5);
  EXPECT_EQ(e.world_size, 8);  // the step's task count (srun), not the allocation's
  EXPECT_EQ(e.local_rank, 1);
  EXPECT_EQ(e.master_addr, "gpu003");
  EXPECT_EQ(e.master_port, 15000 + 123456 % 20000);
}

TEST(DistEnv, SlurmNodeLists) {
  EXPECT_EQ(dist::first_slurm_host("node[01-04,07],gpu5"), "node01");
  EXPECT_EQ(dist::first_slurm_host("a,b"), "a");
  EXPECT_EQ(dist::first_slurm_host("single"), "single");
  EXPECT_EQ(dist::first_slurm_host("rack[7]-n[2-3]"), "rack7-n[2-3]");  // first bracket only
  EXPECT_EQ(dist::first_slurm_host("n[5,1-3]"), "n5");
  EXPECT_THROW(dist::first_slurm_host(""), Error);
  EXPECT_THROW(dist::first_slurm_host("node[01-04"), Error);
  EXPECT_THROW(dist::first_slurm_host("[1-2]"), Error);
}

TEST(DistEnv, BadValuesAreNamed) {
  auto msg = [](std::initializer_list<std::pair<const char*, const char*>> vars) {
    EnvScope env(vars);
    try {
      dist::read_env();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(msg({{"RANK", "1"}}).find("RANK and WORLD_SIZE"), std::string::npos);
  EXPECT_NE(msg({{"RANK", "x"}, {"WORLD_SIZE", "2"}}).find("RANK='x'"), std::string::npos);
  EXPECT_NE(msg({{"RANK", "2"}, {"WORLD_SIZE", "2"}}).find("outside"), std::string::npos);
  EXPECT_NE(msg({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "1"}}).find("MASTER_ADDR"), std::string::npos);
  EXPECT_NE(msg({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}}).find("MASTER_PORT"), std::string::npos);
  EXPECT_NE(msg({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "70000"}}).find("70000"),
            std::string::npos);
  EXPECT_NE(msg({{"RANK", "0"}, {"WORLD_SIZE", "0"}}).find("world size"), std::string::npos);
  EXPECT_THROW(dist::init_from_env({0.0}), Error);  // timeout must be positive
}

// ------------------------------------------------------------------------------------------------
// Single process: every collective is the identity
// ------------------------------------------------------------------------------------------------

TEST(DistSingle, CollectivesAreIdentity) {
  dist::DistContext ctx;
  std::vector<torch::Tensor> t{torch::tensor({1.0, 2.0})};
  ctx.allreduce(t);
  EXPECT_TRUE(torch::equal(t[0], torch::tensor({1.0, 2.0})));
  auto x = torch::randn({3, 2}, torch::requires_grad());
  EXPECT_TRUE(dist::gather_with_grad(ctx, x).is_same(x));
  EXPECT_TRUE(ctx.all_gather_cat(x).is_same(x));
  EXPECT_EQ(ctx.all_gather_bytes({1, 2, 3}), (std::vector<std::vector<uint8_t>>{{1, 2, 3}}));
  EXPECT_EQ(ctx.all_gather_sizes(7), std::vector<int64_t>{7});
  ctx.barrier();
  torch::nn::Linear lin(2, 2);
  dist::broadcast_parameters(ctx, *lin);
  EXPECT_EQ(ctx.stats().calls, 0);
}

// ------------------------------------------------------------------------------------------------
// Two processes
// ------------------------------------------------------------------------------------------------

TEST(DistTwoProcesses, CollectivesGatherWithGradAndGradientAveraging) { run_all_ok("collectives"); }

TEST(DistTwoProcesses, DeadPeerFailsTheCollectiveWithTheTimeoutMessage) {
  // Rank 1 exits without warning after the first all-reduce; rank 0's next collective must fail
  // with the message (checked inside rank 0) instead of hanging. Timeout 20 s: a dead peer closes
  // its sockets, so the failure is expected long before that (rank 0 checks it is within it).
  const int port = free_port();
  Child r0 = spawn("dead_peer", 0, 2, port, 20);
  Child r1 = spawn("dead_peer", 1, 2, port, 20);
  EXPECT_EQ(wait_child(r1), 3) << read_text(r1.log);
  EXPECT_EQ(wait_child(r0), 0) << read_text(r0.log);
}

TEST(DistTwoProcesses, HungPeerTimesOut) {
  // Rank 1 stops itself (SIGSTOP) after the first all-reduce; rank 0's next collective must fail
  // within its 3 s timeout (checked inside rank 0). Then rank 1 is killed.
  const int port = free_port();
  Child r0 = spawn("hung_peer", 0, 2, port, 3);
  Child r1 = spawn("hung_peer", 1, 2, port, 3);
  const int rc0 = wait_child(r0);
  kill(r1.pid, SIGKILL);
  wait_child(r1);
  EXPECT_EQ(rc0, 0) << read_text(r0.log) << "\nrank 1:\n" << read_text(r1.log);
}

TEST(DistTwoProcesses, MissingPeerFailsTheRendezvous) {
  const int port = free_port();
  Child r0 = spawn("missing_peer", 0, 2, port, 2);
  EXPECT_EQ(wait_child(r0), 0) << read_text(r0.log);
}

// ------------------------------------------------------------------------------------------------
// launch(): torchrun's variables, failure propagation
// ------------------------------------------------------------------------------------------------

TEST(DistLaunch, SetsTorchrunVariablesPerRank) {
  const fs::path dir = kTmp / "launch_env";
  fs::remove_all(dir);
  fs::create_directories(dir);
  dist::LaunchOptions o;
  o.nproc = 3;
  o.master_port = 29123;
  o.executable = "/bin/sh";
  o.args = {"-c", "echo \"$RANK $LOCAL_RANK $WORLD_SIZE $LOCAL_WORLD_SIZE $MASTER_ADDR $MASTER_PORT\" > " +
                      dir.string() + "/rank_$RANK"};
  EXPECT_EQ(dist::launch(o), 0);
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(read_text(dir / fmt::format("rank_{}", r)), fmt::format("{} {} 3 3 127.0.0.1 29123\n", r, r));
  }
  // Second node of two: global ranks 3..5.
  o.nnodes = 2;
  o.node_rank = 1;
  o.master_addr = "10.0.0.1";
  EXPECT_EQ(dist::launch(o), 0);
  EXPECT_EQ(read_text(dir / "rank_4"), "4 1 6 3 10.0.0.1 29123\n");
}

TEST(DistLaunch, OneFailureStopsTheOthersAndIsReturned) {
  // Rank 1 fails at once with status 7; rank 0 would sleep for 60 s but is terminated.
  dist::LaunchOptions o;
  o.nproc = 2;
  o.executable = "/bin/sh";
  o.args = {"-c", "if [ \"$RANK\" = 1 ]; then exit 7; fi; sleep 60"};
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(dist::launch(o), 7);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 30.0);
  // A child that ignores SIGTERM is killed after the grace period; a signal death is 128 + n.
  o.grace_s = 0.5;
  o.args = {"-c", "if [ \"$RANK\" = 1 ]; then kill -9 $$; fi; trap '' TERM; sleep 60"};
  EXPECT_EQ(dist::launch(o), 128 + 9);
}

TEST(DistLaunch, BadOptionsAreNamed) {
  dist::LaunchOptions o;
  o.executable = "/bin/true";
  o.args = {"x"};
  o.nproc = 0;
  EXPECT_THROW(dist::launch(o), Error);
  o.nproc = 1;
  o.nnodes = 2;
  o.node_rank = 0;
  EXPECT_THROW(dist::launch(o), Error);  // several nodes need an explicit port
  o.nnodes = 1;
  o.node_rank = 1;
  EXPECT_THROW(dist::launch(o), Error);
  o.node_rank = 0;
  o.args.clear();
  EXPECT_THROW(dist::launch(o), Error);
}

// ------------------------------------------------------------------------------------------------
// The child side
// ------------------------------------------------------------------------------------------------

namespace {

double env_timeout() {
  const char* t = std::getenv("FLORENCE_DIST_TIMEOUT");
  return t ? std::atof(t) : 60.0;
}

void scenario_collectives() {
  dist::DistContext ctx = dist::init_from_env({env_timeout()});
  ASSERT_EQ(ctx.world_size(), 2);
  ASSERT_EQ(ctx.backend(), "gloo");
  const int r = ctx.rank();
  const double rr = double(r);

  // all-reduce: sum, max, min of rank-dependent values.
  std::vector<torch::Tensor> t{torch::tensor({1.0 + rr, 10.0 * rr}), torch::tensor({int64_t(r + 5)})};
  ctx.allreduce(t, dist::ReduceOp::kSum);
  EXPECT_TRUE(torch::equal(t[0], torch::tensor({3.0, 10.0})));
  EXPECT_EQ(t[1].item<int64_t>(), 11);
  std::vector<torch::Tensor> m{torch::tensor({rr, -rr})};
  ctx.allreduce(m, dist::ReduceOp::kMax);
  EXPECT_TRUE(torch::equal(m[0], torch::tensor({1.0, 0.0})));
  std::vector<torch::Tensor> mn{torch::tensor({rr + 2.0})};
  ctx.allreduce(mn, dist::ReduceOp::kMin);
  EXPECT_EQ(mn[0].item<double>(), 2.0);

  // all-gather with unequal leading sizes (rank 0: 2 rows, rank 1: 3 rows).
  torch::Tensor rows = torch::arange(3 * (2 + r), torch::kFloat32).reshape({2 + r, 3}) + 100.0f * float(r);
  torch::Tensor all = ctx.all_gather_cat(rows);
  ASSERT_EQ(all.sizes(), (std::vector<int64_t>{5, 3}));
  EXPECT_TRUE(torch::equal(all.narrow(0, 0, 2), torch::arange(6, torch::kFloat32).reshape({2, 3})));
  EXPECT_TRUE(torch::equal(all.narrow(0, 2, 3), torch::arange(9, torch::kFloat32).reshape({3, 3}) + 100.0f));
  EXPECT_EQ(ctx.all_gather_sizes(10 + r), (std::vector<int64_t>{10, 11}));
  // Labels (int64) as the trainer would gather them.
  EXPECT_TRUE(torch::equal(ctx.all_gather_cat(torch::tensor({int64_t(-7 - r)})), torch::tensor({int64_t(-7), int64_t(-8)})));
  // Byte buffers and int64 lists of any sizes (the curation hash exchange), an empty one included.
  std::vector<uint8_t> bytes(size_t(r * 3), uint8_t(200 + r));
  const auto gb = ctx.all_gather_bytes(bytes);
  ASSERT_EQ(gb.size(), 2u);
  EXPECT_TRUE(gb[0].empty());
  EXPECT_EQ(gb[1], std::vector<uint8_t>(3, 201));
  const auto gi = ctx.all_gather_int64(r == 0 ? std::vector<int64_t>{1, -2} : std::vector<int64_t>{INT64_MIN});
  EXPECT_EQ(gi[0], (std::vector<int64_t>{1, -2}));
  EXPECT_EQ(gi[1], (std::vector<int64_t>{INT64_MIN}));
  EXPECT_EQ(ctx.all_gather_bytes({}), (std::vector<std::vector<uint8_t>>(2)));  // empty everywhere
  // Mismatched trailing dims are a named error, not garbage.
  EXPECT_THROW(ctx.all_gather_cat(torch::zeros({1, 2 + r})), Error);

  // gather_with_grad: rank r's loss is (r + 1) * sum(G^2) over the gathered G, so
  // dL_r/dG = 2 (r + 1) G and the summed gradient reaching each rank's rows is
  // 2 * (1 + 2) * local = 6 * local.
  torch::Tensor local = (torch::arange(4, torch::kFloat64).reshape({2, 2}) + 10.0 * rr).requires_grad_(true);
  torch::Tensor G = dist::gather_with_grad(ctx, local);
  ASSERT_EQ(G.sizes(), (std::vector<int64_t>{4, 2}));
  EXPECT_TRUE(torch::equal(G.detach().narrow(0, 2 * r, 2), local.detach()));
  ((rr + 1.0) * G.pow(2).sum()).backward();
  EXPECT_TRUE(torch::allclose(local.grad(), 6.0 * local.detach(), 0, 0)) << local.grad();
  // Unequal sizes with grad: rank r owns 1 + r rows; loss_r = sum(c_r * G) with c_r = r + 1 on
  // every row, so each row's gradient is 1 + 2 = 3.
  torch::Tensor uneq = torch::ones({1 + r, 3}, torch::kFloat32).requires_grad_(true);
  torch::Tensor G2 = dist::gather_with_grad(ctx, uneq);
  ASSERT_EQ(G2.size(0), 3);
  ((rr + 1.0) * G2.sum()).backward();
  EXPECT_TRUE(torch::equal(uneq.grad(), torch::full({1 + r, 3}, 3.0f)));

  // Gradient averaging, several buckets (cap 40 bytes), one gradient undefined on rank 0 only and
  // one undefined everywhere.
  std::vector<torch::Tensor> params;
  for (int i = 0; i < 4; ++i) params.push_back(torch::zeros({5}, torch::requires_grad()));
  params[0].mutable_grad() = torch::full({5}, 2.0f + 4.0f * float(r));   // mean 4
  params[1].mutable_grad() = torch::arange(5, torch::kFloat32) * float(r + 1);  // mean 1.5 * arange
  if (r == 1) params[2].mutable_grad() = torch::full({5}, 8.0f);         // mean 4 (rank 0 counts 0)
  dist::allreduce_gradients(ctx, params, 40);
  EXPECT_TRUE(torch::equal(params[0].grad(), torch::full({5}, 4.0f)));
  EXPECT_TRUE(torch::equal(params[1].grad(), torch::arange(5, torch::kFloat32) * 1.5f));
  ASSERT_TRUE(params[2].grad().defined());
  EXPECT_TRUE(torch::equal(params[2].grad(), torch::full({5}, 4.0f)));
  EXPECT_FALSE(params[3].grad().defined());

  // Parameters broadcast from rank 0: different seeds, then identical.
  torch::manual_seed(uint64_t(1000 + r));
  torch::nn::Sequential net(torch::nn::Linear(4, 3), torch::nn::BatchNorm1d(3));
  net->named_buffers()["1.running_mean"].fill_(float(r + 1));
  std::vector<torch::Tensor> before;
  for (auto& p : net->parameters()) before.push_back(p.detach().clone());
  dist::broadcast_parameters(ctx, *net);
  std::vector<torch::Tensor> flat;
  for (auto& p : net->parameters()) flat.push_back(p.detach().reshape({-1}));
  torch::Tensor mine = torch::cat(flat);
  torch::Tensor both = ctx.all_gather_cat(mine.unsqueeze(0));
  EXPECT_TRUE(torch::equal(both[0], both[1]));
  if (r == 0) {
    EXPECT_TRUE(torch::equal(net->parameters()[0], before[0]));
  } else {
    EXPECT_FALSE(torch::equal(net->parameters()[0], before[0]));
  }
  EXPECT_EQ(net->named_buffers()["1.running_mean"][0].item<float>(), 1.0f);

  ctx.barrier();
  const auto st = ctx.stats();
  EXPECT_GT(st.calls, 10);
  EXPECT_GT(st.bytes, 0);
}

// Rank 1 leaves after one all-reduce; rank 0's second one fails with the message.
void scenario_dead_peer() {
  const double timeout = env_timeout();
  dist::DistContext ctx = dist::init_from_env({timeout});
  std::vector<torch::Tensor> t{torch::ones({4})};
  ctx.allreduce(t);
  if (ctx.rank() == 1) {
    std::fflush(nullptr);
    _exit(3);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const auto t0 = std::chrono::steady_clock::now();
  std::string msg;
  try {
    std::vector<torch::Tensor> big{torch::ones({1 << 16})};
    ctx.allreduce(big);
  } catch (const Error& e) {
    msg = e.what();
  }
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "rank 0 error after " << waited << " s: " << msg << "\n";
  EXPECT_NE(msg.find("distributed: all-reduce failed on rank 0 of 2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--dist-timeout 20 s"), std::string::npos) << msg;
  EXPECT_LE(waited, timeout);
  // Later collectives refuse at once instead of waiting again.
  EXPECT_THROW(ctx.barrier(), Error);
}

// Rank 1 stops itself; rank 0 times out.
void scenario_hung_peer() {
  const double timeout = env_timeout();
  dist::DistContext ctx = dist::init_from_env({timeout});
  std::vector<torch::Tensor> t{torch::ones({4})};
  ctx.allreduce(t);
  if (ctx.rank() == 1) {
    raise(SIGSTOP);
    _exit(4);
  }
  const auto t0 = std::chrono::steady_clock::now();
  std::string msg;
  try {
    std::vector<torch::Tensor> more{torch::ones({4})};
    ctx.allreduce(more);
  } catch (const Error& e) {
    msg = e.what();
  }
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "rank 0 error after " << waited << " s: " << msg << "\n";
  EXPECT_NE(msg.find("distributed: all-reduce failed on rank 0 of 2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--dist-timeout 3 s"), std::string::npos) << msg;
  // Not before the timeout (the peer is alive, just silent), and not much after it.
  EXPECT_GE(waited, 0.9 * timeout);
  EXPECT_LE(waited, timeout + 5.0);
}

void scenario_missing_peer() {
  std::string msg;
  try {
    dist::init_from_env({env_timeout()});
  } catch (const Error& e) {
    msg = e.what();
  }
  std::cout << msg << "\n";
  EXPECT_NE(msg.find("rendezvous at 127.0.0.1:"), std::string::npos) << msg;
  EXPECT_NE(msg.find("rank 0 of 2: 1 of 2 processes joined"), std::string::npos) << msg;
}

}  // namespace

TEST(DistWorker, Child) {
  const char* s = std::getenv("FLORENCE_DIST_SCENARIO");
  if (!s) GTEST_SKIP() << "the child side of the multi-process tests (run by them, not alone)";
  const std::string scenario(s);
  if (scenario == "collectives") scenario_collectives();
  else if (scenario == "dead_peer") scenario_dead_peer();
  else if (scenario == "hung_peer") scenario_hung_peer();
  else if (scenario == "missing_peer") scenario_missing_peer();
  else FAIL() << "unknown scenario " << scenario;
}

}  // namespace test_dist
