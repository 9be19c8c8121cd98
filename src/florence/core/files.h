#pragma once
// Small text-file helpers shared by the components that write run folders (training,
// fine-tuning, evaluation): whole-file reads with a clear error, and atomic writes (a temporary
// file in the same folder, then rename(2), so a reader - or a crash - never sees half a file).
#include <nlohmann/json_fwd.hpp>

#include <filesystem>
#include <functional>
#include <string>
#include <string_view>

namespace florence::core {

/// Writes `text` to `path` atomically: `.NAME.tmp` beside it, flushed, then renamed over `path`.
/// The parent folder must exist. Throws florence::Error naming the file on any I/O failure.
void write_text_atomic(const std::filesystem::path& path, const std::string& text);

/// The whole file as bytes. Throws florence::Error("cannot read '...'") when it cannot be opened.
std::string read_text_file(const std::filesystem::path& path);

/// The file parsed as JSON. Throws florence::Error naming the file when it cannot be read or is not
/// valid JSON (with the parser's message).
nlohmann::json read_json_file(const std::filesystem::path& path);

/// Streams a plain or gzip file (zlib reads plain files transparently) in chunks to `fn`.
/// Throws florence::Error, prefixed with `what` and naming the file, when it cannot be opened or
/// read, and when a gzip stream is truncated or corrupt (zlib's gzread returns end-of-file at a
/// cut stream; gzclose reports it), so a cut-off file is never taken for a complete one.
void read_gzip_chunks(const std::filesystem::path& path, const std::string& what,
                      const std::function<void(std::string_view)>& fn);

/// The whole plain or gzip file as bytes; errors as read_gzip_chunks.
std::string read_gzip_file(const std::filesystem::path& path, const std::string& what);

}  // namespace florence::core
