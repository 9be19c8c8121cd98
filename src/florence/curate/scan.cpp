// Pass 1 of the curation pipeline: read, decode and hash every sample once; see scan.h.
#include "florence/curate/scan.h"

#include <archive.h>
#include <archive_entry.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>
#include <xxhash.h>

#include <opencv2/core.hpp>

#include <algorithm>
#include <atomic>
#include <exception>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string_view>
#include <thread>
#include <unordered_map>

#include "florence/core/bounded_queue.h"
#include "florence/core/strings.h"
#include "florence/curate/balance.h"
#include "florence/curate/phash.h"
#include "florence/data/readers.h"
#include "florence/data/transforms.h"
#include "florence/data/webdataset.h"

namespace fs = std::filesystem;

namespace florence::curate::detail {

namespace {

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


/// One member group of a tar, from its headers.
struct MemberGroup {
  std::string key;
  bool has_image = false;        ///< a member with a decodable image extension
  bool has_unsupported = false;  ///< a member with an image extension that is not decoded (gif, ...)
};

/// Member groups of a tar from the headers only, like ShardReader groups them (consecutive members
/// sharing a key). Stops at the first fatal error.
std::vector<MemberGroup> list_member_groups(const std::string& path) {
  std::vector<MemberGroup> groups;
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
    if (groups.empty() || groups.back().key != key) groups.push_back({key});
    const std::string lext = core::ascii_lower(ext);
    if (data::is_image_extension(lext)) groups.back().has_image = true;
    if (data::is_unsupported_image_extension(lext)) groups.back().has_unsupported = true;
  }
  archive_read_free(ar);
  return groups;
}

/// The samples a ShardReader dropped from `path` (stats), with their keys recovered from the tar
/// headers: groups that were not returned. Counts the reader reports but the headers do not show
/// become entries without a key, so no drop goes unrecorded. Unsafe keys are recorded in their
/// printable form (sample.h printable_key).
void recover_dropped(const std::string& path, uint32_t shard, const std::vector<std::string>& returned,
                     const data::ShardStats& st, std::vector<Dropped>& out) {
  if (st.missing_image + st.bad_text + st.corrupt + st.unsafe_key + st.unsupported_format == 0) return;
  std::unordered_map<std::string, int64_t> seen;
  for (const auto& k : returned) ++seen[k];
  int64_t missing_left = st.missing_image, bad_text_left = st.bad_text, unsafe_left = st.unsafe_key,
          unsupported_left = st.unsupported_format;
  for (const MemberGroup& g : list_member_groups(path)) {
    auto it = seen.find(g.key);
    if (it != seen.end() && it->second > 0) {
      --it->second;
      continue;
    }
    if (unsafe_left > 0 && !data::is_safe_sample_key(g.key)) {
      --unsafe_left;
      out.push_back({shard, kUnsafeKey, data::printable_key(g.key)});
    } else if (!g.has_image && g.has_unsupported && unsupported_left > 0) {
      --unsupported_left;
      out.push_back({shard, kUnsupportedFormat, g.key});
    } else if (!g.has_image) {
      if (missing_left > 0) {
        --missing_left;
        out.push_back({shard, kMissingImage, g.key});
      }
    } else if (bad_text_left > 0) {
      --bad_text_left;
      out.push_back({shard, kInvalidUtf8, g.key});
    } else {
      out.push_back({shard, kCorruptMember, g.key});
    }
  }
  for (; missing_left > 0; --missing_left) out.push_back({shard, kMissingImage, ""});
  for (; bad_text_left > 0; --bad_text_left) out.push_back({shard, kInvalidUtf8, ""});
  for (; unsafe_left > 0; --unsafe_left) out.push_back({shard, kUnsafeKey, ""});
  for (; unsupported_left > 0; --unsupported_left) out.push_back({shard, kUnsupportedFormat, ""});
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

struct ScanItem {
  uint32_t shard = 0, pos = 0;
  data::Sample sample;
};

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

std::mutex& filter_mutex() {
  static std::mutex m;
  return m;
}
int& filter_depth() {
  static int d = 0;
  return d;
}
std::shared_ptr<spdlog::logger>& saved_logger() {
  static std::shared_ptr<spdlog::logger> l;
  return l;
}

}  // namespace

ReaderWarningFilter::ReaderWarningFilter() {
  std::lock_guard<std::mutex> lk(filter_mutex());
  if (filter_depth()++ > 0) return;
  auto& saved = saved_logger();
  saved = spdlog::default_logger();
  auto quiet = std::make_shared<spdlog::logger>(saved->name(), std::make_shared<NoShardReaderSink>(saved->sinks()));
  quiet->set_level(saved->level());
  quiet->flush_on(saved->flush_level());
  spdlog::set_default_logger(quiet);
}

ReaderWarningFilter::~ReaderWarningFilter() {
  std::lock_guard<std::mutex> lk(filter_mutex());
  if (--filter_depth() > 0) return;
  spdlog::set_default_logger(saved_logger());
  saved_logger().reset();
}

Table scan(const std::vector<InputShard>& inputs, const std::vector<uint32_t>& own, const CurateOptions& opt,
           const EntryList* entries, int threads) {
  constexpr size_t kBatch = 16;
  core::BoundedQueue<std::vector<ScanItem>> queue(size_t(threads) * 4);
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

}  // namespace florence::curate::detail
