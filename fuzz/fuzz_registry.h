#pragma once
// The harnesses fuzz_replay knows (fuzz.h: FLORENCE_FUZZ_TARGET registers them).
#include <map>
#include <string>

#include "fuzz.h"

namespace florence::fuzz {
/// Harness entry points by name (empty in libFuzzer builds).
std::map<std::string, Entry>& registry();
}  // namespace florence::fuzz
