#pragma once
// Paths the tests and benchmarks need, read at run time so that no compiled file names the
// source folder (a second clone then builds from ccache; CMakeLists.txt):
//   FLORENCE_SOURCE_DIR  the source tree        FLORENCE_SHARED_DIR  ../shared (CLIP vocab, fixtures)
//   FLORENCE_PYTHON      Python with torch       FLORENCE_CLI         the built `florence` binary
//   FLORENCE_TEST_TMP    scratch folder
// Each comes from the environment (ctest sets none; a user may override) or else from
// florence_test_paths.txt (KEY=VALUE lines, written by CMake) beside the running executable.
// A value found nowhere aborts with a message naming it: a test must not run against a guess.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

namespace florence::test {

inline const std::map<std::string, std::string>& build_paths() {
  static const std::map<std::string, std::string> paths = [] {
    std::map<std::string, std::string> m;
    std::error_code ec;
    const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (ec) return m;
    std::ifstream f(exe.parent_path() / "florence_test_paths.txt");
    for (std::string line; std::getline(f, line);) {
      const auto eq = line.find('=');
      if (eq != std::string::npos) m[line.substr(0, eq)] = line.substr(eq + 1);
    }
    return m;
  }();
  return paths;
}

/// The value of `name` (environment first, then the build's florence_test_paths.txt).
inline const char* build_path(const char* name) {
  if (const char* v = std::getenv(name); v && *v) return v;
  const auto& m = build_paths();
  auto it = m.find(name);
  if (it == m.end()) {
    std::fprintf(stderr, "test paths: %s is not set and not in florence_test_paths.txt beside the executable\n", name);
    std::abort();
  }
  return it->second.c_str();
}

}  // namespace florence::test

#define FLORENCE_SOURCE_DIR (::florence::test::build_path("FLORENCE_SOURCE_DIR"))
#define FLORENCE_SHARED_DIR (::florence::test::build_path("FLORENCE_SHARED_DIR"))
#define FLORENCE_PYTHON (::florence::test::build_path("FLORENCE_PYTHON"))
#define FLORENCE_CLI (::florence::test::build_path("FLORENCE_CLI"))
#define FLORENCE_TEST_TMP (::florence::test::build_path("FLORENCE_TEST_TMP"))
