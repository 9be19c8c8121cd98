// The curation pipeline; see pipeline.h for the stages, passes and outputs.
#include "florence/curate/pipeline.h"

#include <archive.h>
#include <archive_entry.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <xxhash.h>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <filesystem>
#include <fstream>
#include <limits>
#include <mutex>
#include <numeric>
#include <set>
#include <string_view>
#include <thread>
#include <unordered_map>

#include "florence/core/error.h"
#include "florence/core/files.h"
#include "florence/curate/balance.h"
#include "florence/curate/montage.h"
#include "florence/curate/relevance.h"
#include "florence/data/readers.h"
#include "florence/data/transforms.h"
#include "florence/data/webdataset.h"
#include "florence/model/io.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace florence::curate {

namespace {

// ---------------------------------------------------------------------------------------------
// Stages, reasons, records
// ---------------------------------------------------------------------------------------------

enum Stage : uint8_t { kKept = 0, kValidate, kSmall, kExact, kNear, kRelevance, kBalance, kNumStages };
const char* const kStageNames[kNumStages] = {"kept", "validate", "small", "exact", "near", "relevance", "balance"};

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
  kNumReasons
};
const char* const kReasonNames[kNumReasons] = {
    "",                "undecodable_image", "image_too_large", "empty_text",      "text_too_long",
    "duplicate_key",   "invalid_utf8_text", "missing_image",   "corrupt_member",  "unreadable_shard",
    "small_image",     "exact_duplicate",   "near_duplicate",  "low_similarity",  "not_scored",
    "balance_sampled_out", "no_entry_match"};

enum Flag : uint8_t { kFlagUndecodable = 1, kFlagTooLarge = 2, kFlagEmptyText = 4, kFlagLongText = 8 };

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

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

int64_t peak_rss_bytes() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return int64_t(ru.ru_maxrss) * 1024;  // Linux: kilobytes
}

uint32_t utf8_code_points(const std::string& s) {
  uint32_t n = 0;
  for (char c : s)
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++n;
  return n;
}

bool only_ascii_space(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
  });
}

bool is_image_ext(const std::string& e) {
  static const char* kExts[] = {"png", "jpg", "jpeg", "webp", "bmp", "ppm", "pgm", "pbm", "tif", "tiff"};
  return std::any_of(std::begin(kExts), std::end(kExts), [&](const char* x) { return e == x; });
}

std::string lower(std::string s) {
  for (auto& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

template <class T>
json::binary_t to_blob(const std::vector<T>& v) {
  std::vector<uint8_t> b(v.size() * sizeof(T));
  if (!b.empty()) std::memcpy(b.data(), v.data(), b.size());
  return json::binary_t(std::move(b));
}

template <class T>
std::vector<T> from_blob(const json& j, const char* what) {
  if (!j.is_binary()) throw Error(std::string("curate: exchanged table field '") + what + "' is not binary");
  const auto& b = j.get_binary();
  if (b.size() % sizeof(T) != 0) throw Error(std::string("curate: exchanged table field '") + what + "' has a bad size");
  std::vector<T> v(b.size() / sizeof(T));
  if (!v.empty()) std::memcpy(v.data(), b.data(), b.size());
  return v;
}

/// Summary statistics and a histogram of values over fixed bin edges (last bin open-ended).
json distribution(std::vector<double> v, const std::vector<double>& edges) {
  json j{{"count", v.size()}};
  if (v.empty()) return j;
  std::sort(v.begin(), v.end());
  auto q = [&](double p) { return v[size_t(std::llround(p * double(v.size() - 1)))]; };
  j["min"] = v.front();
  j["p05"] = q(0.05);
  j["p50"] = q(0.5);
  j["p95"] = q(0.95);
  j["max"] = v.back();
  j["mean"] = std::accumulate(v.begin(), v.end(), 0.0) / double(v.size());
  if (!edges.empty()) {
    std::vector<int64_t> counts(edges.size(), 0);  // bin k = [edges[k], edges[k+1]); last = [edges.back(), inf)
    for (double x : v) {
      auto it = std::upper_bound(edges.begin(), edges.end(), x);
      const size_t k = it == edges.begin() ? 0 : size_t(it - edges.begin() - 1);
      ++counts[k];
    }
    j["hist"] = {{"edges", edges}, {"counts", counts}};
  }
  return j;
}

std::vector<double> linspace_edges(double lo, double hi, int bins) {
  std::vector<double> e;
  for (int i = 0; i < bins; ++i) e.push_back(lo + (hi - lo) * i / bins);
  return e;
}

// ---------------------------------------------------------------------------------------------
// Reader warnings once
// ---------------------------------------------------------------------------------------------

/// Forwards every message to the wrapped sinks except data::ShardReader's (they start with
/// "ShardReader: ", see data/webdataset.cpp).
class NoShardReaderSink : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit NoShardReaderSink(std::vector<spdlog::sink_ptr> targets) : targets_(std::move(targets)) {}

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    static constexpr std::string_view kPrefix = "ShardReader: ";
    const std::string_view text(msg.payload.data(), msg.payload.size());
    if (text.substr(0, kPrefix.size()) == kPrefix) return;
    for (const auto& t : targets_)
      if (t->should_log(msg.level)) t->log(msg);
  }
  void flush_() override {
    for (const auto& t : targets_) t->flush();
  }

 private:
  std::vector<spdlog::sink_ptr> targets_;
};

/// While alive, the default logger drops data::ShardReader's warnings: passes 2 and 3 read the
/// shards again and the reader would repeat, sample by sample, what pass 1 logged. Process-wide
/// and counted, so ranks run as threads (tests) restore the original logger only when the last
/// one leaves.
class ReaderWarningFilter {
 public:
  ReaderWarningFilter() {
    std::lock_guard<std::mutex> lk(mu());
    if (depth()++ > 0) return;
    saved() = spdlog::default_logger();
    auto quiet = std::make_shared<spdlog::logger>(saved()->name(), std::make_shared<NoShardReaderSink>(saved()->sinks()));
    quiet->set_level(saved()->level());
    quiet->flush_on(saved()->flush_level());
    spdlog::set_default_logger(quiet);
  }
  ~ReaderWarningFilter() {
    std::lock_guard<std::mutex> lk(mu());
    if (--depth() > 0) return;
    spdlog::set_default_logger(saved());
    saved().reset();
  }
  ReaderWarningFilter(const ReaderWarningFilter&) = delete;
  ReaderWarningFilter& operator=(const ReaderWarningFilter&) = delete;

 private:
  static std::mutex& mu() {
    static std::mutex m;
    return m;
  }
  static int& depth() {
    static int d = 0;
    return d;
  }
  static std::shared_ptr<spdlog::logger>& saved() {
    static std::shared_ptr<spdlog::logger> l;
    return l;
  }
};

// ---------------------------------------------------------------------------------------------
// A bounded queue for the scan pass
// ---------------------------------------------------------------------------------------------

template <class T>
class BoundedQueue {
 public:
  explicit BoundedQueue(size_t capacity) : cap_(capacity) {}
  bool push(T v) {
    std::unique_lock<std::mutex> lk(mu_);
    not_full_.wait(lk, [&] { return q_.size() < cap_ || closed_; });
    if (closed_) return false;
    q_.push_back(std::move(v));
    not_empty_.notify_one();
    return true;
  }
  bool pop(T& out) {
    std::unique_lock<std::mutex> lk(mu_);
    not_empty_.wait(lk, [&] { return !q_.empty() || closed_; });
    if (q_.empty()) return false;
    out = std::move(q_.front());
    q_.pop_front();
    not_full_.notify_one();
    return true;
  }
  void close() {
    std::lock_guard<std::mutex> lk(mu_);
    closed_ = true;
    not_empty_.notify_all();
    not_full_.notify_all();
  }

 private:
  size_t cap_;
  std::deque<T> q_;
  std::mutex mu_;
  std::condition_variable not_full_, not_empty_;
  bool closed_ = false;
};

// ---------------------------------------------------------------------------------------------
// Inputs and output paths
// ---------------------------------------------------------------------------------------------

bool dir_has_tar(const fs::path& d) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(d, ec))
    if (e.is_regular_file() && e.path().extension() == ".tar") return true;
  return false;
}

// An absolute path named as the user typed it: "." dropped, symlinks kept, but ".." resolved as the
// system does (the parent of where the path so far really leads, so "link/.." is not folded by name
// into a folder that was not read).
fs::path absolute_named(const fs::path& p) {
  fs::path a;
  for (const auto& part : fs::absolute(p)) {
    if (part.empty() || part == ".") continue;
    if (part == "..") {
      std::error_code ec;
      const fs::path real = fs::weakly_canonical(a, ec);
      a = (ec ? a : real).parent_path();
    } else {
      a /= part;
    }
  }
  return a;
}

fs::path common_parent(const std::vector<std::string>& paths) {
  fs::path common = fs::path(paths.front()).parent_path();
  for (const auto& p : paths) {
    const fs::path parent = fs::path(p).parent_path();
    fs::path c;
    auto a = common.begin(), b = parent.begin();
    for (; a != common.end() && b != parent.end() && *a == *b; ++a, ++b) c /= *a;
    common = c;
  }
  return common;
}

bool path_within(const fs::path& inner, const fs::path& outer) {
  // Absolute first: libstdc++'s weakly_canonical leaves a relative path with no existing prefix
  // ("out") relative, which would then never lie within anything.
  const fs::path a = fs::weakly_canonical(fs::absolute(inner)), b = fs::weakly_canonical(fs::absolute(outer));
  auto ia = a.begin(), ib = b.begin();
  for (; ib != b.end(); ++ia, ++ib) {
    if (ib->empty()) continue;  // trailing separator
    if (ia == a.end() || *ia != *ib) return false;
  }
  return true;
}


// ---------------------------------------------------------------------------------------------
// Pass 1: scan
// ---------------------------------------------------------------------------------------------

/// Member groups of a tar (key, has an image member) from the headers only, like ShardReader
/// groups them (consecutive members sharing a key). Stops at the first fatal error.
std::vector<std::pair<std::string, bool>> list_member_groups(const std::string& path) {
  std::vector<std::pair<std::string, bool>> groups;
  archive* ar = archive_read_new();
  if (!ar) return groups;
  archive_read_support_format_tar(ar);
  if (archive_read_open_filename(ar, path.c_str(), 1 << 16) != ARCHIVE_OK) {
    archive_read_free(ar);
    return groups;
  }
  archive_entry* e = nullptr;
  int retries = 0;
  while (true) {
    const int rc = archive_read_next_header(ar, &e);
    if (rc == ARCHIVE_EOF || rc == ARCHIVE_FATAL) break;
    if (rc == ARCHIVE_RETRY) {
      if (++retries > 64) break;
      continue;
    }
    if (archive_entry_filetype(e) != AE_IFREG || !archive_entry_pathname(e)) continue;
    const auto [key, ext] = data::split_member_name(archive_entry_pathname(e));
    if (groups.empty() || groups.back().first != key) groups.emplace_back(key, false);
    if (is_image_ext(lower(ext))) groups.back().second = true;
  }
  archive_read_free(ar);
  return groups;
}

/// The samples a ShardReader dropped from `path` (stats), with their keys recovered from the tar
/// headers: groups that were not returned. Counts the reader reports but the headers do not show
/// become entries without a key, so no drop goes unrecorded.
void recover_dropped(const std::string& path, uint32_t shard, const std::vector<std::string>& returned,
                     const data::ShardStats& st, std::vector<Dropped>& out) {
  if (st.missing_image + st.bad_text + st.corrupt == 0) return;
  std::unordered_map<std::string, int64_t> seen;
  for (const auto& k : returned) ++seen[k];
  int64_t missing_left = st.missing_image, bad_text_left = st.bad_text;
  for (const auto& [key, has_image] : list_member_groups(path)) {
    auto it = seen.find(key);
    if (it != seen.end() && it->second > 0) {
      --it->second;
      continue;
    }
    if (!has_image) {
      if (missing_left > 0) {
        --missing_left;
        out.push_back({shard, kMissingImage, key});
      }
    } else if (bad_text_left > 0) {
      --bad_text_left;
      out.push_back({shard, kInvalidUtf8, key});
    } else {
      out.push_back({shard, kCorruptMember, key});
    }
  }
  for (; missing_left > 0; --missing_left) out.push_back({shard, kMissingImage, ""});
  for (; bad_text_left > 0; --bad_text_left) out.push_back({shard, kInvalidUtf8, ""});
}

void scan_sample(const data::Sample& s, uint32_t shard, uint32_t pos, const CurateOptions& opt, const EntryList* entries,
                 Table& part) {
  Record r;
  r.shard = shard;
  r.pos = pos;
  r.text_chars = utf8_code_points(s.text);
  if (only_ascii_space(s.text)) r.flags |= kFlagEmptyText;
  if (int64_t(r.text_chars) > opt.max_text_chars) r.flags |= kFlagLongText;
  r.text_hash = XXH3_64bits(s.text.data(), s.text.size());
  data::DecodeOptions d;
  d.max_pixels = opt.max_pixels;
  try {
    const cv::Mat rgb = data::decode_rgb(s.image, d);
    r.width = uint32_t(rgb.cols);
    r.height = uint32_t(rgb.rows);
    if (opt.exact) {
      const PixelHash h = pixel_hash(rgb);
      r.pix_high = h.high;
      r.pix_low = h.low;
    }
    if (opt.near) r.phash = perceptual_hash(rgb, opt.hash);
  } catch (const data::ImageTooLarge&) {
    r.flags |= kFlagTooLarge;
    r.width = r.height = 0;
  } catch (const Error&) {
    r.flags |= kFlagUndecodable;
    r.width = r.height = 0;
  } catch (const cv::Exception&) {
    r.flags |= kFlagUndecodable;
    r.width = r.height = 0;
  }
  part.rec.push_back(r);
  part.keys.push(s.key);
  if (entries) {
    const auto m = entries->match(s.text);
    part.ent_ids.insert(part.ent_ids.end(), m.begin(), m.end());
    part.ent_off.push_back(uint32_t(part.ent_ids.size()));
  }
}

/// Concatenates parts and sorts the records by (shard, pos).
Table merge_parts(std::vector<Table>& parts, bool with_entries) {
  struct Ref {
    uint32_t shard, pos, part, idx;
  };
  std::vector<Ref> refs;
  size_t n = 0, key_bytes = 0, ent = 0;
  for (const auto& p : parts) {
    n += p.rec.size();
    key_bytes += p.keys.blob.size();
    ent += p.ent_ids.size();
  }
  refs.reserve(n);
  for (uint32_t p = 0; p < parts.size(); ++p)
    for (uint32_t i = 0; i < parts[p].rec.size(); ++i) refs.push_back({parts[p].rec[i].shard, parts[p].rec[i].pos, p, i});
  std::sort(refs.begin(), refs.end(), [](const Ref& a, const Ref& b) {
    return a.shard != b.shard ? a.shard < b.shard : a.pos < b.pos;
  });
  Table t;
  t.rec.reserve(n);
  t.keys.blob.reserve(key_bytes);
  t.keys.end.reserve(n);
  if (with_entries) {
    t.ent_off.reserve(n + 1);
    t.ent_off.push_back(0);
    t.ent_ids.reserve(ent);
  }
  for (const Ref& r : refs) {
    const Table& p = parts[r.part];
    t.rec.push_back(p.rec[r.idx]);
    t.keys.push(p.keys.get(r.idx));
    if (with_entries) {
      t.ent_ids.insert(t.ent_ids.end(), p.ent_ids.begin() + p.ent_off[r.idx], p.ent_ids.begin() + p.ent_off[r.idx + 1]);
      t.ent_off.push_back(uint32_t(t.ent_ids.size()));
    }
  }
  for (auto& p : parts) p = Table{};
  return t;
}

struct ScanItem {
  uint32_t shard = 0, pos = 0;
  data::Sample sample;
};

/// Pass 1 over this rank's shards: one reader thread feeds `threads` workers through a bounded
/// queue (at most 4 * threads batches of 16 samples in flight).
Table scan(const std::vector<InputShard>& inputs, const std::vector<uint32_t>& own, const CurateOptions& opt,
           const EntryList* entries, int threads) {
  constexpr size_t kBatch = 16;
  BoundedQueue<std::vector<ScanItem>> queue(size_t(threads) * 4);
  std::vector<Table> parts(static_cast<size_t>(threads));
  if (entries)
    for (auto& p : parts) p.ent_off.push_back(0);
  std::vector<ShardInfo> shards(inputs.size());
  std::vector<Dropped> dropped;
  std::atomic<int64_t> done{0};
  std::exception_ptr error;
  std::mutex error_mu;
  auto fail = [&](std::exception_ptr e) {
    std::lock_guard<std::mutex> lk(error_mu);
    if (!error) error = e;
    queue.close();
  };
  const auto t0 = Clock::now();

  std::thread reader([&] {
    try {
      for (size_t k = 0; k < own.size(); ++k) {
        const uint32_t gi = own[k];
        const std::string& path = inputs[gi].path;
        ShardInfo& info = shards[gi];
        info.scanned = true;
        auto unreadable = [&](const std::string& why) {
          spdlog::warn("curate: skipping unreadable shard {}: {}", path, why);
          info.unreadable = true;
          info.problem = why;
          dropped.push_back({gi, kUnreadableShard, ""});
        };
        std::unique_ptr<data::ShardReader> r;
        try {
          r = std::make_unique<data::ShardReader>(path);
        } catch (const Error& e) {
          unreadable(e.what());
          continue;
        }
        std::vector<std::string> returned;
        std::vector<ScanItem> batch;
        data::Sample s;
        uint32_t pos = 0;
        while (r->next(s)) {
          returned.push_back(s.key);
          batch.push_back({gi, pos++, std::move(s)});
          s = data::Sample{};
          if (batch.size() == kBatch) {
            if (!queue.push(std::move(batch))) return;
            batch.clear();
          }
        }
        if (!batch.empty() && !queue.push(std::move(batch))) return;
        const data::ShardStats& st = r->stats();
        info.samples = st.samples;
        info.members = st.members;
        info.missing_image = st.missing_image;
        info.bad_text = st.bad_text;
        info.corrupt = st.corrupt;
        info.skipped_members = st.skipped_members;
        std::error_code ec;
        const auto size = fs::file_size(path, ec);
        if (!ec && size == 0) {
          unreadable("empty file (0 bytes), not a tar shard");
        } else if (st.corrupt > 0 && st.members == 0) {
          unreadable("not a tar shard, or corrupt from its first header (see the ShardReader warning)");
        } else if (st.corrupt > 0) {
          info.truncated = true;
          info.problem = fmt::format(
              "truncated or corrupt: {} read error(s) after {} member(s); the {} sample(s) read before are used "
              "(see the ShardReader warning)",
              st.corrupt, st.members, st.samples);
          spdlog::warn("curate: shard {} is {}", path, info.problem);
        }
        recover_dropped(path, gi, returned, st, dropped);
        if (opt.progress && ((k + 1) % 10 == 0 || k + 1 == own.size()))
          spdlog::info("curate: scan: {}/{} shard(s) read, {} sample(s) hashed, {:.0f} img/s", k + 1, own.size(),
                       done.load(), double(done.load()) / std::max(1e-9, seconds_since(t0)));
      }
      queue.close();
    } catch (...) {
      fail(std::current_exception());
    }
  });
  std::vector<std::thread> workers;
  for (int w = 0; w < threads; ++w)
    workers.emplace_back([&, w] {
      try {
        std::vector<ScanItem> batch;
        while (queue.pop(batch)) {
          for (const ScanItem& it : batch) scan_sample(it.sample, it.shard, it.pos, opt, entries, parts[size_t(w)]);
          done += int64_t(batch.size());
        }
      } catch (...) {
        fail(std::current_exception());
      }
    });
  reader.join();
  for (auto& t : workers) t.join();
  if (error) std::rethrow_exception(error);
  Table t = merge_parts(parts, entries != nullptr);
  t.dropped = std::move(dropped);
  t.shards = std::move(shards);
  return t;
}

// ---------------------------------------------------------------------------------------------
// Exchange between processes
// ---------------------------------------------------------------------------------------------

std::string to_cbor_string(const json& j) {
  const std::vector<uint8_t> b = json::to_cbor(j);
  return std::string(b.begin(), b.end());
}

json from_cbor_string(const std::string& s) {
  try {
    return json::from_cbor(std::vector<uint8_t>(s.begin(), s.end()));
  } catch (const json::exception& e) {
    throw Error(std::string("curate: a rank sent malformed data: ") + e.what());
  }
}

/// Every rank's `mine`, in rank order.
std::vector<json> gather_json(const json& mine, const Collective& c) {
  if (c.world_size == 1) return {mine};
  const std::vector<std::string> all = c.all_gather(to_cbor_string(mine));
  if (int(all.size()) != c.world_size)
    throw Error("curate: all_gather returned " + std::to_string(all.size()) + " parts for world size " + std::to_string(c.world_size));
  std::vector<json> out;
  for (const auto& s : all) out.push_back(from_cbor_string(s));
  return out;
}

json table_to_json(const Table& t) {
  json j;
  j["rec"] = to_blob(t.rec);
  j["keys"] = json::binary_t(std::vector<uint8_t>(t.keys.blob.begin(), t.keys.blob.end()));
  j["key_end"] = to_blob(t.keys.end);
  j["ent_off"] = to_blob(t.ent_off);
  j["ent_ids"] = to_blob(t.ent_ids);
  json d = json::array();
  for (const auto& x : t.dropped) d.push_back({x.shard, x.reason, x.key});
  j["dropped"] = d;
  json s = json::array();
  for (size_t i = 0; i < t.shards.size(); ++i) {
    const ShardInfo& x = t.shards[i];
    if (x.scanned)
      s.push_back({i, x.unreadable, x.samples, x.missing_image, x.bad_text, x.corrupt, x.skipped_members, x.members,
                   x.truncated, x.problem});
  }
  j["shards"] = s;
  return j;
}

/// The global table: every rank's scan merged in (shard, pos) order (a no-op for one process).
Table exchange_tables(Table local, const Collective& c, size_t num_shards, bool with_entries) {
  if (c.world_size == 1) return local;
  const std::vector<json> all = gather_json(table_to_json(local), c);
  local = Table{};
  std::vector<Table> parts(all.size());
  std::vector<Dropped> dropped;
  std::vector<ShardInfo> shards(num_shards);
  for (size_t r = 0; r < all.size(); ++r) {
    const json& j = all[r];
    Table& p = parts[r];
    p.rec = from_blob<Record>(j.at("rec"), "rec");
    const auto& kb = j.at("keys").get_binary();
    p.keys.blob.assign(kb.begin(), kb.end());
    p.keys.end = from_blob<uint64_t>(j.at("key_end"), "key_end");
    p.ent_off = from_blob<uint32_t>(j.at("ent_off"), "ent_off");
    p.ent_ids = from_blob<uint32_t>(j.at("ent_ids"), "ent_ids");
    if (p.keys.end.size() != p.rec.size() || (with_entries && p.ent_off.size() != p.rec.size() + 1))
      throw Error("curate: rank " + std::to_string(r) + " sent an inconsistent table");
    for (const auto& d : j.at("dropped")) dropped.push_back({d[0].get<uint32_t>(), d[1].get<uint8_t>(), d[2].get<std::string>()});
    for (const auto& s : j.at("shards")) {
      ShardInfo& x = shards.at(s[0].get<size_t>());
      x.scanned = true;
      x.unreadable = s[1].get<bool>();
      x.samples = s[2].get<int64_t>();
      x.missing_image = s[3].get<int64_t>();
      x.bad_text = s[4].get<int64_t>();
      x.corrupt = s[5].get<int64_t>();
      x.skipped_members = s[6].get<int64_t>();
      x.members = s[7].get<int64_t>();
      x.truncated = s[8].get<bool>();
      x.problem = s[9].get<std::string>();
    }
  }
  Table t = merge_parts(parts, with_entries);
  std::stable_sort(dropped.begin(), dropped.end(), [](const Dropped& a, const Dropped& b) { return a.shard < b.shard; });
  t.dropped = std::move(dropped);
  t.shards = std::move(shards);
  return t;
}

/// [begin, end) of each shard's records in the (shard, pos)-sorted table.
std::vector<std::pair<size_t, size_t>> shard_ranges(const Table& t, size_t num_shards) {
  std::vector<std::pair<size_t, size_t>> r(num_shards, {0, 0});
  size_t i = 0;
  while (i < t.rec.size()) {
    size_t j = i;
    while (j < t.rec.size() && t.rec[j].shard == t.rec[i].shard) ++j;
    r[t.rec[i].shard] = {i, j};
    i = j;
  }
  return r;
}

// ---------------------------------------------------------------------------------------------
// Decisions
// ---------------------------------------------------------------------------------------------

void drop_record(Record& r, Stage stage, Reason reason, uint32_t duplicate_of = kNone, int distance = 0) {
  r.stage = stage;
  r.reason = reason;
  r.duplicate_of = duplicate_of;
  r.distance = uint8_t(distance);
}

/// Per-sample validity, then repeated keys within one input (`inputs[shard].input`): samples of
/// different inputs never collide, since their outputs go to separate folders.
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

struct Cluster {
  uint32_t rep = 0;
  std::vector<uint32_t> members;  // removed members, most distant first, then by key
  int max_distance = 0;
};

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

// ---------------------------------------------------------------------------------------------
// Pass 2: relevance scores of the survivors of one shard
// ---------------------------------------------------------------------------------------------

/// The alive samples of one shard, keyed by their record index (RelevanceScorer's contract).
class SurvivorSource : public data::SampleSource {
 public:
  SurvivorSource(std::string path, std::vector<std::pair<uint32_t, uint32_t>> wanted, const Table* table)
      : path_(std::move(path)), wanted_(std::move(wanted)), table_(table) {}
  size_t num_parts() const override { return 1; }
  void read_part(size_t part, const std::function<bool(data::Sample&)>& emit, data::SkipCounts& skips) const override {
    if (part != 0) throw Error("SurvivorSource: part out of range");
    data::ShardReader r(path_);
    data::Sample s;
    uint32_t pos = 0;
    size_t j = 0;
    while (j < wanted_.size() && r.next(s)) {
      if (pos == wanted_[j].first) {
        const uint32_t idx = wanted_[j].second;
        if (table_->keys.get(idx) != s.key)
          throw Error("curate: input shard '" + path_ + "' changed during curation (sample " + std::to_string(pos) + ")");
        s.key = std::to_string(idx);
        if (!emit(s)) return;
        ++j;
      }
      ++pos;
      s = data::Sample{};
    }
    if (j < wanted_.size()) throw Error("curate: input shard '" + path_ + "' changed during curation (fewer samples)");
  }
  std::string describe() const override { return "survivors of " + path_; }

 private:
  std::string path_;
  std::vector<std::pair<uint32_t, uint32_t>> wanted_;  // (pos, record index), by pos
  const Table* table_;
};

// ---------------------------------------------------------------------------------------------
// Output directory
// ---------------------------------------------------------------------------------------------

const char* const kTmpDir = ".curate-tmp";

/// What a previous curate run left in out_dir and may be removed (with overwrite).
struct PreviousOutput {
  std::vector<fs::path> files;  // listed shards + report.json / removed.jsonl / montage.png
  bool tmp_dir = false;         // out_dir/.curate-tmp (an interrupted run's partial shards)
};

/// Whether `j` is a report.json written by curate() (the keys every curate report has).
bool is_curate_report(const json& j) {
  return j.is_object() && j.contains("options") && j.contains("counts") && j.contains("stages") && j.contains("shards") &&
         j["shards"].is_array();
}

/// Checks out_dir against the inputs and finds what a previous curate run wrote there; touches
/// nothing. Throws florence::Error when out_dir lies inside an input (or the reverse), is not a
/// directory, holds curate output without `overwrite`, or holds files curate did not write:
/// .tar files (or removed.jsonl / montage.png) without a curate report.json, a report.json that
/// is not curate's, or .tar files the previous report does not list.
PreviousOutput check_out_dir(const CurateOptions& opt, const std::vector<InputShard>& inputs) {
  const fs::path out(opt.out_dir);
  for (const auto& in : inputs) {
    if (path_within(in.path, out))
      throw Error("curate: input shard '" + in.path + "' lies inside the output directory '" + opt.out_dir + "'");
    fs::path folder = fs::path(in.path).parent_path();
    if (folder.empty()) folder = ".";  // a bare shard name: the current folder
    if (path_within(out, folder))
      throw Error("curate: the output directory '" + opt.out_dir + "' lies inside the input folder of '" + in.path +
                  "'; choose a directory outside the input");
  }
  PreviousOutput prev;
  std::error_code ec;
  if (!fs::exists(out, ec)) return prev;
  if (!fs::is_directory(out, ec)) throw Error("curate: output '" + opt.out_dir + "' exists and is not a directory");
  // Every .tar below out_dir (our temporary folder aside), sorted for a stable message.
  std::vector<fs::path> tars;
  for (auto it = fs::recursive_directory_iterator(out, ec); !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it.depth() == 0 && it->path().filename() == kTmpDir) {
      it.disable_recursion_pending();
      continue;
    }
    if (it->is_regular_file() && it->path().extension() == ".tar") tars.push_back(it->path().lexically_normal());
  }
  if (ec) throw Error("curate: cannot list the output directory '" + opt.out_dir + "': " + ec.message());
  std::sort(tars.begin(), tars.end());
  prev.tmp_dir = fs::exists(out / kTmpDir, ec);
  std::vector<fs::path> side_files;
  for (const char* f : {"removed.jsonl", "montage.png"})
    if (fs::exists(out / f, ec)) side_files.push_back(out / f);
  const fs::path report_path = out / "report.json";
  const std::string refuse = "; curate never deletes files it did not write, even with --overwrite: choose another --out "
                             "or remove them yourself";
  if (!fs::exists(report_path, ec)) {
    if (!tars.empty())
      throw Error("curate: '" + opt.out_dir + "' holds " + std::to_string(tars.size()) + " .tar file(s) (" +
                  tars.front().lexically_relative(out).string() + ", ...) but no curate report.json: it is not the output "
                  "of a (finished) curate run and writing there would destroy it" + refuse);
    if (!side_files.empty())
      throw Error("curate: '" + opt.out_dir + "' holds " + side_files.front().filename().string() +
                  " but no curate report.json: it is not the output of a (finished) curate run" + refuse);
    if (prev.tmp_dir && !opt.overwrite)
      throw Error("curate: '" + opt.out_dir + "' holds an interrupted curate run (" + std::string(kTmpDir) +
                  "); pass --overwrite to replace it");
    return prev;
  }
  json report;
  try {
    std::ifstream in(report_path);
    report = json::parse(in);
  } catch (const json::exception& e) {
    throw Error("curate: '" + report_path.string() + "' is not valid JSON (" + e.what() +
                "), so '" + opt.out_dir + "' is not a curate output" + refuse);
  }
  if (!is_curate_report(report))
    throw Error("curate: '" + report_path.string() + "' is not a curate report, so '" + opt.out_dir +
                "' is not a curate output" + refuse);
  // The shards the previous run wrote: relative .tar paths inside out_dir.
  std::set<fs::path> listed;
  for (const json& sh : report["shards"]) {
    if (!sh.is_object() || !sh.contains("output") || !sh["output"].is_string()) continue;
    const fs::path rel = fs::path(sh["output"].get<std::string>()).lexically_normal();
    if (rel.empty() || rel.is_absolute() || rel.begin()->string() == ".." || rel.extension() != ".tar") continue;
    listed.insert((out / rel).lexically_normal());
  }
  for (const fs::path& p : tars)
    if (!listed.count(p))
      throw Error("curate: '" + opt.out_dir + "' holds '" + p.lexically_relative(out).string() +
                  "', which the curate report.json there does not list: it was not written by that curate run" + refuse);
  if (!opt.overwrite)
    throw Error("curate: '" + opt.out_dir + "' already holds curated output (report.json of an earlier run); pass "
                "--overwrite to replace it");
  prev.files = tars;
  prev.files.insert(prev.files.end(), side_files.begin(), side_files.end());
  prev.files.push_back(report_path);
  return prev;
}

/// Removes what check_out_dir found (rank 0; the caller synchronises the ranks afterwards).
void remove_previous_output(const CurateOptions& opt, const PreviousOutput& prev) {
  const fs::path out(opt.out_dir);
  for (const fs::path& p : prev.files) {
    std::error_code ec;
    fs::remove(p, ec);
    if (ec) throw Error("curate: cannot remove '" + p.string() + "' of the previous run: " + ec.message());
  }
  if (prev.tmp_dir) {
    std::error_code ec;
    fs::remove_all(out / kTmpDir, ec);
    if (ec) throw Error("curate: cannot remove '" + (out / kTmpDir).string() + "': " + ec.message());
  }
}

std::string removed_line(const Table& t, const std::vector<InputShard>& inputs, size_t i) {
  const Record& r = t.rec[i];
  json j{{"key", std::string(t.keys.get(i))}, {"shard", inputs[r.shard].path}, {"stage", kStageNames[r.stage]},
         {"reason", kReasonNames[r.reason]}};
  if (r.duplicate_of != kNone) {
    j["duplicate_of"] = std::string(t.keys.get(r.duplicate_of));
    const uint32_t rep_shard = t.rec[r.duplicate_of].shard;
    if (rep_shard != r.shard) j["duplicate_of_shard"] = inputs[rep_shard].path;
  }
  if (r.stage == kNear) j["distance"] = r.distance;
  if (r.stage == kRelevance && r.reason == kLowSimilarity) j["similarity"] = r.similarity;
  return j.dump();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

std::vector<InputShard> resolve_inputs(const std::vector<std::string>& inputs) {
  if (inputs.empty()) throw Error("curate: no input given");
  std::vector<InputShard> out;
  std::vector<std::pair<uint32_t, std::vector<std::string>>> listed;  // (input, shards)
  std::vector<fs::path> roots;
  for (uint32_t input = 0; input < inputs.size(); ++input) {
    const std::string& spec = inputs[input];
    std::vector<std::string> shards;
    fs::path root;
    std::error_code ec;
    if (fs::is_directory(spec, ec)) {
      root = fs::path(spec);
      std::vector<fs::path> subs;
      for (const auto& e : fs::directory_iterator(root, ec))
        if (e.is_directory() && dir_has_tar(e.path())) subs.push_back(e.path());
      std::sort(subs.begin(), subs.end());
      if (dir_has_tar(root)) {
        if (!subs.empty()) {
          // Reading only the top-level shards would drop the split folders' samples unnoticed.
          throw Error("curate: input '" + spec + "' holds .tar shards and also split folders with shards ('" +
                      subs.front().filename().string() + "'" + (subs.size() > 1 ? ", ..." : "") +
                      "); give the shards and each split folder as separate inputs");
        }
        shards = data::list_shards(spec);
      } else {
        for (const auto& s : subs)
          for (auto& p : data::list_shards(s.string())) shards.push_back(p);
        if (shards.empty()) throw Error("curate: input '" + spec + "' has no .tar shard (nor split folders holding shards)");
      }
    } else {
      shards = data::list_shards(spec);
      root = common_parent(shards);
    }
    // Named as given (absolute, "." and ".." folded), not resolved through symlinks: an input reached
    // through a linked folder keeps the name the user sees.
    roots.push_back(absolute_named(root.empty() ? fs::path(".") : root));
    listed.emplace_back(input, std::move(shards));
  }
  // With several inputs, each keeps its root's path below the roots' common folder as a prefix
  // (data/openclipart/train + data/emoji/train -> openclipart/train/..., emoji/train/...).
  fs::path common;
  if (roots.size() > 1) {
    common = roots.front();
    for (const auto& r : roots) {
      fs::path c;
      auto a = common.begin(), b = r.begin();
      for (; a != common.end() && b != r.end() && *a == *b; ++a, ++b) c /= *a;
      common = c;
    }
  }
  for (size_t i = 0; i < listed.size(); ++i) {
    const fs::path& root = roots[i];
    fs::path prefix;
    if (roots.size() > 1) {
      prefix = root.lexically_relative(common);
      if (prefix.empty() || prefix == ".") prefix = root.filename();  // the same root twice: collides below
      if (prefix.empty()) prefix = "input";
    }
    for (const auto& p : listed[i].second) {
      fs::path rel = absolute_named(p).lexically_relative(root);
      if (rel.empty() || rel.begin()->string() == "..") rel = fs::path(p).filename();
      out.push_back({p, (prefix / rel).lexically_normal().string(), listed[i].first});
    }
  }
  // The same file reached twice (a folder and a link to it, a hard link, or a shard in two inputs) would be read twice.
  std::unordered_map<std::string, std::string> physical;
  for (const auto& s : out) {
    struct stat st {};
    // (device, inode) names the file however it is reached (symlinks, hard links, other spellings).
    const std::string id = ::stat(s.path.c_str(), &st) == 0 ? fmt::format("{}:{}", st.st_dev, st.st_ino) : s.path;
    auto [it, fresh] = physical.emplace(id, s.path);
    if (!fresh)
      throw Error("curate: input shards '" + it->second + "' and '" + s.path + "' are the same file; list each shard once");
  }
  std::unordered_map<std::string, std::string> seen;
  for (const auto& s : out) {
    auto [it, fresh] = seen.emplace(s.out_rel, s.path);
    if (!fresh)
      throw Error("curate: input shards '" + it->second + "' and '" + s.path + "' would both be written to '" + s.out_rel +
                  "'; curate them separately or list each shard once");
  }
  return out;
}

void CurateOptions::validate_options() const {
  if (out_dir.empty()) throw Error("curate: no output directory (--out)");
  if (inputs.empty()) throw Error("curate: no input given");
  if (max_text_chars < 1) throw Error("curate: --max-text-chars must be >= 1");
  if (min_size < 0) throw Error("curate: --min-size must be >= 0");
  if (near_dup_threshold < 0 || near_dup_threshold > 64) throw Error("curate: --near-dup-threshold must be in [0, 64]");
  if (index_chunks < 0 || index_chunks > 16) throw Error("curate: --index-chunks must be in [0, 16] (0 = auto)");
  if (relevance) {
    if (!relevance_threshold && !relevance_percentile)
      throw Error("curate: the relevance stage needs --relevance-threshold or --relevance-percentile");
    if (relevance_threshold && relevance_percentile)
      throw Error("curate: --relevance-threshold and --relevance-percentile are mutually exclusive; give one cut");
    // Written so that NaN fails too.
    if (relevance_percentile && !(*relevance_percentile >= 0 && *relevance_percentile <= 100))
      throw Error(fmt::format("curate: --relevance-percentile must be in [0, 100] (got {})", *relevance_percentile));
    if (relevance_threshold && !(*relevance_threshold >= -1 && *relevance_threshold <= 1))
      throw Error(fmt::format("curate: --relevance-threshold is a cosine similarity and must be in [-1, 1] (got {})",
                              *relevance_threshold));
  } else if (relevance_threshold || relevance_percentile) {
    throw Error("curate: a relevance cut was given but the relevance stage is off (give --checkpoint, or list it in --stages)");
  }
  if (balance && !(balance_t > 0 && std::isfinite(balance_t)))
    throw Error("curate: the balance stage needs a finite --balance-t > 0");
  if (!balance && !balance_entries.empty()) throw Error("curate: --balance-entries given but the balance stage is off");
  if (montage_clusters < 0) throw Error("curate: --montage-clusters must be >= 0");
  if (montage_members < 2) throw Error("curate: --montage-members must be >= 2");
  if (montage_tile < 16) throw Error("curate: --montage-tile must be >= 16");
  if (threads < 0) throw Error("curate: --threads must be >= 0");
}

void CurateOptions::set_stages(const std::string& list) {
  const char* const known = "validate, small, exact, near, relevance, balance";
  if (list.empty()) throw Error(std::string("--stages: empty stage list; give a comma-separated list of ") + known);
  bool on[6] = {false, false, false, false, false, false};
  const char* const names[6] = {"validate", "small", "exact", "near", "relevance", "balance"};
  size_t begin = 0, item = 1;
  while (true) {
    const size_t end = list.find(',', begin);
    const std::string s = list.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
    if (s.empty())
      throw Error("--stages: empty item " + std::to_string(item) + " in '" + list + "' (a stray comma?); stages: " + known);
    const auto it = std::find_if(std::begin(names), std::end(names), [&](const char* n) { return s == n; });
    if (it == std::end(names)) throw Error("--stages: unknown stage '" + s + "' (" + known + ")");
    on[it - std::begin(names)] = true;
    if (end == std::string::npos) break;
    begin = end + 1;
    ++item;
  }
  validate = on[0];
  small = on[1];
  exact = on[2];
  near = on[3];
  relevance = on[4];
  balance = on[5];
}

std::string resolve_relevance_vocab(const eval::LoadOptions& m) {
  if (!m.vocab.empty()) {
    std::error_code ec;
    if (!fs::is_regular_file(m.vocab, ec)) throw Error("curate: --vocab '" + m.vocab + "' does not exist (or is not a file)");
    return m.vocab;
  }
  if (m.checkpoint.empty()) return "";
  const std::string side_path = model::sidecar_path(m.checkpoint);
  json side;
  std::error_code ec;
  if (fs::is_regular_file(side_path, ec)) {
    std::ifstream in(side_path);
    try {
      side = json::parse(in);
    } catch (const json::exception& e) {
      throw Error("checkpoint sidecar '" + side_path + "' is not valid JSON: " + e.what());
    }
  }
  const fs::path side_dir = fs::absolute(side_path).parent_path();
  const fs::path ck_dir = fs::absolute(m.checkpoint).parent_path();
  const fs::path run_dir = ck_dir.filename() == "checkpoints" ? ck_dir.parent_path() : ck_dir;
  std::vector<std::string> tried, named;  // every path looked at; the sidecar's entries
  auto exists = [&](const fs::path& p) {
    tried.push_back(p.string());
    std::error_code e;
    return fs::is_regular_file(p, e);
  };
  // A sidecar path as written (relative to the current folder), then relative to the sidecar.
  auto from_side = [&](const json::json_pointer& ptr) -> std::string {
    if (!side.is_object() || !side.contains(ptr) || !side[ptr].is_string() || side[ptr].get<std::string>().empty()) return "";
    const fs::path v = side[ptr].get<std::string>();
    named.push_back(ptr.to_string() + " = '" + v.string() + "'");
    if (exists(v)) return v.string();
    if (v.is_relative() && exists(side_dir / v)) return (side_dir / v).string();
    return "";
  };
  std::string vocab = from_side(json::json_pointer("/vocab"));
  for (const fs::path& dir : {ck_dir, run_dir}) {
    for (const char* name : {"vocab.bpe.gz", "vocab.bpe"})
      if (vocab.empty() && exists(dir / name)) vocab = (dir / name).string();
    if (run_dir == ck_dir) break;
  }
  if (vocab.empty()) vocab = from_side(json::json_pointer("/train_state/options/vocab"));
  if (!vocab.empty()) {
    spdlog::info("curate: relevance vocabulary {} (from the checkpoint's run)", vocab);
    return vocab;
  }
  std::string looked;
  for (const auto& p : tried) looked += (looked.empty() ? "" : ", ") + p;
  if (!named.empty()) {
    std::string names;
    for (const auto& n : named) names += (names.empty() ? "" : ", ") + n;
    throw Error("curate: the relevance stage needs a BPE vocabulary: the checkpoint sidecar '" + side_path + "' names " +
                names + ", which does not exist (looked at: " + looked +
                "); pass --vocab FILE (paths in the sidecar are relative to the folder training ran in)");
  }
  throw Error("curate: the relevance stage needs a BPE vocabulary: no --vocab, " +
              (side.is_object() ? "no \"vocab\" in the checkpoint sidecar '" + side_path + "'"
                                : "no checkpoint sidecar ('" + side_path + "')") +
              ", and none beside the checkpoint (looked at: " + looked + "); pass --vocab FILE");
}

json CurateOptions::to_json() const {
  json stages = json::array();
  if (validate) stages.push_back("validate");
  if (small) stages.push_back("small");
  if (exact) stages.push_back("exact");
  if (near) stages.push_back("near");
  if (relevance) stages.push_back("relevance");
  if (balance) stages.push_back("balance");
  json j{{"stages", stages},
         {"max_text_chars", max_text_chars},
         {"allow_empty_text", allow_empty_text},
         {"max_pixels", max_pixels},
         {"min_size", min_size},
         {"hash", hash_kind_name(hash)},
         {"near_dup_threshold", near_dup_threshold},
         {"cluster", cluster_mode_name(cluster)},
         {"index_chunks", index_chunks},
         {"seed", seed},
         {"montage_clusters", montage_clusters},
         {"montage_members", montage_members},
         {"montage_tile", montage_tile}};
  if (relevance) {
    j["relevance_threshold"] = relevance_threshold ? json(*relevance_threshold) : json(nullptr);
    j["relevance_percentile"] = relevance_percentile ? json(*relevance_percentile) : json(nullptr);
    j["checkpoint"] = model.checkpoint;
    j["model"] = model.model;
  }
  if (balance) {
    j["balance_t"] = balance_t;
    j["balance_entries"] = balance_entries;
  }
  return j;
}

namespace {

struct Score {
  uint32_t idx;
  float value;
};

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

/// Balancing over the alive records; fills `examples` with (record, top-entry rank) for the most
/// frequent entries in text mode so pass 3 can quote their text.
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

std::vector<std::vector<uint32_t>> select_montage(const Table& t, const std::vector<Cluster>& clusters,
                                                  const CurateOptions& opt) {
  const size_t k = std::min<size_t>(size_t(opt.montage_clusters), clusters.size());
  std::vector<size_t> order(clusters.size());
  std::iota(order.begin(), order.end(), size_t(0));
  // Half the rows: the most doubtful clusters (largest distance to the representative) ...
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (clusters[a].max_distance != clusters[b].max_distance) return clusters[a].max_distance > clusters[b].max_distance;
    return t.keys.get(clusters[a].rep) < t.keys.get(clusters[b].rep);
  });
  const size_t doubtful = (k + 1) / 2;
  std::vector<size_t> chosen(order.begin(), order.begin() + long(doubtful));
  // ... the other half: a seeded sample of the rest.
  std::vector<size_t> rest(order.begin() + long(doubtful), order.end());
  constexpr uint64_t kMontageTag = 0x6d6f6e74616765ull;  // "montage"
  std::sort(rest.begin(), rest.end(), [&](size_t a, size_t b) {
    const double ua = balance_uniform(opt.seed, t.keys.get(clusters[a].rep), kMontageTag);
    const double ub = balance_uniform(opt.seed, t.keys.get(clusters[b].rep), kMontageTag);
    return ua != ub ? ua < ub : a < b;
  });
  for (size_t i = 0; i < rest.size() && chosen.size() < k; ++i) chosen.push_back(rest[i]);
  std::vector<std::vector<uint32_t>> rows;
  for (size_t c : chosen) {
    std::vector<uint32_t> row{clusters[c].rep};
    for (uint32_t m : clusters[c].members) {
      if (int(row.size()) >= opt.montage_members) break;
      row.push_back(m);
    }
    rows.push_back(row);
  }
  return rows;
}

using core::write_text_atomic;

}  // namespace

json curate(const CurateOptions& opt, const Collective& coll) {
  opt.validate_options();
  if (coll.world_size < 1 || coll.rank < 0 || coll.rank >= coll.world_size)
    throw Error("curate: bad rank " + std::to_string(coll.rank) + " / world size " + std::to_string(coll.world_size));
  if (coll.world_size > 1 && !coll.all_gather) throw Error("curate: world size > 1 needs an all_gather");
  const auto t_start = Clock::now();
  const int threads = resolve_threads(opt.threads);
  const std::vector<InputShard> inputs = resolve_inputs(opt.inputs);
  if (inputs.size() >= kNone) throw Error("curate: too many input shards");
  // Everything that can fail on the options is checked before out_dir is touched: the folder
  // itself (read-only), the entry list, the relevance model and its vocabulary.
  const PreviousOutput previous = check_out_dir(opt, inputs);
  const fs::path out(opt.out_dir);
  std::vector<uint32_t> own;
  for (uint32_t i = 0; i < inputs.size(); ++i)
    if (int(i % uint32_t(coll.world_size)) == coll.rank) own.push_back(i);
  std::unique_ptr<EntryList> entries;
  if (opt.balance && !opt.balance_entries.empty()) entries = std::make_unique<EntryList>(EntryList::from_file(opt.balance_entries));
  std::unique_ptr<RelevanceScorer> scorer;
  std::string vocab;
  if (opt.relevance) {
    eval::LoadOptions lo = opt.model;
    vocab = resolve_relevance_vocab(lo);
    lo.vocab = vocab;
    scorer = std::make_unique<RelevanceScorer>(lo, threads);
  }
  if (opt.progress)
    spdlog::info("curate: rank {}/{}: {} of {} input shard(s), {} thread(s)", coll.rank, coll.world_size, own.size(),
                 inputs.size(), threads);

  // Pass 1: scan this rank's shards, then the global table.
  auto t0 = Clock::now();
  Table local = scan(inputs, own, opt, entries.get(), threads);
  const int64_t scanned_here = int64_t(local.rec.size());
  const double scan_s = seconds_since(t0);
  Table t = exchange_tables(std::move(local), coll, inputs.size(), entries != nullptr);
  if (t.rec.size() >= kNone) throw Error("curate: more than 2^32 - 2 samples in one run");
  {
    size_t unreadable = 0, first = inputs.size();
    for (size_t i = 0; i < t.shards.size(); ++i)
      if (t.shards[i].unreadable) {
        ++unreadable;
        first = std::min(first, i);
      }
    if (unreadable == inputs.size())
      throw Error("curate: none of the " + std::to_string(inputs.size()) + " input shard(s) could be read (e.g. '" +
                  inputs[first].path + "': " + t.shards[first].problem + "); nothing to curate");
  }
  const auto ranges = shard_ranges(t, inputs.size());

  // Stages 1-4 on the global table (every rank takes the same decisions).
  t0 = Clock::now();
  json exact_info = nullptr, near_info = nullptr, relevance_info = nullptr, balance_info = nullptr;
  std::vector<Cluster> clusters;
  if (opt.validate) decide_validate(t, opt, inputs);
  if (opt.small) decide_small(t, opt);
  if (opt.exact) exact_info = decide_exact(t, opt);
  if (opt.near) near_info = decide_near(t, opt, threads, clusters);
  double decide_s = seconds_since(t0);

  // Pass 2: relevance scores of this rank's survivors, then all of them.
  double score_s = 0;
  // The later passes read the shards again: the reader's warnings were logged in pass 1.
  ReaderWarningFilter quiet_reader;
  if (opt.relevance) {
    t0 = Clock::now();
    std::vector<Score> mine;
    for (uint32_t gi : own) {
      std::vector<std::pair<uint32_t, uint32_t>> wanted;
      for (size_t i = ranges[gi].first; i < ranges[gi].second; ++i)
        if (t.rec[i].stage == kKept) wanted.emplace_back(t.rec[i].pos, uint32_t(i));
      if (wanted.empty()) continue;
      for (const auto& [idx, s] : scorer->score(std::make_shared<SurvivorSource>(inputs[gi].path, std::move(wanted), &t)))
        mine.push_back({idx, s});
      if (opt.progress) spdlog::info("curate: relevance: {} pair(s) scored", mine.size());
    }
    std::vector<Score> all;
    for (const json& j : gather_json(json{{"scores", to_blob(mine)}}, coll)) {
      const auto part = from_blob<Score>(j.at("scores"), "scores");
      all.insert(all.end(), part.begin(), part.end());
    }
    score_s = seconds_since(t0);
    t0 = Clock::now();
    relevance_info = decide_relevance(t, opt, all, scorer->describe());
    relevance_info["vocab"] = vocab;
    decide_s += seconds_since(t0);
  }
  std::vector<uint32_t> examples;
  if (opt.balance) {
    t0 = Clock::now();
    balance_info = decide_balance(t, opt, entries.get(), examples);
    decide_s += seconds_since(t0);
  }

  // Only now, with every decision taken, the previous run's files go (rank 0), and no rank
  // starts writing before they are gone.
  if (coll.rank == 0) remove_previous_output(opt, previous);
  if (coll.world_size > 1) gather_json(json::object(), coll);

  // Pass 3: write this rank's curated shards; thumbnails for the montage, texts for the report.
  t0 = Clock::now();
  const auto montage_rows = opt.near && opt.montage_clusters > 0 ? select_montage(t, clusters, opt)
                                                                  : std::vector<std::vector<uint32_t>>{};
  std::set<uint32_t> montage_idx, example_idx(examples.begin(), examples.end());
  for (const auto& row : montage_rows) montage_idx.insert(row.begin(), row.end());
  std::mutex mu;
  json thumbs = json::object(), texts = json::object(), written = json::array();
  parallel_ranges(own.size(), threads, [&](size_t b, size_t e) {
    for (size_t k = b; k < e; ++k) {
      const uint32_t gi = own[k];
      const auto [first, last] = ranges[gi];
      int64_t kept = 0;
      bool wanted = false;
      for (size_t i = first; i < last; ++i) {
        if (t.rec[i].stage == kKept) ++kept;
        if (montage_idx.count(uint32_t(i)) || example_idx.count(uint32_t(i))) wanted = true;
      }
      if (kept == 0 && !wanted) continue;
      std::unique_ptr<data::ShardWriter> w;
      const fs::path tmp = out / kTmpDir / std::to_string(gi);
      if (kept > 0) {
        std::error_code ec;
        fs::remove_all(tmp, ec);
        data::ShardWriterOptions wo;
        wo.max_samples_per_shard = std::numeric_limits<int64_t>::max();
        wo.max_bytes = std::numeric_limits<int64_t>::max();
        wo.pattern = "%d.tar";
        w = std::make_unique<data::ShardWriter>(tmp.string(), wo);
      }
      data::ShardReader r(inputs[gi].path);
      data::Sample s;
      size_t i = first;
      while (i < last && r.next(s)) {
        if (t.keys.get(i) != s.key)
          throw Error("curate: input shard '" + inputs[gi].path + "' changed during curation (sample " +
                      std::to_string(i - first) + ")");
        if (t.rec[i].stage == kKept) w->write(s);
        if (montage_idx.count(uint32_t(i))) {
          std::vector<uint8_t> png;
          try {
            data::DecodeOptions d;
            d.max_pixels = opt.max_pixels;
            cv::Mat bgr;
            cv::cvtColor(thumbnail(data::decode_rgb(s.image, d), opt.montage_tile), bgr, cv::COLOR_RGB2BGR);
            cv::imencode(".png", bgr, png);
          } catch (const std::exception& ex) {
            spdlog::warn("curate: montage: cannot decode '{}': {}", s.key, ex.what());
          }
          std::lock_guard<std::mutex> lk(mu);
          thumbs[std::to_string(i)] = json::binary_t(std::move(png));
        }
        if (example_idx.count(uint32_t(i))) {
          std::lock_guard<std::mutex> lk(mu);
          texts[std::to_string(i)] = s.text;
        }
        ++i;
        s = data::Sample{};
      }
      if (i < last) throw Error("curate: input shard '" + inputs[gi].path + "' changed during curation (fewer samples)");
      int64_t bytes = 0;
      if (w) {
        w->close();
        if (w->shards().size() != 1) throw Error("curate: internal: curated shard split unexpectedly");
        const fs::path target = out / inputs[gi].out_rel;
        fs::create_directories(target.parent_path());
        fs::rename(w->shards().front(), target);
        std::error_code ec;
        fs::remove_all(tmp, ec);
        bytes = int64_t(fs::file_size(target));
      }
      std::lock_guard<std::mutex> lk(mu);
      written.push_back({gi, kept, bytes});
    }
  });
  const double write_s = seconds_since(t0);
  const json perf_here{{"rank", coll.rank},
                       {"scanned", scanned_here},
                       {"scan_s", scan_s},
                       {"score_s", score_s},
                       {"write_s", write_s},
                       {"total_s", seconds_since(t_start)},
                       {"peak_rss_bytes", peak_rss_bytes()}};
  const std::vector<json> finals =
      gather_json(json{{"thumbs", thumbs}, {"texts", texts}, {"written", written}, {"perf", perf_here}}, coll);

  // ---- Report (identical on every rank; rank 0 writes the files) ----
  std::map<uint32_t, std::pair<int64_t, int64_t>> written_by_shard;
  std::map<uint32_t, std::vector<uint8_t>> thumb_by_idx;
  std::map<uint32_t, std::string> text_by_idx;
  json perf_ranks = json::array();
  for (const json& f : finals) {
    for (const auto& w : f.at("written")) written_by_shard[w[0].get<uint32_t>()] = {w[1].get<int64_t>(), w[2].get<int64_t>()};
    for (const auto& [k, v] : f.at("thumbs").items()) thumb_by_idx[uint32_t(std::stoul(k))] = v.get_binary();
    for (const auto& [k, v] : f.at("texts").items()) text_by_idx[uint32_t(std::stoul(k))] = v.get<std::string>();
    perf_ranks.push_back(f.at("perf"));
  }
  if (balance_info.is_object())
    for (auto& e : balance_info["top_entries"])
      if (e.contains("example_key"))
        for (const auto& [idx, text] : text_by_idx)
          if (t.keys.get(idx) == e["example_key"].get<std::string>()) e["text"] = text;

  // Counts per stage.
  int64_t dropped_samples = 0;
  std::map<std::string, int64_t> dropped_reasons;
  for (const Dropped& d : t.dropped) {
    if (d.reason != kUnreadableShard) {
      ++dropped_samples;
      ++dropped_reasons[kReasonNames[d.reason]];
    }
  }
  std::vector<int64_t> removed_by_stage(kNumStages, 0);
  std::vector<std::map<std::string, int64_t>> reasons(kNumStages);
  for (const Record& r : t.rec) {
    ++removed_by_stage[r.stage];
    if (r.stage != kKept) ++reasons[r.stage][kReasonNames[r.reason]];
  }
  removed_by_stage[kValidate] += dropped_samples;
  for (const auto& [k, v] : dropped_reasons) reasons[kValidate][k] += v;
  const int64_t input_total = int64_t(t.rec.size()) + dropped_samples;
  const bool enabled[kNumStages] = {true, opt.validate, opt.small, opt.exact, opt.near, opt.relevance, opt.balance};
  json stages = json::array();
  int64_t flowing = input_total;
  for (int s = kValidate; s < kNumStages; ++s) {
    json rj = json::object();
    for (const auto& [k, v] : reasons[size_t(s)]) rj[k] = v;
    stages.push_back({{"stage", kStageNames[s]},
                      {"enabled", enabled[s]},
                      {"in", flowing},
                      {"removed", removed_by_stage[size_t(s)]},
                      {"out", flowing - removed_by_stage[size_t(s)]},
                      {"reasons", rj}});
    flowing -= removed_by_stage[size_t(s)];
  }
  const int64_t kept_total = removed_by_stage[kKept];

  // Distributions.
  const std::vector<double> side_edges{0, 16, 32, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 2048};
  const std::vector<double> text_edges{0, 1, 8, 16, 32, 64, 128, 256, 512, 1024};
  auto dists = [&](bool kept_only) {
    std::vector<double> w, h, side, chars;
    for (const Record& r : t.rec) {
      if (kept_only && r.stage != kKept) continue;
      chars.push_back(r.text_chars);
      if (!r.decoded()) continue;
      w.push_back(r.width);
      h.push_back(r.height);
      side.push_back(std::min(r.width, r.height));
    }
    return json{{"width", distribution(w, side_edges)},
                {"height", distribution(h, side_edges)},
                {"shorter_side", distribution(side, side_edges)},
                {"text_chars", distribution(chars, text_edges)}};
  };

  json shards = json::array(), problem_shards = json::array();
  int64_t unreadable_count = 0, truncated_count = 0;
  for (uint32_t gi = 0; gi < inputs.size(); ++gi) {
    const ShardInfo& si = t.shards[gi];
    const auto wit = written_by_shard.find(gi);
    const int64_t kept = wit == written_by_shard.end() ? 0 : wit->second.first;
    json sj{{"input", inputs[gi].path},
            {"output", kept > 0 ? json(inputs[gi].out_rel) : json(nullptr)},
            {"read", int64_t(ranges[gi].second - ranges[gi].first)},
            {"kept", kept},
            {"bytes", wit == written_by_shard.end() ? 0 : wit->second.second}};
    if (si.unreadable) sj["unreadable"] = true;
    if (si.truncated) sj["truncated"] = true;
    if (!si.problem.empty()) {
      sj["problem"] = si.problem;
      problem_shards.push_back({{"input", inputs[gi].path},
                                {"problem", si.unreadable ? "unreadable" : "truncated"},
                                {"reason", si.problem},
                                {"samples_read", si.samples}});
      ++(si.unreadable ? unreadable_count : truncated_count);
    }
    if (si.missing_image + si.bad_text + si.corrupt > 0)
      sj["reader"] = {{"missing_image", si.missing_image}, {"bad_text", si.bad_text}, {"corrupt_events", si.corrupt}};
    shards.push_back(sj);
  }

  double total_s = 0, scan_max = 0, score_max = 0, write_max = 0;
  int64_t rss_max = 0, scanned_all = 0;
  for (const json& p : perf_ranks) {
    total_s = std::max(total_s, p.at("total_s").get<double>());
    scan_max = std::max(scan_max, p.at("scan_s").get<double>());
    score_max = std::max(score_max, p.at("score_s").get<double>());
    write_max = std::max(write_max, p.at("write_s").get<double>());
    rss_max = std::max(rss_max, p.at("peak_rss_bytes").get<int64_t>());
    scanned_all += p.at("scanned").get<int64_t>();
  }
  // Per-image figures only when there are images (null otherwise, "n/a" in the summary).
  const json table_per_image = t.rec.empty() ? json(nullptr) : json(double(t.bytes()) / double(t.rec.size()));
  json perf{{"world_size", coll.world_size},
            {"threads", threads},
            {"seconds", {{"scan", scan_max}, {"decide", decide_s}, {"score", score_max}, {"write", write_max}, {"total", total_s}}},
            {"scan_images_per_s", double(scanned_all) / std::max(1e-9, scan_max)},
            {"images_per_s", double(input_total) / std::max(1e-9, total_s)},
            {"peak_rss_bytes", rss_max},
            {"table_bytes_per_image", table_per_image},
            {"index_bytes_per_image", near_info.is_object() ? near_info["index"]["bytes_per_image"] : json(0)},
            {"ranks", perf_ranks}};

  json report{{"inputs", opt.inputs},
              {"out_dir", opt.out_dir},
              {"options", opt.to_json()},
              {"counts", {{"input", input_total}, {"kept", kept_total}, {"removed", input_total - kept_total},
                          {"input_shards", inputs.size()}, {"unreadable_shards", unreadable_count},
                          {"truncated_shards", truncated_count}}},
              {"problem_shards", problem_shards},
              {"stages", stages},
              {"exact", exact_info},
              {"near", near_info},
              {"relevance", relevance_info},
              {"balance", balance_info},
              {"distributions", {{"input", dists(false)}, {"output", dists(true)}}},
              {"shards", shards},
              {"montage", nullptr},
              {"performance", perf}};

  if (coll.rank == 0) {
    fs::create_directories(out);
    // removed.jsonl in input order; reader drops after their shard's records.
    {
      const fs::path path = out / "removed.jsonl", tmp = out / ".removed.jsonl.tmp";
      std::ofstream f(tmp, std::ios::binary);
      size_t d = 0;
      for (uint32_t gi = 0; gi < inputs.size(); ++gi) {
        for (size_t i = ranges[gi].first; i < ranges[gi].second; ++i)
          if (t.rec[i].stage != kKept) f << removed_line(t, inputs, i) << "\n";
        for (; d < t.dropped.size() && t.dropped[d].shard == gi; ++d) {
          const Dropped& x = t.dropped[d];
          json line{{"key", x.key.empty() ? json(nullptr) : json(x.key)}, {"shard", inputs[gi].path}, {"stage", "validate"},
                    {"reason", kReasonNames[x.reason]}};
          if (x.reason == kUnreadableShard) line["error"] = t.shards[gi].problem;
          f << line.dump() << "\n";
        }
      }
      if (!f) throw Error("curate: cannot write '" + tmp.string() + "'");
      f.close();
      fs::rename(tmp, path);
    }
    if (!montage_rows.empty()) {
      std::vector<std::vector<MontageTile>> rows;
      for (const auto& row : montage_rows) {
        std::vector<MontageTile> tiles;
        for (uint32_t idx : row) {
          MontageTile tile;
          auto it = thumb_by_idx.find(idx);
          if (it != thumb_by_idx.end() && !it->second.empty()) {
            cv::Mat bgr = cv::imdecode(it->second, cv::IMREAD_COLOR);
            if (!bgr.empty()) cv::cvtColor(bgr, tile.rgb, cv::COLOR_BGR2RGB);
          }
          const Record& r = t.rec[idx];
          tile.representative = r.stage != kNear;
          tile.caption = (tile.representative ? std::string("rep ") : "d=" + std::to_string(r.distance) + " ") +
                         std::to_string(r.width) + "x" + std::to_string(r.height);
          tile.subcaption = std::string(t.keys.get(idx));
          tiles.push_back(std::move(tile));
        }
        rows.push_back(std::move(tiles));
      }
      const std::string title = fmt::format("{} clusters of {} (Hamming <= {}); {} shown. green: kept, red: removed, d: distance",
                                            clusters.size(), hash_kind_name(opt.hash), opt.near_dup_threshold, rows.size());
      write_png_rgb(compose_montage(rows, opt.montage_tile, title), (out / "montage.png").string());
      report["montage"] = "montage.png";
    }
    write_text_atomic(out / "report.json", report.dump(2) + "\n");
    std::error_code ec;
    fs::remove_all(out / kTmpDir, ec);
  } else if (!montage_rows.empty()) {
    report["montage"] = "montage.png";
  }
  return report;
}

std::string format_curate_summary(const json& r) {
  // A per-image figure: "n/a" when the report has none (no image to divide by).
  auto per_image = [](const json& v) { return v.is_number() ? fmt::format("{:.1f}", v.get<double>()) : std::string("n/a"); };
  std::string s;
  const json& c = r.at("counts");
  s += fmt::format("curate: {} sample(s) in, {} kept, {} removed ({} input shard(s))\n", c.at("input").get<int64_t>(),
                   c.at("kept").get<int64_t>(), c.at("removed").get<int64_t>(), c.at("input_shards").get<int64_t>());
  const int64_t unreadable = c.value("unreadable_shards", int64_t(0)), truncated = c.value("truncated_shards", int64_t(0));
  if (unreadable + truncated > 0) {
    s += fmt::format("  problem shards: {} unreadable (skipped), {} truncated (samples before the error used); see "
                     "report.json \"problem_shards\"\n",
                     unreadable, truncated);
    constexpr size_t kShown = 5;
    const json& list = r.contains("problem_shards") ? r.at("problem_shards") : json::array();
    for (size_t i = 0; i < list.size() && i < kShown; ++i)
      s += fmt::format("    {} {}: {}\n", list[i].at("problem").get<std::string>(), list[i].at("input").get<std::string>(),
                       list[i].at("reason").get<std::string>());
    if (list.size() > kShown) s += fmt::format("    ... and {} more\n", list.size() - kShown);
  }
  for (const json& st : r.at("stages")) {
    if (!st.at("enabled").get<bool>() && st.at("removed").get<int64_t>() == 0) continue;
    std::string why;
    for (const auto& [k, v] : st.at("reasons").items()) why += fmt::format("{}{} {}", why.empty() ? "" : ", ", v.get<int64_t>(), k);
    s += fmt::format("  {:<10} {:>9} -> {:>9}  (-{}{}{})\n", st.at("stage").get<std::string>(), st.at("in").get<int64_t>(),
                     st.at("out").get<int64_t>(), st.at("removed").get<int64_t>(), why.empty() ? "" : ": ", why);
  }
  if (r.at("near").is_object()) {
    const json& n = r.at("near");
    const json& ix = n.at("index");
    s += fmt::format("  near-dup: {} cluster(s); index: {} chunk(s), {:.1f} candidates/query (brute force: {:.0f} pairs), {} bytes/image\n",
                     n.at("clusters").get<int64_t>(), ix.at("chunks").get<int>(), ix.at("candidates_per_query").get<double>(),
                     ix.at("brute_force_comparisons").get<double>(), per_image(ix.at("bytes_per_image")));
  }
  if (r.at("relevance").is_object() && r.at("relevance").at("cut").is_number())
    s += fmt::format("  relevance: cut {:.4f} over {} scored pair(s)\n", r.at("relevance").at("cut").get<double>(),
                     r.at("relevance").at("scored").get<int64_t>());
  const json& p = r.at("performance");
  s += fmt::format("  throughput: {:.1f} images/s overall, scan {:.1f} images/s ({} process(es) x {} thread(s)); {:.2f} s total\n",
                   p.at("images_per_s").get<double>(), p.at("scan_images_per_s").get<double>(), p.at("world_size").get<int>(),
                   p.at("threads").get<int>(), p.at("seconds").at("total").get<double>());
  s += fmt::format("  memory: peak RSS {:.1f} MiB; state {} bytes/image (records + keys) + {} bytes/image (hash index)\n",
                   double(p.at("peak_rss_bytes").get<int64_t>()) / (1 << 20), per_image(p.at("table_bytes_per_image")),
                   per_image(p.at("index_bytes_per_image")));
  return s;
}

}  // namespace florence::curate
