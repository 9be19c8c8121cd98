// Multi-index hashing against brute force (the oracle): exactly the same pairs for every radius
// and chunk count, on random hashes with planted near neighbours and on low-entropy hashes.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "florence/core/error.h"
#include "florence/curate/hamming_index.h"
#include "florence/curate/phash.h"

// Unity builds compile several test files as one translation unit: this file's names stay in
// its own namespace.
namespace test_index {

using namespace florence::curate;

namespace {

/// n hashes: `bases` random 64-bit hashes, each followed by copies with 0..max_flips random bits
/// flipped; plus hashes drawn from only `entropy_bits` random bits (many collisions per chunk).
std::vector<uint64_t> planted(size_t bases, size_t copies, int max_flips, size_t low_entropy, int entropy_bits,
                              uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint64_t> h;
  for (size_t b = 0; b < bases; ++b) {
    const uint64_t base = rng();
    h.push_back(base);
    for (size_t c = 0; c < copies; ++c) {
      uint64_t x = base;
      const int flips = int(rng() % uint64_t(max_flips + 1));
      for (int f = 0; f < flips; ++f) x ^= uint64_t(1) << (rng() % 64);
      h.push_back(x);
    }
  }
  for (size_t i = 0; i < low_entropy; ++i) {
    uint64_t x = rng() & ((uint64_t(1) << entropy_bits) - 1);
    // spread the few random bits over the word so every chunk sees some of them
    uint64_t spread = 0;
    for (int b = 0; b < entropy_bits; ++b)
      if (x >> b & 1) spread |= uint64_t(1) << ((b * 37) % 64);
    h.push_back(spread);
  }
  std::shuffle(h.begin(), h.end(), rng);
  return h;
}

}  // namespace

TEST(HammingIndex, SamePairsAsBruteForce) {
  const auto hashes = planted(150, 4, 14, 300, 18, 42);
  ASSERT_EQ(hashes.size(), 150u * 5 + 300);
  size_t nonempty = 0;
  for (int radius : {0, 1, 3, 6, 8, 10, 12, 16}) {
    const auto oracle = brute_force_pairs(hashes, radius);
    if (!oracle.empty()) ++nonempty;
    for (int chunks : {0, 1, 2, 3, 4, 5, 7, 11, 16}) {
      // Skip the combinations the cost model calls slow (e.g. one 64-bit chunk enumerates
      // C(64, r) probes): they are correct, only slow.
      if (chunks > 0 && HammingIndex::expected_cost(hashes.size(), radius, chunks) > 2e4) continue;
      HammingIndex index(hashes, radius, chunks);
      QueryStats st;
      const auto got = index_pairs(index, radius, 2, &st);
      EXPECT_EQ(got, oracle) << "radius " << radius << ", chunks " << index.chunks();
      EXPECT_EQ(st.queries, hashes.size());
      EXPECT_EQ(st.matches, 2 * oracle.size() + hashes.size());  // each pair from both ends, plus self
    }
  }
  EXPECT_GE(nonempty, 7u);  // the planted copies make the comparison meaningful
}

TEST(HammingIndex, QueryWithSmallerRadiusThanBuilt) {
  const auto hashes = planted(100, 3, 10, 0, 0, 7);
  HammingIndex index(hashes, 12, 4);
  for (int r : {0, 2, 5, 9, 12}) {
    const auto oracle = brute_force_pairs(hashes, r);
    EXPECT_EQ(index_pairs(index, r, 1), oracle) << r;
  }
  std::vector<uint32_t> out;
  EXPECT_THROW(index.query(0, 13, out), florence::Error);
}

TEST(HammingIndex, QueryListsIdsAscendingOnce) {
  // Hand case: distances from q = 0 are 0, 1, 2, 64, 3.
  const std::vector<uint64_t> h = {0, 1, 0x8000000000000001ull, ~uint64_t(0), 0x0000000100010001ull};
  HammingIndex index(h, 3, 2);
  std::vector<uint32_t> out;
  index.query(0, 3, out);
  EXPECT_EQ(out, (std::vector<uint32_t>{0, 1, 2, 4}));
  index.query(0, 1, out);
  EXPECT_EQ(out, (std::vector<uint32_t>{0, 1}));
  index.query(~uint64_t(0), 0, out);
  EXPECT_EQ(out, (std::vector<uint32_t>{3}));
}

TEST(HammingIndex, AutoChunksAndCostModel) {
  // Cost model by hand for n = 65536, r = 7, m = 4: w = 16, s = 1, V = 17, direct tables,
  // build 2^16 / n = 1 per chunk: cost = 4 * (17 * (1 + 65536 / 2^16) + 1) = 140.
  EXPECT_DOUBLE_EQ(HammingIndex::expected_cost(65536, 7, 4), 140.0);
  // n = 1000, r = 0, m = 1: a sorted 64-bit key, binary search: 1 * (1 * (log2(1001) + 0)).
  EXPECT_NEAR(HammingIndex::expected_cost(1000, 0, 1), std::log2(1001.0), 1e-9);
  // Chosen m minimises the model and keeps the expected work far below brute force.
  for (size_t n : {size_t(1000), size_t(100000), size_t(10000000)}) {
    for (int r : {4, 10}) {
      const int m = HammingIndex::auto_chunks(n, r);
      for (int k = 1; k <= 16; ++k) EXPECT_LE(HammingIndex::expected_cost(n, r, m), HammingIndex::expected_cost(n, r, k));
      EXPECT_LT(HammingIndex::expected_cost(n, r, m), double(n) / 5) << n << " " << r;
    }
  }
  EXPECT_THROW(HammingIndex({1, 2}, 65, 0), florence::Error);
  EXPECT_THROW(HammingIndex({1, 2}, 4, 17), florence::Error);
  HammingIndex empty({}, 10, 0);
  std::vector<uint32_t> out{5};
  empty.query(123, 10, out);
  EXPECT_TRUE(out.empty());
}

}  // namespace test_index
