#pragma once
// Sample sources: one interface over WebDataset shards, manifests (JSONL / TSV), ImageFolder
// class trees and in-memory vectors, so the Loader (loader.h) can read any of them.
//
// A source is a list of *parts*: the unit that is read sequentially and assigned to one rank.
//   - ShardSource:       one part per tar shard (samples stream out of it in member order);
//   - ManifestSource:    one part per manifest entry (one sample each);
//   - ImageFolderSource: one part per image file;
//   - VectorSource:      one part per sample.
// Shuffling the part order therefore fully shuffles the sample-per-part sources, and splitting
// parts across ranks splits samples. Parts are read with read_part(), which is const and may be
// called concurrently from several threads for different (or the same) parts.
//
// Data problems while reading never throw: the sample is dropped and counted in the caller's
// SkipCounts under a reason ("missing_file", "unreadable_shard", "shard_corrupt", ...) and logged.
// Problems found while building the source (bad manifest lines, non-image files in a class tree)
// are counted in load_skips().
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "florence/data/sample.h"

namespace florence::data {

/// Counts of dropped items by reason.
using SkipCounts = std::map<std::string, int64_t>;

class SampleSource {
 public:
  virtual ~SampleSource() = default;
  /// Number of parts (see top of file).
  virtual size_t num_parts() const = 0;
  /// Reads part `part` and calls emit(sample) for each sample in order; stops when emit returns
  /// false. Dropped samples are added to `skips`. Throws florence::Error only when `part` is out
  /// of range.
  virtual void read_part(size_t part, const std::function<bool(Sample&)>& emit,
                         SkipCounts& skips) const = 0;
  /// Number of samples when known without reading (-1 for shards).
  virtual int64_t size_hint() const { return -1; }
  /// Items dropped while building the source (bad manifest lines, ...).
  virtual const SkipCounts& load_skips() const { return load_skips_; }
  /// Class names indexed by label, when the source defines them (ImageFolder, manifests with
  /// string labels); empty otherwise.
  virtual const std::vector<std::string>& classes() const { return classes_; }
  /// Short human description for logs ("3 shards under DIR", "manifest FILE (N entries)").
  virtual std::string describe() const = 0;

 protected:
  SkipCounts load_skips_;
  std::vector<std::string> classes_;
};

/// WebDataset shards read with ShardReader (webdataset.h). Skip reasons added per shard:
/// "unreadable_shard" (cannot be opened), "shard_corrupt", "shard_missing_image",
/// "shard_bad_text" (from ShardStats).
class ShardSource : public SampleSource {
 public:
  /// `shards`: paths in order. Throws florence::Error when empty.
  explicit ShardSource(std::vector<std::string> shards);
  /// Shards from a specification understood by list_shards() (directory, file, brace pattern).
  static std::shared_ptr<ShardSource> from_spec(const std::string& spec);

  size_t num_parts() const override { return shards_.size(); }
  void read_part(size_t part, const std::function<bool(Sample&)>& emit,
                 SkipCounts& skips) const override;
  std::string describe() const override;
  const std::vector<std::string>& shards() const { return shards_; }

 private:
  std::vector<std::string> shards_;
};

enum class ManifestFormat { kAuto, kJsonl, kTsv };

/// A manifest file listing one image-text(-label) pair per line.
///   JSONL: {"image": "a/b.png", "text": "a cat", "label": 3, "key": "optional-id", ...};
///          other fields are kept in Sample::meta.
///   TSV:   a header line naming the columns (tab separated; "image" required, "text", "label",
///          "key" optional, others ignored), then one tab-separated row per sample. No quoting.
/// Format by extension (.jsonl/.json -> JSONL, .tsv -> TSV) with kAuto.
/// Relative image paths are resolved against the manifest's folder. Labels are either integers
/// (used as they are, >= 0) or class names (strings, or TSV values that are not integers), which
/// become ids 0..K-1 in sorted (byte) order of the distinct names, listed by classes().
/// Key: the "key" field, else the image path as written. Text: "" when absent.
/// Bad lines (invalid JSON, not an object, missing/empty/non-string image, non-string text,
/// bad label, wrong TSV column count) are counted under "bad_manifest_line" in load_skips() and
/// logged (first few with their line number); blank lines are ignored.
/// Read-time skip reason: "missing_file" (image cannot be read).
class ManifestSource : public SampleSource {
 public:
  /// Throws florence::Error when the file cannot be read, the TSV header lacks an "image"
  /// column, the format cannot be inferred, or the manifest mixes integer and string labels.
  explicit ManifestSource(const std::string& path, ManifestFormat format = ManifestFormat::kAuto);

  size_t num_parts() const override { return entries_.size(); }
  void read_part(size_t part, const std::function<bool(Sample&)>& emit,
                 SkipCounts& skips) const override;
  int64_t size_hint() const override { return int64_t(entries_.size()); }
  std::string describe() const override;

 private:
  struct Entry {
    std::string image_path;  // resolved
    std::string key, text;
    int64_t label = -1;
    nlohmann::json meta;
    int64_t line = 0;
  };
  std::string path_;
  std::vector<Entry> entries_;
};

/// torchvision ImageFolder layout: root/<class>/<...>/<image>. Classes are the immediate
/// sub-directories of root in sorted (byte) order -> labels 0..K-1; images are found recursively
/// below each class folder (extensions png jpg jpeg webp bmp tif tiff ppm pgm pbm, any case),
/// sorted by path. Sample: key = "<class>/<relative path without extension>", text = class name
/// with '_' replaced by ' ', label = class index, meta = {"class": name}. Other files are counted
/// under "not_an_image" in load_skips(). Read-time skip reason: "missing_file".
class ImageFolderSource : public SampleSource {
 public:
  /// Throws florence::Error when root is not a directory or has no class folder with an image.
  explicit ImageFolderSource(const std::string& root);

  size_t num_parts() const override { return files_.size(); }
  void read_part(size_t part, const std::function<bool(Sample&)>& emit,
                 SkipCounts& skips) const override;
  int64_t size_hint() const override { return int64_t(files_.size()); }
  std::string describe() const override;

 private:
  struct File {
    std::string path, key, ext;
    int64_t label = -1;
  };
  std::string root_;
  std::vector<File> files_;
};

/// Samples held in memory (tests, small synthetic sets). One part per sample.
class VectorSource : public SampleSource {
 public:
  explicit VectorSource(std::vector<Sample> samples);
  size_t num_parts() const override { return samples_.size(); }
  void read_part(size_t part, const std::function<bool(Sample&)>& emit,
                 SkipCounts& skips) const override;
  int64_t size_hint() const override { return int64_t(samples_.size()); }
  std::string describe() const override;

 private:
  std::vector<Sample> samples_;
};

/// Reads a whole file into bytes. Throws florence::Error naming the path when it cannot be read.
std::vector<uint8_t> read_file_bytes(const std::string& path);

}  // namespace florence::data
