#pragma once
// Radius search over 64-bit hashes in Hamming space by multi-index hashing (MIH; Norouzi, Punjani,
// Fleet, "Fast Search in Hamming Space with Multi-Index Hashing", CVPR 2012).
//
// The 64 bits are cut into m disjoint chunks (widths 64/m, the first 64 mod m chunks one bit
// wider; chunk k holds the bits above those of chunk k-1, chunk 0 the least significant ones).
// Pigeonhole: if hamming(a, b) <= r then some chunk differs in at most s = floor(r / m) bits, so
// every match is found by looking up, in each chunk's table, all chunk values within distance s of
// the query's chunk ("probes"), and checking the full distance of each id found ("candidates").
// A candidate found through chunk k is checked only if no earlier chunk k' < k is also within s,
// so each id is reported once without a set.
//
// Cost (w = 64/m bits per chunk, V(w, s) = sum_{i<=s} C(w, i) probes per chunk, n indexed hashes):
//   memory  8 bytes (the hash) + 4 m bytes (ids sorted by chunk value) per hash, plus per chunk a
//           bucket-offset table of 2^w + 1 uint32 when w <= 24 and 2^w <= 16 max(n, 4096) (else
//           8 bytes of sorted chunk value per hash and a binary search per probe);
//   build   O(m (n + 2^w)) (counting sort per chunk);
//   query   m V(w, s) probes + about m V(w, s) n / 2^w candidates when hashes are uniform.
// Real perceptual hashes are not uniform (images cluster), so the candidate count is larger in
// practice; QueryStats counts it and the curation report prints it. With m chosen so that
// 2^w ~ n (auto_chunks), the all-pairs search costs O(n m V(w, s)) instead of the O(n^2) of
// brute force; e.g. n = 10^6, r = 10: m = 3, s = 3, ~7,000 expected candidate checks per query
// instead of 10^6.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

#include "florence/core/parallel.h"

namespace florence::curate {

/// Work counters of queries (summed).
struct QueryStats {
  uint64_t queries = 0;
  uint64_t probes = 0;      ///< bucket lookups
  uint64_t candidates = 0;  ///< ids whose full distance was computed
  uint64_t matches = 0;     ///< ids within the radius
  QueryStats& operator+=(const QueryStats& o);
};

class HammingIndex {
 public:
  /// Indexes `hashes` (id = position). Queries may use any radius <= max_radius. chunks: m in
  /// [1, 16], or 0 for auto_chunks(n, max_radius). Throws florence::Error when there are 2^32 or
  /// more hashes, max_radius is outside [0, 64], or chunks is outside [0, 16].
  HammingIndex(std::vector<uint64_t> hashes, int max_radius, int chunks = 0);

  /// Appends to `out` (cleared first) every id j with hamming(h, hash[j]) <= radius, ascending.
  /// Throws florence::Error when radius > max_radius(). Thread-safe (const).
  void query(uint64_t h, int radius, std::vector<uint32_t>& out, QueryStats* stats = nullptr) const;

  size_t size() const { return hashes_.size(); }
  int chunks() const { return int(chunks_.size()); }
  int max_radius() const { return max_radius_; }
  /// floor(max_radius / m): the per-chunk probe radius.
  int chunk_radius() const { return chunk_radius_; }
  uint64_t hash(size_t id) const { return hashes_[id]; }
  /// Bytes held by the index (hashes, ids, tables, probe masks).
  size_t memory_bytes() const;

  /// The m in [1, 16] minimising expected_cost(n, radius, m) (ties: the smaller m).
  static int auto_chunks(size_t n, int radius);
  /// Expected work per query of an all-pairs search under uniformly random hashes, in
  /// probe/candidate units: m (V(w, s) (p + n / 2^w) + b), w = 64 / m, s = floor(radius / m),
  /// p = 1 and b = 2^w / n (the table build spread over n queries) with a direct bucket table,
  /// p = log2(n + 1) and b = 0 with a binary search. Infinity when V(w, s) exceeds 10^7.
  static double expected_cost(size_t n, int radius, int chunks);

 private:
  struct Chunk {
    int shift = 0, width = 0;
    uint64_t mask = 0;
    std::vector<uint32_t> ids;       // ids sorted by chunk value (stable: ascending ids per value)
    std::vector<uint32_t> offsets;   // direct table: bucket v = ids[offsets[v] .. offsets[v+1])
    std::vector<uint64_t> keys;      // sorted chunk values parallel to ids (width > 24 only)
    std::vector<uint64_t> probes;    // XOR masks of popcount <= chunk_radius, by popcount
    uint64_t value(uint64_t h) const { return (h >> shift) & mask; }
  };
  std::vector<uint64_t> hashes_;
  std::vector<Chunk> chunks_;
  int max_radius_ = 0, chunk_radius_ = 0;
};

/// Every pair (i, j), i < j, with hamming(hash[i], hash[j]) <= radius, sorted, by exhaustive
/// comparison (O(n^2); the oracle for tests and small inputs).
std::vector<std::pair<uint32_t, uint32_t>> brute_force_pairs(const std::vector<uint64_t>& hashes, int radius);

/// The same pairs through a HammingIndex, queried from `threads` threads (0 = all cores); sorted.
std::vector<std::pair<uint32_t, uint32_t>> index_pairs(const HammingIndex& index, int radius, int threads = 0,
                                                       QueryStats* stats = nullptr);

// The thread helpers curate uses everywhere (core/parallel.h).
using core::parallel_ranges;
using core::resolve_threads;

}  // namespace florence::curate
