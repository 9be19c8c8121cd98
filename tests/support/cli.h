#pragma once
// Running the built `florence` binary from the e2e tests (header-only).
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>

#include "support/files.h"
#include "support/paths.h"

namespace florence::test {

/// FLORENCE_TEST_TMP/NAME, emptied and created anew (the e2e tests' scratch folders).
inline std::filesystem::path fresh_scratch(const std::string& name) {
  const std::filesystem::path p = std::filesystem::path(FLORENCE_TEST_TMP) / name;
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p;
}

/// Runs `florence ARGS` (the built CLI) with stdout and stderr captured under `dir`; returns the exit status,
/// stdout in `out`, stderr in `err`. Without `err`, a failing command's stderr is printed to help the reader.
inline int run_cli(const std::filesystem::path& dir, const std::string& args, std::string& out,
                   std::string* err = nullptr) {
  const std::filesystem::path o = dir / "stdout.txt", e = dir / "stderr.txt";
  const std::string cmd = std::string(FLORENCE_CLI) + " " + args + " > " + o.string() + " 2> " + e.string();
  const int rc = std::system(cmd.c_str());
  out = read_text(o);
  if (err) *err = read_text(e);
  if (rc != 0 && !err) std::cerr << "command failed: " << cmd << "\n" << read_text(e) << "\n";
  return rc;
}

}  // namespace florence::test
