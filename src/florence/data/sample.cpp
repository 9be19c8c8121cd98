// split_of: FNV-1a (64-bit) over the key's bytes, bucket = hash mod 100.
#include "florence/data/sample.h"

#include "florence/core/error.h"

namespace florence::data {

namespace {
// FNV-1a 64-bit parameters (Fowler/Noll/Vo, http://www.isthe.com/chongo/tech/comp/fnv/).
constexpr uint64_t kFnvOffsetBasis = 14695981039346656037ull;
constexpr uint64_t kFnvPrime = 1099511628211ull;
}  // namespace

std::string split_of(const std::string& key, int train_pct, int val_pct) {
  if (train_pct < 0 || val_pct < 0 || train_pct + val_pct > 100) {
    throw Error("split_of: percentages must be >= 0 and sum to <= 100, got train " +
                std::to_string(train_pct) + " val " + std::to_string(val_pct));
  }
  uint64_t h = kFnvOffsetBasis;
  for (unsigned char c : key) {
    h ^= c;
    h *= kFnvPrime;
  }
  const int bucket = int(h % 100);
  if (bucket < train_pct) return "train";
  if (bucket < train_pct + val_pct) return "val";
  return "test";
}

}  // namespace florence::data
