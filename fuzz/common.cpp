// Shared pieces of the fuzz harnesses (fuzz.h): the replay registry, scratch files, quiet logs.
#include "fuzz.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <map>

#include "fuzz_registry.h"

namespace florence::fuzz {

std::map<std::string, Entry>& registry() {
  static std::map<std::string, Entry> entries;
  return entries;
}

Register::Register(const char* name, Entry entry) { registry()[name] = entry; }

namespace {
// Parsers log warnings for bad input (by design); at millions of inputs that is only noise and
// time. One intra-op thread: libFuzzer runs one input at a time.
const bool g_quiet = [] {
  spdlog::set_level(spdlog::level::off);
  torch::set_num_threads(1);
  return true;
}();
}  // namespace

const std::string& scratch_path(const char* tag) {
  static thread_local std::map<std::string, std::string> paths;
  auto it = paths.find(tag);
  if (it != paths.end()) return it->second;
  const char* dir = std::getenv("TMPDIR");
  std::string path = std::string(dir && *dir ? dir : "/tmp") + "/florence-fuzz-" + std::to_string(::getpid()) +
                     "-" + tag;
  return paths.emplace(tag, path).first->second;
}

void write_file(const std::string& path, const uint8_t* data, size_t size) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || (size > 0 && std::fwrite(data, 1, size, f) != size) || std::fclose(f) != 0) {
    std::fprintf(stderr, "fuzz: cannot write scratch file %s\n", path.c_str());
    std::abort();
  }
}

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz: invariant broken: %s\n", what);
    std::abort();
  }
}

}  // namespace florence::fuzz
