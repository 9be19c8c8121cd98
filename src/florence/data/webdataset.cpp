// WebDataset shard writer/reader over libarchive (see webdataset.h for the layout and rules).
#include "florence/data/webdataset.h"

#include <archive.h>
#include <archive_entry.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <system_error>

#include "florence/core/error.h"
#include "florence/core/strings.h"

namespace fs = std::filesystem;

namespace florence::data {

namespace {

/// Members larger than this are skipped (and counted) instead of being read into memory: a
/// corrupt size field must not make the reader allocate gigabytes.
constexpr int64_t kMaxMemberBytes = int64_t(1) << 30;
/// Recoverable header damage events tolerated per shard before giving up on it.
constexpr int kMaxRetries = 64;
/// Per-reader cap on individual warnings of the same kind (counts are always complete).
constexpr int64_t kMaxWarnings = 5;

/// libarchive's message for the last error, with the system's words for its errno when it has one
/// ("Write error (No space left on device)").
std::string archive_message(archive* ar) {
  std::string msg = archive_error_string(ar) ? archive_error_string(ar) : "unknown error";
  const int err = archive_errno(ar);
  if (err > 0) msg += std::string(" (") + std::strerror(err) + ")";
  return msg;
}

bool is_image_ext(const std::string& e) { return is_image_extension(e); }
bool is_text_ext(const std::string& e) { return e == "txt" || e == "text" || e == "caption"; }


/// Strict UTF-8 validation (no overlongs, no surrogates, max U+10FFFF).
bool valid_utf8(const std::string& s) {
  size_t i = 0, n = s.size();
  while (i < n) {
    const auto c = static_cast<unsigned char>(s[i]);
    int len;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c >> 5) == 0x6) {
      len = 2, cp = c & 0x1f;
    } else if ((c >> 4) == 0xe) {
      len = 3, cp = c & 0x0f;
    } else if ((c >> 3) == 0x1e) {
      len = 4, cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > n) return false;
    for (int k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc >> 6) != 0x2) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff))
      return false;
    i += len;
  }
  return true;
}

bool valid_pattern(const std::string& p) {
  int conversions = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] != '%') continue;
    size_t j = i + 1;
    while (j < p.size() && std::isdigit(static_cast<unsigned char>(p[j]))) ++j;
    if (j >= p.size() || p[j] != 'd') return false;
    ++conversions;
    i = j;
  }
  return conversions == 1 && p.find('/') == std::string::npos;
}

}  // namespace

std::pair<std::string, std::string> split_member_name(const std::string& member_path) {
  std::string p = member_path;
  while (p.rfind("./", 0) == 0) p.erase(0, 2);
  const size_t slash = p.rfind('/');
  const size_t base = slash == std::string::npos ? 0 : slash + 1;
  const size_t dot = p.find('.', base);
  if (dot == std::string::npos) return {p, ""};
  return {p.substr(0, dot), p.substr(dot + 1)};
}

// ---------------------------------------------------------------------------------------------
// ShardWriter
// ---------------------------------------------------------------------------------------------

ShardWriter::ShardWriter(std::string dir, ShardWriterOptions options) : dir_(std::move(dir)), opt_(std::move(options)) {
  if (!valid_pattern(opt_.pattern))
    throw Error("ShardWriter: shard name pattern '" + opt_.pattern +
                "' must contain exactly one %d-style conversion and no '/'");
  if (opt_.max_samples_per_shard < 1) throw Error("ShardWriter: max_samples_per_shard must be >= 1");
  if (opt_.max_bytes < 1) throw Error("ShardWriter: max_bytes must be >= 1");
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec || !fs::is_directory(dir_)) throw Error("ShardWriter: cannot create directory '" + dir_ + "': " + ec.message());
}

ShardWriter::~ShardWriter() {
  try {
    close();
  } catch (const std::exception& e) {
    spdlog::error("ShardWriter({}): close failed: {}", dir_, e.what());
  }
}

void ShardWriter::open_next() {
  char name[512];
  std::snprintf(name, sizeof(name), opt_.pattern.c_str(), next_index_++);
  final_path_ = (fs::path(dir_) / name).string();
  tmp_path_ = (fs::path(dir_) / ("." + std::string(name) + ".tmp")).string();
  ar_ = archive_write_new();
  if (!ar_) throw Error("ShardWriter: archive_write_new failed");
  if (archive_write_set_format_pax_restricted(ar_) != ARCHIVE_OK ||
      archive_write_open_filename(ar_, tmp_path_.c_str()) != ARCHIVE_OK) {
    std::string msg = archive_message(ar_);
    archive_write_free(ar_);
    ar_ = nullptr;
    throw Error("ShardWriter: cannot open '" + tmp_path_ + "': " + msg);
  }
  cur_samples_ = 0;
  cur_bytes_ = 0;
}

void ShardWriter::finish_current() {
  if (!ar_) return;
  const int rc = archive_write_close(ar_);
  std::string msg = archive_message(ar_);
  archive_write_free(ar_);
  ar_ = nullptr;
  if (rc != ARCHIVE_OK) throw Error("ShardWriter: closing '" + tmp_path_ + "' failed: " + msg);
  std::error_code ec;
  fs::rename(tmp_path_, final_path_, ec);
  if (ec) throw Error("ShardWriter: renaming '" + tmp_path_ + "' to '" + final_path_ + "' failed: " + ec.message());
  shards_.push_back(final_path_);
}

void ShardWriter::write(const Sample& s) {
  if (closed_) throw Error("ShardWriter(" + dir_ + "): write() after close()");
  if (const std::string why = unsafe_key_reason(s.key); !why.empty())
    throw Error("ShardWriter: invalid sample key '" + printable_key(s.key) + "': " + why);
  if (s.image.empty()) throw Error("ShardWriter: sample '" + s.key + "' has no image bytes");
  if (s.image_ext.empty() || s.image_ext.find('.') != std::string::npos || s.image_ext.find('/') != std::string::npos)
    throw Error("ShardWriter: sample '" + s.key + "' has an invalid image_ext '" + s.image_ext + "'");
  if (!s.meta.is_object()) throw Error("ShardWriter: sample '" + s.key + "' meta is not a JSON object");

  nlohmann::json j = s.meta;
  if (s.label >= 0) j["label"] = s.label;
  if (!j.contains("split")) j["split"] = split_of(s.key);
  std::string json_text;
  try {
    json_text = j.dump();
  } catch (const nlohmann::json::exception& e) {
    throw Error("ShardWriter: sample '" + s.key + "' meta cannot be serialised: " + e.what());
  }

  const int64_t bytes = int64_t(s.image.size() + s.text.size() + json_text.size());
  if (ar_ && (cur_samples_ >= opt_.max_samples_per_shard || (cur_samples_ > 0 && cur_bytes_ + bytes > opt_.max_bytes)))
    finish_current();
  if (!ar_) open_next();

  auto put = [&](const std::string& ext, const void* data, size_t n) {
    archive_entry* e = archive_entry_new();
    const std::string name = s.key + "." + ext;
    archive_entry_set_pathname_utf8(e, name.c_str());
    archive_entry_set_size(e, la_int64_t(n));
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    archive_entry_set_mtime(e, 0, 0);
    int rc = archive_write_header(ar_, e);
    archive_entry_free(e);
    if (rc != ARCHIVE_OK)
      throw Error("ShardWriter: writing header of '" + name + "' to '" + tmp_path_ + "' failed: " +
                  archive_message(ar_));
    if (n > 0 && archive_write_data(ar_, data, n) != la_ssize_t(n))
      throw Error("ShardWriter: writing '" + name + "' to '" + tmp_path_ + "' failed: " + archive_message(ar_));
  };
  put(s.image_ext, s.image.data(), s.image.size());
  put("txt", s.text.data(), s.text.size());
  put("json", json_text.data(), json_text.size());
  ++cur_samples_;
  ++total_samples_;
  cur_bytes_ += bytes;
}

void ShardWriter::close() {
  if (closed_) return;
  closed_ = true;
  finish_current();
}

// ---------------------------------------------------------------------------------------------
// ShardReader
// ---------------------------------------------------------------------------------------------

struct Member {
  std::string key, ext;
  std::string data;
};

struct ShardReader::Impl {
  archive* ar = nullptr;
  bool done = false;
  std::optional<Member> pending;  // the first member of the next group (already read)
  std::vector<Member> group;
  int retries = 0;
  int64_t warn_missing = 0, warn_meta = 0, warn_text = 0, warn_key = 0;
};

ShardReader::ShardReader(const std::string& path, size_t block_size) : impl_(std::make_unique<Impl>()), path_(path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) throw Error("ShardReader: '" + path + "' is not a readable file");
  impl_->ar = archive_read_new();
  if (!impl_->ar) throw Error("ShardReader: archive_read_new failed");
  archive_read_support_format_tar(impl_->ar);
  archive_read_support_filter_all(impl_->ar);  // also accepts .tar.gz / .tar.zst shards
  {
    // An I/O problem (permissions, a vanished file) is an error of the caller's; once the file
    // opens, anything libarchive refuses at open (not a tar, a corrupt compressed stream) is data.
    std::ifstream probe(path, std::ios::binary);
    if (!probe) throw Error("ShardReader: cannot open '" + path + "': " + std::strerror(errno));
  }
  if (archive_read_open_filename(impl_->ar, path.c_str(), std::max<size_t>(block_size, 512)) != ARCHIVE_OK) {
    // Readable but not a tar, or a damaged .tar.gz / .tar.xz stream (fuzz/regressions/tar): a data error.
    ++stats_.corrupt;
    spdlog::warn("ShardReader: {}: not a readable tar shard: {}", path,
                 archive_error_string(impl_->ar) ? archive_error_string(impl_->ar) : "unknown error");
    impl_->done = true;
  }
}

ShardReader::~ShardReader() {
  if (impl_ && impl_->ar) archive_read_free(impl_->ar);
}

bool ShardReader::next(Sample& out) {
  Impl& I = *impl_;
  auto error_text = [&] {
    const char* e = archive_error_string(I.ar);
    return std::string(e ? e : "unknown error");
  };
  // Marks the shard as corrupt and ends it. `drop_group`: the failing member belongs to the group
  // being collected, which is therefore incomplete and dropped. Otherwise the group's members were
  // all read completely (the failure is in a header or in a member of another key) and it is kept.
  auto fail = [&](const std::string& what, bool drop_group) {
    ++stats_.corrupt;
    spdlog::warn("ShardReader: {}: {} (after {} samples){}", path_, what, stats_.samples,
                 drop_group && !I.group.empty()
                     ? fmt::format("; dropping {} member(s) of the incomplete sample '{}'", I.group.size(), I.group.front().key)
                     : std::string());
    if (drop_group) {
      stats_.skipped_members += int64_t(I.group.size());
      I.group.clear();
    }
    I.done = true;
  };
  auto same_key_as_group = [&](const std::string& member_name) {
    return !I.group.empty() && split_member_name(member_name).first == I.group.front().key;
  };
  // Reads the next regular-file member into `m`; false at the end of the shard or on a fatal error.
  auto read_member = [&](Member& m) -> bool {
    while (!I.done) {
      archive_entry* entry = nullptr;
      const int rc = archive_read_next_header(I.ar, &entry);
      if (rc == ARCHIVE_EOF) {
        I.done = true;
        return false;
      }
      if (rc == ARCHIVE_RETRY) {
        ++stats_.corrupt;
        spdlog::warn("ShardReader: {}: damaged header skipped: {}", path_, error_text());
        if (++I.retries > kMaxRetries) fail("too many damaged headers", false);
        continue;
      }
      if (rc == ARCHIVE_FATAL) {
        fail("corrupt or truncated tar: " + error_text(), false);
        return false;
      }
      if (rc == ARCHIVE_WARN) spdlog::warn("ShardReader: {}: {}", path_, error_text());
      ++stats_.members;
      const char* name = archive_entry_pathname_utf8(entry);
      if (!name) name = archive_entry_pathname(entry);
      if (archive_entry_filetype(entry) != AE_IFREG || !name) {
        ++stats_.skipped_members;
        continue;
      }
      if (archive_entry_size_is_set(entry) && archive_entry_size(entry) > kMaxMemberBytes) {
        ++stats_.skipped_members;
        spdlog::warn("ShardReader: {}: member '{}' has {} bytes (> {}), skipped", path_, name,
                     archive_entry_size(entry), kMaxMemberBytes);
        if (archive_read_data_skip(I.ar) != ARCHIVE_OK)
          fail("cannot skip member '" + std::string(name) + "': " + error_text(), same_key_as_group(name));
        continue;
      }
      auto [key, ext] = split_member_name(name);
      m.key = std::move(key);
      m.ext = core::ascii_lower(std::move(ext));
      m.data.clear();
      if (archive_entry_size_is_set(entry)) m.data.reserve(size_t(archive_entry_size(entry)));
      char buf[1 << 16];
      while (true) {
        const la_ssize_t n = archive_read_data(I.ar, buf, sizeof(buf));
        if (n == 0) break;
        if (n < 0) {
          ++stats_.skipped_members;  // the member being read
          fail("truncated or corrupt member '" + std::string(name) + "': " + error_text(), same_key_as_group(name));
          return false;
        }
        m.data.append(buf, size_t(n));
        if (int64_t(m.data.size()) > kMaxMemberBytes) {
          ++stats_.skipped_members;
          fail("member '" + std::string(name) + "' larger than its header says", same_key_as_group(name));
          return false;
        }
      }
      if (archive_entry_size_is_set(entry) && int64_t(m.data.size()) != archive_entry_size(entry)) {
        ++stats_.skipped_members;
        fail("member '" + std::string(name) + "' is short: " + std::to_string(m.data.size()) + " of " +
             std::to_string(archive_entry_size(entry)) + " bytes",
             same_key_as_group(name));
        return false;
      }
      return true;
    }
    return false;
  };
  // Turns the current group into `out`; false when the group is skipped.
  auto finalize = [&]() -> bool {
    Sample s;
    s.key = I.group.front().key;
    s.origin = path_ + ":" + s.key;
    bool have_image = false, have_text = false, have_json = false;
    std::optional<int64_t> cls_label;
    int64_t used = 0;
    for (auto& m : I.group) {
      if (is_image_ext(m.ext) && !have_image && !m.data.empty()) {  // 0 bytes: no image (fuzz/regressions/tar)
        s.image.assign(m.data.begin(), m.data.end());
        s.image_ext = m.ext;
        have_image = true;
      } else if (is_text_ext(m.ext) && !have_text) {
        s.text = std::move(m.data);
        have_text = true;
      } else if (m.ext == "json" && !have_json) {
        have_json = true;
        auto j = nlohmann::json::parse(m.data, nullptr, /*allow_exceptions=*/false);
        if (j.is_discarded() || !j.is_object()) {
          ++stats_.bad_meta;
          if (I.warn_meta++ < kMaxWarnings)
            spdlog::warn("ShardReader: {}: '{}.json' is not a JSON object; meta left empty", path_, s.key);
        } else {
          s.meta = std::move(j);
        }
      } else if (m.ext == "cls" && !cls_label) {
        try {
          size_t pos = 0;
          const long long v = std::stoll(m.data, &pos);
          cls_label = v;
        } catch (const std::exception&) {
          ++stats_.bad_meta;
          if (I.warn_meta++ < kMaxWarnings)
            spdlog::warn("ShardReader: {}: '{}.cls' is not an integer", path_, s.key);
        }
      } else {
        ++stats_.skipped_members;
        continue;
      }
      ++used;
    }
    const int64_t members = int64_t(I.group.size());
    const bool unsupported_image = std::any_of(I.group.begin(), I.group.end(), [](const Member& m) {
      return is_unsupported_image_extension(m.ext);
    });
    I.group.clear();
    if (const std::string why = unsafe_key_reason(s.key); !why.empty()) {
      ++stats_.unsafe_key;
      stats_.skipped_members += used;
      if (I.warn_key++ < kMaxWarnings)
        spdlog::warn("ShardReader: {}: sample '{}' ({} member(s)) skipped: its key {}", path_, printable_key(s.key),
                     members, why);
      return false;
    }
    if (!have_image && unsupported_image) {
      ++stats_.unsupported_format;
      stats_.skipped_members += used;
      if (I.warn_missing++ < kMaxWarnings)
        spdlog::warn("ShardReader: {}: sample '{}' skipped: its image format is not supported (decodable: png, jpg, "
                     "webp, bmp, pnm, tiff)", path_, s.key);
      return false;
    }
    if (!have_image) {
      ++stats_.missing_image;
      stats_.skipped_members += used;
      if (I.warn_missing++ < kMaxWarnings)
        spdlog::warn("ShardReader: {}: sample '{}' ({} member(s)) has no image member; skipped", path_, s.key, members);
      return false;
    }
    if (!valid_utf8(s.text)) {
      ++stats_.bad_text;
      stats_.skipped_members += used;
      if (I.warn_text++ < kMaxWarnings)
        spdlog::warn("ShardReader: {}: sample '{}' text is not valid UTF-8; skipped", path_, s.key);
      return false;
    }
    if (s.meta.contains("label") && s.meta["label"].is_number_integer())
      s.label = s.meta["label"].get<int64_t>();
    else if (cls_label)
      s.label = *cls_label;
    out = std::move(s);
    ++stats_.samples;
    return true;
  };

  while (true) {
    if (!I.pending) {
      Member m;
      if (read_member(m)) {
        I.pending = std::move(m);
      } else {
        if (!I.group.empty() && finalize()) return true;
        if (I.group.empty() && I.done) return false;
        continue;
      }
    }
    if (I.group.empty() || I.pending->key == I.group.front().key) {
      I.group.push_back(std::move(*I.pending));
      I.pending.reset();
      continue;
    }
    if (finalize()) return true;
  }
}

// ---------------------------------------------------------------------------------------------
// list_shards
// ---------------------------------------------------------------------------------------------

namespace {

constexpr size_t kMaxExpansion = 1000000;

void brace_expand(const std::string& pat, std::vector<std::string>& out) {
  const size_t open = pat.find('{');
  if (open == std::string::npos) {
    if (pat.find('}') != std::string::npos) throw Error("list_shards: unbalanced '}' in '" + pat + "'");
    out.push_back(pat);
    return;
  }
  const size_t close = pat.find('}', open);
  if (close == std::string::npos) throw Error("list_shards: unbalanced '{' in '" + pat + "'");
  const std::string body = pat.substr(open + 1, close - open - 1);
  if (body.find('{') != std::string::npos) throw Error("list_shards: nested braces are not supported: '" + pat + "'");
  const std::string prefix = pat.substr(0, open), suffix = pat.substr(close + 1);
  std::vector<std::string> alts;
  const size_t dots = body.find("..");
  if (body.find(',') == std::string::npos && dots != std::string::npos) {
    const std::string a = body.substr(0, dots), b = body.substr(dots + 2);
    auto is_int = [](const std::string& x) {
      return !x.empty() && x.size() <= 18 && std::all_of(x.begin(), x.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
    };
    if (!is_int(a) || !is_int(b)) throw Error("list_shards: range bounds must be non-negative integers in '{" + body + "}'");
    const long long lo = std::stoll(a), hi = std::stoll(b);
    if (hi < lo) throw Error("list_shards: reversed range '{" + body + "}'");
    if (size_t(hi - lo + 1) > kMaxExpansion) throw Error("list_shards: range '{" + body + "}' is too large");
    const bool pad = (a.size() > 1 && a[0] == '0') || (b.size() > 1 && b[0] == '0');
    const int width = pad ? int(std::max(a.size(), b.size())) : 0;
    for (long long v = lo; v <= hi; ++v) alts.push_back(fmt::format("{:0{}d}", v, width));
  } else {
    size_t start = 0;
    while (true) {
      const size_t comma = body.find(',', start);
      alts.push_back(body.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  }
  for (const auto& alt : alts) {
    brace_expand(prefix + alt + suffix, out);
    if (out.size() > kMaxExpansion) throw Error("list_shards: '" + pat + "' expands to too many paths");
  }
}

}  // namespace

std::vector<std::string> list_shards(const std::string& spec) {
  std::vector<std::string> parts;
  for (size_t start = 0;;) {
    const size_t sep = spec.find("::", start);
    parts.push_back(spec.substr(start, sep == std::string::npos ? std::string::npos : sep - start));
    if (sep == std::string::npos) break;
    start = sep + 2;
  }
  std::vector<std::string> out;
  for (const auto& part : parts) {
    if (part.empty()) throw Error("list_shards: empty shard specification in '" + spec + "'");
    std::error_code ec;
    if (part.find('{') == std::string::npos && fs::is_directory(part, ec)) {
      std::vector<std::string> found;
      for (const auto& de : fs::directory_iterator(part, ec)) {
        const auto& p = de.path();
        if (de.is_regular_file() && p.extension() == ".tar" && p.filename().string()[0] != '.') found.push_back(p.string());
      }
      if (ec) throw Error("list_shards: cannot list directory '" + part + "': " + ec.message());
      if (found.empty()) throw Error("list_shards: directory '" + part + "' has no .tar shard");
      std::sort(found.begin(), found.end());
      out.insert(out.end(), found.begin(), found.end());
      continue;
    }
    std::vector<std::string> expanded;
    brace_expand(part, expanded);
    for (const auto& p : expanded) {
      if (!fs::is_regular_file(p, ec)) throw Error("list_shards: shard '" + p + "' does not exist");
      out.push_back(p);
    }
  }
  return out;
}

}  // namespace florence::data
