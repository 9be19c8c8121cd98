#pragma once
// Shared pieces of the fuzz harnesses (fuzz/fuzz_*.cpp; docs/fuzzing.md).
//
// Each harness is written once with FLORENCE_FUZZ_TARGET(name) and built two ways:
//   - with clang + libFuzzer + ASan/UBSan (scripts/fuzz; CMake -DFLORENCE_FUZZ=ON): the macro
//     defines LLVMFuzzerTestOneInput, one executable fuzz_<name> per harness;
//   - in every build (GCC included) into the single program `fuzz_replay`, which runs the
//     harnesses over their seed corpus and the kept crash inputs (fuzz/corpus/<name>,
//     fuzz/regressions/<name>) as ctest tests: a past crash stays fixed.
// A harness accepts florence::Error (a clear refusal of bad input: the behaviour we want) and
// lets everything else escape: libFuzzer reports an uncaught exception as a crash, and so does
// fuzz_replay.
#include <cstddef>
#include <cstdint>
#include <string>

#include "florence/core/error.h"

namespace florence::fuzz {

using Entry = int (*)(const uint8_t* data, size_t size);

/// Registers a harness under `name` for fuzz_replay (a no-op in libFuzzer builds).
struct Register {
  Register(const char* name, Entry entry);
};

/// A scratch file path unique to this process (under $TMPDIR, else /tmp), created on first use;
/// the parsers that take a path read the fuzz input from it. `tag` tells harnesses apart.
const std::string& scratch_path(const char* tag);

/// Writes `size` bytes to `path` (truncating). Aborts on an I/O failure (not an input problem).
void write_file(const std::string& path, const uint8_t* data, size_t size);

/// Calls fn(); florence::Error is the accepted outcome of bad input and is swallowed.
template <class F>
void refuse_ok(F&& fn) {
  try {
    fn();
  } catch (const florence::Error&) {
  }
}

/// Aborts with `what` when `ok` is false (a broken invariant is a finding, like a crash).
void check(bool ok, const char* what);

}  // namespace florence::fuzz

#ifdef FLORENCE_FUZZ_LIBFUZZER
#define FLORENCE_FUZZ_TARGET(name) extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
#else
#define FLORENCE_FUZZ_TARGET(name)                                                          \
  static int florence_fuzz_##name(const uint8_t* data, size_t size);                       \
  static const ::florence::fuzz::Register florence_fuzz_register_##name(#name, florence_fuzz_##name); \
  static int florence_fuzz_##name(const uint8_t* data, size_t size)
#endif
