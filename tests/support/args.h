#pragma once
// Hand-parsed command lines of the benchmarks (header-only).
#include <stdexcept>
#include <string>

namespace florence::test {

/// The value after option argv[i] (advancing i past it). Throws std::runtime_error("missing value
/// after OPTION") when argv[i] is the last argument.
inline std::string arg_value(int& i, int argc, char** argv) {
  if (i + 1 >= argc) throw std::runtime_error(std::string("missing value after ") + argv[i]);
  return argv[++i];
}

}  // namespace florence::test
