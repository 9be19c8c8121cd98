// Text-file helpers; see files.h.
#include "florence/core/files.h"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "florence/core/error.h"

namespace florence::core {

namespace fs = std::filesystem;

void write_file_atomic_with(const fs::path& path, const std::function<bool(int fd)>& fill) {
  // A unique temporary in the target folder (concurrent writers of one path never share one).
  static std::atomic<uint64_t> counter{0};
  std::random_device rd;
  int fd = -1;
  std::string tmp;
  const fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
  for (int attempt = 0; attempt < 16 && fd < 0; ++attempt) {
    tmp = (dir / fmt::format(".{}.tmp-{}-{}-{:x}", path.filename().string(), ::getpid(), counter++, rd())).string();
    fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && errno != EEXIST) break;
  }
  if (fd < 0) throw Error(fmt::format("cannot write '{}': cannot create a file in '{}': {}", path.string(), dir.string(),
                                      std::strerror(errno)));
  auto abandon = [&](const char* step) {
    const std::string err = std::strerror(errno);
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw Error(fmt::format("cannot write '{}': {}: {}", path.string(), step, err));
  };
  bool filled = false;
  try {
    filled = fill(fd);
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (!filled) abandon("write failed");
  if (::fsync(fd) != 0) abandon("fsync failed");
  const int closed = ::close(fd);
  fd = -1;
  if (closed != 0) abandon("close failed");
  if (::rename(tmp.c_str(), path.c_str()) != 0) abandon("rename failed");
  // Make the rename durable; a folder that cannot be synced (some network file systems) still
  // holds a complete file, so this step is best-effort.
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

void write_file_atomic(const fs::path& path, const std::vector<std::string_view>& parts) {
  write_file_atomic_with(path, [&](int fd) {
    for (std::string_view part : parts) {
      const char* p = part.data();
      size_t n = part.size();
      while (n > 0) {
        const ssize_t w = ::write(fd, p, std::min<size_t>(n, size_t{1} << 30));  // Linux moves <= ~2 GiB per call
        if (w < 0) {
          if (errno == EINTR) continue;
          return false;
        }
        p += w;
        n -= size_t(w);
      }
    }
    return true;
  });
}

void write_text_atomic(const fs::path& path, const std::string& text) { write_file_atomic(path, {text}); }

std::string read_text_file(const fs::path& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) throw Error(fmt::format("cannot read '{}': it is a folder, not a file", path.string()));
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
