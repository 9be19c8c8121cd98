#pragma once
// Small text-file helpers shared by the components that write run folders (training,
// fine-tuning, evaluation): whole-file reads with a clear error, and atomic writes (a temporary
// file in the same folder, then rename(2), so a reader - or a crash - never sees half a file).
#include <nlohmann/json_fwd.hpp>

#include <filesystem>
#include <string>

namespace florence::core {

/// Writes `text` to `path` atomically: `.NAME.tmp` beside it, flushed, then renamed over `path`.
/// The parent folder must exist. Throws florence::Error naming the file on any I/O failure.
void write_text_atomic(const std::filesystem::path& path, const std::string& text);

/// The whole file as bytes. Throws florence::Error("cannot read '...'") when it cannot be opened.
std::string read_text_file(const std::filesystem::path& path);

/// The file parsed as JSON. Throws florence::Error naming the file when it cannot be read or is not
/// valid JSON (with the parser's message).
nlohmann::json read_json_file(const std::filesystem::path& path);

}  // namespace florence::core
