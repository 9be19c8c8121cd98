#pragma once
// Internal to the curation pipeline (pipeline.h): the fixed-size record kept per sample, the
// table of them that every stage decides on, and its exchange between processes. Not a public
// interface; the pipeline's files share it.
//
// A table holds one Record per sample the shard readers returned, sorted by (shard, position), the
// samples' keys packed apart (Keys), the samples the readers dropped themselves (Dropped) and the
// reader counters per input shard (ShardInfo). Records are trivially copyable so that tables
// travel between processes as raw bytes (exchange_tables).
#include <chrono>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "florence/core/error.h"
#include "florence/curate/pipeline.h"

namespace florence::curate::detail {

/// The stage that removed a sample (kKept: none did). Order = pipeline order.
enum Stage : uint8_t { kKept = 0, kValidate, kSmall, kExact, kNear, kRelevance, kBalance, kNumStages };
/// Names in report.json / removed.jsonl, indexed by Stage.
inline const char* const kStageNames[kNumStages] = {"kept", "validate", "small", "exact", "near", "relevance", "balance"};

/// Why a sample was removed (the "reason" of removed.jsonl; see pipeline.h for each).
enum Reason : uint8_t {
  kNoReason = 0,
  kUndecodable,
  kTooLarge,
  kEmptyText,
  kTextTooLong,
  kDuplicateKey,
  kInvalidUtf8,
  kMissingImage,
  kCorruptMember,
  kUnreadableShard,
  kSmallImage,
  kExactDuplicate,
  kNearDuplicate,
  kLowSimilarity,
  kNotScored,
  kBalanceOut,
  kNoEntryMatch,
  kUnsafeKey,
  kUnsupportedFormat,
  kNumReasons
};
/// Names in report.json / removed.jsonl, indexed by Reason.
inline const char* const kReasonNames[kNumReasons] = {
    "",                "undecodable_image", "image_too_large", "empty_text",      "text_too_long",
    "duplicate_key",   "invalid_utf8_text", "missing_image",   "corrupt_member",  "unreadable_shard",
    "small_image",     "exact_duplicate",   "near_duplicate",  "low_similarity",  "not_scored",
    "balance_sampled_out", "no_entry_match", "unsafe_key", "unsupported_format"};

/// What the scan saw wrong with a sample (Record::flags); the validate stage turns them into removals.
enum Flag : uint8_t { kFlagUndecodable = 1, kFlagTooLarge = 2, kFlagEmptyText = 4, kFlagLongText = 8 };

/// "No record" (Record::duplicate_of) and the limit on shards and records of one run.
constexpr uint32_t kNone = UINT32_MAX;

/// Everything the decisions need about one sample (its key lives in Keys). Trivially copyable:
/// tables travel between processes as raw bytes.
struct Record {
  uint32_t shard = 0;  // global input shard index
  uint32_t pos = 0;    // ordinal of the sample among those the shard reader returns
  uint32_t width = 0, height = 0;  // 0 x 0 when not decoded
  uint32_t text_chars = 0;         // Unicode code points
  uint32_t duplicate_of = kNone;   // record index (duplicate stages)
  uint64_t phash = 0;              // perceptual hash (pHash or dHash)
  uint64_t pix_high = 0, pix_low = 0;  // pixel hash
  uint64_t text_hash = 0;          // XXH3-64 of the text bytes (exact-text balancing)
  float similarity = std::numeric_limits<float>::quiet_NaN();
  uint8_t flags = 0, stage = kKept, reason = kNoReason, distance = 0;
  bool decoded() const { return width > 0; }
  int64_t area() const { return int64_t(width) * int64_t(height); }
};
static_assert(std::is_trivially_copyable<Record>::value, "records are exchanged as bytes");

/// Keys of a table, packed: blob + end offsets.
struct Keys {
  std::string blob;
  std::vector<uint64_t> end;
  size_t size() const { return end.size(); }
  std::string_view get(size_t i) const {
    const uint64_t b = i == 0 ? 0 : end[i - 1];
    return std::string_view(blob.data() + b, size_t(end[i] - b));
  }
  void push(std::string_view k) {
    blob.append(k.data(), k.size());
    end.push_back(blob.size());
  }
  size_t bytes() const { return blob.capacity() + end.capacity() * sizeof(uint64_t); }
};

/// A sample the shard reader dropped (its key when recovered from the tar headers, else empty).
struct Dropped {
  uint32_t shard = 0;
  uint8_t reason = kNoReason;
  std::string key;
};

/// Reader counters of one input shard (ShardStats), filled by the rank that scanned it.
/// unreadable: nothing could be read (cannot open, 0 bytes, not a tar / corrupt from the first
/// header); truncated: a read error after some members (the samples before it are kept).
/// `problem` says why in words (report.json "problem_shards").
struct ShardInfo {
  bool scanned = false, unreadable = false, truncated = false;
  int64_t samples = 0, members = 0, missing_image = 0, bad_text = 0, corrupt = 0, skipped_members = 0;
  std::string problem;
};

struct Table {
  std::vector<Record> rec;
  Keys keys;
  std::vector<uint32_t> ent_off, ent_ids;  // CSR entry ids per record (entry-list balancing only)
  std::vector<Dropped> dropped;
  std::vector<ShardInfo> shards;  // per global shard
  bool has_entries() const { return !ent_off.empty(); }
  size_t bytes() const {
    return rec.capacity() * sizeof(Record) + keys.bytes() + (ent_off.capacity() + ent_ids.capacity()) * sizeof(uint32_t);
  }
};

/// Concatenates per-thread (or per-rank) tables and sorts the records by (shard, pos); `parts`
/// are emptied. Dropped samples and shard counters are left to the caller.
Table merge_parts(std::vector<Table>& parts, bool with_entries);

/// [begin, end) of each shard's records in the (shard, pos)-sorted table ({0, 0} for none).
std::vector<std::pair<size_t, size_t>> shard_ranges(const Table& t, size_t num_shards);

// ---- Exchange between processes ----

/// A vector's bytes as a JSON binary (for CBOR exchange).
template <class T>
nlohmann::json::binary_t to_blob(const std::vector<T>& v) {
  std::vector<uint8_t> b(v.size() * sizeof(T));
  if (!b.empty()) std::memcpy(b.data(), v.data(), b.size());
  return nlohmann::json::binary_t(std::move(b));
}

/// The inverse of to_blob. Throws florence::Error naming `what` when `j` is not binary or its
/// size is not a multiple of sizeof(T) (a malformed message from another rank).
template <class T>
std::vector<T> from_blob(const nlohmann::json& j, const char* what) {
  if (!j.is_binary()) throw Error(std::string("curate: exchanged table field '") + what + "' is not binary");
  const auto& b = j.get_binary();
  if (b.size() % sizeof(T) != 0) throw Error(std::string("curate: exchanged table field '") + what + "' has a bad size");
  std::vector<T> v(b.size() / sizeof(T));
  if (!v.empty()) std::memcpy(v.data(), b.data(), b.size());
  return v;
}

/// Every rank's `mine`, in rank order (CBOR over Collective::all_gather; {mine} for one process).
/// Throws florence::Error when the exchange returns the wrong number of parts or malformed data.
std::vector<nlohmann::json> gather_json(const nlohmann::json& mine, const Collective& c);

/// The global table: every rank's scan merged in (shard, pos) order (a no-op for one process).
/// Throws florence::Error when a rank sent an inconsistent table.
Table exchange_tables(Table local, const Collective& c, size_t num_shards, bool with_entries);

// ---- Timing ----

using Clock = std::chrono::steady_clock;
inline double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

}  // namespace florence::curate::detail
