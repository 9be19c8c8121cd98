// Byte-level BPE trainer; see bpe_trainer.h.
#include "florence/text/bpe_trainer.h"

#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <queue>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "florence/core/error.h"
#include "florence/core/files.h"
#include "florence/text/tokenizer.h"

namespace florence::text {
namespace {

uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}
int32_t key_left(uint64_t k) { return static_cast<int32_t>(k >> 32); }
int32_t key_right(uint64_t k) { return static_cast<int32_t>(k & 0xFFFFFFFFu); }

std::string utf8_of(char32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s.push_back(static_cast<char>(cp));
  } else {  // the byte alphabet stays below U+0800
    s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
  return s;
}

/// Calls fn(line) for each '\n'-terminated line of a plain or gzip file ('\r' before '\n' removed).
template <typename Fn>
void for_each_line(const std::string& path, Fn&& fn) {
  std::string pending;
  auto emit = [&](std::string_view line) {
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    fn(line);
  };
  core::read_gzip_chunks(path, "tokenizer train: corpus file", [&](std::string_view chunk) {
    pending.append(chunk);
    size_t start = 0;
    for (size_t nl; (nl = pending.find('\n', start)) != std::string::npos; start = nl + 1) {
      emit(std::string_view(pending).substr(start, nl - start));
    }
    pending.erase(0, start);
  });
  if (!pending.empty()) emit(pending);
}

/// Seconds between progress lines while a corpus file is read.
constexpr double kProgressSeconds = 5.0;

struct Word {
  std::vector<int32_t> syms;
  int64_t freq = 0;
};

}  // namespace

BpeTrainer::BpeTrainer(BpeTrainerOptions options) : options_(options) {
  if (options_.vocab_size < kNumByteSymbols + 2) {
    throw Error(fmt::format(
        "tokenizer train: vocab size {} is too small: the vocabulary always holds 512 byte "
        "symbols + 2 specials, so it must be >= 514",
        options_.vocab_size));
  }
  if (options_.min_frequency < 1) {
    throw Error(fmt::format("tokenizer train: min frequency must be >= 1, got {}",
                            options_.min_frequency));
  }
}

void BpeTrainer::add_text(std::string_view text) {
  const std::string cleaned = Tokenizer::clean(text);  // throws on invalid UTF-8
  ++stats_.documents;
  for (std::string& piece : pretokenize(cleaned)) {
    if (piece == kStartOfText || piece == kEndOfText) continue;  // never BPE-encoded
    if (piece.size() > kMaxTrainWordBytes) {
      if (stats_.long_words++ == 0)
        spdlog::warn("tokenizer train: a word of {} bytes is left out (words over {} bytes are skipped and counted)",
                     piece.size(), kMaxTrainWordBytes);
      continue;
    }
    ++word_counts_[std::move(piece)];
    ++stats_.words;
  }
}

void BpeTrainer::add_file(const std::string& path) {
  int64_t line_no = 0;
  // Progress on stderr (the logger's sink): a line when the file starts and ends, one every ~5 s between.
  const auto t0 = std::chrono::steady_clock::now();
  auto last_note = t0;
  auto seconds_since = [](std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
  };
  spdlog::info("tokenizer train: reading {}", path);
  constexpr int64_t kMaxLogged = 10;
  auto skip = [&](const std::string& why) {
    ++stats_.skipped_lines;
    if (stats_.skipped_lines <= kMaxLogged) {
      spdlog::warn("tokenizer train: skipping {}:{}: {}", path, line_no, why);
    } else if (stats_.skipped_lines == kMaxLogged + 1) {
      spdlog::warn("tokenizer train: further skipped lines are only counted");
    }
  };
  for_each_line(path, [&](std::string_view line) {
    ++line_no;
    if (line_no % 4096 == 0 && seconds_since(last_note) >= kProgressSeconds) {
      last_note = std::chrono::steady_clock::now();
      spdlog::info("tokenizer train: {}: {} lines read, {} words counted ({:.0f} s)", path, line_no, stats_.words,
                   seconds_since(t0));
    }
    const size_t first = line.find_first_not_of(" \t\r\v\f");
    if (first == std::string_view::npos) {
      ++stats_.empty_lines;
      return;
    }
    std::string_view text = line;
    std::string json_text;
    if (line[first] == '{') {
      const nlohmann::json j = nlohmann::json::parse(line.begin(), line.end(), nullptr, false);
      if (!j.is_discarded() && j.is_object()) {
        auto it = j.find("text");
        if (it == j.end() || !it->is_string()) {
          skip("JSON object without a string field \"text\"");
          return;
        }
        json_text = it->get<std::string>();
        text = json_text;
      }
    }
    if (find_invalid_utf8(text) >= 0) {
      skip(fmt::format("invalid UTF-8 at byte {}", find_invalid_utf8(text)));
      return;
    }
    add_text(text);
  });
  spdlog::info("tokenizer train: {}: {} lines, {} documents and {} words so far ({} unique), {:.1f} s", path, line_no,
               stats_.documents, stats_.words, word_counts_.size(), seconds_since(t0));
}

std::vector<std::pair<std::string, std::string>> BpeTrainer::train() {
  const int64_t target = options_.vocab_size - kNumByteSymbols - 2;
  const auto& b2u = byte_to_unicode();
  const auto& order = byte_symbol_order();

  // Symbols: the 512 byte symbols (same ids as the tokenizer's vocabulary), then merge results.
  std::vector<std::string> sym_str;
  std::unordered_map<std::string, int32_t> sym_id;
  std::array<int32_t, 256> byte_sym{}, eow_sym{};
  for (int i = 0; i < 256; ++i) sym_str.push_back(utf8_of(b2u[order[i]]));
  for (int i = 0; i < 256; ++i) sym_str.push_back(sym_str[i] + std::string(kEndOfWord));
  for (int i = 0; i < 512; ++i) sym_id.emplace(sym_str[i], i);
  for (int i = 0; i < 256; ++i) {
    byte_sym[order[i]] = i;
    eow_sym[order[i]] = 256 + i;
  }

  // Words in byte order of their text, for a layout independent of hash-map iteration order.
  std::vector<std::pair<std::string_view, int64_t>> sorted;
  sorted.reserve(word_counts_.size());
  for (const auto& [w, c] : word_counts_) sorted.emplace_back(w, c);
  std::sort(sorted.begin(), sorted.end());
  stats_.unique_words = static_cast<int64_t>(sorted.size());
  std::vector<Word> words;
  words.reserve(sorted.size());
  for (const auto& [w, c] : sorted) {
    Word word;
    word.freq = c;
    for (size_t i = 0; i < w.size(); ++i) {
      const auto b = static_cast<unsigned char>(w[i]);
      word.syms.push_back(i + 1 == w.size() ? eow_sym[b] : byte_sym[b]);
    }
    words.push_back(std::move(word));
  }

  std::unordered_map<uint64_t, int64_t> counts;
  std::unordered_map<uint64_t, std::vector<int32_t>> index;  // pair -> words (may hold stale ids)
  for (size_t w = 0; w < words.size(); ++w) {
    const auto& s = words[w].syms;
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      const uint64_t k = pair_key(s[i], s[i + 1]);
      counts[k] += words[w].freq;
      auto& list = index[k];
      if (list.empty() || list.back() != static_cast<int32_t>(w)) list.push_back(static_cast<int32_t>(w));
    }
  }

  struct Entry {
    int64_t count;
    uint64_t key;
  };
  // Max-heap on count; ties: the smaller (left string, right string) comes first.
  auto lower_priority = [&sym_str](const Entry& x, const Entry& y) {
    if (x.count != y.count) return x.count < y.count;
    const std::string& xl = sym_str[key_left(x.key)];
    const std::string& yl = sym_str[key_left(y.key)];
    if (xl != yl) return xl > yl;
    return sym_str[key_right(x.key)] > sym_str[key_right(y.key)];
  };
  std::priority_queue<Entry, std::vector<Entry>, decltype(lower_priority)> heap(lower_priority);
  {
    std::vector<uint64_t> keys;
    keys.reserve(counts.size());
    for (const auto& kv : counts) keys.push_back(kv.first);
    std::sort(keys.begin(), keys.end());
    for (uint64_t k : keys) heap.push({counts[k], k});
  }

  std::vector<std::pair<std::string, std::string>> merges;
  const auto t0 = std::chrono::steady_clock::now();
  spdlog::info("tokenizer train: learning up to {} merges from {} unique words ({} distinct symbol pairs)", target,
               words.size(), counts.size());
  int64_t next_note = 1;  // progress at every tenth of the target
  std::vector<int64_t> visited(words.size(), -1);
  std::vector<int32_t> merged_syms;
  std::vector<std::pair<uint64_t, int>> deltas;
  std::vector<uint64_t> changed;
  while (static_cast<int64_t>(merges.size()) < target && !heap.empty()) {
    const Entry top = heap.top();
    heap.pop();
    auto cit = counts.find(top.key);
    if (cit == counts.end() || cit->second != top.count) continue;  // stale entry
    if (top.count < options_.min_frequency) break;
    const int32_t a = key_left(top.key), b = key_right(top.key);
    const std::string joined = sym_str[a] + sym_str[b];
    int32_t c;
    if (auto it = sym_id.find(joined); it != sym_id.end()) {
      c = it->second;  // same string reached through another merge order: same symbol
    } else {
      c = static_cast<int32_t>(sym_str.size());
      sym_str.push_back(joined);
      sym_id.emplace(joined, c);
    }
    const int64_t step = static_cast<int64_t>(merges.size());
    merges.emplace_back(sym_str[a], sym_str[b]);
    if (int64_t(merges.size()) * 10 >= next_note * target) {
      spdlog::info("tokenizer train: {} of {} merges ({}%), this one's pair occurs {} times, {:.1f} s", merges.size(),
                   target, 100 * int64_t(merges.size()) / target, top.count,
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      while (next_note * target <= int64_t(merges.size()) * 10) ++next_note;
    }

    std::vector<int32_t> affected = std::move(index[top.key]);
    index.erase(top.key);
    changed.clear();
    for (int32_t w : affected) {
      if (visited[w] == step) continue;
      visited[w] = step;
      auto& s = words[w].syms;
      merged_syms.clear();
      for (size_t i = 0; i < s.size();) {
        if (i + 1 < s.size() && s[i] == a && s[i + 1] == b) {
          merged_syms.push_back(c);
          i += 2;
        } else {
          merged_syms.push_back(s[i]);
          ++i;
        }
      }
      if (merged_syms.size() == s.size()) continue;  // stale index entry
      deltas.clear();
      for (size_t i = 0; i + 1 < s.size(); ++i) deltas.emplace_back(pair_key(s[i], s[i + 1]), -1);
      for (size_t i = 0; i + 1 < merged_syms.size(); ++i) {
        deltas.emplace_back(pair_key(merged_syms[i], merged_syms[i + 1]), +1);
      }
      std::sort(deltas.begin(), deltas.end());
      for (size_t i = 0; i < deltas.size();) {
        size_t j = i;
        int d = 0;
        while (j < deltas.size() && deltas[j].first == deltas[i].first) d += deltas[j++].second;
        const uint64_t k = deltas[i].first;
        if (d != 0) {
          int64_t& cnt = counts[k];
          cnt += d * words[w].freq;
          changed.push_back(k);
          if (d > 0) {
            auto& list = index[k];
            if (list.empty() || list.back() != w) list.push_back(w);
          }
          if (cnt == 0) counts.erase(k);
        }
        i = j;
      }
      s.swap(merged_syms);
    }
    counts.erase(top.key);
    std::sort(changed.begin(), changed.end());
    changed.erase(std::unique(changed.begin(), changed.end()), changed.end());
    for (uint64_t k : changed) {
      auto it = counts.find(k);
      if (it != counts.end() && it->second > 0) heap.push({it->second, k});
    }
  }
  stats_.merges = static_cast<int64_t>(merges.size());
  stats_.vocab_size = kNumByteSymbols + stats_.merges + 2;
  if (stats_.merges < target) {
    spdlog::warn(
        "tokenizer train: stopped after {} merges (no pair occurs >= {} times); the vocabulary "
        "has {} entries instead of the requested {}",
        stats_.merges, options_.min_frequency, stats_.vocab_size, options_.vocab_size);
  }
  return merges;
}

void write_merges_file(const std::string& path,
                       const std::vector<std::pair<std::string, std::string>>& merges,
                       const BpeTrainerOptions& options) {
  std::string text = fmt::format("#version: 0.2 florence-bpe merges={} vocab_size={} min_frequency={}\n",
                                 merges.size(), kNumByteSymbols + merges.size() + 2,
                                 options.min_frequency);
  for (const auto& [l, r] : merges) {
    text += l;
    text += ' ';
    text += r;
    text += '\n';
  }
  const std::string tmp = path + ".tmp";
  const bool gz = path.size() >= 3 && path.compare(path.size() - 3, 3, ".gz") == 0;
  if (gz) {
    gzFile f = gzopen(tmp.c_str(), "wb9");
    if (f == nullptr) throw Error(fmt::format("tokenizer train: cannot write '{}'", tmp));
    const int n = gzwrite(f, text.data(), static_cast<unsigned>(text.size()));
    const int rc = gzclose(f);
    if (n != static_cast<int>(text.size()) || rc != Z_OK) {
      std::remove(tmp.c_str());
      throw Error(fmt::format("tokenizer train: write to '{}' failed", tmp));
    }
  } else {
    std::FILE* f = std::fopen(tmp.c_str(), "wb");
    if (f == nullptr) throw Error(fmt::format("tokenizer train: cannot write '{}'", tmp));
    const size_t n = std::fwrite(text.data(), 1, text.size(), f);
    const int rc = std::fclose(f);
    if (n != text.size() || rc != 0) {
      std::remove(tmp.c_str());
      throw Error(fmt::format("tokenizer train: write to '{}' failed", tmp));
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    throw Error(fmt::format("tokenizer train: cannot rename '{}' to '{}': {}", tmp, path,
                            ec.message()));
  }
}

BpeTrainStats train_bpe(const std::vector<std::string>& corpus_files,
                        const BpeTrainerOptions& options, const std::string& out_path) {
  if (corpus_files.empty()) throw Error("tokenizer train: no corpus files given");
  BpeTrainer trainer(options);
  for (const std::string& path : corpus_files) trainer.add_file(path);
  if (trainer.stats().words == 0) {
    throw Error("tokenizer train: the corpus has no text (all lines empty or skipped)");
  }
  const auto merges = trainer.train();
  write_merges_file(out_path, merges, options);
  const BpeTrainStats& s = trainer.stats();
  spdlog::info(
      "tokenizer train: {} documents, {} words ({} unique), {} lines skipped, {} long words left out, {} merges, "
      "vocab size {} -> {}",
      s.documents, s.words, s.unique_words, s.skipped_lines, s.long_words, s.merges, s.vocab_size, out_path);
  return s;
}

}  // namespace florence::text
