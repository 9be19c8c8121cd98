// MetaCLIP-style balanced sampling; see balance.h.
#include "florence/curate/balance.h"

#include <xxhash.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "florence/core/error.h"

namespace florence::curate {

double balance_keep_probability(int64_t count, double t) {
  if (!(t > 0)) throw Error("balance: t must be > 0");
  return t / std::max(double(count), t);
}

double balance_uniform(uint64_t seed, std::string_view key, uint64_t entry_tag) {
  const uint64_t s = seed ^ (entry_tag * 0x9E3779B97F4A7C15ull);  // golden-ratio multiplier spreads tags
  const uint64_t h = XXH3_64bits_withSeed(key.data(), key.size(), s);
  return double(h >> 11) * (1.0 / 9007199254740992.0);  // 2^53
}

bool balance_keep(const uint32_t* entries, size_t num_entries, const std::vector<int64_t>& counts,
                  const std::vector<uint64_t>& tags, double t, uint64_t seed, std::string_view key) {
  for (size_t i = 0; i < num_entries; ++i) {
    const uint32_t e = entries[i];
    if (balance_uniform(seed, key, tags[e]) < balance_keep_probability(counts[e], t)) return true;
  }
  return false;
}

std::vector<std::string> EntryList::words(const std::string& text) {
  std::vector<std::string> out;
  std::string cur;
  for (char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    const bool word = c >= 0x80 || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    if (word) {
      cur.push_back(c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : ch);
    } else if (!cur.empty()) {
      out.push_back(std::move(cur));
      cur.clear();
    }
  }
  if (!cur.empty()) out.push_back(std::move(cur));
  return out;
}

namespace {
std::string join_words(const std::vector<std::string>& w, size_t begin, size_t end) {
  std::string s;
  for (size_t i = begin; i < end; ++i) {
    if (i > begin) s.push_back(' ');
    s += w[i];
  }
  return s;
}
}  // namespace

EntryList EntryList::from_entries(const std::vector<std::string>& entries) {
  EntryList l;
  for (const std::string& e : entries) {
    const auto w = words(e);
    if (w.empty()) continue;
    const std::string joined = join_words(w, 0, w.size());
    if (l.by_words_.count(joined)) continue;
    l.by_words_.emplace(joined, uint32_t(l.entries_.size()));
    l.entries_.push_back(e);
    l.max_words_ = std::max(l.max_words_, w.size());
  }
  return l;
}

EntryList EntryList::from_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("balance entries: cannot read '" + path + "'");
  std::vector<std::string> entries;
  const bool is_json = path.size() >= 5 && path.compare(path.size() - 5, 5, ".json") == 0;
  if (is_json) {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      throw Error("balance entries: '" + path + "' is not valid JSON: " + e.what());
    }
    if (!j.is_array()) throw Error("balance entries: '" + path + "' must hold a JSON array of strings");
    for (size_t i = 0; i < j.size(); ++i) {
      if (!j[i].is_string()) throw Error("balance entries: '" + path + "' item " + std::to_string(i) + " is not a string");
      entries.push_back(j[i].get<std::string>());
    }
  } else {
    std::string line;
    while (std::getline(in, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      entries.push_back(line);
    }
  }
  EntryList l = from_entries(entries);
  if (l.size() == 0) throw Error("balance entries: '" + path + "' has no entry with a word in it");
  return l;
}

std::vector<uint32_t> EntryList::match(const std::string& text) const {
  std::vector<uint32_t> out;
  const auto w = words(text);
  for (size_t i = 0; i < w.size(); ++i) {
    std::string s;
    for (size_t n = 1; n <= max_words_ && i + n <= w.size(); ++n) {
      if (n > 1) s.push_back(' ');
      s += w[i + n - 1];
      auto it = by_words_.find(s);
      if (it != by_words_.end()) out.push_back(it->second);
    }
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

}  // namespace florence::curate
