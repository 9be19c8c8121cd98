// UTF-8 decoding / encoding and Python's html.unescape for the tokenizer's text cleaning; the
// public functions are declared in tokenizer.h, the two code-point helpers in utf8.h.
#include <algorithm>
#include <cstdint>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include "florence/text/tokenizer.h"
#include "florence/text/utf8.h"

namespace florence::text {

namespace detail {

/// Decodes one code point at s[i]. Returns its length (> 0) and sets cp, or returns -k where k
/// >= 1 is the length of the maximal ill-formed subpart starting at i (Unicode 3.9, "maximal
/// subpart" practice, which Python's errors='replace' follows).
int decode_utf8(std::string_view s, size_t i, char32_t& cp) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  const unsigned b0 = p[i];
  if (b0 < 0x80) {
    cp = b0;
    return 1;
  }
  int len;
  unsigned lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
    cp = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    cp = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;  // no overlongs
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    cp = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;  // no overlongs
    if (b0 == 0xF4) hi = 0x8F;  // <= U+10FFFF
  } else {
    return -1;
  }
  for (int k = 1; k < len; ++k) {
    if (i + k >= n) return -k;
    const unsigned b = p[i + k];
    const unsigned l = (k == 1) ? lo : 0x80u, h = (k == 1) ? hi : 0xBFu;
    if (b < l || b > h) return -k;
    cp = (cp << 6) | (b & 0x3F);
  }
  return len;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

}  // namespace detail

using detail::append_utf8;
using detail::decode_utf8;

namespace {

// HTML character references (Python's html.unescape): the WHATWG named references, sorted by name.
struct Entity {
  const char* name;
  const char* value;
};
constexpr Entity kEntities[] = {
#include "florence/text/html_entities.inc"
};

const char* find_entity(std::string_view name) {
  const auto* end = std::end(kEntities);
  const auto* it = std::lower_bound(std::begin(kEntities), end, name,
                                    [](const Entity& e, std::string_view n) {
                                      return std::string_view(e.name) < n;
                                    });
  if (it != end && std::string_view(it->name) == name) return it->value;
  return nullptr;
}

/// The WHATWG replacement for a numeric reference to 0x80..0x9F (windows-1252 reading; the five
/// bytes windows-1252 leaves undefined map to themselves).
constexpr char32_t kWindows1252[32] = {
    0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021,  // 80-87
    0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0x008D, 0x017D, 0x008F,  // 88-8F
    0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,  // 90-97
    0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178,  // 98-9F
};

/// Appends the text of numeric reference value `v` (already saturated above 0x10FFFF).
void append_numeric_reference(std::string& out, uint64_t v) {
  if (v == 0) return append_utf8(out, 0xFFFD);
  if (v == 0x0D) return append_utf8(out, 0x0D);
  if (v >= 0x80 && v <= 0x9F) return append_utf8(out, kWindows1252[v - 0x80]);
  if ((v >= 0xD800 && v <= 0xDFFF) || v > 0x10FFFF) return append_utf8(out, 0xFFFD);
  const bool dropped = (v >= 0x01 && v <= 0x08) || v == 0x0B || (v >= 0x0E && v <= 0x1F) ||
                       v == 0x7F || (v >= 0xFDD0 && v <= 0xFDEF) || (v & 0xFFFE) == 0xFFFE;
  if (dropped) return;
  append_utf8(out, static_cast<char32_t>(v));
}

bool is_hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
unsigned hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return c - 'A' + 10;
}

}  // namespace

int64_t find_invalid_utf8(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    if (static_cast<unsigned char>(text[i]) < 0x80) {
      ++i;
      continue;
    }
    char32_t cp;
    const int len = decode_utf8(text, i, cp);
    if (len < 0) {
      // Report the byte that breaks the sequence (the lead byte when it is itself invalid).
      return static_cast<int64_t>(i);  // start of the ill-formed sequence
    }
    i += len;
  }
  return -1;
}

std::string utf8_decode_replace(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t i = 0;
  while (i < bytes.size()) {
    char32_t cp;
    const int len = decode_utf8(bytes, i, cp);
    if (len > 0) {
      out.append(bytes.substr(i, len));
      i += len;
    } else {
      append_utf8(out, 0xFFFD);
      i += static_cast<size_t>(-len);
    }
  }
  return out;
}

std::string html_unescape(std::string_view s) {
  if (s.find('&') == std::string_view::npos) return std::string(s);
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  const size_t n = s.size();
  constexpr uint64_t kSaturate = 0x110000;  // any larger value means "out of range" anyway
  while (i < n) {
    const size_t amp = s.find('&', i);
    if (amp == std::string_view::npos) {
      out.append(s.substr(i));
      break;
    }
    out.append(s.substr(i, amp - i));
    i = amp + 1;  // past '&'
    if (i < n && s[i] == '#') {
      // Numeric reference: &#[0-9]+;? or &#[xX][0-9a-fA-F]+;?
      size_t j = i + 1;
      uint64_t v = 0;
      bool matched = false;
      if (j < n && s[j] >= '0' && s[j] <= '9') {
        while (j < n && s[j] >= '0' && s[j] <= '9') {
          v = std::min<uint64_t>(v * 10 + static_cast<uint64_t>(s[j] - '0'), kSaturate);
          ++j;
        }
        matched = true;
      } else if (j + 1 < n && (s[j] == 'x' || s[j] == 'X') && is_hex(s[j + 1])) {
        ++j;
        while (j < n && is_hex(s[j])) {
          v = std::min<uint64_t>(v * 16 + hex_value(s[j]), kSaturate);
          ++j;
        }
        matched = true;
      }
      if (!matched) {  // '#' cannot start a name either: the '&' stays literal
        out.push_back('&');
        continue;
      }
      if (j < n && s[j] == ';') ++j;
      append_numeric_reference(out, v);
      i = j;
      continue;
    }
    // Named reference: 1..32 code points other than \t \n \f space < & # ;  then an optional ';'.
    std::vector<size_t> ends;  // byte end of each code point of the name
    size_t j = i;
    while (j < n && ends.size() < 32) {
      const char c = s[j];
      if (c == '\t' || c == '\n' || c == '\f' || c == ' ' || c == '<' || c == '&' || c == '#' ||
          c == ';') {
        break;
      }
      char32_t cp;
      const int len = decode_utf8(s, j, cp);
      j += len > 0 ? static_cast<size_t>(len) : size_t{1};
      ends.push_back(j);
    }
    if (ends.empty()) {
      out.push_back('&');
      continue;
    }
    if (j < n && s[j] == ';') {
      ++j;
      ends.push_back(j);
    }
    const std::string_view name = s.substr(i, j - i);
    if (const char* value = find_entity(name)) {
      out.append(value);
      i = j;
      continue;
    }
    // Longest prefix of at least 2 code points that is a name (only the legacy forms without
    // ';' can match, since a prefix never ends in ';').
    bool replaced = false;
    for (size_t x = ends.size() - 1; x >= 2; --x) {
      const std::string_view prefix = s.substr(i, ends[x - 1] - i);
      if (const char* value = find_entity(prefix)) {
        out.append(value);
        out.append(s.substr(ends[x - 1], j - ends[x - 1]));
        replaced = true;
        break;
      }
    }
    if (!replaced) {
      out.push_back('&');
      out.append(name);
    }
    i = j;
  }
  return out;
}

}  // namespace florence::text
