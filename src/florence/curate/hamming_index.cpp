// Multi-index hashing over 64-bit hashes; see hamming_index.h for the method and its cost.
#include "florence/curate/hamming_index.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <mutex>
#include <string>

#include "florence/core/error.h"
#include "florence/curate/phash.h"

namespace florence::curate {

namespace {

/// Largest chunk width that gets a direct bucket-offset table (2^24 + 1 uint32 = 64 MiB).
constexpr int kMaxDirectWidth = 24;
/// Probe lists longer than this make an index useless (and its construction slow).
constexpr double kMaxProbes = 1e7;

/// Whether a chunk of `w` bits over `n` hashes gets a direct bucket-offset table (O(1) lookups,
/// 2^w + 1 offsets) rather than sorted chunk values (binary search): only when the table is not
/// much larger than the data it indexes.
bool direct_table(int w, size_t n) {
  return w <= kMaxDirectWidth && (size_t(1) << w) <= 16 * std::max<size_t>(n, 4096);
}

double ball_volume(int w, int s) {
  double v = 0, c = 1;  // c = C(w, i)
  for (int i = 0; i <= s && i <= w; ++i) {
    v += c;
    c = c * double(w - i) / double(i + 1);
  }
  return v;
}

void enumerate_masks(int width, int max_pop, std::vector<uint64_t>& out) {
  out.clear();
  out.push_back(0);
  // Masks by popcount: extend each mask of popcount p by one bit above its highest set bit.
  size_t begin = 0;
  for (int p = 1; p <= max_pop && p <= width; ++p) {
    const size_t end = out.size();
    for (size_t i = begin; i < end; ++i) {
      const uint64_t m = out[i];
      const int lowest_free = m == 0 ? 0 : 64 - __builtin_clzll(m);
      for (int b = lowest_free; b < width; ++b) out.push_back(m | (uint64_t(1) << b));
    }
    begin = end;
  }
}

}  // namespace

QueryStats& QueryStats::operator+=(const QueryStats& o) {
  queries += o.queries;
  probes += o.probes;
  candidates += o.candidates;
  matches += o.matches;
  return *this;
}

double HammingIndex::expected_cost(size_t n, int radius, int chunks) {
  if (chunks < 1) return std::numeric_limits<double>::infinity();
  const double w = 64.0 / chunks;
  const int s = radius / chunks;
  const double v = ball_volume(int(std::floor(w)), s);
  if (v > kMaxProbes) return std::numeric_limits<double>::infinity();
  const bool direct = direct_table(int(std::ceil(w)), n);
  const double probe = direct ? 1.0 : std::log2(double(n) + 1.0);
  // Building a direct table touches its 2^w offsets once; spread over the n queries of an
  // all-pairs search that is 2^w / n per query and chunk.
  const double build = direct ? std::pow(2.0, w) / double(std::max<size_t>(n, 1)) : 0.0;
  return chunks * (v * (probe + double(n) / std::pow(2.0, w)) + build);
}

int HammingIndex::auto_chunks(size_t n, int radius) {
  int best = 1;
  double best_cost = std::numeric_limits<double>::infinity();
  for (int m = 1; m <= 16; ++m) {
    const double c = expected_cost(n, radius, m);
    if (c < best_cost) {
      best_cost = c;
      best = m;
    }
  }
  return best;
}

HammingIndex::HammingIndex(std::vector<uint64_t> hashes, int max_radius, int chunks)
    : hashes_(std::move(hashes)), max_radius_(max_radius) {
  if (hashes_.size() >= (size_t(1) << 32)) throw Error("HammingIndex: at most 2^32 - 1 hashes per index");
  if (max_radius < 0 || max_radius > 64) throw Error("HammingIndex: radius must be in [0, 64], got " + std::to_string(max_radius));
  if (chunks < 0 || chunks > 16) throw Error("HammingIndex: chunks must be in [0, 16] (0 = auto), got " + std::to_string(chunks));
  const int m = chunks == 0 ? auto_chunks(hashes_.size(), max_radius) : chunks;
  chunk_radius_ = max_radius / m;
  const int base = 64 / m, extra = 64 % m;
  const size_t n = hashes_.size();
  int shift = 0;
  chunks_.resize(size_t(m));
  for (int k = 0; k < m; ++k) {
    Chunk& c = chunks_[size_t(k)];
    c.width = base + (k < extra ? 1 : 0);
    c.shift = shift;
    shift += c.width;
    c.mask = c.width == 64 ? ~uint64_t(0) : ((uint64_t(1) << c.width) - 1);
    if (ball_volume(c.width, chunk_radius_) > kMaxProbes)
      throw Error("HammingIndex: " + std::to_string(m) + " chunk(s) of " + std::to_string(c.width) +
                  " bits with radius " + std::to_string(max_radius) + " need too many probes; use more chunks");
    enumerate_masks(c.width, chunk_radius_, c.probes);
    c.ids.resize(n);
    if (direct_table(c.width, n)) {
      c.offsets.assign((size_t(1) << c.width) + 1, 0);
      for (size_t i = 0; i < n; ++i) ++c.offsets[c.value(hashes_[i]) + 1];
      for (size_t v = 1; v < c.offsets.size(); ++v) c.offsets[v] += c.offsets[v - 1];
      std::vector<uint32_t> fill(c.offsets.begin(), c.offsets.end() - 1);
      for (size_t i = 0; i < n; ++i) c.ids[fill[c.value(hashes_[i])]++] = uint32_t(i);
    } else {
      std::vector<std::pair<uint64_t, uint32_t>> kv(n);
      for (size_t i = 0; i < n; ++i) kv[i] = {c.value(hashes_[i]), uint32_t(i)};
      std::sort(kv.begin(), kv.end());
      c.keys.resize(n);
      for (size_t i = 0; i < n; ++i) {
        c.keys[i] = kv[i].first;
        c.ids[i] = kv[i].second;
      }
    }
  }
}

size_t HammingIndex::memory_bytes() const {
  size_t b = hashes_.capacity() * sizeof(uint64_t);
  for (const Chunk& c : chunks_)
    b += c.ids.capacity() * sizeof(uint32_t) + c.offsets.capacity() * sizeof(uint32_t) +
         c.keys.capacity() * sizeof(uint64_t) + c.probes.capacity() * sizeof(uint64_t);
  return b;
}

void HammingIndex::query(uint64_t h, int radius, std::vector<uint32_t>& out, QueryStats* stats) const {
  if (radius < 0 || radius > max_radius_)
    throw Error("HammingIndex::query: radius " + std::to_string(radius) + " outside [0, " + std::to_string(max_radius_) + "]");
  out.clear();
  const int m = int(chunks_.size());
  const int s = radius / m;
  QueryStats local;
  local.queries = 1;
  for (int k = 0; k < m; ++k) {
    const Chunk& c = chunks_[size_t(k)];
    const uint64_t q = c.value(h);
    for (uint64_t mask : c.probes) {
      if (__builtin_popcountll(mask) > s) break;  // probes are ordered by popcount
      const uint64_t v = q ^ mask;
      ++local.probes;
      const uint32_t *first, *last;
      if (!c.offsets.empty()) {
        first = c.ids.data() + c.offsets[v];
        last = c.ids.data() + c.offsets[v + 1];
      } else {
        auto range = std::equal_range(c.keys.begin(), c.keys.end(), v);
        first = c.ids.data() + (range.first - c.keys.begin());
        last = c.ids.data() + (range.second - c.keys.begin());
      }
      for (const uint32_t* p = first; p != last; ++p) {
        const uint64_t g = hashes_[*p];
        bool seen = false;  // already reachable through an earlier chunk
        for (int e = 0; e < k && !seen; ++e) {
          const Chunk& ce = chunks_[size_t(e)];
          seen = __builtin_popcountll(ce.value(h) ^ ce.value(g)) <= s;
        }
        if (seen) continue;
        ++local.candidates;
        if (hamming(h, g) <= radius) out.push_back(*p);
      }
    }
  }
  std::sort(out.begin(), out.end());
  local.matches = out.size();
  if (stats) *stats += local;
}

std::vector<std::pair<uint32_t, uint32_t>> brute_force_pairs(const std::vector<uint64_t>& hashes, int radius) {
  std::vector<std::pair<uint32_t, uint32_t>> out;
  for (size_t i = 0; i < hashes.size(); ++i)
    for (size_t j = i + 1; j < hashes.size(); ++j)
      if (hamming(hashes[i], hashes[j]) <= radius) out.emplace_back(uint32_t(i), uint32_t(j));
  return out;
}

std::vector<std::pair<uint32_t, uint32_t>> index_pairs(const HammingIndex& index, int radius, int threads,
                                                       QueryStats* stats) {
  std::mutex mu;
  std::vector<std::pair<uint32_t, uint32_t>> out;
  QueryStats total;
  parallel_ranges(index.size(), threads, [&](size_t b, size_t e) {
    std::vector<std::pair<uint32_t, uint32_t>> local;
    std::vector<uint32_t> hits;
    QueryStats st;
    for (size_t i = b; i < e; ++i) {
      index.query(index.hash(i), radius, hits, &st);
      for (uint32_t j : hits)
        if (j > i) local.emplace_back(uint32_t(i), j);
    }
    std::lock_guard<std::mutex> lk(mu);
    out.insert(out.end(), local.begin(), local.end());
    total += st;
  });
  std::sort(out.begin(), out.end());
  if (stats) *stats += total;
  return out;
}

}  // namespace florence::curate
