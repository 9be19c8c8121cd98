#pragma once
// The CLIP BPE merges shipped in ../shared (49,408 tokens), for tests that tokenize real text.
#include <string>

#include "support/paths.h"

namespace test {

inline std::string clip_vocab() { return std::string(FLORENCE_SHARED_DIR) + "/data/clip/bpe_simple_vocab_16e6.txt.gz"; }

}  // namespace test
