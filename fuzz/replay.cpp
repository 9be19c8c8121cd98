// fuzz_replay: runs fuzz harnesses over saved inputs, without libFuzzer (any compiler).
//   fuzz_replay --list
//   fuzz_replay --root FUZZ_DIR NAME    every file of FUZZ_DIR/corpus/NAME and FUZZ_DIR/regressions/NAME
//   fuzz_replay NAME FILE|DIR...         the given inputs
// Exit 0 when every input ran; an escaping exception prints the input's path and exits 1 (a crash
// aborts as it would under libFuzzer). ctest runs one `--root` test per harness (CMakeLists.txt).
#include <algorithm>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "fuzz_registry.h"

namespace fs = std::filesystem;

namespace {

void collect(const fs::path& p, std::vector<fs::path>& out) {
  if (fs::is_directory(p)) {
    for (const auto& e : fs::recursive_directory_iterator(p))
      if (e.is_regular_file()) out.push_back(e.path());
  } else if (fs::is_regular_file(p)) {
    out.push_back(p);
  } else {
    throw std::runtime_error("no such input file or folder: " + p.string());
  }
}

}  // namespace

int main(int argc, char** argv) {
  auto& reg = florence::fuzz::registry();
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "-h" || args[0] == "--help") {
    std::fprintf(stderr, "usage: fuzz_replay --list | --root FUZZ_DIR NAME | NAME FILE|DIR...\n");
    return args.empty() ? 2 : 0;
  }
  if (args[0] == "--list") {
    for (const auto& [name, entry] : reg) std::printf("%s\n", name.c_str());
    return 0;
  }
  std::vector<fs::path> inputs;
  std::string name;
  try {
    if (args[0] == "--root") {
      if (args.size() != 3) throw std::runtime_error("--root takes FUZZ_DIR NAME");
      name = args[2];
      const fs::path corpus = fs::path(args[1]) / "corpus" / name;
      if (!fs::is_directory(corpus)) throw std::runtime_error("no seed corpus " + corpus.string());
      collect(corpus, inputs);
      const fs::path kept = fs::path(args[1]) / "regressions" / name;
      if (fs::is_directory(kept)) collect(kept, inputs);
    } else {
      name = args[0];
      for (size_t i = 1; i < args.size(); ++i) collect(args[i], inputs);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz_replay: %s\n", e.what());
    return 2;
  }
  auto it = reg.find(name);
  if (it == reg.end()) {
    std::fprintf(stderr, "fuzz_replay: unknown harness '%s' (--list shows them)\n", name.c_str());
    return 2;
  }
  std::sort(inputs.begin(), inputs.end());
  for (const auto& path : inputs) {
    std::ifstream in(path, std::ios::binary);
    std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (!in.eof() && in.fail()) {
      std::fprintf(stderr, "fuzz_replay: cannot read %s\n", path.c_str());
      return 2;
    }
    try {
      it->second(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    } catch (const std::exception& e) {
      std::fprintf(stderr, "fuzz_replay %s: %s: uncaught exception: %s\n", name.c_str(), path.c_str(), e.what());
      return 1;
    }
  }
  std::printf("fuzz_replay %s: %zu inputs ran\n", name.c_str(), inputs.size());
  return inputs.empty() ? 2 : 0;
}
