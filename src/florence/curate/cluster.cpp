// Exact and near-duplicate grouping; see cluster.h.
#include "florence/curate/cluster.h"

#include <algorithm>
#include <numeric>

#include "florence/core/error.h"

namespace florence::curate {

namespace {

std::vector<uint32_t> ranks_of(const std::vector<uint32_t>& priority, size_t n) {
  if (priority.size() != n)
    throw Error("duplicate grouping: priority has " + std::to_string(priority.size()) + " entries for " +
                std::to_string(n) + " items");
  std::vector<uint32_t> rank(n, UINT32_MAX);
  for (size_t r = 0; r < n; ++r) {
    const uint32_t i = priority[r];
    if (i >= n || rank[i] != UINT32_MAX) throw Error("duplicate grouping: priority is not a permutation");
    rank[i] = uint32_t(r);
  }
  return rank;
}

/// Queries per parallel block: large enough to keep every thread busy, small enough that few
/// queries are wasted on items claimed by an earlier item of the same block.
size_t block_size(int threads) { return size_t(resolve_threads(threads)) * 32; }

}  // namespace

std::vector<uint32_t> priority_order(const std::vector<int64_t>& areas,
                                     const std::function<std::string_view(uint32_t)>& key) {
  std::vector<uint32_t> order(areas.size());
  std::iota(order.begin(), order.end(), 0u);
  std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
    if (areas[a] != areas[b]) return areas[a] > areas[b];
    const int c = key(a).compare(key(b));
    if (c != 0) return c < 0;
    return a < b;
  });
  return order;
}

std::vector<uint32_t> priority_order(const std::vector<int64_t>& areas, const std::vector<std::string>& keys) {
  if (areas.size() != keys.size()) throw Error("priority_order: areas and keys differ in length");
  return priority_order(areas, [&](uint32_t i) { return std::string_view(keys[i]); });
}

std::vector<uint32_t> exact_duplicate_groups(const std::vector<PixelHash>& hashes, const std::vector<uint32_t>& priority) {
  const size_t n = hashes.size();
  const std::vector<uint32_t> rank = ranks_of(priority, n);
  std::vector<uint32_t> order(n);
  std::iota(order.begin(), order.end(), 0u);
  std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
    if (hashes[a] != hashes[b]) return hashes[a] < hashes[b];
    return rank[a] < rank[b];
  });
  std::vector<uint32_t> rep(n);
  for (size_t i = 0; i < n; ++i) {
    const uint32_t cur = order[i];
    rep[cur] = (i > 0 && hashes[order[i - 1]] == hashes[cur]) ? rep[order[i - 1]] : cur;
  }
  return rep;
}

ClusterMode parse_cluster_mode(const std::string& name) {
  if (name == "leader") return ClusterMode::kLeader;
  if (name == "components") return ClusterMode::kComponents;
  throw Error("unknown cluster mode '" + name + "' (leader | components)");
}

std::string cluster_mode_name(ClusterMode mode) { return mode == ClusterMode::kLeader ? "leader" : "components"; }

NearDupResult near_duplicate_clusters(const std::vector<uint64_t>& hashes, const std::vector<uint32_t>& priority,
                                      int threshold, ClusterMode mode, int threads, int index_chunks) {
  const size_t n = hashes.size();
  const std::vector<uint32_t> rank = ranks_of(priority, n);
  if (threshold < 0 || threshold > 64) throw Error("near-duplicate threshold must be in [0, 64], got " + std::to_string(threshold));
  HammingIndex index(hashes, threshold, index_chunks);
  NearDupResult r;
  r.chunks = index.chunks();
  r.index_bytes = index.memory_bytes();
  r.rep.assign(n, UINT32_MAX);
  const size_t block = block_size(threads);
  std::vector<std::vector<uint32_t>> hits;
  std::vector<QueryStats> stats;

  // Runs the queries of `items` in parallel into hits[0 .. items.size()).
  auto run_block = [&](const std::vector<uint32_t>& items) {
    hits.resize(std::max(hits.size(), items.size()));
    stats.assign(items.size(), QueryStats{});
    parallel_ranges(items.size(), threads, [&](size_t b, size_t e) {
      for (size_t k = b; k < e; ++k) index.query(hashes[items[k]], threshold, hits[k], &stats[k]);
    });
    for (const QueryStats& s : stats) r.stats += s;
  };

  std::vector<uint32_t> items;
  if (mode == ClusterMode::kLeader) {
    size_t pos = 0;
    while (pos < n) {
      items.clear();
      while (pos < n && items.size() < block) {
        const uint32_t i = priority[pos++];
        if (r.rep[i] == UINT32_MAX) items.push_back(i);
      }
      run_block(items);
      for (size_t k = 0; k < items.size(); ++k) {
        const uint32_t i = items[k];
        if (r.rep[i] != UINT32_MAX) continue;  // claimed by an earlier item of this block
        r.rep[i] = i;
        for (uint32_t j : hits[k])
          if (r.rep[j] == UINT32_MAX) r.rep[j] = i;
      }
    }
  } else {
    std::vector<uint32_t> parent(n);
    std::iota(parent.begin(), parent.end(), 0u);
    auto find = [&](uint32_t x) {
      while (parent[x] != x) {
        parent[x] = parent[parent[x]];
        x = parent[x];
      }
      return x;
    };
    for (size_t start = 0; start < n; start += block) {
      items.clear();
      for (size_t i = start; i < std::min(n, start + block); ++i) items.push_back(uint32_t(i));
      run_block(items);
      for (size_t k = 0; k < items.size(); ++k)
        for (uint32_t j : hits[k]) {
          const uint32_t a = find(items[k]), b = find(j);
          if (a != b) parent[std::max(a, b)] = std::min(a, b);
        }
    }
    std::vector<uint32_t> best(n, UINT32_MAX);  // per root: the member first in priority
    for (size_t i = 0; i < n; ++i) {
      const uint32_t root = find(uint32_t(i));
      if (best[root] == UINT32_MAX || rank[i] < rank[best[root]]) best[root] = uint32_t(i);
    }
    for (size_t i = 0; i < n; ++i) r.rep[i] = best[find(uint32_t(i))];
  }

  r.distance.assign(n, 0);
  std::vector<uint8_t> has_member(n, 0);
  for (size_t i = 0; i < n; ++i) {
    if (r.rep[i] == i) continue;
    r.distance[i] = uint8_t(hamming(hashes[i], hashes[r.rep[i]]));
    ++r.removed;
    if (!has_member[r.rep[i]]) {
      has_member[r.rep[i]] = 1;
      ++r.clusters;
    }
  }
  return r;
}

}  // namespace florence::curate
