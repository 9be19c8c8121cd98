// Text-file helpers; see files.h.
#include "florence/core/files.h"

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

}  // namespace florence::core
