#pragma once
// Byte-level BPE trainer producing merges files that florence::text::Tokenizer (and CLIP's
// simple_tokenizer.py) load.
//
// Training follows the tokenizer exactly: every document is cleaned (Tokenizer::clean) and
// pre-tokenized (CLIP's regex); each piece is a word of byte symbols whose last symbol carries
// "</w>". Words are counted; then the most frequent adjacent symbol pair (weighted by word count,
// overlapping occurrences counted as the tokenizer would see them) is merged everywhere, again
// and again. Ties are broken by the smaller (left, right) pair of symbol strings in byte order,
// so the output is a pure function of the corpus content and the options. Pair counts are kept
// incrementally (a pair -> words index; only words containing the merged pair are revisited), so
// a few MB of text trains in seconds.
//
// The literal pieces "<|startoftext|>" / "<|endoftext|>" are not counted (the tokenizer maps
// them to the special ids without BPE).
//
// Output file (same format as CLIP's bpe_simple_vocab_16e6.txt):
//   line 1: "#version: 0.2 florence-bpe merges=M vocab_size=N min_frequency=K"
//   then M lines "left right" in the bytes_to_unicode alphabet, in merge order (rank 0 first).
// A ".gz" output path is written gzip-compressed. The tokenizer reads `merges=M` from the header;
// its vocabulary is 512 byte symbols + M merges + <|startoftext|> (id N-2) + <|endoftext|>
// (id N-1), N = 514 + M.
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace florence::text {

struct BpeTrainerOptions {
  /// Final vocabulary size N = 512 byte symbols + merges + 2 specials, so merges = N - 514.
  /// Must be >= 514.
  int64_t vocab_size = 0;
  /// A pair is merged only if it occurs at least this often; training stops early (fewer
  /// merges, smaller vocabulary, logged as a warning) when no pair qualifies. Must be >= 1.
  int64_t min_frequency = 2;
};

/// Pieces (pre-tokenized words) longer than this many bytes are left out of training, counted
/// in BpeTrainStats::long_words: learning merges costs O(word length) per merge for every word
/// holding the pair, so one 1 MB "word" would dominate the run; captions have no such words.
inline constexpr size_t kMaxTrainWordBytes = 1000;

struct BpeTrainStats {
  int64_t documents = 0;      ///< texts fed to the trainer
  int64_t skipped_lines = 0;  ///< corpus lines rejected (invalid UTF-8, JSON without "text")
  int64_t empty_lines = 0;    ///< blank corpus lines (ignored)
  int64_t words = 0;          ///< pre-tokenized pieces counted
  int64_t long_words = 0;     ///< pieces longer than kMaxTrainWordBytes, left out (logged)
  int64_t unique_words = 0;
  int64_t merges = 0;      ///< merges learned
  int64_t vocab_size = 0;  ///< 514 + merges
};

/// Progress goes to the default logger at info level (stderr in the CLI): add_file() logs a line when
/// a file starts and ends (and one every ~5 s while it is read), train() one when learning starts and
/// one at every tenth of the requested merges.
class BpeTrainer {
 public:
  /// Throws florence::Error if options.vocab_size < 514 or options.min_frequency < 1.
  explicit BpeTrainer(BpeTrainerOptions options);

  /// Adds one document. Throws florence::Error on invalid UTF-8.
  void add_text(std::string_view text);

  /// Adds a corpus file (plain or gzip), one document per line. A line that parses as a JSON
  /// object is read through its string field "text"; other lines are plain text. Lines with
  /// invalid UTF-8 or JSON objects without a string "text" are skipped, counted in
  /// stats().skipped_lines and logged (file:line). Throws florence::Error if the file cannot be
  /// read.
  void add_file(const std::string& path);

  /// Learns the merges from everything added so far; each merge is {left, right} in the
  /// bytes_to_unicode alphabet (right may end in "</w>"), rank order.
  std::vector<std::pair<std::string, std::string>> train();

  const BpeTrainStats& stats() const { return stats_; }

 private:
  BpeTrainerOptions options_;
  BpeTrainStats stats_;
  std::unordered_map<std::string, int64_t> word_counts_;
};

/// Writes a merges file in the format described above (temporary file + rename; gzip if the path
/// ends in ".gz"). Throws florence::Error on I/O failure.
void write_merges_file(const std::string& path,
                       const std::vector<std::pair<std::string, std::string>>& merges,
                       const BpeTrainerOptions& options);

/// The `florence tokenizer train` job: reads all corpus files, trains, writes `out_path`.
BpeTrainStats train_bpe(const std::vector<std::string>& corpus_files,
                        const BpeTrainerOptions& options, const std::string& out_path);

}  // namespace florence::text
