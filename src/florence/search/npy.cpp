// NumPy .npy reading and writing (see npy.h).
#include "florence/search/npy.h"

#include <fcntl.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <regex>

#include "florence/core/error.h"
#include "florence/core/files.h"

namespace florence::search {

namespace {

constexpr char kMagic[] = "\x93NUMPY";  // 6 bytes

std::string shape_text(const std::vector<int64_t>& shape) {  // numpy's repr: (3,)  (3, 4)
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

int64_t item_size_of(const std::string& descr, const std::string& path) {
  if (descr == "<f4") return 4;
  if (descr == "<f8") return 8;
  if (descr == "<f2") return 2;
  throw Error("'" + path + "': unsupported .npy dtype '" + descr + "' (expected a little-endian float: <f2, <f4, <f8)");
}

}  // namespace

void write_npy(const std::string& path, const torch::Tensor& values) {
  if (!values.defined() || values.dim() < 1 || values.dim() > 2)
    throw Error("write_npy '" + path + "': expected a 1-D or 2-D tensor");
  torch::Tensor t = values.to(torch::kCPU, torch::kFloat).contiguous();
  std::vector<int64_t> shape(t.sizes().begin(), t.sizes().end());
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape_text(shape) + ", }";
  // magic(6) + version(2) + u16 length + dict + padding + '\n' is a multiple of 64.
  const size_t unpadded = 6 + 2 + 2 + dict.size() + 1;
  dict.append((64 - unpadded % 64) % 64, ' ');
  dict.push_back('\n');
  if (dict.size() > 65535) throw Error("write_npy '" + path + "': header too long");
  std::string out(kMagic, 6);
  out.push_back(char(1));
  out.push_back(char(0));
  out.push_back(char(dict.size() & 0xff));
  out.push_back(char((dict.size() >> 8) & 0xff));
  out += dict;
  const size_t bytes = size_t(t.numel()) * sizeof(float);
  const size_t at = out.size();
  out.resize(at + bytes);
  if (bytes) std::memcpy(out.data() + at, t.data_ptr<float>(), bytes);  // x86-64: little-endian
  core::write_text_atomic(path, out);
}

NpyHeader read_npy_header(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read .npy file '" + path + "'");
  char pre[10];
  in.read(pre, 8);
  if (in.gcount() != 8 || std::memcmp(pre, kMagic, 6) != 0) throw Error("'" + path + "' is not a .npy file (bad magic)");
  const int major = static_cast<unsigned char>(pre[6]);
  uint64_t len = 0;
  int64_t pre_size = 0;
  if (major == 1) {
    unsigned char b[2];
    in.read(reinterpret_cast<char*>(b), 2);
    len = b[0] | (uint64_t(b[1]) << 8);
    pre_size = 10;
  } else if (major == 2 || major == 3) {
    unsigned char b[4];
    in.read(reinterpret_cast<char*>(b), 4);
    len = b[0] | (uint64_t(b[1]) << 8) | (uint64_t(b[2]) << 16) | (uint64_t(b[3]) << 24);
    pre_size = 12;
  } else {
    throw Error("'" + path + "': unsupported .npy version " + std::to_string(major));
  }
  if (!in || len > (uint64_t(1) << 20)) throw Error("'" + path + "': truncated or oversized .npy header");
  std::string dict(len, '\0');
  in.read(dict.data(), std::streamsize(len));
  if (uint64_t(in.gcount()) != len) throw Error("'" + path + "': truncated .npy header");

  NpyHeader h;
  std::smatch m;
  static const std::regex descr_re(R"('descr'\s*:\s*'([^']*)')");
  static const std::regex fortran_re(R"('fortran_order'\s*:\s*(True|False))");
  static const std::regex shape_re(R"('shape'\s*:\s*\(([^)]*)\))");
  if (!std::regex_search(dict, m, descr_re)) throw Error("'" + path + "': .npy header has no 'descr'");
  h.descr = m[1];
  if (!std::regex_search(dict, m, fortran_re)) throw Error("'" + path + "': .npy header has no 'fortran_order'");
  h.fortran_order = m[1] == "True";
  if (!std::regex_search(dict, m, shape_re)) throw Error("'" + path + "': .npy header has no 'shape'");
  const std::string dims = m[1];
  static const std::regex int_re(R"(\s*(\d+)\s*,?)");
  for (auto it = std::sregex_iterator(dims.begin(), dims.end(), int_re); it != std::sregex_iterator(); ++it)
    h.shape.push_back(std::stoll((*it)[1]));
  if (h.fortran_order) throw Error("'" + path + "': Fortran-order .npy arrays are not supported (save with C order)");
  h.item_size = item_size_of(h.descr, path);
  h.data_offset = pre_size + int64_t(len);
  int64_t count = 1;
  for (int64_t d : h.shape) count *= d;
  in.seekg(0, std::ios::end);
  const int64_t file_size = int64_t(in.tellg());
  if (file_size < h.data_offset + count * h.item_size)
    throw Error("'" + path + "': .npy data is shorter than its shape " + shape_text(h.shape) + " says");
  return h;
}

torch::Tensor read_npy(const std::string& path) {
  const NpyHeader h = read_npy_header(path);
  if (h.shape.size() != 1 && h.shape.size() != 2)
    throw Error("'" + path + "': expected a 1-D or 2-D array, got shape " + shape_text(h.shape));
  std::ifstream in(path, std::ios::binary);
  in.seekg(h.data_offset);
  const auto dtype = h.item_size == 4 ? torch::kFloat : h.item_size == 8 ? torch::kDouble : torch::kHalf;
  torch::Tensor t = torch::empty(h.shape, torch::TensorOptions().dtype(dtype));
  in.read(static_cast<char*>(t.data_ptr()), std::streamsize(t.numel() * h.item_size));
  if (in.gcount() != std::streamsize(t.numel() * h.item_size)) throw Error("'" + path + "': short read");
  return t.to(torch::kFloat);
}

void read_npy_row(const std::string& path, const NpyHeader& h, int64_t row, float* out) {
  if (h.shape.size() != 2 || h.descr != "<f4") throw Error("'" + path + "': expected a 2-D float32 .npy array");
  if (row < 0 || row >= h.shape[0])
    throw Error("'" + path + "': row " + std::to_string(row) + " out of range (" + std::to_string(h.shape[0]) + " rows)");
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error("cannot open '" + path + "'");
  const size_t bytes = size_t(h.shape[1]) * sizeof(float);
  const ssize_t got = ::pread(fd, out, bytes, off_t(h.data_offset + row * int64_t(bytes)));
  ::close(fd);
  if (got != ssize_t(bytes)) throw Error("'" + path + "': short read of row " + std::to_string(row));
}

}  // namespace florence::search
