#pragma once
// Child processes for the e2e tests that signal, kill or run several CLIs at once (header-only;
// support/cli.h's run_cli is the simple blocking form).
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace florence::test {

/// Starts `program args` (args split on spaces: our scratch paths have none) with the extra
/// environment variables `env`, stdout and stderr to `log`. Returns the child's pid.
inline pid_t spawn(const std::string& program, const std::string& args, const std::filesystem::path& log,
                   const std::vector<std::pair<std::string, std::string>>& env = {}) {
  std::vector<std::string> parts;
  std::istringstream is(args);
  for (std::string w; is >> w;) parts.push_back(w);
  const pid_t pid = fork();
  if (pid == 0) {
    for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
    FILE* f = std::freopen(log.c_str(), "w", stdout);
    (void)f;
    dup2(fileno(stdout), STDERR_FILENO);
    std::vector<char*> argv;
    std::string prog = program;
    argv.push_back(prog.data());
    for (auto& p : parts) argv.push_back(p.data());
    argv.push_back(nullptr);
    execv(prog.c_str(), argv.data());
    _exit(127);
  }
  return pid;
}

/// Waits for `pid`: its exit status, 128 + the signal that ended it, or -1.
inline int wait_status(pid_t pid) {
  int status = 0;
  if (waitpid(pid, &status, 0) != pid) return -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

/// spawn + wait_status.
inline int run_program(const std::string& program, const std::string& args, const std::filesystem::path& log) {
  return wait_status(spawn(program, args, log));
}

}  // namespace florence::test
