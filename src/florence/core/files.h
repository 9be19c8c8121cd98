#pragma once
// Small text-file helpers shared by the components that write run folders (training,
// fine-tuning, evaluation): whole-file reads with a clear error, and atomic writes (a temporary
// file in the same folder, then rename(2), so a reader - or a crash - never sees half a file).
#include <nlohmann/json_fwd.hpp>

#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace florence::core {

/// Writes the concatenation of `parts` to `path` atomically: a unique `.NAME.tmp-…` beside it,
/// fsync'ed, renamed over `path`, then the folder fsync'ed (best-effort). The parent folder must
/// exist. On any failure (full disk, file-size limit, permissions) the temporary file is removed,
/// `path` keeps its old content, and florence::Error says "cannot write 'PATH': STEP: REASON"
/// with the system's words (e.g. "No space left on device", "File too large").
void write_file_atomic(const std::filesystem::path& path, const std::vector<std::string_view>& parts);

/// The same, with the content written by `fill` to the temporary file's descriptor (for writers
/// that stream, e.g. a FAISS index): `fill` returns false with errno set on a failed write (or
/// throws; the temporary is removed either way, and the exception passes through).
void write_file_atomic_with(const std::filesystem::path& path, const std::function<bool(int fd)>& fill);

/// write_file_atomic of one text.
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
