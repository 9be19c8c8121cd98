#pragma once
// Internal to text/: one code point of UTF-8 in and out (unicode.cpp), shared by the tokenizer's
// cleaning and pre-tokenizing (tokenizer.cpp) and the HTML unescaping. Not part of the installed API.
#include <cstddef>
#include <string>
#include <string_view>

namespace florence::text::detail {

/// Decodes the code point at s[i] (i < s.size()). Returns its length in bytes (1-4) and sets `cp`,
/// or -k (k >= 1): the length of the maximal ill-formed subpart at i (Unicode 15 §3.9, the
/// practice Python's errors='replace' follows); `cp` is then unspecified.
int decode_utf8(std::string_view s, size_t i, char32_t& cp);

/// Appends `cp` (<= U+10FFFF, not checked) to `out` as 1-4 bytes of UTF-8.
void append_utf8(std::string& out, char32_t cp);

}  // namespace florence::text::detail
