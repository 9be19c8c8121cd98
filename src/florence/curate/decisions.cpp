// The decision of each curation stage on the record table; see decisions.h.
#include "florence/curate/decisions.h"

#include <xxhash.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <set>
#include <string>
#include <unordered_map>

#include "florence/curate/balance.h"
#include "florence/curate/cluster.h"
#include "florence/curate/hamming_index.h"
#include "florence/curate/relevance.h"
#include "florence/curate/report.h"

namespace florence::curate::detail {

using nlohmann::json;

void drop_record(Record& r, Stage stage, Reason reason, uint32_t duplicate_of, int distance) {
  r.stage = stage;
  r.reason = reason;
  r.duplicate_of = duplicate_of;
  r.distance = uint8_t(distance);
}

void decide_validate(Table& t, const CurateOptions& opt, const std::vector<InputShard>& inputs) {
  for (Record& r : t.rec) {
    if (r.stage != kKept) continue;
    if (r.flags & kFlagUndecodable) drop_record(r, kValidate, kUndecodable);
    else if (r.flags & kFlagTooLarge) drop_record(r, kValidate, kTooLarge);
    else if ((r.flags & kFlagEmptyText) && !opt.allow_empty_text) drop_record(r, kValidate, kEmptyText);
    else if (r.flags & kFlagLongText) drop_record(r, kValidate, kTextTooLong);
  }
  // Repeated keys within an input: the first occurrence in input order stays.
  auto input_of = [&](uint32_t i) { return inputs[t.rec[i].shard].input; };
  std::vector<uint32_t> idx;
  for (uint32_t i = 0; i < t.rec.size(); ++i)
    if (t.rec[i].stage == kKept) idx.push_back(i);
  std::sort(idx.begin(), idx.end(), [&](uint32_t a, uint32_t b) {
    if (input_of(a) != input_of(b)) return input_of(a) < input_of(b);
    const int c = t.keys.get(a).compare(t.keys.get(b));
    return c != 0 ? c < 0 : a < b;
  });
  size_t first = 0;  // start of the current run of equal (input, key)
  for (size_t k = 1; k < idx.size(); ++k) {
    if (input_of(idx[k]) != input_of(idx[first]) || t.keys.get(idx[k]) != t.keys.get(idx[first])) {
      first = k;
      continue;
    }
    drop_record(t.rec[idx[k]], kValidate, kDuplicateKey, idx[first]);
  }
}

void decide_small(Table& t, const CurateOptions& opt) {
  for (Record& r : t.rec)
    if (r.stage == kKept && r.decoded() && int64_t(std::min(r.width, r.height)) < opt.min_size) drop_record(r, kSmall, kSmallImage);
}

namespace {

/// Alive, decoded records and their priority order (largest first, ties by key).
std::vector<uint32_t> hashable(const Table& t, std::vector<uint32_t>& priority) {
  std::vector<uint32_t> idx;
  std::vector<int64_t> areas;
  for (uint32_t i = 0; i < t.rec.size(); ++i)
    if (t.rec[i].stage == kKept && t.rec[i].decoded()) {
      idx.push_back(i);
      areas.push_back(t.rec[i].area());
    }
  priority = priority_order(areas, [&](uint32_t k) { return t.keys.get(idx[k]); });
  return idx;
}

}  // namespace

json decide_exact(Table& t, const CurateOptions& opt) {
  std::vector<uint32_t> priority;
  const std::vector<uint32_t> idx = hashable(t, priority);
  std::vector<PixelHash> h(idx.size());
  for (size_t k = 0; k < idx.size(); ++k) h[k] = {t.rec[idx[k]].pix_high, t.rec[idx[k]].pix_low};
  const std::vector<uint32_t> rep = exact_duplicate_groups(h, priority);
  std::set<uint32_t> groups;
  for (size_t k = 0; k < idx.size(); ++k)
    if (rep[k] != k) {
      drop_record(t.rec[idx[k]], kExact, kExactDuplicate, idx[rep[k]]);
      groups.insert(rep[k]);
    }
  return {{"hash", "xxh3-128 of decoded RGB pixels"}, {"checked", idx.size()}, {"groups", groups.size()}};
}

json decide_near(Table& t, const CurateOptions& opt, int threads, std::vector<Cluster>& clusters) {
  std::vector<uint32_t> priority;
  const std::vector<uint32_t> idx = hashable(t, priority);
  std::vector<uint64_t> h(idx.size());
  for (size_t k = 0; k < idx.size(); ++k) h[k] = t.rec[idx[k]].phash;
  const auto t0 = Clock::now();
  const NearDupResult r = near_duplicate_clusters(h, priority, opt.near_dup_threshold, opt.cluster, threads, opt.index_chunks);
  const double secs = seconds_since(t0);
  std::unordered_map<uint32_t, size_t> by_rep;
  std::vector<int64_t> dist_hist(size_t(opt.near_dup_threshold) + 1, 0);
  for (size_t k = 0; k < idx.size(); ++k) {
    if (r.rep[k] == k) continue;
    const uint32_t rep = idx[r.rep[k]];
    drop_record(t.rec[idx[k]], kNear, kNearDuplicate, rep, r.distance[k]);
    if (r.distance[k] < dist_hist.size()) ++dist_hist[r.distance[k]];
    auto it = by_rep.find(rep);
    if (it == by_rep.end()) {
      it = by_rep.emplace(rep, clusters.size()).first;
      clusters.push_back({rep, {}, 0});
    }
    Cluster& c = clusters[it->second];
    c.members.push_back(idx[k]);
    c.max_distance = std::max<int>(c.max_distance, r.distance[k]);
  }
  std::map<size_t, int64_t> sizes;
  for (Cluster& c : clusters) {
    std::sort(c.members.begin(), c.members.end(), [&](uint32_t a, uint32_t b) {
      if (t.rec[a].distance != t.rec[b].distance) return t.rec[a].distance > t.rec[b].distance;
      return t.keys.get(a) < t.keys.get(b);
    });
    ++sizes[c.members.size() + 1];
  }
  json size_hist = json::object();
  for (const auto& [s, c] : sizes) size_hist[std::to_string(s)] = c;
  json index{{"method", "multi-index hashing (Norouzi et al. 2012)"},
             {"chunks", r.chunks},
             {"chunk_radius", opt.near_dup_threshold / std::max(1, r.chunks)},
             {"indexed", idx.size()},
             {"bytes", r.index_bytes},
             {"bytes_per_image", idx.empty() ? json(nullptr) : json(double(r.index_bytes) / double(idx.size()))},
             {"queries", r.stats.queries},
             {"probes", r.stats.probes},
             {"candidates", r.stats.candidates},
             {"matches", r.stats.matches},
             {"candidates_per_query", double(r.stats.candidates) / double(std::max<uint64_t>(1, r.stats.queries))},
             {"expected_candidates_per_query_uniform", HammingIndex::expected_cost(idx.size(), opt.near_dup_threshold, r.chunks)},
             {"brute_force_comparisons", double(idx.size()) * double(idx.size() - (idx.empty() ? 0 : 1)) / 2.0},
             {"seconds", secs}};
  return {{"hash", hash_kind_name(opt.hash)},
          {"threshold", opt.near_dup_threshold},
          {"cluster", cluster_mode_name(opt.cluster)},
          {"checked", idx.size()},
          {"clusters", clusters.size()},
          {"removed", r.removed},
          {"cluster_sizes", size_hist},
          {"distance_hist", dist_hist},
          {"index", index}};
}

json decide_relevance(Table& t, const CurateOptions& opt, const std::vector<Score>& scores, const json& model) {
  for (const Score& s : scores) t.rec.at(s.idx).similarity = s.value;
  std::vector<float> scored;
  for (const Record& r : t.rec)
    if (r.stage == kKept && !std::isnan(r.similarity)) scored.push_back(r.similarity);
  const double cut = scored.empty() && !opt.relevance_threshold ? -std::numeric_limits<double>::infinity()
                     : scored.empty() ? *opt.relevance_threshold
                                      : relevance_cut(scored, opt.relevance_threshold, opt.relevance_percentile);
  std::vector<double> all, kept;
  for (Record& r : t.rec) {
    if (r.stage != kKept) continue;
    if (std::isnan(r.similarity)) {
      drop_record(r, kRelevance, kNotScored);
      continue;
    }
    all.push_back(r.similarity);
    if (double(r.similarity) < cut) {
      drop_record(r, kRelevance, kLowSimilarity);
    } else {
      kept.push_back(r.similarity);
    }
  }
  const auto edges = linspace_edges(-1, 1, 20);
  return {{"model", model},
          {"threshold", opt.relevance_threshold ? json(*opt.relevance_threshold) : json(nullptr)},
          {"percentile", opt.relevance_percentile ? json(*opt.relevance_percentile) : json(nullptr)},
          {"cut", std::isfinite(cut) ? json(cut) : json(nullptr)},
          {"scored", all.size()},
          {"similarity", distribution(all, edges)},
          {"similarity_kept", distribution(kept, edges)}};
}

json decide_balance(Table& t, const CurateOptions& opt, const EntryList* entries, std::vector<uint32_t>& examples) {
  std::vector<uint32_t> alive;
  for (uint32_t i = 0; i < t.rec.size(); ++i)
    if (t.rec[i].stage == kKept) alive.push_back(i);
  std::vector<uint32_t> off{0}, ids;
  std::vector<uint64_t> tags;
  std::vector<uint32_t> first_of;  // per entry: first alive record with it
  if (entries) {
    for (size_t e = 0; e < entries->size(); ++e)
      tags.push_back(XXH3_64bits(entries->entry(e).data(), entries->entry(e).size()));
    first_of.assign(entries->size(), kNone);
    for (uint32_t i : alive) {
      for (uint32_t k = t.ent_off[i]; k < t.ent_off[i + 1]; ++k) {
        ids.push_back(t.ent_ids[k]);
        if (first_of[t.ent_ids[k]] == kNone) first_of[t.ent_ids[k]] = i;
      }
      off.push_back(uint32_t(ids.size()));
    }
  } else {
    std::unordered_map<uint64_t, uint32_t> dense;
    for (uint32_t i : alive) {
      auto [it, fresh] = dense.emplace(t.rec[i].text_hash, uint32_t(tags.size()));
      if (fresh) {
        tags.push_back(t.rec[i].text_hash);
        first_of.push_back(i);
      }
      ids.push_back(it->second);
      off.push_back(uint32_t(ids.size()));
    }
  }
  std::vector<int64_t> counts(tags.size(), 0), kept(tags.size(), 0);
  for (uint32_t e : ids) ++counts[e];
  int64_t kept_total = 0;
  for (size_t k = 0; k < alive.size(); ++k) {
    Record& r = t.rec[alive[k]];
    const size_t m = off[k + 1] - off[k];
    if (balance_keep(ids.data() + off[k], m, counts, tags, opt.balance_t, opt.seed, t.keys.get(alive[k]))) {
      ++kept_total;
      for (size_t q = off[k]; q < off[k + 1]; ++q) ++kept[ids[q]];
    } else {
      drop_record(r, kBalance, m == 0 ? kNoEntryMatch : kBalanceOut);
    }
  }
  int64_t matched = 0, over_t = 0;
  double expected = 0;
  for (int64_t c : counts) {
    if (c > 0) ++matched;
    if (double(c) > opt.balance_t) ++over_t;
    expected += std::min<double>(double(c), opt.balance_t);
  }
  std::vector<uint32_t> order(tags.size());
  std::iota(order.begin(), order.end(), 0u);
  const size_t top = std::min<size_t>(10, order.size());
  std::partial_sort(order.begin(), order.begin() + long(top), order.end(), [&](uint32_t a, uint32_t b) {
    return counts[a] != counts[b] ? counts[a] > counts[b] : tags[a] < tags[b];
  });
  json top_entries = json::array();
  for (size_t k = 0; k < top && counts[order[k]] > 0; ++k) {
    const uint32_t e = order[k];
    json j{{"count", counts[e]}, {"kept", kept[e]}, {"keep_probability", balance_keep_probability(counts[e], opt.balance_t)}};
    if (entries) {
      j["entry"] = entries->entry(e);
    } else {
      j["example_key"] = std::string(t.keys.get(first_of[e]));
      examples.push_back(first_of[e]);
    }
    top_entries.push_back(j);
  }
  json j{{"mode", entries ? "entries" : "text"},
         {"t", opt.balance_t},
         {"seed", opt.seed},
         {"pool", alive.size()},
         {"kept", kept_total},
         {"entries_matched", matched},
         {"entries_over_t", over_t},
         {"top_entries", top_entries}};
  if (entries) {
    j["entries_file"] = opt.balance_entries;
    j["entries_listed"] = entries->size();
  } else {
    j["expected_kept"] = expected;  // sum over texts of min(c, t)
  }
  return j;
}

}  // namespace florence::curate::detail
