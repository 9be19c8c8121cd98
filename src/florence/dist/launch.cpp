// Local process launcher; behaviour documented in launch.h.
#include "florence/core/parallel.h"
#include "florence/dist/launch.h"

#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "florence/core/error.h"

namespace florence::dist {

namespace {

std::atomic<int> g_signal{0};

extern "C" void florence_launch_on_signal(int sig) { g_signal.store(sig); }

struct ChildProc {
  pid_t pid = -1;
  int rank = 0;
  bool done = false;
  int status = 0;  // exit code, or 128 + signal
};

int decode_status(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

std::string self_executable() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) throw Error("launch: cannot resolve /proc/self/exe");
  return std::string(buf, size_t(n));
}

}  // namespace

int find_free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw Error(fmt::format("launch: socket(): {}", std::strerror(errno)));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof(a);
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    const std::string err = std::strerror(errno);
    close(fd);
    throw Error("launch: cannot find a free port: " + err);
  }
  const int port = ntohs(a.sin_port);
  close(fd);
  return port;
}

int launch(const LaunchOptions& o) {
  if (o.nproc < 1) throw Error(fmt::format("--nproc must be >= 1, got {}", o.nproc));
  if (o.nnodes < 1) throw Error(fmt::format("--nnodes must be >= 1, got {}", o.nnodes));
  if (o.node_rank < 0 || o.node_rank >= o.nnodes) {
    throw Error(fmt::format("--node-rank {} is outside [0, --nnodes {})", o.node_rank, o.nnodes));
  }
  if (o.args.empty()) throw Error("launch: nothing to run (usage: florence launch --nproc N -- pretrain ...)");
  if (o.master_port < 0 || o.master_port > 65535) {
    throw Error(fmt::format("--master-port {} is outside 0..65535", o.master_port));
  }
  if (o.nnodes > 1 && o.master_port == 0) {
    throw Error("--nnodes > 1 needs an explicit --master-port (the same on every node)");
  }
  const int port = o.master_port > 0 ? o.master_port : find_free_port();
  const int world = o.nnodes * o.nproc;
  const std::string exe = o.executable.empty() ? self_executable() : o.executable;
  std::string omp;
  if (!std::getenv("OMP_NUM_THREADS")) {
    omp = std::to_string(std::max(1, core::resolve_threads(0) / o.nproc));
  }
  spdlog::info("launch: {} process(es) on this node (node {}/{}), world size {}, master {}:{}{}", o.nproc,
               o.node_rank, o.nnodes, world, o.master_addr, port,
               omp.empty() ? std::string() : fmt::format(", OMP_NUM_THREADS={} each", omp));

  // Signals: recorded here, forwarded from the wait loop.
  g_signal.store(0);
  struct sigaction sa {}, old_int {}, old_term {};
  sa.sa_handler = florence_launch_on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: waitpid returns EINTR
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  const pid_t parent = getpid();

  std::vector<ChildProc> kids;
  for (int local = 0; local < o.nproc; ++local) {
    const int rank = o.node_rank * o.nproc + local;
    std::vector<std::string> argv_s{exe};
    argv_s.insert(argv_s.end(), o.args.begin(), o.args.end());
    const pid_t pid = fork();
    if (pid < 0) {
      for (auto& k : kids) kill(-k.pid, SIGKILL);
      throw Error(fmt::format("launch: fork failed: {}", std::strerror(errno)));
    }
    if (pid == 0) {
      setpgid(0, 0);
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (getppid() != parent) _exit(125);  // the launcher is already gone
      signal(SIGINT, SIG_DFL);
      signal(SIGTERM, SIG_DFL);
      setenv("RANK", std::to_string(rank).c_str(), 1);
      setenv("LOCAL_RANK", std::to_string(local).c_str(), 1);
      setenv("WORLD_SIZE", std::to_string(world).c_str(), 1);
      setenv("LOCAL_WORLD_SIZE", std::to_string(o.nproc).c_str(), 1);
      setenv("GROUP_RANK", std::to_string(o.node_rank).c_str(), 1);
      setenv("MASTER_ADDR", o.master_addr.c_str(), 1);
      setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      unsetenv("TORCHELASTIC_USE_AGENT_STORE");
      if (!omp.empty()) setenv("OMP_NUM_THREADS", omp.c_str(), 1);
      std::vector<char*> argv;
      for (auto& s : argv_s) argv.push_back(s.data());
      argv.push_back(nullptr);
      execv(exe.c_str(), argv.data());
      std::fprintf(stderr, "launch: cannot execute %s: %s\n", exe.c_str(), std::strerror(errno));
      _exit(127);
    }
    setpgid(pid, pid);  // also here, so the group exists before any signal is sent to it
    kids.push_back({pid, rank});
  }

  int result = 0;
  bool failed = false;
  std::chrono::steady_clock::time_point kill_at{};
  auto remaining = [&] {
    int n = 0;
    for (auto& k : kids) n += k.done ? 0 : 1;
    return n;
  };
  // Each child leads its own process group: signals go to the group, so helpers a child started
  // (decoders, renderers) stop with it.
  auto signal_all = [&](int sig) {
    for (auto& k : kids) {
      if (!k.done) kill(-k.pid, sig);
    }
  };
  while (remaining() > 0) {
    if (const int sig = g_signal.exchange(0)) {
      spdlog::warn("launch: forwarding signal {} to {} process(es)", sig, remaining());
      signal_all(sig);
    }
    int status = 0;
    // Polled (50 ms), so a signal that arrives between the check above and the wait is still
    // forwarded at once.
    const pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid < 0) {
      if (errno == EINTR) continue;
      if (errno == ECHILD) break;
      throw Error(fmt::format("launch: waitpid failed: {}", std::strerror(errno)));
    }
    if (pid == 0) {
      if (failed && std::chrono::steady_clock::now() >= kill_at) {
        spdlog::warn("launch: {} process(es) still running {:g} s after the failure; killing them", remaining(),
                     o.grace_s);
        signal_all(SIGKILL);
        kill_at = std::chrono::steady_clock::time_point::max();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    for (auto& k : kids) {
      if (k.pid != pid) continue;
      k.done = true;
      k.status = decode_status(status);
      if (k.status != 0 && !failed) {
        failed = true;
        result = k.status;
        spdlog::error("launch: rank {} (pid {}) exited with status {}; stopping the other {} process(es)", k.rank,
                      k.pid, k.status, remaining());
        signal_all(SIGTERM);
        kill_at = std::chrono::steady_clock::now() +
                  std::chrono::milliseconds(int64_t(std::max(0.0, o.grace_s) * 1000.0));
      }
    }
  }
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  return result;
}

}  // namespace florence::dist
