#pragma once
// WebDataset tar shards (https://github.com/webdataset/webdataset layout), read and written
// with libarchive in a streaming fashion.
//
// Layout of one sample inside a shard: consecutive tar members that share a key,
//   KEY.png   (or KEY.<image_ext>: the encoded image bytes, exactly as in Sample::image)
//   KEY.txt   (Sample::text, UTF-8, written even when empty)
//   KEY.json  (Sample::meta, plus "label" when Sample::label >= 0, plus "split" when meta has none:
//              split_of(KEY))
// Key rule (WebDataset): for a member path "a/b/name.ext1.ext2", key = "a/b/name" (everything up
// to the first '.' of the basename) and extension = "ext1.ext2" (matched lower-cased).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "florence/data/sample.h"

struct archive;  // libarchive handle (archive.h), kept out of this header

namespace florence::data {

struct ShardWriterOptions {
  /// A new shard starts after this many samples.
  int64_t max_samples_per_shard = 1000;
  /// ... or before a sample that would push the current shard's payload past this many bytes
  /// (payload = member bytes, without tar headers; a single larger sample still gets its own shard).
  int64_t max_bytes = int64_t(256) << 20;
  /// printf-style file name of shard i inside the output dir; exactly one integer conversion
  /// (`%d`, `%06d`, ...) and no other '%'. Throws florence::Error otherwise.
  std::string pattern = "%06d.tar";
};

/// Writes samples into numbered shards DIR/000000.tar, DIR/000001.tar, ... (pax-restricted tar:
/// plain ustar headers unless a name needs pax extensions). Each shard is written to a hidden
/// temporary name ".NAME.tmp" in DIR and renamed when complete, so a reader never sees a partial
/// shard. Member mtimes are fixed (0) so identical input gives byte-identical shards.
/// Not thread-safe: one writer per thread / output dir.
class ShardWriter {
 public:
  /// Creates `dir` (and parents) if needed. Throws florence::Error on a bad pattern or when the
  /// directory cannot be created.
  ShardWriter(std::string dir, ShardWriterOptions options = {});
  ~ShardWriter();  // calls close(); errors there are logged, not thrown
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  /// Appends one sample. Throws florence::Error when the key is unsafe (sample.h
  /// unsafe_key_reason: empty, absolute, "."/".." parts, a '.' in the last part, control
  /// characters, ...), when the image is empty or image_ext is empty/contains '.', or on an I/O error.
  void write(const Sample& sample);
  /// Finishes and renames the current shard. Idempotent; write() after close() throws.
  void close();
  /// Paths of the completed (renamed) shards so far, in order.
  const std::vector<std::string>& shards() const { return shards_; }
  int64_t samples_written() const { return total_samples_; }

 private:
  void open_next();
  void finish_current();
  std::string dir_;
  ShardWriterOptions opt_;
  std::vector<std::string> shards_;
  ::archive* ar_ = nullptr;
  std::string tmp_path_, final_path_;
  int next_index_ = 0;
  int64_t cur_samples_ = 0, cur_bytes_ = 0, total_samples_ = 0;
  bool closed_ = false;
};

/// Counters of one ShardReader (also summed over shards by callers).
struct ShardStats {
  int64_t samples = 0;          ///< samples returned by next()
  int64_t members = 0;          ///< tar members seen (regular files and others)
  int64_t skipped_members = 0;  ///< members not part of a returned sample (non-files, unknown
                                ///< extensions, duplicates within a key, members of skipped groups)
  int64_t missing_image = 0;    ///< member groups (keys) without an image member, skipped
  int64_t bad_meta = 0;         ///< KEY.json / KEY.cls that did not parse (sample kept, meta = {})
  int64_t bad_text = 0;         ///< groups whose text member is not valid UTF-8, skipped
  int64_t corrupt = 0;          ///< truncated/corrupt member or header events. A sample whose own
                                ///< member is cut is dropped; the samples before it are returned
  int64_t unsafe_key = 0;       ///< groups whose key is unsafe (sample.h unsafe_key_reason: "..",
                                ///< absolute, control characters, ...), skipped
  int64_t unsupported_format = 0;  ///< groups whose only image is of a format not decoded (gif, svg, ...),
                                   ///< skipped (counted here instead of missing_image)
};

/// Streams samples out of one tar shard without loading it whole (libarchive reads
/// `block_size` bytes at a time; only the current member group is held in memory).
/// Recognised extensions: images png jpg jpeg webp bmp ppm pgm pbm tif tiff; text txt / text /
/// caption; meta json; label cls (decimal integer; json "label" takes precedence).
/// Data errors never throw out of next(): a truncated or corrupt member/tar is counted in
/// stats().corrupt and logged with spdlog::warn, after which reading stops (fatal) or goes on
/// (recoverable header damage); a group without an image, with an unsafe key (sample.h) or with
/// only an image format that is not decoded is counted and skipped, its shard and key logged.
class ShardReader {
 public:
  /// Throws florence::Error when the file cannot be opened (missing, unreadable). A file that is
  /// not a tar at all is a data error: the first next() counts it as corrupt and returns false.
  explicit ShardReader(const std::string& path, size_t block_size = 1 << 16);
  ~ShardReader();
  ShardReader(const ShardReader&) = delete;
  ShardReader& operator=(const ShardReader&) = delete;

  /// Fills `out` with the next complete sample (key, image, image_ext, text, label, meta,
  /// origin = "PATH:KEY") and returns true; false at the end of the shard or after a fatal error.
  bool next(Sample& out);
  const ShardStats& stats() const { return stats_; }
  const std::string& path() const { return path_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string path_;
  ShardStats stats_;
};

/// Splits a member path into (key, extension) by the WebDataset rule above; a leading "./" is
/// dropped. A basename without '.' gives an empty extension.
std::pair<std::string, std::string> split_member_name(const std::string& member_path);

/// Expands a shard specification into an ordered list of existing shard paths.
/// Accepted forms:
///   - a directory: its *.tar files (not recursive), sorted by name;
///   - a single file path;
///   - a brace pattern, expanded like bash: numeric ranges `{000000..000012}` (zero padding taken
///     from the wider bound; inclusive) and lists `{train,val}`, several braces allowed:
///     "out/{train,val}/{000000..000003}.tar";
///   - several of the above joined by "::" (concatenated in order).
/// Throws florence::Error when the directory has no .tar file, a listed/expanded file does not
/// exist, or a brace is malformed (unbalanced, range bounds not integers, range reversed).
std::vector<std::string> list_shards(const std::string& spec);

}  // namespace florence::data
