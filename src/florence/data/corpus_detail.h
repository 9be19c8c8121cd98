#pragma once
// Helpers shared by corpus.cpp, corpus_sources.cpp and corpus_icons.cpp (internal to the data
// component).
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "florence/data/corpus.h"

namespace florence::data::detail {

/// Runs of ASCII whitespace become one space; leading and trailing whitespace is dropped.
std::string collapse_ws(const std::string& s);

/// A name from a package's metadata that becomes a file name: non-empty, no '/', no "..", so it
/// stays inside its folder.
bool safe_file_name(const std::string& name);

/// One image of a listed source (tuxpaint, openmoji, mdi, tabler, fontawesome, flags): what the
/// source's metadata says about it, before any rendering. corpus.cpp renders `path` (an .svg with
/// rsvg-convert, anything else decoded by OpenCV) and writes the sample.
struct ListedItem {
  std::string key;        ///< unique sample key
  std::string split_key;  ///< split_of(split_key): variants of one text share it
  std::string path;       ///< image file
  std::string text;       ///< caption
  std::string name;       ///< names the item in failure logs
  std::string fail_reason, fail_detail;  ///< non-empty reason: a counted failure, nothing rendered
  nlohmann::json meta;    ///< written as the sample's meta ("source", "category", ... )
};

/// The items of a listed source, in a fixed order, and what its summary should add.
struct ListedSource {
  std::vector<ListedItem> items;
  nlohmann::json head = nlohmann::json::object();  ///< merged into summary.json (package version, ...)
};

/// Reads the metadata of `o.source` (one of the listed sources) under `root`, a directory (build_corpus
/// checks it first). Throws florence::Error
/// when the metadata file itself is missing or not what the source ships (naming the setup step);
/// per-item problems become items with a fail_reason.
ListedSource list_source(const CorpusOptions& o, const std::string& root);

/// Text fields `o.fields` resolved against the source's own (empty: the source's default; a source
/// without text fields ignores them). Throws florence::Error on a field the source does not have.
std::vector<std::string> resolve_fields(const std::string& source, const std::vector<std::string>& fields);

}  // namespace florence::data::detail
