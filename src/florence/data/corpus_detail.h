#pragma once
// Helpers shared by corpus.cpp and corpus_sources.cpp (internal to the data component).
#include <string>

namespace florence::data::detail {

/// Runs of ASCII whitespace become one space; leading and trailing whitespace is dropped.
std::string collapse_ws(const std::string& s);

}  // namespace florence::data::detail
