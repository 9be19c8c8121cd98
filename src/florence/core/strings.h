#pragma once
// Two string helpers the components share (C++17 has neither).
#include <cctype>
#include <string>
#include <string_view>

namespace florence::core {

/// `s` with ASCII letters lower-cased (other bytes, UTF-8 included, unchanged): file extensions,
/// column names.
inline std::string ascii_lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

/// Whether `s` ends with `suffix` (std::string::ends_with of C++20).
inline bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace florence::core
