// Text-file helpers; see files.h.
#include "florence/core/files.h"

#include <zlib.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "florence/core/error.h"

namespace florence::core {

namespace fs = std::filesystem;

void write_text_atomic(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.parent_path() / ("." + path.filename().string() + ".tmp");
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw Error(fmt::format("cannot write '{}'", tmp.string()));
    f << text;
    f.flush();
    if (!f) throw Error(fmt::format("cannot write '{}'", tmp.string()));
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw Error(fmt::format("cannot rename '{}' to '{}': {}", tmp.string(), path.string(), ec.message()));
}

std::string read_text_file(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(fmt::format("cannot read '{}'", path.string()));
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

nlohmann::json read_json_file(const fs::path& path) {
  const std::string text = read_text_file(path);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("'{}' is not valid JSON: {}", path.string(), e.what()));
  }
}

void read_gzip_chunks(const fs::path& path, const std::string& what,
                      const std::function<void(std::string_view)>& fn) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr) throw Error(fmt::format("{}: cannot open '{}'", what, path.string()));
  std::string buf(size_t(1) << 16, '\0');
  try {
    for (;;) {
      const int n = gzread(f, buf.data(), static_cast<unsigned>(buf.size()));
      if (n < 0) {
        int errnum = 0;
        const std::string msg = gzerror(f, &errnum);
        throw Error(fmt::format("{}: cannot read '{}': {}", what, path.string(), msg));
      }
      if (n == 0) break;
      fn(std::string_view(buf.data(), static_cast<size_t>(n)));
    }
  } catch (...) {
    gzclose(f);
    throw;
  }
  const int rc = gzclose(f);  // Z_BUF_ERROR: the gzip stream ended early
  if (rc != Z_OK)
    throw Error(fmt::format("{}: '{}' is a truncated or corrupt gzip file (zlib error {})", what, path.string(), rc));
}

std::string read_gzip_file(const fs::path& path, const std::string& what) {
  std::string out;
  read_gzip_chunks(path, what, [&](std::string_view chunk) { out.append(chunk); });
  return out;
}

}  // namespace florence::core
