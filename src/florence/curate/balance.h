#pragma once
// MetaCLIP-style balanced sampling (Xu et al., "Demystifying CLIP Data", ICLR 2024, Sec. 3.3 and
// the curation script of facebookresearch/MetaCLIP): every pair matches a set of *entries* (here
// either its exact text, or the entries of a list found in its text); an entry seen c times in the
// pool keeps each of its pairs with probability t / max(c, t), so rare entries are kept whole and
// frequent ones are capped at about t pairs. A pair with several entries is kept when any of its
// entries' independent trials succeeds (MetaCLIP's balance_sampling); a pair that matches no entry
// is not kept (MetaCLIP keeps only matched pairs).
//
// The trials are not drawn from a running generator but from a hash of (seed, sample key, entry
// tag), so a pair's fate does not depend on the order samples are visited, the number of
// processes or threads: the same seed gives the same selection everywhere.
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace florence::curate {

/// t / max(count, t) for count >= 1 (1 when count <= t). Throws florence::Error when t <= 0.
double balance_keep_probability(int64_t count, double t);

/// A deterministic uniform number in [0, 1): the top 53 bits of XXH3-64 of the key bytes, seeded
/// with seed XOR (entry_tag * 0x9E3779B97F4A7C15), divided by 2^53.
double balance_uniform(uint64_t seed, std::string_view key, uint64_t entry_tag);

/// One pair's decision: true when some entry e of `entries` (count counts[e] >= 1, tag tags[e])
/// has balance_uniform(seed, key, tags[e]) < balance_keep_probability(counts[e], t). False when
/// `entries` is empty.
bool balance_keep(const uint32_t* entries, size_t num_entries, const std::vector<int64_t>& counts,
                  const std::vector<uint64_t>& tags, double t, uint64_t seed, std::string_view key);

/// A list of entries (MetaCLIP "metadata") matched against texts as whole words.
/// Normalisation of entries and texts: ASCII letters lower-cased; words are maximal runs of ASCII
/// letters / digits and non-ASCII bytes (so UTF-8 letters stay inside words); everything else
/// separates words. An entry matches a text when its word sequence occurs as consecutive words of
/// the text. (MetaCLIP matches raw substrings, which also finds "cat" in "catalog"; whole words
/// avoid that.)
class EntryList {
 public:
  /// Reads a JSON array of strings (a ".json" file, MetaCLIP's metadata.json format) or one
  /// entry per line (any other file; blank lines ignored). Entries that normalise to the same
  /// words are merged (the first spelling is kept). Throws florence::Error when the file cannot
  /// be read, the JSON is not an array of strings, or no entry has a word.
  static EntryList from_file(const std::string& path);
  /// Same from strings (entries without any word are ignored).
  static EntryList from_entries(const std::vector<std::string>& entries);

  size_t size() const { return entries_.size(); }
  const std::string& entry(size_t i) const { return entries_[i]; }
  /// Ids of the entries found in `text`, ascending, each once.
  std::vector<uint32_t> match(const std::string& text) const;

  /// The normalised words of a string.
  static std::vector<std::string> words(const std::string& text);

 private:
  std::vector<std::string> entries_;
  std::unordered_map<std::string, uint32_t> by_words_;  // words joined by ' ' -> id
  size_t max_words_ = 0;
};

}  // namespace florence::curate
