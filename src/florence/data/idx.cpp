// IDX reader (gzip via zlib's gzread, which also reads uncompressed files transparently).
#include "florence/data/idx.h"

#include <zlib.h>

#include "florence/core/error.h"
#include "florence/core/files.h"

namespace florence::data {

namespace {
constexpr uint8_t kTypeUByte = 0x08;  // IDX type code for unsigned byte
constexpr int kMaxDims = 4;

std::vector<uint8_t> read_gz(const std::string& path) {
  std::vector<uint8_t> out;
  core::read_gzip_chunks(path, "IDX", [&](std::string_view chunk) { out.insert(out.end(), chunk.begin(), chunk.end()); });
  return out;
}
}  // namespace

size_t IdxArray::item_size() const {
  size_t n = 1;
  for (size_t i = 1; i < dims.size(); ++i) n *= dims[i];
  return n;
}

IdxArray parse_idx(const std::vector<uint8_t>& b, const std::string& what) {
  if (b.size() < 4) throw Error("IDX: '" + what + "' is too short for a header (" + std::to_string(b.size()) + " bytes)");
  if (b[0] != 0 || b[1] != 0)
    throw Error("IDX: '" + what + "' has a bad magic (first two bytes must be 0)");
  if (b[2] != kTypeUByte)
    throw Error("IDX: '" + what + "' has data type 0x" + fmt::format("{:02x}", b[2]) + "; only 0x08 (uint8) is supported");
  const int ndim = b[3];
  if (ndim < 1 || ndim > kMaxDims) throw Error("IDX: '" + what + "' has " + std::to_string(ndim) + " dimensions (1..4 supported)");
  const size_t header = 4 + 4 * size_t(ndim);
  if (b.size() < header) throw Error("IDX: '" + what + "' is truncated inside its header");
  IdxArray a;
  uint64_t total = 1;
  for (int d = 0; d < ndim; ++d) {
    const uint8_t* p = b.data() + 4 + 4 * d;
    const uint32_t v = (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
    if (v == 0) throw Error("IDX: '" + what + "' dimension " + std::to_string(d) + " is 0");
    a.dims.push_back(v);
    total *= v;
    if (total > (uint64_t(1) << 40)) throw Error("IDX: '" + what + "' declares an implausibly large array");
  }
  const uint64_t have = b.size() - header;
  if (have < total)
    throw Error("IDX: '" + what + "' is truncated: " + std::to_string(have) + " data bytes, header declares " + std::to_string(total));
  if (have > total)
    throw Error("IDX: '" + what + "' has " + std::to_string(have - total) + " trailing bytes after the declared data");
  a.data.assign(b.begin() + long(header), b.end());
  return a;
}

IdxArray read_idx(const std::string& path) { return parse_idx(read_gz(path), path); }

FashionMnist load_fashion_mnist(const std::string& dir, const std::string& split) {
  std::string stem;
  if (split == "train") stem = "train";
  else if (split == "test") stem = "t10k";
  else throw Error("fashion-mnist: unknown split '" + split + "' (train | test)");
  const std::string img_path = dir + "/" + stem + "-images-idx3-ubyte.gz";
  const std::string lbl_path = dir + "/" + stem + "-labels-idx1-ubyte.gz";
  IdxArray img = read_idx(img_path), lbl = read_idx(lbl_path);
  if (img.dims.size() != 3 || img.dims[1] != 28 || img.dims[2] != 28)
    throw Error("fashion-mnist: '" + img_path + "' is not [N, 28, 28]");
  if (lbl.dims.size() != 1) throw Error("fashion-mnist: '" + lbl_path + "' is not 1-D");
  if (img.dims[0] != lbl.dims[0])
    throw Error("fashion-mnist: " + std::to_string(img.dims[0]) + " images but " + std::to_string(lbl.dims[0]) + " labels in '" + dir + "'");
  const size_t nclass = fashion_mnist_classes().size();
  for (size_t i = 0; i < lbl.data.size(); ++i)
    if (lbl.data[i] >= nclass)
      throw Error("fashion-mnist: label " + std::to_string(lbl.data[i]) + " at index " + std::to_string(i) + " of '" + lbl_path + "' is out of range");
  FashionMnist fm;
  fm.images = std::move(img.data);
  fm.labels = std::move(lbl.data);
  return fm;
}

const std::vector<std::string>& fashion_mnist_classes() {
  static const std::vector<std::string> k = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                             "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  return k;
}

}  // namespace florence::data
