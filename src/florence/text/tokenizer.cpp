// CLIP byte-level BPE tokenizer; see tokenizer.h for the pipeline and the reference it follows.
#include "florence/text/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <unicode/locid.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <limits>
#include <mutex>
#include <queue>
#include <shared_mutex>
#include <unordered_map>

#include "florence/core/error.h"
#include "florence/core/files.h"
#include "florence/text/utf8.h"

namespace florence::text {

using detail::append_utf8;
using detail::decode_utf8;

namespace {

void require_utf8(std::string_view text, const char* what) {
  const int64_t bad = find_invalid_utf8(text);
  if (bad >= 0) {
    throw Error(fmt::format("{}: text is not valid UTF-8 (ill-formed sequence starting with byte 0x{:02X} at byte offset {})",
                            what, static_cast<unsigned>(static_cast<unsigned char>(text[bad])),
                            bad));
  }
}

// ---------------------------------------------------------------------------------------------
// Whitespace and case
// ---------------------------------------------------------------------------------------------

/// Unicode White_Space (what `\s` means in CLIP's whitespace_clean regex).
bool is_white_space(char32_t c) { return u_isUWhiteSpace(static_cast<UChar32>(c)) != 0; }
/// Python's str.isspace (used by str.strip in basic_clean): White_Space plus U+001C..U+001F.
bool is_python_space(char32_t c) { return is_white_space(c) || (c >= 0x1C && c <= 0x1F); }

/// Strips leading/trailing code points matching `pred` (input valid UTF-8).
std::string_view strip_if(std::string_view s, bool (*pred)(char32_t)) {
  size_t begin = 0;
  while (begin < s.size()) {
    char32_t cp;
    const int len = decode_utf8(s, begin, cp);
    if (len <= 0 || !pred(cp)) break;
    begin += len;
  }
  size_t end = s.size();
  while (end > begin) {
    size_t start = end - 1;  // step back to the lead byte
    while (start > begin && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
    char32_t cp;
    const int len = decode_utf8(s, start, cp);
    if (len <= 0 || !pred(cp)) break;
    end = start;
  }
  return s.substr(begin, end - begin);
}

std::string lowercase(std::string_view s) {
  const bool ascii = std::all_of(s.begin(), s.end(),
                                 [](char c) { return static_cast<unsigned char>(c) < 0x80; });
  std::string out;
  if (ascii) {
    out.assign(s);
    for (char& c : out) {
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    }
    return out;
  }
  // Full case mapping in the root locale (context-sensitive final sigma, U+0130 -> "i̇"), which
  // is what Python's str.lower does.
  icu::UnicodeString u = icu::UnicodeString::fromUTF8(icu::StringPiece(s.data(), s.size()));
  u.toLower(icu::Locale::getRoot());
  u.toUTF8String(out);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Pre-tokenizer (PCRE2)
// ---------------------------------------------------------------------------------------------

/// CLIP's pattern (simple_tokenizer.py), compiled with UTF + UCP (Unicode \p{..} and \s) and
/// CASELESS (the reference uses re.IGNORECASE). Compiled once; pcre2_code is thread-safe to share.
class PreTokenizer {
 public:
  PreTokenizer() {
    static const char* kPattern =
        R"(<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+)";
    int err = 0;
    PCRE2_SIZE err_offset = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kPattern), PCRE2_ZERO_TERMINATED,
                          PCRE2_UTF | PCRE2_UCP | PCRE2_CASELESS, &err, &err_offset, nullptr);
    if (code_ == nullptr) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof(msg));
      throw Error(fmt::format("tokenizer: cannot compile the pre-tokenizer regex: {}",
                              reinterpret_cast<const char*>(msg)));
    }
    pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);  // falls back to the interpreter on failure
  }
  ~PreTokenizer() { pcre2_code_free(code_); }
  PreTokenizer(const PreTokenizer&) = delete;
  PreTokenizer& operator=(const PreTokenizer&) = delete;

  /// Calls fn(piece) for every match in order. `text` must be valid UTF-8.
  template <typename Fn>
  void for_each(std::string_view text, Fn&& fn) const {
    std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> md(
        pcre2_match_data_create_from_pattern(code_, nullptr), &pcre2_match_data_free);
    if (!md) throw Error("tokenizer: out of memory for regex match data");
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    PCRE2_SIZE offset = 0;
    while (offset < text.size()) {
      const int rc = pcre2_match(code_, subject, text.size(), offset, PCRE2_NO_UTF_CHECK, md.get(),
                                 nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof(msg));
        throw Error(fmt::format("tokenizer: pre-tokenizer regex failed: {}",
                                reinterpret_cast<const char*>(msg)));
      }
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
      if (ov[1] <= ov[0]) break;  // the pattern has no empty alternative; defensive
      fn(text.substr(ov[0], ov[1] - ov[0]));
      offset = ov[1];
    }
  }

 private:
  pcre2_code* code_ = nullptr;
};

const PreTokenizer& pre_tokenizer() {
  static const PreTokenizer instance;
  return instance;
}

/// Inverse of byte_to_unicode(): code point -> byte, -1 for code points outside the alphabet.
int unicode_to_byte(char32_t cp) {
  static const std::array<int, 324> table = [] {
    std::array<int, 324> t{};
    t.fill(-1);
    for (int b = 0; b < 256; ++b) t[byte_to_unicode()[b]] = b;
    return t;
  }();
  return cp < table.size() ? table[cp] : -1;
}

std::string read_all(const std::string& path) { return core::read_gzip_file(path, "tokenizer: merges file"); }

std::vector<std::string_view> split_ascii_space(std::string_view line) {
  std::vector<std::string_view> parts;
  size_t i = 0;
  auto space = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; };
  while (i < line.size()) {
    while (i < line.size() && space(line[i])) ++i;
    const size_t start = i;
    while (i < line.size() && !space(line[i])) ++i;
    if (i > start) parts.push_back(line.substr(start, i - start));
  }
  return parts;
}

constexpr size_t kCacheShards = 16;

}  // namespace

// -------------------------------------------------------------------------------------------------
// Free functions
// -------------------------------------------------------------------------------------------------

const std::array<char32_t, 256>& byte_to_unicode() {
  static const std::array<char32_t, 256> table = [] {
    std::array<char32_t, 256> t{};
    char32_t next = 256;  // remapped bytes take U+0100, U+0101, ... in byte order
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      t[b] = printable ? static_cast<char32_t>(b) : next++;
    }
    return t;
  }();
  return table;
}

const std::array<uint8_t, 256>& byte_symbol_order() {
  static const std::array<uint8_t, 256> order = [] {
    std::array<uint8_t, 256> o{};
    int k = 0;
    for (int b = 0; b < 256; ++b) {  // bytes that keep their own code point first ...
      if (byte_to_unicode()[b] == static_cast<char32_t>(b)) o[k++] = static_cast<uint8_t>(b);
    }
    for (int b = 0; b < 256; ++b) {  // ... then the remapped ones
      if (byte_to_unicode()[b] != static_cast<char32_t>(b)) o[k++] = static_cast<uint8_t>(b);
    }
    return o;
  }();
  return order;
}

std::vector<std::string> pretokenize(std::string_view cleaned) {
  require_utf8(cleaned, "pretokenize");
  std::vector<std::string> pieces;
  pre_tokenizer().for_each(cleaned, [&](std::string_view p) { pieces.emplace_back(p); });
  return pieces;
}

// -------------------------------------------------------------------------------------------------
// Tokenizer
// -------------------------------------------------------------------------------------------------

struct Tokenizer::Impl {
  TokenizerOptions options;
  std::vector<std::string> vocab;        ///< id -> string in the byte alphabet
  std::vector<std::string> vocab_bytes;  ///< id -> raw bytes ("</w>" kept literally)
  std::unordered_map<std::string, int32_t> encoder;  ///< string -> id (last duplicate wins)
  /// (left id << 32 | right id) -> (rank, merged id); the last duplicate pair wins, as in the
  /// reference's dict(zip(merges, range(...))).
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges;
  std::array<int32_t, 256> byte_id{};  ///< byte -> id of its plain symbol
  std::array<int32_t, 256> eow_id{};   ///< byte -> id of its symbol + "</w>"
  int32_t sot = 0, eot = 0;
  int64_t num_merges = 0;

  struct Shard {
    mutable std::shared_mutex mutex;
    std::unordered_map<std::string, std::vector<int32_t>> words;
  };
  std::array<Shard, kCacheShards> cache;
};

Tokenizer::Tokenizer(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

Tokenizer Tokenizer::from_merges(const std::vector<std::pair<std::string, std::string>>& merges,
                                 TokenizerOptions options) {
  auto impl = std::make_shared<Impl>();
  impl->options = options;
  impl->num_merges = static_cast<int64_t>(merges.size());
  if (impl->num_merges > std::numeric_limits<int32_t>::max() - 1024) {
    throw Error(fmt::format("tokenizer: too many merges ({})", merges.size()));
  }
  const auto& b2u = byte_to_unicode();
  const auto& order = byte_symbol_order();
  auto& vocab = impl->vocab;
  vocab.reserve(kNumByteSymbols + merges.size() + 2);
  for (int i = 0; i < 256; ++i) {
    std::string s;
    append_utf8(s, b2u[order[i]]);
    vocab.push_back(std::move(s));
  }
  for (int i = 0; i < 256; ++i) vocab.push_back(vocab[i] + std::string(kEndOfWord));

  auto check_part = [](const std::string& part, size_t index) {
    if (part.empty()) throw Error(fmt::format("tokenizer: merge {} has an empty part", index + 1));
    size_t i = 0;
    while (i < part.size()) {
      char32_t cp;
      const int len = decode_utf8(part, i, cp);
      if (len <= 0 || unicode_to_byte(cp) < 0) {
        throw Error(fmt::format(
            "tokenizer: merge {} ('{}') contains a character outside the byte alphabet "
            "(bytes_to_unicode) at byte {}",
            index + 1, utf8_decode_replace(part), i));
      }
      i += len;
    }
  };
  for (size_t m = 0; m < merges.size(); ++m) {
    check_part(merges[m].first, m);
    check_part(merges[m].second, m);
    vocab.push_back(merges[m].first + merges[m].second);
  }
  vocab.emplace_back(kStartOfText);
  vocab.emplace_back(kEndOfText);

  impl->vocab_bytes.reserve(vocab.size());
  for (const std::string& v : vocab) {
    std::string bytes;
    size_t i = 0;
    while (i < v.size()) {
      char32_t cp;
      const int len = decode_utf8(v, i, cp);
      bytes.push_back(static_cast<char>(unicode_to_byte(cp)));  // validated above (specials: ASCII)
      i += static_cast<size_t>(len);
    }
    impl->vocab_bytes.push_back(std::move(bytes));
  }
  impl->encoder.reserve(vocab.size());
  for (size_t id = 0; id < vocab.size(); ++id) impl->encoder[vocab[id]] = static_cast<int32_t>(id);
  for (int i = 0; i < 256; ++i) {
    impl->byte_id[order[i]] = impl->encoder.at(vocab[i]);
    impl->eow_id[order[i]] = impl->encoder.at(vocab[256 + i]);
  }
  impl->sot = impl->encoder.at(std::string(kStartOfText));
  impl->eot = impl->encoder.at(std::string(kEndOfText));

  impl->merges.reserve(merges.size());
  for (size_t m = 0; m < merges.size(); ++m) {
    auto a = impl->encoder.find(merges[m].first);
    auto b = impl->encoder.find(merges[m].second);
    if (a == impl->encoder.end() || b == impl->encoder.end()) continue;  // can never apply
    const uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(a->second)) << 32) |
                         static_cast<uint32_t>(b->second);
    const int32_t merged = impl->encoder.at(merges[m].first + merges[m].second);
    impl->merges[key] = {static_cast<int32_t>(m), merged};
  }
  return Tokenizer(std::move(impl));
}

Tokenizer Tokenizer::from_file(const std::string& path, TokenizerOptions options) {
  const std::string data = read_all(path);
  std::vector<std::string_view> lines;
  {
    std::string_view rest(data);
    while (!rest.empty()) {
      const size_t nl = rest.find('\n');
      if (nl == std::string_view::npos) {
        lines.push_back(rest);
        break;
      }
      lines.push_back(rest.substr(0, nl));
      rest.remove_prefix(nl + 1);
    }
  }
  if (lines.empty()) throw Error(fmt::format("tokenizer: merges file '{}' is empty", path));
  const int64_t available = static_cast<int64_t>(lines.size()) - 1;  // after the header line

  int64_t wanted = options.max_merges;
  const char* source = "--max-merges";
  if (wanted < 0) {
    const std::string_view header = lines[0];
    const size_t pos = header.find("merges=");
    if (pos != std::string_view::npos) {
      int64_t v = 0;
      size_t k = pos + 7;
      bool digits = false;
      while (k < header.size() && header[k] >= '0' && header[k] <= '9') {
        v = v * 10 + (header[k] - '0');
        digits = true;
        ++k;
        if (v > (int64_t{1} << 40)) break;
      }
      if (digits) {
        wanted = v;
        source = "its header";
      }
    }
  }
  if (wanted < 0) {
    wanted = std::min(available, kClipNumMerges);  // CLIP: merges[1:49152-256-2+1]
  } else if (wanted > available) {
    throw Error(fmt::format("tokenizer: merges file '{}' has {} merge lines but {} asks for {}",
                            path, available, source, wanted));
  }

  std::vector<std::pair<std::string, std::string>> merges;
  merges.reserve(static_cast<size_t>(wanted));
  for (int64_t m = 1; m <= wanted; ++m) {
    const auto parts = split_ascii_space(lines[static_cast<size_t>(m)]);
    if (parts.size() != 2) {
      throw Error(fmt::format("tokenizer: merges file '{}' line {}: expected two symbols, got {}",
                              path, m + 1, parts.size()));
    }
    merges.emplace_back(std::string(parts[0]), std::string(parts[1]));
  }
  try {
    return from_merges(merges, options);
  } catch (const Error& e) {
    throw Error(fmt::format("{} (file '{}'; merge k is on line k+1)", e.what(), path));
  }
}

std::string Tokenizer::clean(std::string_view text) {
  require_utf8(text, "tokenizer");
  // basic_clean: html.unescape twice, then str.strip().
  const std::string unescaped = html_unescape(html_unescape(text));
  const std::string_view stripped = strip_if(unescaped, &is_python_space);
  // whitespace_clean: every run of White_Space -> one space, then strip.
  std::string collapsed;
  collapsed.reserve(stripped.size());
  size_t i = 0;
  bool in_space = false;
  while (i < stripped.size()) {
    char32_t cp;
    const int len = decode_utf8(stripped, i, cp);  // valid: unescape only emits valid UTF-8
    if (is_white_space(cp)) {
      if (!in_space) collapsed.push_back(' ');
      in_space = true;
    } else {
      collapsed.append(stripped.substr(i, static_cast<size_t>(len)));
      in_space = false;
    }
    i += static_cast<size_t>(len);
  }
  const std::string_view trimmed = strip_if(collapsed, &is_white_space);
  return lowercase(trimmed);
}

std::vector<int32_t> Tokenizer::bpe_word(std::string_view word) const {
  const Impl& im = *impl_;
  Impl::Shard* shard = nullptr;
  if (im.options.cache_capacity > 0) {
    shard = &impl_->cache[std::hash<std::string_view>{}(word) % kCacheShards];
    std::shared_lock lock(shard->mutex);
    auto it = shard->words.find(std::string(word));
    if (it != shard->words.end()) return it->second;
  }
  // Byte symbols, then merges in rank order. The reference (CLIP simple_tokenizer.bpe) rescans
  // the word for its best pair after every merge round, O(n^2) for an n-byte word; here the
  // candidate pairs sit in a heap ordered by (rank, position) over a linked list of symbols,
  // O(n log n). Equivalent: a round takes every occurrence of the lowest rank in left-to-right
  // order (an occurrence overlapping an earlier merge of the round is dropped, as the
  // reference's left-to-right scan skips it), and the pairs the round creates are only added
  // after it, so the next round again sees exactly the reference's current pairs.
  const int64_t n = static_cast<int64_t>(word.size());
  std::vector<int32_t> ids(static_cast<size_t>(n));
  std::vector<int64_t> prev(static_cast<size_t>(n)), next(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const auto b = static_cast<unsigned char>(word[static_cast<size_t>(i)]);
    ids[static_cast<size_t>(i)] = i + 1 == n ? im.eow_id[b] : im.byte_id[b];
    prev[static_cast<size_t>(i)] = i - 1;
    next[static_cast<size_t>(i)] = i + 1;  // n: none
  }
  struct Candidate {
    int32_t rank;
    int64_t pos;
    int32_t left, right, merged;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
  auto push_pair = [&](int64_t i) {  // the pair starting at symbol i, if it has a merge
    if (i < 0) return;
    const int64_t j = next[static_cast<size_t>(i)];
    if (j >= n) return;
    const int32_t l = ids[static_cast<size_t>(i)], r = ids[static_cast<size_t>(j)];
    const uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(l)) << 32) | static_cast<uint32_t>(r);
    auto it = im.merges.find(key);
    if (it != im.merges.end()) heap.push({it->second.first, i, l, r, it->second.second});
  };
  for (int64_t i = 0; i + 1 < n; ++i) push_pair(i);
  std::vector<char> alive(static_cast<size_t>(n), 1);
  std::vector<int64_t> merged_at;
  while (!heap.empty()) {
    const int32_t rank = heap.top().rank;
    merged_at.clear();
    while (!heap.empty() && heap.top().rank == rank) {
      const Candidate c = heap.top();
      heap.pop();
      const auto i = static_cast<size_t>(c.pos);
      if (!alive[i] || ids[i] != c.left) continue;
      const int64_t j = next[i];
      if (j >= n || ids[static_cast<size_t>(j)] != c.right) continue;
      ids[i] = c.merged;
      alive[static_cast<size_t>(j)] = 0;
      next[i] = next[static_cast<size_t>(j)];
      if (next[i] < n) prev[static_cast<size_t>(next[i])] = c.pos;
      merged_at.push_back(c.pos);
    }
    for (int64_t i : merged_at) {
      push_pair(prev[static_cast<size_t>(i)]);
      push_pair(i);
    }
  }
  std::vector<int32_t> syms;
  for (int64_t i = 0; i < n; i = next[static_cast<size_t>(i)]) syms.push_back(ids[static_cast<size_t>(i)]);
  if (shard != nullptr) {
    std::unique_lock lock(shard->mutex);
    if (shard->words.size() >= std::max<size_t>(1, im.options.cache_capacity / kCacheShards)) {
      shard->words.clear();
    }
    shard->words.emplace(std::string(word), syms);
  }
  return syms;
}

std::vector<int64_t> Tokenizer::encode(std::string_view text) const {
  const std::string cleaned = clean(text);
  std::vector<int64_t> ids;
  ids.reserve(cleaned.size() / 3 + 1);
  const bool specials = impl_->options.specials_in_text;
  pre_tokenizer().for_each(cleaned, [&](std::string_view piece) {
    if (specials && piece == kStartOfText) {
      ids.push_back(impl_->sot);
    } else if (specials && piece == kEndOfText) {
      ids.push_back(impl_->eot);
    } else {
      for (int32_t id : bpe_word(piece)) ids.push_back(id);
    }
  });
  return ids;
}

std::vector<int64_t> Tokenizer::encode_with_specials(std::string_view text, int context_length,
                                                     bool pad) const {
  if (context_length < 2) {
    throw Error(fmt::format("tokenizer: context_length must be >= 2 (SOT + EOT), got {}",
                            context_length));
  }
  const std::vector<int64_t> body = encode(text);
  std::vector<int64_t> ids(static_cast<size_t>(context_length), 0);
  ids[0] = impl_->sot;
  const size_t keep = std::min(body.size(), static_cast<size_t>(context_length) - 2);
  std::copy_n(body.begin(), keep, ids.begin() + 1);
  ids[keep + 1] = impl_->eot;  // == context_length - 1 when truncated
  if (!pad) ids.resize(keep + 2);
  return ids;
}

torch::Tensor Tokenizer::tokenize(const std::vector<std::string>& texts,
                                  int context_length) const {
  if (context_length < 2) {
    throw Error(fmt::format("tokenizer: context_length must be >= 2 (SOT + EOT), got {}",
                            context_length));
  }
  torch::Tensor out =
      torch::zeros({static_cast<int64_t>(texts.size()), context_length}, torch::kLong);
  auto acc = out.accessor<int64_t, 2>();
  for (size_t r = 0; r < texts.size(); ++r) {
    std::vector<int64_t> row;
    try {
      row = encode_with_specials(texts[r], context_length);
    } catch (const Error& e) {
      throw Error(fmt::format("tokenize: text {}: {}", r, e.what()));
    }
    for (int c = 0; c < context_length; ++c) acc[static_cast<int64_t>(r)][c] = row[c];
  }
  return out;
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  std::string bytes;
  for (size_t k = 0; k < ids.size(); ++k) {
    const int64_t id = ids[k];
    if (id < 0 || id >= vocab_size()) {
      throw Error(fmt::format("tokenizer: decode: id {} at position {} is outside [0, {})", id, k,
                              vocab_size()));
    }
    if (skip_special_tokens && (id == impl_->sot || id == impl_->eot)) continue;
    bytes += impl_->vocab_bytes[static_cast<size_t>(id)];
  }
  std::string text = utf8_decode_replace(bytes);
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const size_t pos = text.find(kEndOfWord, i);
    if (pos == std::string::npos) {
      out.append(text, i, std::string::npos);
      break;
    }
    out.append(text, i, pos - i);
    out.push_back(' ');
    i = pos + kEndOfWord.size();
  }
  return out;
}

const std::string& Tokenizer::token(int64_t id) const {
  if (id < 0 || id >= vocab_size()) {
    throw Error(fmt::format("tokenizer: id {} is outside [0, {})", id, vocab_size()));
  }
  return impl_->vocab[static_cast<size_t>(id)];
}
int64_t Tokenizer::sot_id() const { return impl_->sot; }
int64_t Tokenizer::eot_id() const { return impl_->eot; }
int64_t Tokenizer::vocab_size() const { return static_cast<int64_t>(impl_->vocab.size()); }
int64_t Tokenizer::num_merges() const { return impl_->num_merges; }

}  // namespace florence::text
