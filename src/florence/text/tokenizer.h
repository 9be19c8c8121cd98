#pragma once
// CLIP's byte-level BPE tokenizer (Radford et al., 2021; reference: openai/CLIP
// clip/simple_tokenizer.py), reimplemented with PCRE2 (pre-tokenizer regex), ICU (lowercase,
// White_Space) and zlib (gzip merges files).
//
// Pipeline of encode(text), step by step as in the reference:
//   1. clean():  HTML-unescape twice (Python's html.unescape rules: all 2231 HTML5 named references,
//                the 106 legacy names also without ';', numeric &#NN; / &#xHH; with the HTML5
//                replacement rules), strip, collapse every run of Unicode White_Space to one
//                space, strip, lowercase (Unicode full case mapping, root locale, like Python's
//                str.lower). CLIP's first step, ftfy.fix_text, is NOT applied (ftfy has no C++
//                equivalent; the golden fixtures were produced without it, e.g. curly quotes stay).
//   2. pretokenize(): CLIP's regex, case-insensitive, with Unicode classes:
//        <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
//      Every non-space character lands in exactly one piece; spaces are dropped.
//   3. Each piece's UTF-8 bytes are mapped to GPT-2's printable byte alphabet (bytes_to_unicode),
//      the last symbol gets the end-of-word suffix "</w>", and ranked merges are applied (lowest
//      rank first, all non-overlapping occurrences left to right) until none applies.
//   4. Symbols map to ids in the vocabulary order of the reference:
//        [0, 256)        the 256 byte symbols (bytes_to_unicode order)
//        [256, 512)      the same symbols + "</w>"
//        [512, 512+M)    one entry per merge (concatenation of its two parts)
//        512+M, 513+M    <|startoftext|>, <|endoftext|>
//      For CLIP's file M = 48894, so SOT = 49406, EOT = 49407, vocab_size = 49408.
//
// Thread safety: a Tokenizer is immutable after construction except for its internal word cache
// (16 shards, each behind a std::shared_mutex); all const methods may be called concurrently.
// Copies share the same state (and cache).
//
// Invalid UTF-8 input is rejected: encode/tokenize/clean throw florence::Error naming the byte
// offset of the first bad byte. (Python would never see such input: it decodes bytes first.)
#include <torch/types.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace florence::text {

/// Number of merges CLIP uses from its 262145-line file: simple_tokenizer.py keeps
/// merges[1:49152-256-2+1], i.e. 49152 - 256 - 2 = 48894 merges (so that 512 + 48894 + 2 = 49408).
inline constexpr int64_t kClipNumMerges = 49152 - 256 - 2;
/// CLIP context length (clip.tokenize default; Florence truncates at 76 tokens + EOT).
inline constexpr int kClipContextLength = 77;
/// Number of byte symbols (256 plain + 256 with "</w>") that start every vocabulary.
inline constexpr int64_t kNumByteSymbols = 512;
/// Literal spellings of the two special tokens (simple_tokenizer.py).
inline constexpr std::string_view kStartOfText = "<|startoftext|>";
inline constexpr std::string_view kEndOfText = "<|endoftext|>";
/// End-of-word suffix of the last symbol of every word.
inline constexpr std::string_view kEndOfWord = "</w>";

struct TokenizerOptions {
  /// How many merge lines (after the header line) to use. -1 = automatic: the count `merges=M`
  /// written in the header by florence's trainer (bpe_trainer.h), otherwise CLIP's rule
  /// (at most kClipNumMerges lines after the header). A file with fewer usable lines than
  /// requested by an explicit value or by its own header is an error.
  int64_t max_merges = -1;
  /// CLIP maps the literal text "<|startoftext|>" / "<|endoftext|>" inside input text to the
  /// special ids (its word cache is pre-seeded with them). false: those pieces are BPE-encoded
  /// like any other text.
  bool specials_in_text = true;
  /// Word-cache capacity (entries, over all shards); a full shard is cleared. 0 disables the cache.
  size_t cache_capacity = size_t{1} << 20;
};

/// GPT-2's reversible byte -> printable code point map (simple_tokenizer.py bytes_to_unicode):
/// bytes '!'..'~', 0xA1..0xAC and 0xAE..0xFF map to themselves, the other 68 bytes to
/// U+0100, U+0101, ... in increasing byte order.
const std::array<char32_t, 256>& byte_to_unicode();

/// Byte order of the first 256 vocabulary entries: byte_symbol_order()[i] is the byte whose
/// symbol has id i (the printable ranges first, then the remapped bytes), as in the reference.
const std::array<uint8_t, 256>& byte_symbol_order();

/// Python's html.unescape applied once (named references incl. the legacy no-';' forms with
/// longest-prefix matching, decimal/hex references with the HTML5 rules: 0 and surrogates and
/// values > 0x10FFFF -> U+FFFD, 0x80..0x9F -> windows-1252, 0x0D -> CR, noncharacters and most
/// C0/C1 controls -> removed). Input must be valid UTF-8 (not checked here; see clean()).
std::string html_unescape(std::string_view text);

/// CLIP's pre-tokenizer (step 2 above) on already cleaned text: the pieces in order, as UTF-8.
/// Throws florence::Error on invalid UTF-8.
std::vector<std::string> pretokenize(std::string_view cleaned);

/// Checks UTF-8 validity (no surrogates, no overlongs, <= U+10FFFF); returns the byte offset of
/// the first invalid byte, or -1 when valid.
int64_t find_invalid_utf8(std::string_view text);

/// Decodes bytes as UTF-8 replacing every maximal ill-formed subsequence with U+FFFD (Python's
/// bytes.decode('utf-8', errors='replace') behaviour, used by CLIP's decode).
std::string utf8_decode_replace(std::string_view bytes);

class Tokenizer {
 public:
  /// Loads a merges file in CLIP's format: a header line (ignored except for florence's
  /// `merges=M`), then one merge per line, two space-separated symbols written in the
  /// bytes_to_unicode alphabet (the second may end in "</w>"). Plain text or gzip (detected
  /// from the content by zlib, whatever the file name). Throws florence::Error if the file
  /// cannot be read, a merge line does not have exactly two parts, a part contains a character
  /// outside the byte alphabet, or fewer merge lines exist than requested.
  static Tokenizer from_file(const std::string& path, TokenizerOptions options = {});

  /// Builds a tokenizer from merges given in the same string form as the file lines
  /// ({"a", "b</w>"} ...), all of them used. Same validation as from_file.
  static Tokenizer from_merges(const std::vector<std::pair<std::string, std::string>>& merges,
                               TokenizerOptions options = {});

  /// The text normalisation of step 1 (see top of file). Throws florence::Error on invalid UTF-8.
  static std::string clean(std::string_view text);

  /// BPE ids of `text` (cleaned, pre-tokenized, merged): no SOT/EOT, no truncation.
  std::vector<int64_t> encode(std::string_view text) const;

  /// [SOT, encode(text)..., EOT]; if longer than context_length it is cut to context_length
  /// tokens and the last one is set to EOT (clip.tokenize(truncate=True)); if shorter and `pad`,
  /// it is zero padded to context_length (id 0, as CLIP). Throws florence::Error if
  /// context_length < 2.
  std::vector<int64_t> encode_with_specials(std::string_view text,
                                            int context_length = kClipContextLength,
                                            bool pad = true) const;

  /// Batch of encode_with_specials rows: [N, context_length] int64 token ids (CPU), zero padded;
  /// row i is texts[i]. Throws florence::Error (naming the row) on invalid input.
  torch::Tensor tokenize(const std::vector<std::string>& texts,
                         int context_length = kClipContextLength) const;

  /// CLIP's decode: concatenates the tokens' strings, maps them back to bytes, decodes UTF-8
  /// with U+FFFD replacement, and turns every "</w>" into a space. Word boundaries become
  /// spaces, so e.g. "a cat." decodes to "a cat . " (the reference behaves the same). With
  /// skip_special_tokens, SOT/EOT ids are dropped first. Throws florence::Error on an id outside
  /// [0, vocab_size()).
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens = false) const;

  /// Vocabulary string of one id, in the bytes_to_unicode alphabet (e.g. "cat</w>").
  const std::string& token(int64_t id) const;
  int64_t sot_id() const;
  int64_t eot_id() const;
  int64_t vocab_size() const;
  int64_t num_merges() const;

 private:
  struct Impl;
  explicit Tokenizer(std::shared_ptr<Impl> impl);
  std::vector<int32_t> bpe_word(std::string_view word) const;
  std::shared_ptr<Impl> impl_;
};

}  // namespace florence::text
