#pragma once
// Duplicate grouping for the curation pipeline: exact duplicates (equal pixel hashes) and
// near duplicates (perceptual hashes within a Hamming radius, searched with a HammingIndex).
//
// Representative rule (both stages): a cluster keeps its *largest* image (most pixels,
// width * height) and, among equally large ones, the one whose key sorts first (byte order);
// every other member is recorded as a duplicate of it. Callers express the rule as a priority
// order (priority_order()): a permutation of the items, best first.
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "florence/curate/hamming_index.h"
#include "florence/curate/phash.h"

namespace florence::curate {

/// Items sorted by (area descending, key ascending (byte order), index ascending).
/// Throws florence::Error when the two vectors differ in length.
std::vector<uint32_t> priority_order(const std::vector<int64_t>& areas, const std::vector<std::string>& keys);
/// Same with the key of item i given by key(i).
std::vector<uint32_t> priority_order(const std::vector<int64_t>& areas,
                                     const std::function<std::string_view(uint32_t)>& key);

/// For each item, the index of the item it duplicates exactly, or its own index when it is the
/// representative of its group (the first of the group in `priority`). Throws florence::Error
/// when `priority` is not a permutation of the items.
std::vector<uint32_t> exact_duplicate_groups(const std::vector<PixelHash>& hashes, const std::vector<uint32_t>& priority);

enum class ClusterMode {
  /// Greedy leader clustering: items are visited in priority order; an item not yet claimed
  /// becomes a representative and claims every unclaimed item within the radius. Every removed
  /// item is within the radius of its representative (no chaining), and a representative is the
  /// largest member of its cluster. Queries are run only for representatives.
  kLeader,
  /// Connected components of the "within radius" graph (single linkage): chains of near
  /// duplicates form one cluster even when its ends are further apart than the radius. The
  /// representative is the cluster's best item in priority order.
  kComponents,
};

/// "leader" / "components". Throws florence::Error on other names.
ClusterMode parse_cluster_mode(const std::string& name);
std::string cluster_mode_name(ClusterMode mode);

struct NearDupResult {
  std::vector<uint32_t> rep;       ///< per item: its representative (itself when kept)
  std::vector<uint8_t> distance;   ///< per item: hamming(hash, hash of rep) (0 for representatives)
  int64_t clusters = 0;            ///< clusters with at least two members
  int64_t removed = 0;             ///< items whose rep is another item
  int chunks = 0;                  ///< MIH chunks used
  size_t index_bytes = 0;          ///< HammingIndex::memory_bytes()
  QueryStats stats;                ///< index work
};

/// Clusters `hashes` within Hamming radius `threshold` (0..64). Queries run on `threads` threads
/// (0 = all cores) in blocks, applied in priority order, so the result does not depend on the
/// thread count. index_chunks: HammingIndex chunks (0 = auto). Throws florence::Error on a bad
/// threshold or a priority that is not a permutation.
NearDupResult near_duplicate_clusters(const std::vector<uint64_t>& hashes, const std::vector<uint32_t>& priority,
                                      int threshold, ClusterMode mode = ClusterMode::kLeader, int threads = 0,
                                      int index_chunks = 0);

}  // namespace florence::curate
